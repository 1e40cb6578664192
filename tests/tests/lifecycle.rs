//! The process as a machine: how plug stops, drains, cuts and exits (PROC-3,
//! PROC-4, OPT-8, FAULT-7), and the start-up and background defects found with it
//! (FAULT-6, OPT-9, OPT-11). Each test fails on a plug that has the defect it
//! names.

use plug_tests::*;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};

/// A client with a round trip done through `plug`, left open.
fn open_transfer(plug: &Plug) -> TcpStream {
    let mut s = connect(plug.addr());
    s.write_all(b"hello").unwrap();
    let mut echo = [0u8; 5];
    s.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"hello");
    s
}

/// What OPT-8 asks of a connection cut short: a reset for the client, a session
/// line with its counts, and a `Complete, status=N` line with N non-zero.
fn expect_cut(plug: &Plug, client: &mut TcpStream) {
    let (rest, end) = read_until_end(client);
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(
        end,
        End::Reset,
        "a cut transfer must end with a reset, not as if it were complete"
    );
    let line = plug.stdout.expect(|l| l.contains(" 127.0.0.1 "));
    let fields = session_fields(&line);
    assert_eq!((fields["in"].as_str(), fields["out"].as_str()), ("5", "5"));
    let complete = plug.stderr.expect(|l| l.contains("Complete"));
    let status = complete
        .rsplit_once("status=")
        .map(|(_, n)| n.trim_end_matches('.').to_string());
    assert!(
        status.is_some_and(|n| n != "0"),
        "not a non-zero status: {complete}"
    );
}

#[test]
fn a_transfer_cut_by_the_drain_timeout_is_reset_and_recorded_opt_8() {
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        let mut plug = Plug::start(
            bin,
            &["-S", "-", "--drain-timeout", "1", "{port}", &backend.dest()],
        );
        let mut client = open_transfer(&plug);
        plug.signal(libc::SIGTERM);
        plug.stderr.expect(|l| l.contains("stopping"));
        expect_cut(&plug, &mut client);
        assert_eq!(plug.wait_exit().code(), Some(0));
    });
}

#[test]
fn a_transfer_cut_by_a_second_signal_is_reset_and_recorded_opt_8() {
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        let mut plug = Plug::start(bin, &["-S", "-", "{port}", &backend.dest()]);
        let mut client = open_transfer(&plug);
        plug.signal(libc::SIGTERM);
        plug.stderr.expect(|l| l.contains("stopping"));
        assert!(plug.running(), "an open connection keeps plug alive");
        plug.signal(libc::SIGINT);
        expect_cut(&plug, &mut client);
        assert_eq!(plug.wait_exit().code(), Some(0));
    });
}

/// True once plug's writer thread is blocked writing to a pipe.
fn writer_stuck(pid: u32) -> bool {
    threads_named(pid, "writer")
        .iter()
        .any(|t| std::fs::read_to_string(t.join("wchan")).is_ok_and(|w| w.contains("pipe_write")))
}

