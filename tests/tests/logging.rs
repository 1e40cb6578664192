//! What plug logs and where (PROC-5, FAULT-4, CLI-2): real syslog datagrams read
//! from plug's own /dev/log, stderr when syslog is unreachable in the
//! foreground, operator-grade lines at the normal level, rate limits of lines
//! clients cause, and `-dd` showing more than `-d`.

use plug_tests::*;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

/// Checks `datagram` is what syslog(3) sends: `<PRI>Mmm dd HH:MM:SS IDENT[PID]: `
/// with the daemon facility, and returns the priority and the text after it.
fn parse_datagram<'a>(datagram: &'a str, ident: &str, pid: u32) -> (u8, &'a str) {
    let (pri, rest) = datagram
        .strip_prefix('<')
        .and_then(|d| d.split_once('>'))
        .unwrap_or_else(|| panic!("no priority: {datagram:?}"));
    let pri: u8 = pri.parse().unwrap();
    assert_eq!(pri >> 3, 3, "facility daemon: {datagram:?}");
    let months = "JanFebMarAprMayJunJulAugSepOctNovDec";
    let (stamp, rest) = rest.split_at(16);
    assert!(months.contains(&stamp[..3]), "{datagram:?}");
    let clock = &stamp[7..15];
    assert!(
        clock.len() == 8 && clock.as_bytes()[2] == b':' && clock.as_bytes()[5] == b':',
        "{datagram:?}"
    );
    let prefix = format!("{ident}[{pid}]: ");
    let text = rest
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("not from {prefix:?}: {datagram:?}"));
    (pri & 7, text)
}

#[test]
fn a_detached_plug_sends_real_syslog_datagrams_proc_5() {
    if !private_dev("reading plug's syslog datagrams") {
        return;
    }
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        let dev = TempDir::new("dev");
        let mut syslog = SyslogReceiver::bind(&dev);
        let files = TempDir::new("syslog");
        let pidfile = files.path("plug.pid");
        let dead = dead_addr();
        let launch = private_dev_launch(&dev.0);
        let (program, leading) = launch.via.unwrap();
        let port = free_port();
        let pid = start_detached(
            Command::new(program)
                .args(leading)
                .arg(&bin.path)
                .args(["-l", "-P", pidfile.to_str().unwrap(), "-i", "127.0.0.1"])
                .arg(port.to_string())
                .args([dead.to_string(), backend.dest()]),
            &pidfile,
        );
        let tag = format!("(127.0.0.1 {port})");
        let started = syslog.expect(|d| d.ends_with("Plugdaemon started."));
        let (severity, text) = parse_datagram(&started, bin.name, pid);
        assert_eq!(
            (severity, text),
            (5, format!("{tag}: Plugdaemon started.").as_str())
        );
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        assert_eq!(exchange(connect(addr), b"sys".to_vec()), b"sys");
        // The client failed over past the dead destination: the operator is told
        // which destination, for whom, why, and that it is down.
        for want in [
            format!("destination {dead} failed for 127.0.0.1: "),
            format!("destination {dead} down: "),
            format!("{tag}: Connect from 127.0.0.1 to {}", backend.dest()),
            format!("{tag}: Complete."),
        ] {
            let d = syslog.expect(|d| d.contains(&want));
            let (severity, text) = parse_datagram(&d, bin.name, pid);
            assert_eq!(severity, 5, "notice: {d:?}");
            assert!(text.starts_with(&want), "{d:?}");
        }
        // OPT-6: detached, the SIGUSR1 dump goes to syslog too. The Complete
        // line is written before the connection's counts are handed over, so
        // the dump is asked for again until it shows the connection closed.
        let want = format!(
            "destination {} healthy open 0 total 1 in 3 out 3",
            backend.dest()
        );
        let summary = "summary open 0 accepted 1 refused 0 failed 0";
        let mut dumped = None;
        for _ in 0..50 {
            send_signal(pid, libc::SIGUSR1);
            let within = std::time::Duration::from_millis(500);
            dumped = syslog.wait_for(within, |d| d.ends_with(summary));
            if dumped.is_some() {
                break;
            }
        }
        let d = dumped.unwrap_or_else(|| panic!("no dump says {summary:?}: {:?}", syslog.seen));
        assert_eq!(parse_datagram(&d, bin.name, pid).1, summary);
        let d = syslog.expect(|d| d.contains(&want));
        assert!(
            parse_datagram(&d, bin.name, pid).1.starts_with(&want),
            "{d:?}"
        );
        stop_daemon(pid);
    });
}

