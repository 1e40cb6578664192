//! The `--config` file (OPT-13): one listener per line, in the command line's
//! own words; `#` starts a comment, blank lines are ignored. The adapter reads
//! the file; this turns its text into one [`Config`] per listener, or into
//! every error it has, each as `FILE:LINE: message`.

use std::net::SocketAddr;

use crate::config::cli::{listener_from_line, Config, FileStart};

/// Every error of a file, in line order, each naming its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileErrors {
    lines: Vec<String>,
}

impl FileErrors {
    /// The messages, `FILE:LINE: message` (or `FILE: message` for the file as a
    /// whole), one per error.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }
}

/// Makes the listeners of a `--config` file whose text is `text` (`file`: its
/// name as the messages should show it), each as a plug started with its line
/// alone and the command line's options as defaults would be. Two lines on the
/// same address and port, and a file with no listener, are errors too.
pub fn parse(start: &FileStart, file: &str, text: &str) -> Result<Vec<Config>, FileErrors> {
    let mut listeners: Vec<(usize, Config)> = Vec::new();
    let mut errors = Vec::new();
    for (number, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l)) {
        let content = line.split_once('#').map_or(line, |(before, _)| before);
        let words: Vec<String> = content.split_whitespace().map(str::to_string).collect();
        if words.is_empty() {
            continue;
        }
        match listener_from_line(&start.defaults, &words) {
            Ok(config) => {
                let addr = config.source.bind_addr();
                match listeners.iter().find(|(_, c)| c.source.bind_addr() == addr) {
                    Some((first, _)) => errors.push(format!(
                        "{file}:{number}: a second listener on {addr}: line {first} listens there"
                    )),
                    None => listeners.push((number, config)),
                }
            }
            Err(e) => errors.push(format!("{file}:{number}: {e}")),
        }
    }
    if listeners.is_empty() && errors.is_empty() {
        errors.push(format!(
            "{file}: no listener: write one 'source dest...' per line"
        ));
    }
    if !errors.is_empty() {
        return Err(FileErrors { lines: errors });
    }
    // The foreground is the process's: one line's `-S -` keeps it there.
    let foreground = listeners.iter().any(|(_, c)| c.foreground);
    Ok(listeners
        .into_iter()
        .map(|(_, mut c)| {
            c.foreground = foreground;
            c
        })
        .collect())
}

/// The label a listener carries in metrics (OPT-13): the address and port it
/// listens on, `127.0.0.1:8080`, `0.0.0.0:8080`, `[::]:8080`.
pub fn listener_label(config: &Config) -> String {
    let addr: SocketAddr = config.source.bind_addr();
    addr.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::cli::{parse as parse_cli, Action};
    use std::ffi::OsString;

    fn start(words: &[&str]) -> FileStart {
        let argv = words.iter().map(OsString::from).collect();
        match parse_cli(argv) {
            Ok(Action::RunFile(s)) => *s,
            other => panic!("{other:?}"),
        }
    }

    fn alone(words: &str) -> Config {
        let argv = words.split_whitespace().map(OsString::from).collect();
        match parse_cli(argv) {
            Ok(Action::Run(c)) => *c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_line_is_a_plug_started_with_that_line_and_the_defaults_opt_13() {
        let s = start(&[
            "-n",
            "-f",
            "--connect-timeout",
            "3",
            "-a",
            "10.0.0.0/8",
            "--config",
            "plug.conf",
        ]);
        let text = "# web\n\
                    8080 127.0.0.1:80 127.0.0.1:81   # two backends\n\
                    \n   \t\n\
                    -a 192.168.0.0/16 --connect-timeout 7 127.0.0.1:2222 127.0.0.1:22,weight=2\n\
                    --connect-timeout 9 9090 127.0.0.1:90\n";
        let ls = parse(&s, "plug.conf", text).unwrap();
        assert_eq!(ls.len(), 3);
        let mut expected =
            alone("-n -f --connect-timeout 3 -a 10.0.0.0/8 8080 127.0.0.1:80 127.0.0.1:81");
        expected.config_file = Some("plug.conf".into());
        assert_eq!(ls[0], expected);
        let mut expected = alone(
            "-n -f -a 192.168.0.0/16 --connect-timeout 7 127.0.0.1:2222 127.0.0.1:22,weight=2",
        );
        expected.config_file = Some("plug.conf".into());
        assert_eq!(ls[1], expected, "the line's values win, its -a replaces");
        let mut expected = alone("-n -f -a 10.0.0.0/8 --connect-timeout 9 9090 127.0.0.1:90");
        expected.config_file = Some("plug.conf".into());
        assert_eq!(
            ls[2], expected,
            "a line with options but no -a keeps the defaults' rules"
        );
        assert_eq!(listener_label(&ls[0]), "0.0.0.0:8080");
        assert_eq!(listener_label(&ls[1]), "127.0.0.1:2222");
    }

    #[test]
    fn every_error_is_reported_with_its_place_opt_13() {
        let s = start(&["--config", "/etc/plug.conf"]);
        let text = "8080 127.0.0.1:80\n\
                    -n 8081 127.0.0.1:80\n\
                    8082 127.0.0.1:80,weight=0\n\
                    8080 127.0.0.1:90\n\
                    --max-conns 5 8083 127.0.0.1:80\n\
                    8084\n\
                    --bogus 1 8085 127.0.0.1:80\n\
                    -V\n";
        let e = parse(&s, "/etc/plug.conf", text).unwrap_err();
        let lines = e.lines();
        assert_eq!(lines.len(), 7, "{lines:#?}");
        for (line, (number, says)) in lines.iter().zip([
            (2, "option -n applies to the whole process"),
            (3, "'127.0.0.1:80,weight=0'"),
            (4, "a second listener on 0.0.0.0:8080: line 1"),
            (5, "option --max-conns applies to the whole process"),
            (6, "missing destination"),
            (7, "'--bogus'"),
            (8, "belong on the command line"),
        ]) {
            let place = format!("/etc/plug.conf:{number}: ");
            assert!(line.starts_with(&place) && line.contains(says), "{line}");
        }
        let empty = parse(&s, "f", "# nothing\n\n").unwrap_err();
        assert_eq!(
            empty.lines(),
            ["f: no listener: write one 'source dest...' per line"]
        );
    }

    #[test]
    fn with_config_the_command_line_holds_no_listener_opt_13() {
        let argv = ["--config", "f", "8080", "127.0.0.1:80"]
            .map(OsString::from)
            .to_vec();
        let e = parse_cli(argv).unwrap_err();
        assert!(e.message().contains("unexpected argument '8080'"), "{e}");
        // The command line's values are still checked, once.
        let argv = ["--config", "f", "--max-conns", "0"]
            .map(OsString::from)
            .to_vec();
        assert!(parse_cli(argv).unwrap_err().message().contains("'0'"));
        let s = start(&["--check", "--config=f"]);
        assert!(s.check);
        assert_eq!(s.file, std::path::PathBuf::from("f"));
    }

    #[test]
    fn one_line_with_dash_s_dash_keeps_the_process_in_the_foreground_opt_13() {
        let s = start(&["--config", "f"]);
        let ls = parse(&s, "f", "8080 127.0.0.1:80\n-S - 8081 127.0.0.1:81\n").unwrap();
        assert!(ls.iter().all(|c| c.foreground));
    }
}