/// Starts `bin` with `args` and a pipe nobody reads as stdout (`stalled_stdout`)
/// or as stderr, the other one going to /dev/null; makes connections through it
/// until its writer thread is blocked on that pipe; checks that relaying goes
/// on (FAULT-4); then sends SIGTERM and expects it to exit 0 by the deadline.
fn exits_with_its_output_stalled(bin: &Binary, args: &[&str], stalled_stdout: bool) {
    let backend = Backend::start(Behaviour::Echo);
    let port = free_port();
    // Both piped: the stalled one is never read; stderr, when it is the
    // other, is read after exit for plug's last word.
    let (stdout, stderr) = (Stdio::piped(), Stdio::piped());
    let mut child = Command::new(&bin.path)
        .args(args)
        .args(["-i", "127.0.0.1", &port.to_string()])
        .arg(backend.dest())
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .unwrap();
    // One page: full after a few dozen lines.
    let shrunk = match (stalled_stdout, &child.stdout, &child.stderr) {
        (true, Some(pipe), _) => rustix::pipe::fcntl_setpipe_size(pipe, 4096),
        (false, _, Some(pipe)) => rustix::pipe::fcntl_setpipe_size(pipe, 4096),
        _ => unreachable!(),
    };
    shrunk.unwrap();
    // The other output is drained meanwhile, as a terminal or journal would.
    let other = match stalled_stdout {
        true => child.stderr.take().map(|mut e| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = e.read_to_string(&mut text);
                text
            })
        }),
        false => {
            let mut out = child.stdout.take().unwrap();
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut out, &mut std::io::sink());
            });
            None
        }
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(
        eventually(|| TcpStream::connect(addr).is_ok()),
        "{} did not start",
        bin.label
    );
    // Connections until the writer is stuck on the full pipe (bounded).
    let mut made = 0;
    while !writer_stuck(child.id()) {
        assert!(made < 5_000, "the writer never blocked");
        let mut s = connect(addr);
        s.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        let _ = restarting(|| s.read(&mut b));
        made += 1;
    }
    // FAULT-4: a log or session line that cannot be written never holds up
    // accepting or relaying.
    for _ in 0..20 {
        let mut s = connect(addr);
        s.write_all(b"relayed").unwrap();
        let mut echo = [0u8; 7];
        s.read_exact(&mut echo).unwrap();
        assert_eq!(
            &echo, b"relayed",
            "{args:?}: relaying stalled with the output"
        );
    }
    send_signal(child.id(), libc::SIGTERM);
    let Some(status) = wait_exit_within_deadline(&mut child) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{args:?}: still running after SIGTERM with its output stalled");
    };
    assert_eq!(status.code(), Some(0), "{args:?}");
    // FAULT-7: what could not be written is counted, and said where it can be.
    if let Some(stderr) = other {
        let said = stderr.join().unwrap();
        assert!(
            said.contains("log or session lines not written at exit"),
            "{args:?}: {said}"
        );
    }
}

#[test]
fn exit_and_relaying_are_not_held_by_a_stdout_nobody_reads_fault_4_fault_7() {
    each_binary(|bin| exits_with_its_output_stalled(bin, &["-S", "-"], true));
}

#[test]
fn exit_and_relaying_are_not_held_by_a_stderr_nobody_reads_fault_4_fault_7() {
    each_binary(|bin| exits_with_its_output_stalled(bin, &["-dd"], false));
}

#[test]
fn a_fatal_bind_error_leaves_no_pid_file_proc_3() {
    each_binary(|bin| {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port().to_string();
        let dir = TempDir::new("pid-fatal");
        let pidfile = dir.path("plug.pid");
        for foreground in [true, false] {
            let mut args = vec!["-P", pidfile.to_str().unwrap(), "-i", "127.0.0.1"];
            if foreground {
                args.push("-n");
            }
            args.extend([port.as_str(), "127.0.0.1:9"]);
            let out = Command::new(&bin.path)
                .args(&args)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(4));
            assert!(
                !pidfile.exists(),
                "a fatal error left the pid file behind (foreground: {foreground})"
            );
        }
    });
}

#[test]
fn a_failed_daemon_has_let_go_of_the_pid_file_when_its_parent_returns_proc_1_proc_6() {
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        let dir = TempDir::new("race");
        let pidfile = dir.path("plug.pid");
        let pid_arg = pidfile.to_str().unwrap().to_string();
        let port = free_port().to_string();
        for round in 0..5 {
            // Fails after detaching: the session file's directory does not exist.
            let out = Command::new(&bin.path)
                .args([
                    "-P",
                    &pid_arg,
                    "-S",
                    "/nonexistent-dir/s",
                    "-i",
                    "127.0.0.1",
                ])
                .args([port.as_str(), &backend.dest()])
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(4), "round {round}");
            // An immediate restart is not told `already running`.
            let mut good = Command::new(&bin.path);
            good.args(["-P", &pid_arg, "-i", "127.0.0.1", &port, &backend.dest()]);
            let pid = start_detached(&mut good, &pidfile);
            stop_daemon(pid);
        }
    });
}

/// Opens `n` connections to `addr` that send nothing.
fn idle_connections(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n).map(|_| connect(addr)).collect()
}