#[test]
fn with_l_in_the_foreground_lines_go_to_syslog_or_else_stderr_proc_5() {
    if !private_dev("giving plug a private /dev/log") {
        return;
    }
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        // A /dev/log that listens: the lines go there, not to stderr.
        let dev = TempDir::new("dev");
        let mut syslog = SyslogReceiver::bind(&dev);
        let plug = Plug::start_quiet_with(
            bin,
            &private_dev_launch(&dev.0),
            &["-n", "-l", "{port}", &backend.dest()],
        );
        assert_eq!(exchange(connect(plug.addr()), b"a".to_vec()), b"a");
        let complete = format!("({}): Complete.", plug.port);
        syslog.expect(|d| d.ends_with(&complete));
        assert!(
            !plug.stderr.all().iter().any(|l| l.contains("Complete")),
            "syslog took the line: {:?}",
            plug.stderr.all()
        );
        drop(plug);
        // No /dev/log at all (a container): the lines reach stderr instead.
        let bare = TempDir::new("dev-bare");
        let plug = Plug::start_quiet_with(
            bin,
            &private_dev_launch(&bare.0),
            &["-n", "-l", "{port}", &backend.dest()],
        );
        let started = format!("{}: ({}): Plugdaemon started.", bin.name, plug.port);
        plug.stderr.expect(|l| l == started);
        assert_eq!(exchange(connect(plug.addr()), b"b".to_vec()), b"b");
        let complete = format!("{}: ({}): Complete.", bin.name, plug.port);
        plug.stderr.expect(|l| l == complete);
    });
}

#[test]
fn destination_failures_and_health_changes_at_the_normal_level_proc_5_conn_3() {
    each_binary(|bin| {
        let live = Backend::start(Behaviour::Tagged("live".into()));
        let dead = dead_addr();
        // No -d: what an operator running `plug -n` sees.
        let plug = Plug::start_quiet(
            bin,
            &[
                "-n",
                "-o",
                "-r",
                "1",
                "{port}",
                &dead.to_string(),
                &live.dest(),
            ],
        );
        assert_eq!(which(plug.addr()), "live");
        let failed = plug
            .stderr
            .expect(|l| l.contains(&format!("destination {dead} failed for 127.0.0.1: ")));
        assert!(failed.starts_with(&format!("{}: ", bin.name)), "{failed}");
        let down = plug
            .stderr
            .expect(|l| l.contains(&format!("destination {dead} down: ")));
        assert!(down.contains("refused"), "the reason: {down}");
        // It comes back: once -r lets it be tried, a client reaches it, and the
        // log says it is up.
        let back = Backend::start_on(&dead.to_string(), Behaviour::Tagged("back".into()));
        let deadline = Instant::now() + DEADLINE;
        while which(plug.addr()) != "back" {
            assert!(Instant::now() < deadline, "{:?}", plug.stderr.all());
            std::thread::sleep(Duration::from_millis(100));
        }
        plug.stderr
            .expect(|l| l.ends_with(&format!("destination {dead} up")));
        let lines = plug.stderr.all();
        let changes = lines
            .iter()
            .filter(|l| l.contains(" down: ") || l.ends_with(" up"));
        assert_eq!(changes.count(), 2, "one line per change: {lines:?}");
        assert!(
            !lines.iter().any(|l| l.contains("#1") || l.contains("#2")),
            "destinations are named by address: {lines:?}"
        );
        drop(back);
    });
}

