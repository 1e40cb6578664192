//! SPEC §2: detaching, readiness, pid file, graceful stop, syslog texts.

use plug_tests::*;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::process::{Command, Stdio};

#[test]
fn detaches_only_once_ready_and_forwards_proc_1_proc_3() {
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        let dir = TempDir::new("detach");
        let pidfile = dir.path("plug.pid");
        let dest = backend.dest();
        let (port, out) = run_on_free_port(
            bin,
            &[
                "-P",
                pidfile.to_str().unwrap(),
                "-i",
                "127.0.0.1",
                "{port}",
                &dest,
            ],
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The parent exited only after the child was ready: the pid file exists and
        // the port answers, with no waiting.
        let pid = read_pid(&pidfile);
        assert!(process_alive(pid));
        assert_ne!(pid, std::process::id());
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
        let (sid, pgid) = (fields[3], fields[2]);
        assert_eq!(
            sid,
            pid.to_string(),
            "the daemon leads its own session (setsid)"
        );
        assert_eq!(pgid, pid.to_string());
        let s = connect(format!("127.0.0.1:{port}").parse().unwrap());
        assert_eq!(exchange(s, b"hello".to_vec()), b"hello");
        // SIGTERM: pid file removed, process gone.
        send_signal(pid, libc::SIGTERM);
        assert!(
            eventually(|| !process_alive(pid)),
            "daemon did not exit on SIGTERM"
        );
        assert!(!pidfile.exists(), "pid file left behind");
    });
}

#[test]
fn detached_bind_failure_is_printed_and_exits_4_proc_2() {
    each_binary(|bin| {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let out = Command::new(&bin.path)
            .args(["-i", "127.0.0.1", &port.to_string(), "127.0.0.1:9"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(4));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("cannot listen"), "{err}");
    });
}

#[test]
fn detached_pid_file_failure_reaches_the_terminal_proc_1() {
    each_binary(|bin| {
        let (_, out) = run_on_free_port(
            bin,
            &[
                "-P",
                "/nonexistent-dir/plug.pid",
                "-i",
                "127.0.0.1",
                "{port}",
                "127.0.0.1:9",
            ],
        );
        assert_eq!(
            out.status.code(),
            Some(4),
            "the parent reports the child's failure"
        );
        // (A warning that no syslog is reachable may come first, before detaching.)
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.lines()
                .any(|l| l.starts_with(&format!("{}: cannot write pid file", bin.name))),
            "{err}"
        );
    });
}

#[test]
fn pid_file_holds_the_pid_and_goes_on_sigint_proc_3() {
    each_binary(|bin| {
        let dir = TempDir::new("pid");
        let pidfile = dir.path("p.pid");
        let mut plug = Plug::start(
            bin,
            &["-P", pidfile.to_str().unwrap(), "{port}", "127.0.0.1:9"],
        );
        assert_eq!(
            std::fs::read_to_string(&pidfile).unwrap(),
            format!("{}\n", plug.pid())
        );
        plug.signal(libc::SIGINT);
        assert_eq!(plug.wait_exit().code(), Some(0));
        assert!(!pidfile.exists(), "SIGINT removes the pid file (fix)");
    });
}

#[test]
fn graceful_stop_lets_a_transfer_finish_proc_4() {
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        let dir = TempDir::new("stop");
        let pidfile = dir.path("p.pid");
        let mut plug = Plug::start(
            bin,
            &[
                "-P",
                pidfile.to_str().unwrap(),
                "-i",
                "127.0.0.1",
                "{port}",
                &backend.dest(),
            ],
        );
        let mut s = connect(plug.addr());
        s.write_all(b"first").unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        plug.signal(libc::SIGTERM);
        assert!(plug.stderr.wait_for(|l| l.contains("stopping")).is_some());
        // The listener is closed at once: a new instance could bind the port now.
        assert!(
            eventually(|| TcpListener::bind(("127.0.0.1", plug.port)).is_ok()),
            "listener still open"
        );
        assert!(!pidfile.exists());
        assert!(plug.running(), "open connection keeps plug alive");
        // The transfer in flight completes.
        s.write_all(b"second").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut rest = vec![];
        s.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"second");
        drop(s);
        assert_eq!(plug.wait_exit().code(), Some(0));
    });
}

#[test]
fn second_signal_exits_at_once_proc_4() {
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        let mut plug = Plug::start(bin, &["{port}", &backend.dest()]);
        let mut s = connect(plug.addr());
        s.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        plug.signal(libc::SIGTERM);
        assert!(plug.stderr.wait_for(|l| l.contains("stopping")).is_some());
        assert!(plug.running());
        plug.signal(libc::SIGTERM);
        assert_eq!(plug.wait_exit().code(), Some(0));
        assert!(closed_without_data(&mut s));
    });
}

#[test]
fn connection_log_texts_proc_5() {
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        // -l sends these to syslog; -d shows them on stderr too, where we read them.
        let plug = Plug::start(bin, &["-l", "-a", "127.0.0.2", "{port}", &backend.dest()]);
        let tag = format!("({})", plug.port);
        assert!(plug
            .stderr
            .wait_for(|l| l.ends_with(&format!("{tag}: Plugdaemon started.")))
            .is_some());
        let s = connect_from("127.0.0.2", plug.addr());
        assert_eq!(exchange(s, b"hi".to_vec()), b"hi");
        let want = format!("{tag}: Connect from 127.0.0.2 to {}", backend.dest());
        plug.stderr.expect(|l| l.ends_with(&want));
        assert!(plug
            .stderr
            .wait_for(|l| l.ends_with(&format!("{tag}: Complete.")))
            .is_some());
        let mut refused = connect_from("127.0.0.3", plug.addr());
        assert!(closed_without_data(&mut refused));
        let want = format!("{tag}: Connect from 127.0.0.3 Refused.");
        plug.stderr.expect(|l| l.ends_with(&want));
    });
}

