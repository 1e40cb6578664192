//! SPEC §3 CONN-1, CONN-6..8 and §5: accept rules, the relay, socket options, and
//! misbehaving peers.

use plug_tests::*;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::Duration;

#[test]
fn accept_rules_admit_and_refuse_conn_1() {
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        // 127.0.0.5/30 is masked to 127.0.0.4/30 (2.5.5 never matched it).
        let plug = Plug::start(
            bin,
            &[
                "-a",
                "127.0.0.2",
                "-a",
                "127.0.0.5/30",
                "{port}",
                &backend.dest(),
            ],
        );
        for ip in ["127.0.0.2", "127.0.0.6"] {
            let s = connect_from(ip, plug.addr());
            assert_eq!(exchange(s, b"ok".to_vec()), b"ok", "{ip} refused");
        }
        let before = backend.accepted().len();
        let mut s = connect_from("127.0.0.3", plug.addr());
        assert!(closed_without_data(&mut s), "127.0.0.3 admitted");
        assert_eq!(
            backend.accepted().len(),
            before,
            "a refused client never reaches a destination"
        );
    });
}

#[test]
fn large_random_payloads_both_ways_conn_6() {
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        let plug = Plug::start(bin, &["{port}", &backend.dest()]);
        let addr = plug.addr();
        let workers: Vec<_> = (0..4u64)
            .map(|seed| {
                thread::spawn(move || {
                    let data = payload(8 << 20, seed);
                    let got = exchange(connect(addr), data.clone());
                    assert_eq!(got.len(), data.len());
                    assert!(got == data, "payload {seed} corrupted");
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
    });
}

#[test]
fn client_half_close_reaches_the_destination_and_replies_still_flow_conn_6() {
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::ReplyAfterEof(b"late reply".to_vec()));
        let plug = Plug::start(bin, &["{port}", &backend.dest()]);
        let mut s = connect(plug.addr());
        s.write_all(b"request").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut got = vec![];
        s.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"late reply");
        assert!(eventually(
            || backend.received() == vec![b"request".to_vec()]
        ));
    });
}

#[test]
fn destination_half_close_reaches_the_client_and_requests_still_flow_conn_6() {
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Send(b"banner".to_vec()));
        let plug = Plug::start(bin, &["{port}", &backend.dest()]);
        let mut s = connect(plug.addr());
        let mut got = vec![];
        s.read_to_end(&mut got).unwrap();
        assert_eq!(
            got, b"banner",
            "EOF from the destination reaches the client"
        );
        s.write_all(b"after the banner").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        assert!(eventually(
            || backend.received() == vec![b"after the banner".to_vec()]
        ));
    });
}

#[test]
fn two_hundred_concurrent_connections_conn_6() {
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        let plug = Plug::start(bin, &["{port}", &backend.dest()]);
        let addr = plug.addr();
        let clients: Vec<TcpStream> = (0..200).map(|_| connect(addr)).collect();
        // All 200 are open at once before any finishes.
        assert!(
            eventually(|| backend.open() == 200),
            "backend has {} open",
            backend.open()
        );
        let workers: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                thread::spawn(move || {
                    let data = payload(32 << 10, i as u64);
                    assert!(exchange(s, data.clone()) == data);
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
    });
}

#[test]
fn keepalive_with_k_conn_7() {
    each_binary(|bin| {
        for k in [true, false] {
            let backend = Backend::start(Behaviour::Echo);
            let mut args = vec![];
            if k {
                args.push("-k");
            }
            args.extend(["-i", "127.0.0.1", "{port}"]);
            let dest = backend.dest();
            args.push(&dest);
            let plug = Plug::start(bin, &args);
            let mut s = connect(plug.addr());
            s.write_all(b"x").unwrap();
            let mut b = [0u8; 1];
            s.read_exact(&mut b).unwrap();
            let client_port = s.local_addr().unwrap().port();
            let outgoing_port = backend.accepted()[0].port();
            let want = if k { 2 } else { 0 };
            // plug's accepted socket and its outgoing socket.
            assert_eq!(
                tcp_timer(plug.port, client_port),
                Some(want),
                "client side, -k {k}"
            );
            assert_eq!(
                tcp_timer(outgoing_port, backend.addr.port()),
                Some(want),
                "destination side, -k {k}"
            );
        }
    });
}

#[test]
fn p_binds_outgoing_connections_conn_8() {
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        let plug = Plug::start(bin, &["-p", "127.0.0.3", "{port}", &backend.dest()]);
        assert_eq!(exchange(connect(plug.addr()), b"x".to_vec()), b"x");
        assert_eq!(backend.accepted()[0].ip().to_string(), "127.0.0.3");
    });
}

