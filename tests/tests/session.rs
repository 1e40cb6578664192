//! SPEC §4: the session file.

use plug_tests::*;
use std::path::Path;
use std::thread;

/// Checks the time stamp and `plug[PID]`, returns the remaining fields.
fn parse(line: &str, pid: u32) -> Vec<String> {
    let bytes = line.as_bytes();
    assert!(
        line.len() > 22 && bytes[0] == b'[' && bytes[20] == b']',
        "bad time stamp: {line}"
    );
    for (i, c) in line[1..20].char_indices() {
        let want_digit = !matches!(i, 4 | 7 | 10 | 13 | 16);
        assert_eq!(c.is_ascii_digit(), want_digit, "bad time stamp: {line}");
    }
    assert_eq!(&line[5..6], "-");
    assert_eq!(&line[11..12], " ");
    let rest = &line[22..];
    let (word, fields) = rest.split_once(' ').unwrap();
    assert_eq!(word, format!("plug[{pid}]"), "{line}");
    let fields: Vec<String> = fields.split(' ').map(str::to_string).collect();
    assert_eq!(fields.len(), 6, "{line}");
    fields
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn wait_lines(path: &Path, n: usize) -> Vec<String> {
    assert!(
        eventually(|| lines(path).len() >= n),
        "expected {n} lines, have {:?}",
        lines(path)
    );
    lines(path)
}

#[test]
fn one_exact_line_per_connection_spec_4() {
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::ReplyAfterEof(b"0123456789".to_vec()));
        let dir = TempDir::new("session");
        let file = dir.path("sessions");
        let plug = Plug::start(
            bin,
            &["-S", file.to_str().unwrap(), "{port}", &backend.dest()],
        );
        assert_eq!(
            exchange(connect(plug.addr()), b"hello".to_vec()),
            b"0123456789"
        );
        let all = wait_lines(&file, 1);
        let f = parse(&all[0], plug.pid());
        assert_eq!(
            f[..5],
            [
                plug.port.to_string(),
                "127.0.0.1".into(),
                backend.dest(),
                "5".into(),
                "10".into()
            ]
        );
        let micros: u64 = f[5].parse().unwrap();
        assert!(micros > 0 && micros < 20_000_000, "duration {micros}");
    });
}

#[test]
fn listen_address_and_ipv6_forms_spec_4() {
    each_binary(|bin| {
        let backend = Backend::start_on("[::1]:0", Behaviour::Echo);
        let dir = TempDir::new("session6");
        let file = dir.path("s");
        let plug = Plug::start(
            bin,
            &[
                "-S",
                file.to_str().unwrap(),
                "-i",
                "::",
                "{port}",
                &backend.dest(),
            ],
        );
        let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, plug.port));
        assert_eq!(exchange(connect(v6), b"abc".to_vec()), b"abc");
        assert_eq!(exchange(connect(plug.addr()), b"de".to_vec()), b"de");
        let all = wait_lines(&file, 2);
        let mut got: Vec<Vec<String>> = all
            .iter()
            .map(|l| parse(l, plug.pid())[..5].to_vec())
            .collect();
        got.sort();
        let from = format!("[::]:{}", plug.port);
        let to = backend.dest();
        assert!(to.starts_with("[::1]:"));
        assert_eq!(
            got,
            [
                vec![
                    from.clone(),
                    "127.0.0.1".into(),
                    to.clone(),
                    "2".into(),
                    "2".into()
                ],
                vec![from, "::1".into(), to, "3".into(), "3".into()],
            ],
            "IPv4 clients on a dual-stack listener are logged as IPv4 (CLI-8)"
        );
    });
}

#[test]
fn dash_writes_to_stdout_spec_4() {
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        let plug = Plug::start(bin, &["-S", "-", "{port}", &backend.dest()]);
        assert_eq!(exchange(connect(plug.addr()), b"xyz".to_vec()), b"xyz");
        let line = plug
            .stdout
            .wait_for(|l| l.contains(" plug["))
            .expect("no session line on stdout");
        let f = parse(&line, plug.pid());
        assert_eq!(f[3..5], ["3".to_string(), "3".to_string()]);
    });
}