#[test]
fn failed_connection_completes_with_status_2_proc_5() {
    each_binary(|bin| {
        let dead = dead_addr();
        let plug = Plug::start(bin, &["-l", "-i", "127.0.0.1", "{port}", &dead.to_string()]);
        let mut s = connect(plug.addr());
        assert!(closed_without_data(&mut s));
        let want = format!("(127.0.0.1 {}): Complete, status=2.", plug.port);
        plug.stderr.expect(|l| l.ends_with(&want));
    });
}

#[test]
fn usr1_dumps_state_and_serving_goes_on_opt_6() {
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        let dead = dead_addr();
        let plug = Plug::start(
            bin,
            &[
                "-a",
                "127.0.0.1",
                "{port}",
                &dead.to_string(),
                &backend.dest(),
            ],
        );
        // One client fails over past the dead destination, one is refused, one is
        // still open when the dump is taken.
        assert_eq!(exchange(connect(plug.addr()), b"12345".to_vec()), b"12345");
        let mut refused = connect_from("127.0.0.2", plug.addr());
        assert!(closed_without_data(&mut refused));
        let mut open = connect(plug.addr());
        open.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        open.read_exact(&mut b).unwrap();
        // The first client saw its end before plug handed that connection's
        // counts over (it closes, then accounts), so the dump is asked for
        // again until the finished connection is counted; bounded.
        let want = "summary open 1 accepted 2 refused 1 failed 0";
        let mut summary = String::new();
        for asked in 1..=50 {
            plug.signal(libc::SIGUSR1);
            let dumps = plug
                .stderr
                .wait_for_count(asked, |l| l.contains("summary open"));
            assert_eq!(dumps.len(), asked, "no dump");
            summary = dumps[asked - 1].clone();
            if summary.ends_with(want) {
                break;
            }
        }
        assert!(summary.ends_with(want), "{summary}");
        let all = plug.stderr.all();
        let dump = format!("destination {dead} unhealthy since ");
        let dead_line = all
            .iter()
            .find(|l| l.contains(&dump))
            .unwrap_or_else(|| panic!("{all:?}"));
        assert!(
            dead_line.contains(" unhealthy since ")
                && dead_line.ends_with("open 0 total 0 in 0 out 0"),
            "{dead_line}"
        );
        let live = format!(
            "destination {} healthy open 1 total 2 in 5 out 5",
            backend.dest()
        );
        assert!(all.iter().any(|l| l.ends_with(&live)), "{all:?}");
        // Serving goes on.
        assert_eq!(exchange(open, b"after".to_vec()), b"after");
    });
}

#[test]
fn the_listener_has_a_somaxconn_backlog_and_so_reuseaddr_proc_2() {
    let Some(ss) = optional_program("ss", "iproute2") else {
        return;
    };
    let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap();
    let somaxconn = somaxconn.trim().to_string();
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Send(b"bye".to_vec()));
        let mut plug = Plug::start(bin, &["-i", "127.0.0.1", "{port}", &backend.dest()]);
        let port = plug.port;
        let ss_lines = |filter: &[&str]| -> Vec<String> {
            let out = Command::new(&ss)
                .arg("-Htn")
                .args(filter)
                .arg(format!("sport = :{port}"))
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect()
        };
        // A listener's Send-Q is its backlog.
        let listening = ss_lines(&["-l"]);
        let fields: Vec<&str> = listening[0].split_whitespace().collect();
        assert_eq!(fields[2], somaxconn, "{listening:?}");
        // plug ends the connection first (the destination's end of stream
        // reaches the client first), so its side waits in TIME-WAIT on the
        // listening port...
        let mut c = connect(plug.addr());
        let mut got = vec![];
        c.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"bye");
        drop(c);
        assert!(
            eventually(|| !ss_lines(&["state", "time-wait"]).is_empty()),
            "no TIME-WAIT on port {port}"
        );
        plug.signal(libc::SIGTERM);
        assert_eq!(plug.wait_exit().code(), Some(0));
        // ...and with SO_REUSEADDR a new plug binds the port at once all the same.
        let args: Vec<String> = ["-d", "-i", "127.0.0.1", &port.to_string(), &backend.dest()]
            .map(String::from)
            .to_vec();
        let again = Plug::spawn(bin, &args, port);
        let line = again
            .stderr
            .wait_for(|l| l.contains("listening on") || l.contains("cannot listen"));
        assert!(
            line.as_deref().is_some_and(|l| l.contains("listening on")),
            "{line:?}"
        );
    });
}

#[test]
fn a_refused_low_port_says_what_would_allow_it_cli_6() {
    if !running_as_root("running plug as an unprivileged user") {
        return;
    }
    let Some(setpriv) = optional_program("setpriv", "util-linux") else {
        return;
    };
    let start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse::<u16>().ok())
        .unwrap_or(1024);
    if start <= 1 {
        skip_or_fail("every port is open to unprivileged users here (ip_unprivileged_port_start)");
        return;
    }
    let port = (start - 1).min(1023).to_string();
    each_binary(|bin| {
        // uid 65534 must reach the binary.
        let (_dir, copy) = reachable_copy(bin);
        let out = Command::new(&setpriv)
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&copy.path)
            .args(["-n", "-i", "127.0.0.1", &port, "127.0.0.1:9"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{err}");
        assert!(
            err.contains(&format!("cannot listen on 127.0.0.1:{port}"))
                && err.contains("CAP_NET_BIND_SERVICE"),
            "{err}"
        );
    });
}