#[test]
fn a_refusal_flood_is_rate_limited_and_counted_fault_4() {
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        let plug = Plug::start(bin, &["-l", "-a", "127.0.0.2", "{port}", &backend.dest()]);
        let clients = 60;
        let flood = Instant::now();
        for _ in 0..clients {
            let mut s = connect(plug.addr());
            assert!(closed_without_data(&mut s));
        }
        // At most 10 a second are shown: over however long the flood took (a
        // loaded machine makes it longer, and lets more through).
        let seconds = flood.elapsed().as_secs() as usize + 1;
        let allowed = 10 * (seconds + 1);
        // The count of what was held back comes on its own, a second later,
        // without another client to trigger it.
        plug.stderr
            .expect(|l| l.ends_with("similar messages suppressed"));
        let tally = || {
            let lines = plug.stderr.all();
            let shown = lines.iter().filter(|l| l.ends_with("Refused.")).count();
            let held: usize = lines
                .iter()
                .filter(|l| l.ends_with("similar messages suppressed"))
                .filter_map(|l| {
                    l.rsplit(": ")
                        .next()?
                        .split(' ')
                        .next()?
                        .parse::<usize>()
                        .ok()
                })
                .sum();
            (shown, held)
        };
        assert!(
            eventually(|| {
                let (shown, held) = tally();
                shown + held == clients
            }),
            "every refusal is shown or counted: {:?}",
            tally()
        );
        let (shown, _) = tally();
        assert!(
            shown <= allowed.min(clients - 1),
            "not rate-limited: {shown} of {clients} in {seconds} s"
        );
        // Serving goes on: an allowed client is relayed.
        let s = connect_from("127.0.0.2", plug.addr());
        assert_eq!(exchange(s, b"served".to_vec()), b"served");
    });
}

#[test]
fn dd_shows_more_than_d_cli_2() {
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        let run = |flags: &str| {
            let plug = Plug::start(bin, &[flags, "{port}", &backend.dest()]);
            assert_eq!(exchange(connect(plug.addr()), b"12345".to_vec()), b"12345");
            let complete = format!("({}): Complete.", plug.port);
            plug.stderr.expect(|l| l.ends_with(&complete));
            plug.stderr.all()
        };
        // Plug::start adds one -d of its own.
        let d = run("-n");
        let dd = run("-d");
        let detail = |lines: &[String]| {
            (
                lines.iter().any(|l| l.contains(": config: listen ")),
                lines.iter().any(|l| l.contains(": accepted 127.0.0.1:")),
                lines
                    .iter()
                    .any(|l| l.ends_with(": 5 bytes from the client")),
                lines
                    .iter()
                    .any(|l| l.contains("end of stream from the destination")),
            )
        };
        assert_eq!(detail(&d), (false, false, false, false), "{d:?}");
        assert_eq!(detail(&dd), (true, true, true, true), "{dd:?}");
        assert!(dd.len() > d.len() + 4);
    });
}

#[test]
fn a_detached_plug_with_no_syslog_says_so_before_it_detaches() {
    if !private_dev("giving plug a /dev with and without a log socket") {
        return;
    }
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        for with_syslog in [false, true] {
            let dev = TempDir::new("dev");
            let _syslog = with_syslog.then(|| SyslogReceiver::bind(&dev));
            let files = TempDir::new("unlogged");
            let pidfile = files.path("plug.pid");
            let (program, leading) = private_dev_launch(&dev.0).via.unwrap();
            let port = free_port().to_string();
            let out = Command::new(program)
                .args(leading)
                .arg(&bin.path)
                .args(["-P", pidfile.to_str().unwrap(), "-i", "127.0.0.1", &port])
                .arg(backend.dest())
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(0), "{err}");
            stop_daemon(read_pid(&pidfile));
            let warned = err.contains("no syslog at /dev/log");
            assert_eq!(
                warned, !with_syslog,
                "syslog reachable: {with_syslog}: {err}"
            );
        }
    });
}