#[test]
fn concurrent_lines_never_interleave_spec_4() {
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        let dir = TempDir::new("concurrent");
        let file = dir.path("s");
        let plug = Plug::start(
            bin,
            &["-S", file.to_str().unwrap(), "{port}", &backend.dest()],
        );
        let addr = plug.addr();
        let workers: Vec<_> = (1..=100usize)
            .map(|n| {
                thread::spawn(move || assert_eq!(exchange(connect(addr), vec![b'x'; n]).len(), n))
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        let all = wait_lines(&file, 100);
        assert_eq!(all.len(), 100);
        let mut sizes: Vec<usize> = all
            .iter()
            .map(|l| parse(l, plug.pid())[3].parse().unwrap())
            .collect();
        sizes.sort_unstable();
        assert_eq!(sizes, (1..=100).collect::<Vec<_>>());
    });
}

#[test]
fn a_moved_session_file_is_recreated_spec_4() {
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        let dir = TempDir::new("rotate");
        let file = dir.path("s");
        let plug = Plug::start(
            bin,
            &["-S", file.to_str().unwrap(), "{port}", &backend.dest()],
        );
        exchange(connect(plug.addr()), b"one".to_vec());
        wait_lines(&file, 1);
        let rotated = dir.path("s.1");
        std::fs::rename(&file, &rotated).unwrap();
        exchange(connect(plug.addr()), b"second".to_vec());
        let fresh = wait_lines(&file, 1);
        assert_eq!(parse(&fresh[0], plug.pid())[3], "6");
        assert_eq!(lines(&rotated).len(), 1, "the moved file is left alone");
    });
}

#[test]
fn a_connection_ending_in_an_error_still_gets_a_line_spec_4() {
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Reset);
        let dir = TempDir::new("error");
        let file = dir.path("s");
        let plug = Plug::start(
            bin,
            &["-S", file.to_str().unwrap(), "{port}", &backend.dest()],
        );
        let mut s = connect(plug.addr());
        std::io::Write::write_all(&mut s, b"boom").unwrap();
        let _ = closed_without_data(&mut s);
        let all = wait_lines(&file, 1);
        let f = parse(&all[0], plug.pid());
        assert_eq!(f[2], backend.dest());
        assert_eq!(f[4], "0");
    });
}

#[test]
fn a_connection_that_reached_nothing_gets_no_line_spec_4() {
    each_binary(|bin| {
        let dir = TempDir::new("noline");
        let file = dir.path("s");
        let plug = Plug::start(
            bin,
            &[
                "-l",
                "-S",
                file.to_str().unwrap(),
                "{port}",
                &dead_addr().to_string(),
            ],
        );
        let mut s = connect(plug.addr());
        assert!(closed_without_data(&mut s));
        assert!(plug
            .stderr
            .wait_for(|l| l.contains("Complete, status=2."))
            .is_some());
        assert!(lines(&file).is_empty());
    });
}

#[test]
fn the_session_file_is_created_0666_less_the_umask_spec_4() {
    each_binary(|bin| {
        use std::os::unix::fs::PermissionsExt;
        for (umask, mode) in [("022", 0o644), ("027", 0o640), ("000", 0o666)] {
            let dir = TempDir::new("mode");
            let file = dir.path("sessions");
            let script = format!("umask {umask} && exec \"$0\" \"$@\"");
            let launch = Launch {
                env: vec![],
                via: Some(("/bin/sh".into(), vec!["-c".into(), script])),
            };
            let backend = Backend::start(Behaviour::Echo);
            let plug = Plug::start_with(
                bin,
                &launch,
                &["-S", file.to_str().unwrap(), "{port}", &backend.dest()],
            );
            assert_eq!(exchange(connect(plug.addr()), b"m".to_vec()), b"m");
            wait_lines(&file, 1);
            let got = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(got, mode, "umask {umask}: mode {got:o}");
        }
    });
}
