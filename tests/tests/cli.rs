//! SPEC §1: the command line, exit statuses and messages, against every binary.

use plug_tests::{each_binary, Binary, TempDir};
use std::process::{Command, Output};

fn run(bin: &Binary, args: &[&str]) -> Output {
    Command::new(&bin.path).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn version_prints_and_exits_0_cli_2() {
    each_binary(|bin| {
        let o = run(bin, &["-V"]);
        assert_eq!(o.status.code(), Some(0));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.starts_with(&format!("{}: plug ", bin.name)), "{out}");
        // -V acts where it appears, even before bad words (CLI-1).
        let o = run(bin, &["-nV", "-t", "abc", "--bogus"]);
        assert_eq!(o.status.code(), Some(0));
    });
}

#[test]
fn help_prints_usage_on_stdout_cli_9() {
    each_binary(|bin| {
        let o = run(bin, &["--help"]);
        assert_eq!(o.status.code(), Some(0));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains(&format!("usage: {} -V", bin.name)), "{out}");
        assert!(out.contains("--connect-timeout"), "{out}");
    });
}

#[test]
fn syntax_errors_exit_5_with_one_line_naming_the_word_cli_6_cli_7() {
    each_binary(|bin| {
        for (args, word) in [
            (&["-t", "abc", "8080", "127.0.0.1"][..], "abc"),
            (&["8080", "127.0.0.1:99999"], "99999"),
            (&["8080", "127.0.0.1:"], "'127.0.0.1:'"),
            (&["-a", "300.1.2.3/40", "8080", "127.0.0.1"], "300.1.2.3/40"),
            (&["8080"], "destination"),
            (&[], "source"),
            (&["-x", "8080", "127.0.0.1"], "-x"),
            (&["8080", "localhost"], "localhost"),
            (&["--idle-timeout", "soon", "8080", "127.0.0.1"], "soon"),
        ] {
            let o = run(bin, args);
            assert_eq!(o.status.code(), Some(5), "{args:?}");
            let err = stderr(&o);
            let first = err.lines().next().unwrap_or("");
            assert!(
                first.starts_with(&format!("{}: ", bin.name)),
                "{args:?}: {err}"
            );
            assert!(first.contains(word), "{args:?}: {err}");
            assert!(
                err.contains(&format!("usage: {} -V", bin.name)),
                "usage follows: {err}"
            );
            assert!(o.stdout.is_empty(), "nothing is started");
        }
    });
}

#[test]
fn occupied_port_is_fatal_exit_4_in_the_foreground_proc_2() {
    each_binary(|bin| {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let o = run(
            bin,
            &["-n", "-i", "127.0.0.1", &port.to_string(), "127.0.0.1:9"],
        );
        assert_eq!(o.status.code(), Some(4));
        let err = stderr(&o);
        assert!(
            err.starts_with(&format!("{}: cannot listen on 127.0.0.1:{port}", bin.name)),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "one line, no usage: {err}");
    });
}

#[test]
fn unreadable_proxy_credentials_are_fatal_opt_5() {
    each_binary(|bin| {
        let o = run(
            bin,
            &[
                "-n",
                "-h",
                "127.0.0.1:3128",
                "--proxy-auth-file",
                "/nonexistent/auth",
                "0",
                "10.0.0.1:22",
            ],
        );
        // Port 0 is a syntax error that would come first; use a real port instead.
        assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
        let port = plug_tests::free_port().to_string();
        let o = run(
            bin,
            &[
                "-n",
                "-h",
                "127.0.0.1:3128",
                "--proxy-auth-file",
                "/nonexistent/auth",
                &port,
                "10.0.0.1:22",
            ],
        );
        assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
        assert!(stderr(&o).contains("/nonexistent/auth"));
    });
}

#[test]
fn version_names_the_runtime_and_typos_get_a_suggestion_cli_2_cli_9() {
    each_binary(|bin| {
        let runtime = match (bin.name, bin.label.as_str()) {
            ("plug-smol", _) => "smol",
            ("plug-async-std", _) => "async-std",
            (_, l) if l.ends_with("--features smol") => "smol",
            (_, l) if l.ends_with("--features async-std") => "async-std",
            // plug-std, and plug by default.
            _ => "std",
        };
        let string = format!(
            "plug {} ({runtime} runtime; plugdaemon 2.5.5 compatible)",
            env!("CARGO_PKG_VERSION")
        );
        // --version acts where it appears, as -V does.
        let o = run(bin, &["--version", "--bogus"]);
        assert_eq!(o.status.code(), Some(0));
        assert_eq!(String::from_utf8_lossy(&o.stdout), format!("{string}\n"));
        let o = run(bin, &["-V"]);
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            format!("{}: {string}\n", bin.name)
        );
        let o = run(bin, &["--conect-timeout", "1", "8080", "127.0.0.1:9"]);
        assert_eq!(o.status.code(), Some(5));
        let err = stderr(&o);
        assert!(
            err.starts_with(&format!(
                "{}: unknown option '--conect-timeout' (did you mean '--connect-timeout'?)",
                bin.name
            )),
            "{err}"
        );
    });
}

#[test]
fn check_validates_and_binds_writes_and_detaches_nothing_opt_14() {
    each_binary(|bin| {
        // A port that is taken: --check does not bind, so it does not care.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port().to_string();
        let dir = TempDir::new("check");
        let pid = dir.path("plug.pid");
        let pid = pid.to_str().unwrap();
        let o = run(
            bin,
            &[
                "--check",
                "-P",
                pid,
                "-i",
                "127.0.0.1",
                &port,
                "127.0.0.1:9",
            ],
        );
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            format!("{}: configuration OK (1 listeners)\n", bin.name)
        );
        assert!(!dir.path("plug.pid").exists(), "--check wrote the pid file");
        // A bad command line: the usage error, exit 5.
        let o = run(bin, &["--check", "-t", "abc", &port, "127.0.0.1:9"]);
        assert_eq!(o.status.code(), Some(5));
        assert!(stderr(&o).contains("'abc'"), "{}", stderr(&o));
        // A credentials file that cannot be read: exit 4, as a start would.
        let missing = dir.path("no-such-file");
        let o = run(
            bin,
            &[
                "--check",
                "-h",
                "127.0.0.1:3128",
                "--proxy-auth-file",
                missing.to_str().unwrap(),
                &port,
                "backend.plug-test:22",
            ],
        );
        assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
        assert!(stderr(&o).contains("no-such-file"), "{}", stderr(&o));
    });
}
