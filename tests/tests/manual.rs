//! The manual page (plug.1) describes every option `--help` lists, and renders
//! cleanly with groff when it is installed.

use plug_tests::*;
use std::process::Command;

fn page() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../plug.1")).unwrap()
}

#[test]
fn manual_page_covers_every_option_cli_9() {
    let bin = &binaries()[1];
    assert_eq!(bin.name, "plug");
    let out = Command::new(&bin.path).arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    let roff = page().replace("\\-", "-");
    let mut options: Vec<&str> = help
        .split(|c: char| c.is_whitespace() || c == '[' || c == ']')
        .filter(|w| {
            w.starts_with('-')
                && w.len() > 1
                && w.chars()
                    .nth(1)
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '-')
        })
        .collect();
    options.sort_unstable();
    options.dedup();
    assert!(options.len() > 20, "too few options in --help: {options:?}");
    let synopsis = roff
        .split(".SH DESCRIPTION")
        .next()
        .unwrap_or_default()
        .to_string();
    // `[--option value]...` in the usage line is a placeholder, not an option.
    for option in options.into_iter().filter(|o| *o != "--option") {
        // Clusters such as -nklfod name several flags; check each letter.
        if !option.starts_with("--") && option.len() > 2 {
            for c in option[1..].chars().filter(char::is_ascii_alphabetic) {
                assert!(
                    roff.contains(&format!("-{c}")),
                    "plug.1 does not mention -{c}"
                );
            }
            continue;
        }
        assert!(roff.contains(option), "plug.1 does not mention {option}");
        if option.starts_with("--") {
            assert!(synopsis.contains(option), "SYNOPSIS lacks {option}");
        }
    }
    for section in ["SIGNALS", "BUGS", "SEE ALSO", "EXIT STATUS", "LOGGING"] {
        assert!(roff.contains(&format!(".SH {section}")), "no {section}");
    }
    for page in ["sd_notify", "sd_listen_fds", "socat", "rinetd"] {
        assert!(
            roff.contains(&format!(".BR {page} (")),
            "SEE ALSO lacks {page}"
        );
    }
    for signal in ["SIGHUP", "SIGUSR1", "SIGTERM"] {
        assert!(roff.contains(signal), "SIGNALS lacks {signal}");
    }
}

#[test]
fn manual_page_renders_cleanly() {
    let page = page();
    assert!(page.is_ascii(), "plug.1 must be plain ASCII roff");
    let Some(groff) = optional_program("groff", "groff-base") else {
        return;
    };
    let render = Command::new(groff)
        .args(["-man", "-Tutf8", "-ww", "-z", "plug.1"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .unwrap();
    assert!(
        render.status.success() && render.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&render.stderr)
    );
}
