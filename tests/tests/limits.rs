//! SPEC §6 OPT-1..3: connect timeout, idle timeout, connection limits.

use plug_tests::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

/// Holds a connection open through plug: proves it was served, keeps it open.
fn held(addr: SocketAddr, from: &str) -> TcpStream {
    let mut s = connect_from(from, addr);
    s.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).unwrap();
    s
}

#[test]
fn max_conns_refuses_the_excess_and_recovers_opt_3() {
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        let plug = Plug::start(bin, &["--max-conns", "2", "{port}", &backend.dest()]);
        let first = held(plug.addr(), "127.0.0.1");
        let second = held(plug.addr(), "127.0.0.1");
        let mut third = connect(plug.addr());
        assert!(closed_without_data(&mut third), "a third client was served");
        let want = format!(
            "({}): Connect from 127.0.0.1 refused: 2 connections open (--max-conns)",
            plug.port
        );
        plug.stderr.expect(|l| l.ends_with(&want));
        assert_eq!(
            backend.accepted().len(),
            2,
            "the refused client reached no destination"
        );
        // The others are unaffected, and capacity returns when one closes.
        assert_eq!(exchange(second, b"still fine".to_vec()), b"still fine");
        assert!(eventually(|| {
            let mut s = connect(plug.addr());
            s.write_all(b"y").is_ok() && restarting(|| s.read(&mut [0u8; 1])).is_ok_and(|n| n == 1)
        }));
        drop(first);
    });
}

#[test]
fn max_conns_per_ip_limits_each_client_opt_3() {
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        let plug = Plug::start(bin, &["--max-conns-per-ip", "1", "{port}", &backend.dest()]);
        let _mine = held(plug.addr(), "127.0.0.2");
        let mut again = connect_from("127.0.0.2", plug.addr());
        assert!(closed_without_data(&mut again));
        assert!(plug
            .stderr
            .wait_for(|l| l.contains("(--max-conns-per-ip)"))
            .is_some());
        let _other = held(plug.addr(), "127.0.0.3");
    });
}

#[test]
fn connect_timeout_moves_on_from_a_blackhole_opt_1_conn_4() {
    each_binary(|bin| {
        let blackhole = Blackhole::on("127.0.0.1:0");
        let hole = blackhole.addr;
        let b = Backend::start(Behaviour::Tagged("B".into()));
        let plug = Plug::start(
            bin,
            &[
                "-o",
                "--connect-timeout",
                "1",
                "{port}",
                &hole.to_string(),
                &b.dest(),
            ],
        );
        let start = Instant::now();
        assert_eq!(which(plug.addr()), "B", "plug said {:?}", plug.stderr.all());
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(5),
            "{took:?}"
        );
        let failed = format!("destination {hole} failed for 127.0.0.1: timed out after 1s");
        plug.stderr.expect(|l| l.contains(&failed));
        // Marked unhealthy: the next client goes straight to B. Had plug dialed
        // the hole first, it would have said so again before moving on, and the
        // dump asked for afterwards comes after anything it said for that client
        // (no clock: a loaded machine may take a second over a good connect).
        assert_eq!(which(plug.addr()), "B");
        plug.signal(libc::SIGUSR1);
        plug.stderr
            .expect(|l| l.contains(&format!("destination {hole} unhealthy ")));
        let said = plug.stderr.all();
        let dialed = said.iter().filter(|l| l.contains(&failed)).count();
        assert_eq!(dialed, 1, "the hole was dialed again: {said:?}");
    });
}