/// Scrapes `addr`: the whole reply, or what went wrong.
fn get_metrics(addr: SocketAddr) -> String {
    let mut s = connect(addr);
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: plug\r\n\r\n")
        .unwrap();
    let (reply, _) = read_until_end(&mut s);
    String::from_utf8_lossy(&reply).into_owned()
}

#[test]
fn scrapes_beyond_sixteen_are_closed_at_once_and_take_nothing_from_clients_fault_6() {
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let m = metrics.to_string();
        // 64 descriptors: without a budget of their own, 100 idle scrapes take
        // every one of them.
        let plug = Plug::start_limited(
            bin,
            Some(64),
            &[
                "--metrics",
                &m,
                "-i",
                "127.0.0.1",
                "{port}",
                &backend.dest(),
            ],
        );
        let held = idle_connections(metrics, 100);
        // Those past the sixteenth are closed at once, whatever they would send.
        let mut closed = 0;
        for mut s in held.into_iter().skip(16) {
            if closed_without_data(&mut s) {
                closed += 1;
            }
        }
        assert_eq!(
            closed, 84,
            "every scrape past the sixteenth is closed at once"
        );
        // Clients are served all the while.
        let mut client = open_transfer(&plug);
        client.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_until_end(&mut client), (vec![], End::Clean));
        let all = plug.stderr.all();
        assert!(
            !all.iter().any(|l| l.contains("Too many open files")),
            "{all:?}"
        );
    });
}

#[test]
fn freed_scrape_slots_are_used_again_fault_6() {
    each_binary(|bin| {
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let m = metrics.to_string();
        let _plug = Plug::start(bin, &["--metrics", &m, "{port}", "127.0.0.1:9"]);
        let held = idle_connections(metrics, 16);
        // The sixteen are served (nothing was refused): a seventeenth, even a
        // proper request, is closed without a reply.
        assert_eq!(get_metrics(metrics), "", "a seventeenth scrape was served");
        drop(held);
        assert!(
            eventually(|| get_metrics(metrics).starts_with("HTTP/1.1 200")),
            "slots freed by closed scrapes are not used again"
        );
    });
}

#[test]
fn a_400_for_an_oversized_request_reaches_the_client_opt_9() {
    each_binary(|bin| {
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let m = metrics.to_string();
        let _plug = Plug::start(bin, &["--metrics", &m, "{port}", "127.0.0.1:9"]);
        for _ in 0..3 {
            let mut s = connect(metrics);
            let head = format!(
                "GET /metrics HTTP/1.1\r\nX-Filler: {}\r\n\r\n",
                "a".repeat(30_000)
            );
            s.write_all(head.as_bytes()).unwrap();
            let (reply, end) = read_until_end(&mut s);
            let reply = String::from_utf8_lossy(&reply);
            assert!(
                reply.starts_with("HTTP/1.1 400") && end == End::Clean,
                "the 400 was lost (ended: {end:?}): {reply:?}"
            );
        }
    });
}

#[test]
fn a_destination_listed_twice_is_one_series_opt_9() {
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let m = metrics.to_string();
        let d = backend.dest();
        let plug = Plug::start(bin, &["--metrics", &m, "{port}", &d, &d]);
        for _ in 0..2 {
            let mut c = open_transfer(&plug);
            c.shutdown(Shutdown::Write).unwrap();
            read_until_end(&mut c);
        }
        assert!(eventually(|| get_metrics(metrics).contains(&format!(
            "plug_destination_connections_total{{destination=\"{d}\"}} 2"
        ))));
        let text = get_metrics(metrics);
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let mut series: Vec<&str> = body
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| l.rsplit_once(' ').map(|(k, _)| k))
            .collect();
        let n = series.len();
        series.sort_unstable();
        series.dedup();
        assert_eq!(
            series.len(),
            n,
            "duplicate series, which Prometheus rejects:\n{body}"
        );
    });
}