#[test]
fn a_destination_reset_closes_the_client_promptly_conn_6() {
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Reset);
        let plug = Plug::start(bin, &["-l", "{port}", &backend.dest()]);
        let mut s = connect(plug.addr());
        s.write_all(b"trigger").unwrap();
        let mut buf = [0u8; 8];
        let r = restarting(|| s.read(&mut buf));
        assert!(matches!(r, Ok(0)) || r.is_err(), "{r:?}");
        let status = format!("({}): Complete, status=3.", plug.port);
        plug.stderr.expect(|l| l.ends_with(&status));
    });
}

#[test]
fn a_flood_of_resets_does_not_stop_service_spec_5() {
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        let mut plug = Plug::start(bin, &["{port}", &backend.dest()]);
        for _ in 0..300 {
            let s = connect(plug.addr());
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(s);
        }
        assert!(plug.running());
        assert_eq!(
            exchange(connect(plug.addr()), b"still here".to_vec()),
            b"still here"
        );
        // Every reset connection was cleaned up on the destination side too.
        assert!(
            eventually(|| backend.open() == 0),
            "{} destination sockets left open",
            backend.open()
        );
    });
}

#[test]
fn ipv6_listener_and_destination_cli_8() {
    each_binary(|bin| {
        let backend = Backend::start_on("[::1]:0", Behaviour::Echo);
        let plug = Plug::start(bin, &["-i", "::", "{port}", &backend.dest()]);
        let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, plug.port));
        assert_eq!(exchange(connect(v6), b"six".to_vec()), b"six");
        // Dual-stack: an IPv4 client on the same listener.
        assert_eq!(exchange(connect(plug.addr()), b"four".to_vec()), b"four");
    });
}

#[test]
fn running_out_of_descriptors_is_logged_and_survived_spec_5() {
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        let mut plug = Plug::start_limited(
            bin,
            Some(32),
            // Above what 32 descriptors allow, so accept really runs out.
            &[
                "-l",
                "--max-conns",
                "1000",
                "-i",
                "127.0.0.1",
                "{port}",
                &backend.dest(),
            ],
        );
        let fds = |pid: u32| {
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .map(|d| d.count())
                .unwrap_or(0)
        };
        // Warm up first: a runtime opens its reactor's descriptors lazily.
        assert_eq!(exchange(connect(plug.addr()), b"warm".to_vec()), b"warm");
        assert!(eventually(|| backend.open() == 0));
        let baseline = fds(plug.pid());
        // Each relayed connection takes two descriptors: 40 clients are too many.
        let clients: Vec<TcpStream> = (0..40).map(|_| connect(plug.addr())).collect();
        plug.stderr
            .expect(|l| l.contains("out of file descriptors"));
        assert!(plug.running(), "plug exited when accept failed (2.5.5 did)");
        drop(clients);
        // plug works through every queued client (each logs Complete, served or not)
        // and its descriptors come back; the listener stayed open.
        let done = plug.stderr.wait_for_count(41, |l| l.contains(": Complete"));
        assert_eq!(done.len(), 41, "{:?}", plug.stderr.all());
        // Pipes close with their connection: every descriptor comes back.
        let bound = baseline;
        assert!(
            eventually(|| fds(plug.pid()) <= bound),
            "{} descriptors open",
            fds(plug.pid())
        );
        assert!(eventually(|| backend.open() == 0));
        assert_eq!(exchange(connect(plug.addr()), b"back".to_vec()), b"back");
        let floods = plug
            .stderr
            .all()
            .iter()
            .filter(|l| l.contains("out of file descriptors"))
            .count();
        assert!(floods <= 3, "{floods} lines: the log is rate-limited");
    });
}

#[test]
fn bulk_bytes_move_by_splice_when_available() {
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        let plug = Plug::start(bin, &["{port}", &backend.dest()]);
        let data = payload(4 << 20, 11);
        assert!(exchange(connect(plug.addr()), data.clone()) == data);
        let closed = plug.stderr.wait_for(|l| l.contains(" closed: ")).unwrap();
        // A silent fallback to copying is the classic bug. The first reads are
        // copied until the flow shows it is bulk; after that the pipe carries it,
        // so nearly every byte of a 4 MiB transfer each way must be spliced.
        let field = |name: &str| -> usize {
            let at = closed.find(name).unwrap_or_else(|| panic!("{closed}")) + name.len();
            closed[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        assert_eq!(field(" in "), data.len(), "{closed}");
        assert_eq!(field(" out "), data.len(), "{closed}");
        let spliced = field("spliced ");
        assert!(
            spliced >= 2 * data.len() * 9 / 10,
            "only {spliced} of {} bytes spliced: {closed}",
            2 * data.len()
        );
    });
}