#[test]
fn idle_connections_close_and_trickling_ones_live_opt_2() {
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        let plug = Plug::start(
            bin,
            &["-l", "--idle-timeout", "2", "{port}", &backend.dest()],
        );
        // The idle connection's last activity comes after this instant, so it
        // may close no sooner than 2 s after it; load only makes that later.
        // The trickle's 300 ms pace leaves 1.7 s for a stalled test thread.
        let start = Instant::now();
        let mut idle = held(plug.addr(), "127.0.0.1");
        let mut trickle = held(plug.addr(), "127.0.0.1");
        // Keep one busy with a byte every 300 ms while the other stays quiet,
        // until the quiet one is closed, and a little longer.
        let mut idle_closed_at = None;
        let mut rounds_after = 0;
        idle.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        while start.elapsed() < DEADLINE && rounds_after < 4 {
            trickle.write_all(b"t").unwrap();
            let mut b = [0u8; 1];
            trickle.read_exact(&mut b).unwrap();
            if idle_closed_at.is_none() {
                // A read a stop signal interrupted is one that saw nothing: a
                // restart would wait its whole timeout again, starving the trickle.
                match idle.read(&mut b) {
                    Ok(0) => idle_closed_at = Some(start.elapsed()),
                    Err(e)
                        if !matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock
                                | std::io::ErrorKind::TimedOut
                                | std::io::ErrorKind::Interrupted
                        ) =>
                    {
                        idle_closed_at = Some(start.elapsed())
                    }
                    _ => {}
                }
            } else {
                rounds_after += 1;
                thread::sleep(Duration::from_millis(300));
            }
        }
        let at = idle_closed_at.expect("the idle connection was not closed");
        assert!(at >= Duration::from_secs(2), "closed after {at:?}");
        assert_eq!(exchange(trickle, b"alive".to_vec()), b"alive");
        let status = format!("({}): Complete, status=3.", plug.port);
        assert!(plug.stderr.wait_for(|l| l.ends_with(&status)).is_some());
    });
}

#[test]
fn no_busy_loop_while_out_of_descriptors_spec_5() {
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        let plug = Plug::start_limited(
            bin,
            Some(32),
            &[
                "--max-conns",
                "1000",
                "-i",
                "127.0.0.1",
                "{port}",
                &backend.dest(),
            ],
        );
        // Hold more clients than 32 descriptors allow, and keep holding them.
        let clients: Vec<TcpStream> = (0..40).map(|_| connect(plug.addr())).collect();
        assert!(plug
            .stderr
            .wait_for(|l| l.contains("out of file descriptors"))
            .is_some());
        // Observe the exhausted daemon for two seconds: a spinning accept loop would
        // burn about 200 ticks; pausing between tries costs almost nothing.
        let before = cpu_ticks(plug.pid());
        thread::sleep(Duration::from_secs(2));
        let used = cpu_ticks(plug.pid()) - before;
        eprintln!(
            "[{}] CPU while out of descriptors: {used} ticks in 2 s",
            bin.label
        );
        assert!(
            used < 40,
            "{used} ticks of CPU in 2 s while exhausted: a busy loop"
        );
        drop(clients);
    });
}

#[test]
fn a_slow_reader_keeps_memory_bounded_spec_5() {
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Flood);
        let plug = Plug::start(bin, &["{port}", &backend.dest()]);
        let mut s = connect(plug.addr());
        let mut buf = vec![0u8; 16 * 1024];
        s.read_exact(&mut buf).unwrap();
        let start_rss = rss_kib(plug.pid());
        // Read 16 KiB every 5 ms for two seconds while the destination pushes as
        // fast as it can: plug must hold back, not buffer.
        let start = Instant::now();
        let mut read = 0usize;
        while start.elapsed() < Duration::from_secs(2) {
            s.read_exact(&mut buf).unwrap();
            read += buf.len();
            thread::sleep(Duration::from_millis(5));
        }
        let grown = rss_kib(plug.pid()).saturating_sub(start_rss);
        eprintln!(
            "[{}] slow reader: read {} KiB, plug RSS grew {grown} KiB (at {} KiB)",
            bin.label,
            read / 1024,
            rss_kib(plug.pid())
        );
        assert!(
            grown < 4096,
            "plug's RSS grew {grown} KiB behind a slow reader"
        );
    });
}