#[test]
fn sighup_with_a_fifo_for_the_credentials_never_blocks_fault_7() {
    if optional_program("mkfifo", "coreutils").is_none() {
        return;
    }
    each_binary(|bin| {
        let dir = TempDir::new("fifo");
        let creds = dir.path("creds");
        std::fs::write(&creds, "user:secret\n").unwrap();
        let c = creds.to_str().unwrap();
        let mut plug = Plug::start(
            bin,
            &[
                "-h",
                "127.0.0.1:9",
                "--proxy-auth-file",
                c,
                "{port}",
                "backend.plug-test:80",
            ],
        );
        std::fs::remove_file(&creds).unwrap();
        let made = Command::new("mkfifo").arg(&creds).status().unwrap();
        assert!(made.success());
        plug.signal(libc::SIGHUP);
        plug.stderr
            .expect(|l| l.contains("not a regular file") && l.contains("creds"));
        // Signals are still handled: the stop works.
        plug.signal(libc::SIGTERM);
        assert_eq!(plug.wait_exit().code(), Some(0));
    });
}

#[test]
fn an_ipv6_first_address_is_skipped_from_an_ipv4_p_opt_11_fault_6() {
    let dir = TempDir::new("dual");
    let Some(launch) = hosts_launch(&dir, "::1 dual.plug-test\n127.0.0.1 dual.plug-test\n") else {
        return;
    };
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        let dest = format!("dual.plug-test:{}", backend.addr.port());
        let plug = Plug::start_with(
            bin,
            &launch,
            &["--resolve", "60", "-p", "127.0.0.1", "{port}", &dest],
        );
        let mut client = open_transfer(&plug);
        client.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_until_end(&mut client), (vec![], End::Clean));
    });
}

#[test]
fn a_probe_plug_cannot_run_does_not_mark_the_destination_down_fault_6() {
    let dir = TempDir::new("v6only");
    let Some(launch) = hosts_launch(&dir, "::1 v6.plug-test\n") else {
        return;
    };
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        let dest = format!("v6.plug-test:{}", backend.addr.port());
        let plug = Plug::start_with(
            bin,
            &launch,
            &[
                "--resolve",
                "60",
                "--health-check",
                "1",
                "-p",
                "127.0.0.1",
                "{port}",
                &dest,
                &backend.dest(),
            ],
        );
        plug.stderr
            .expect(|l| l.contains(&format!("health check of {dest} could not run")));
        let all = plug.stderr.all();
        assert!(
            !all.iter().any(|l| l.contains(&format!("{dest} down"))),
            "marked down for plug's own failure: {all:?}"
        );
    });
}

#[test]
fn a_blackholed_first_address_does_not_fail_a_name_whose_second_answers_opt_10_opt_11() {
    let dir = TempDir::new("blackhole");
    let Some(launch) = hosts_launch(&dir, "127.0.0.2 bh.plug-test\n127.0.0.3 bh.plug-test\n")
    else {
        return;
    };
    each_binary(|bin| {
        // .2 and .3 sort as written (.1 would be put first, as the source's own
        // address): the blackhole is tried first.
        // A port of the suite's own: one the kernel picked for .3 could be held
        // on .2 by some other socket's ephemeral end (CI saw AddrInUse).
        let port = free_port();
        let _backend = Backend::start_on(&format!("127.0.0.3:{port}"), Behaviour::Echo);
        let _hole = Blackhole::on(&format!("127.0.0.2:{port}"));
        let dest = format!("bh.plug-test:{port}");
        // The first round of health checks runs before plug reports ready; each
        // address gets the whole --connect-timeout.
        let plug = Plug::start_with(
            bin,
            &launch,
            &[
                "--resolve",
                "60",
                "--health-check",
                "60",
                "--connect-timeout",
                "1",
                "{port}",
                &dest,
            ],
        );
        let order = format!("destination {dest} resolves to 127.0.0.2 127.0.0.3");
        plug.stderr.expect(|l| l.ends_with(&order));
        plug.signal(libc::SIGUSR1);
        let line = plug
            .stderr
            .expect(|l| l.contains(&format!("destination {dest} ")) && l.contains(" open "));
        assert!(line.contains(" healthy "), "{line}");
        let all = plug.stderr.all();
        assert!(
            !all.iter().any(|l| l.contains(&format!("{dest} down"))),
            "the probe gave up on the name at its first address: {all:?}"
        );
    });
}

#[test]
fn the_same_addresses_in_another_order_leave_a_dead_name_dead_opt_11() {
    let dir = TempDir::new("round-robin");
    let hosts = "127.0.0.2 rr.plug-test\n127.0.0.3 rr.plug-test\n127.0.0.1 moving.plug-test\n";
    let Some(launch) = hosts_launch(&dir, hosts) else {
        return;
    };
    each_binary(|bin| {
        std::fs::write(dir.path("hosts"), hosts).unwrap();
        let backend = Backend::start(Behaviour::Echo);
        let port = backend.addr.port();
        // Nothing listens on 127.0.0.2 or .3 at that port: rr is dead.
        let dead = format!("rr.plug-test:{port}");
        let moving = format!("moving.plug-test:{port}");
        let plug = Plug::start_with(
            bin,
            &launch,
            &[
                "--resolve",
                "1",
                "--health-check",
                "60",
                "{port}",
                &dead,
                &moving,
            ],
        );
        plug.stderr
            .expect(|l| l.contains(&format!("destination {dead} down")));
        // DNS round robin: rr's addresses the other way round; and a name that
        // really moves, looked up after rr in the same round, shows the round ran.
        let swapped =
            "127.0.0.3 rr.plug-test\n127.0.0.2 rr.plug-test\n127.0.0.4 moving.plug-test\n";
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(dir.path("hosts"))
            .unwrap()
            .write_all(swapped.as_bytes())
            .unwrap();
        plug.stderr
            .expect(|l| l.ends_with(&format!("destination {moving} resolves to 127.0.0.4")));
        plug.signal(libc::SIGUSR1);
        let line = plug
            .stderr
            .expect(|l| l.contains(&format!("destination {dead} ")) && l.contains(" open "));
        assert!(line.contains("unhealthy"), "{line}");
    });
}

/// Closes `s` with a reset (SO_LINGER 0).
fn reset(s: TcpStream) {
    let s = socket2::Socket::from(s);
    s.set_linger(Some(std::time::Duration::ZERO)).unwrap();
    drop(s);
}

#[test]
fn a_client_reset_while_dialing_ends_at_once_not_at_the_connect_timeout_fault_1() {
    each_binary(|bin| {
        let hole = format!("127.0.0.2:{}", free_port());
        let _hole = Blackhole::on(&hole);
        let plug = Plug::start(bin, &["-d", "--connect-timeout", "600", "{port}", &hole]);
        let client = connect(plug.addr());
        let local = client.local_addr().unwrap();
        // Dialing: its connect to the blackhole is under way.
        plug.stderr
            .expect(|l| l.ends_with(&format!("accepted {local}")));
        reset(client);
        // Within the harness deadline (20 s), not the 600 s connect timeout.
        plug.stderr.expect(|l| l.contains("Complete"));
    });
}

#[test]
fn a_client_reset_while_its_bytes_wait_for_a_stalled_destination_ends_at_once_fault_1() {
    each_binary(|bin| {
        // A destination that accepts and never reads.
        let stalled = TcpListener::bind("127.0.0.1:0").unwrap();
        let dest = stalled.local_addr().unwrap().to_string();
        let plug = Plug::start(bin, &["{port}", &dest]);
        let mut client = connect(plug.addr());
        let (_held, _) = stalled.accept().unwrap();
        // Fill everything on the way: the destination's window, plug's buffer or
        // pipe, and the client's own send buffer.
        client.set_nonblocking(true).unwrap();
        let chunk = vec![7u8; 64 * 1024];
        let mut blocked = 0;
        for _ in 0..100_000 {
            match client.write(&chunk) {
                Ok(_) => blocked = 0,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    // Full once writes keep failing across plug's own turns.
                    blocked += 1;
                    if blocked > 50 {
                        break;
                    }
                    std::thread::yield_now();
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(blocked > 50, "the way never filled up");
        reset(client);
        // plug reads nothing from the client now, so only a watch for errors sees
        // the reset: within the deadline, with no --idle-timeout to help.
        plug.stderr.expect(|l| l.contains("Complete"));
    });
}
