//! SPEC §3 CONN-9: forwarding through an upstream HTTP CONNECT proxy, against a
//! real tinyproxy and a scripted fake proxy for the edge cases.

use plug_tests::*;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// What the fake proxy does after reading a CONNECT request for a target.
#[derive(Clone)]
enum Reply {
    /// Write these bytes, then act as the tunnel: echo.
    Tunnel(&'static [u8]),
    /// Write these bytes, then close.
    Close(&'static [u8]),
    /// Write these bytes, then hold the connection open and say nothing more.
    Stall(&'static [u8]),
}

struct FakeProxy {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
}

impl FakeProxy {
    fn start(script: fn(&str) -> Reply) -> FakeProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(vec![]));
        let log = Arc::clone(&requests);
        thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let log = Arc::clone(&log);
                thread::spawn(move || serve_proxy(conn, script, &log));
            }
        });
        FakeProxy { addr, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// Reads a request head, up to its blank line, byte by byte (so nothing after it
/// is taken); None if the connection ends or fails first.
fn read_head(conn: &mut TcpStream) -> Option<String> {
    conn.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut head = vec![];
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 65536 {
        match restarting(|| conn.read(&mut byte)) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

fn serve_proxy(mut conn: TcpStream, script: fn(&str) -> Reply, log: &Mutex<Vec<String>>) {
    let Some(head) = read_head(&mut conn) else {
        return;
    };
    let target = head.split(' ').nth(1).unwrap_or("").to_string();
    log.lock().unwrap().push(head);
    match script(&target) {
        Reply::Tunnel(bytes) => {
            conn.write_all(bytes).unwrap();
            let mut buf = [0u8; 4096];
            loop {
                match restarting(|| conn.read(&mut buf)) {
                    Ok(0) | Err(_) => {
                        let _ = conn.shutdown(Shutdown::Write);
                        return;
                    }
                    Ok(n) => conn.write_all(&buf[..n]).unwrap(),
                }
            }
        }
        Reply::Close(bytes) => {
            let _ = conn.write_all(bytes);
        }
        Reply::Stall(bytes) => {
            let _ = conn.write_all(bytes);
            let _ = conn.read_to_end(&mut vec![]);
        }
    }
}

const OK: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";

#[test]
fn tunnel_bytes_in_the_same_segment_as_the_200_are_delivered_conn_9() {
    each_binary(|bin| {
        let proxy = FakeProxy::start(|_| {
            Reply::Tunnel(
                b"HTTP/1.1 200 Connection established\r\nVia: fake\r\n\r\nSSH-2.0-early\r\n",
            )
        });
        let dir = TempDir::new("proxy");
        let file = dir.path("s");
        let plug = Plug::start(
            bin,
            &[
                "-S",
                file.to_str().unwrap(),
                "-h",
                &proxy.addr.to_string(),
                "{port}",
                "backend.example:22",
            ],
        );
        let mut s = connect(plug.addr());
        assert_eq!(read_line(&mut s), "SSH-2.0-early\r");
        assert_eq!(exchange(s, b"ping".to_vec()), b"ping");
        assert_eq!(
            proxy.requests(),
            ["CONNECT backend.example:22 HTTP/1.1\r\nHost: backend.example:22\r\n\r\n"],
            "names go to the proxy verbatim, with a Host header (fix)"
        );
        assert!(eventually(
            || std::fs::read_to_string(&file).is_ok_and(|t| !t.is_empty())
        ));
        let line = std::fs::read_to_string(&file).unwrap();
        let fields: Vec<&str> = line.trim_end().split(' ').collect();
        // TO is the destination as given; OUT counts tunnel bytes only.
        assert_eq!(fields[5..8], ["backend.example:22", "4", "19"], "{line}");
    });
}

#[test]
fn http_1_0_and_other_2xx_open_the_tunnel_conn_9() {
    each_binary(|bin| {
        let proxy = FakeProxy::start(|t| {
            if t.starts_with("a.") {
                Reply::Tunnel(b"HTTP/1.0 200 OK\r\n\r\n")
            } else {
                Reply::Tunnel(b"HTTP/1.1 204 No Content\r\n\r\n")
            }
        });
        let plug = Plug::start(
            bin,
            &[
                "-h",
                &proxy.addr.to_string(),
                "{port}",
                "a.example:1",
                "b.example:2",
            ],
        );
        assert_eq!(exchange(connect(plug.addr()), b"one".to_vec()), b"one");
        assert_eq!(exchange(connect(plug.addr()), b"two".to_vec()), b"two");
    });
}

#[test]
fn a_407_fails_that_destination_and_the_next_serves_conn_3_conn_4() {
    each_binary(|bin| {
        let proxy = FakeProxy::start(|t| {
            if t.starts_with("a.") {
                Reply::Close(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n")
            } else {
                Reply::Tunnel(OK)
            }
        });
        let plug = Plug::start(
            bin,
            &[
                "-o",
                "-h",
                &proxy.addr.to_string(),
                "{port}",
                "a.example:1",
                "b.example:2",
            ],
        );
        assert_eq!(exchange(connect(plug.addr()), b"x".to_vec()), b"x");
        let line = plug
            .stderr
            .wait_for(|l| l.contains("a.example:1 failed"))
            .unwrap();
        assert!(
            line.contains("407") && line.contains("authentication"),
            "{line}"
        );
        // Marked unhealthy (fix): the next client goes straight to b.
        assert_eq!(exchange(connect(plug.addr()), b"y".to_vec()), b"y");
        let targets: Vec<String> = proxy
            .requests()
            .iter()
            .map(|r| r.split(' ').nth(1).unwrap().to_string())
            .collect();
        assert_eq!(targets, ["a.example:1", "b.example:2", "b.example:2"]);
    });
}

#[test]
fn garbage_truncated_and_endless_replies_fail_conn_9_opt_1() {
    each_binary(|bin| {
        for (target, words) in [
            ("garbage.example:1", "malformed proxy reply"),
            (
                "eof.example:1",
                "closed the connection before its reply ended",
            ),
            ("endless.example:1", "timed out"),
        ] {
            let proxy = FakeProxy::start(|t| match t.split('.').next().unwrap() {
                "garbage" => Reply::Close(b"SSH-2.0-OpenSSH_9.2\r\n\r\n"),
                "eof" => Reply::Close(b"HTTP/1.1 200 OK\r\nX-Half: "),
                _ => Reply::Stall(b"HTTP/1.1 200 OK\r\nX-Trickle: 1\r\n"),
            });
            let plug = Plug::start(
                bin,
                &[
                    "--connect-timeout",
                    "1",
                    "-h",
                    &proxy.addr.to_string(),
                    "{port}",
                    target,
                ],
            );
            let start = Instant::now();
            let mut s = connect(plug.addr());
            assert!(closed_without_data(&mut s), "{target}: client not closed");
            let line = plug.stderr.wait_for(|l| l.contains("failed for")).unwrap();
            assert!(line.contains(words), "{target}: {line}");
            if target.starts_with("endless") {
                let took = start.elapsed();
                assert!(
                    took >= Duration::from_millis(900) && took < Duration::from_secs(10),
                    "{took:?}"
                );
            }
        }
    });
}

struct Tinyproxy {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real tinyproxy, or `None` (said loudly) when it is not installed.
fn tinyproxy() -> Option<Tinyproxy> {
    tinyproxy_with("")
}

fn tinyproxy_with(extra: &str) -> Option<Tinyproxy> {
    let program = optional_program("tinyproxy", "tinyproxy")?;
    let dir = TempDir::new("tinyproxy");
    let port = free_port();
    let conf = dir.path("tinyproxy.conf");
    std::fs::write(
        &conf,
        format!("Port {port}\nListen 127.0.0.1\nTimeout 60\nAllow 127.0.0.1\nMaxClients 50\nLogLevel Info\n{extra}"),
    )
    .unwrap();
    let child = Command::new(program)
        .args(["-d", "-c", conf.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run tinyproxy");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(
        eventually(|| TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()),
        "tinyproxy did not start listening"
    );
    Some(Tinyproxy {
        child,
        port,
        _dir: dir,
    })
}

#[test]
fn through_a_real_tinyproxy_conn_9() {
    let Some(proxy) = tinyproxy() else { return };
    each_binary(|bin| {
        let banner = Backend::start(Behaviour::Tagged("hello from the destination".into()));
        let plug = Plug::start(
            bin,
            &[
                "-h",
                &format!("127.0.0.1:{}", proxy.port),
                "{port}",
                &banner.dest(),
            ],
        );
        let mut s = connect(plug.addr());
        assert_eq!(read_line(&mut s), "hello from the destination");
        // tinyproxy ends a tunnel on the first EOF, so no half-close here.
        let data = payload(1 << 20, 7);
        assert!(round_trip(&s, &data) == data);
        // A destination tinyproxy cannot reach fails, and the client is closed.
        let dead = Plug::start(
            bin,
            &[
                "-h",
                &format!("127.0.0.1:{}", proxy.port),
                "{port}",
                &dead_addr().to_string(),
            ],
        );
        let mut s = connect(dead.addr());
        assert!(closed_without_data(&mut s));
        dead.stderr.expect(|l| l.contains("proxy refused CONNECT"));
    });
}

#[test]
fn proxy_credentials_from_a_file_opt_5() {
    let Some(proxy) = tinyproxy_with("BasicAuth plugtest s3cret\n") else {
        return;
    };
    let dir = TempDir::new("auth");
    let good = dir.path("good");
    let bad = dir.path("bad");
    std::fs::write(&good, "plugtest:s3cret\n").unwrap();
    std::fs::write(&bad, "plugtest:wrong\n").unwrap();
    each_binary(|bin| {
        let banner = Backend::start(Behaviour::Tagged("authenticated".into()));
        let hop = format!("127.0.0.1:{}", proxy.port);
        let plug = Plug::start(
            bin,
            &[
                "-h",
                &hop,
                "--proxy-auth-file",
                good.to_str().unwrap(),
                "{port}",
                &banner.dest(),
            ],
        );
        let mut s = connect(plug.addr());
        assert_eq!(read_line(&mut s), "authenticated");
        let wrong = Plug::start(
            bin,
            &[
                "-h",
                &hop,
                "--proxy-auth-file",
                bad.to_str().unwrap(),
                "{port}",
                &banner.dest(),
            ],
        );
        let mut s = connect(wrong.addr());
        assert!(closed_without_data(&mut s));
        // tinyproxy answers a bad login with 401 (the fake proxy test covers 407).
        let line = wrong.stderr.wait_for(|l| l.contains("failed for")).unwrap();
        assert!(line.contains("authentication failed: 401"), "{line}");
        // The secret never appears in argv.
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", plug.pid())).unwrap();
        assert!(!String::from_utf8_lossy(&cmdline).contains("s3cret"));
    });
}

#[test]
fn sighup_rereads_the_proxy_credentials_proc_8_opt_5() {
    each_binary(|bin| {
        let proxy = FakeProxy::start(|_| Reply::Tunnel(OK));
        let dir = TempDir::new("reauth");
        let file = dir.path("auth");
        std::fs::write(&file, "alice:one\n").unwrap();
        let plug = Plug::start(
            bin,
            &[
                "-h",
                &proxy.addr.to_string(),
                "--proxy-auth-file",
                file.to_str().unwrap(),
                "{port}",
                "backend.example:22",
            ],
        );
        let login = |n: usize| {
            assert_eq!(exchange(connect(plug.addr()), b"x".to_vec()), b"x");
            let requests = proxy.requests();
            assert_eq!(requests.len(), n);
            requests[n - 1]
                .lines()
                .find_map(|l| l.strip_prefix("Proxy-Authorization: Basic "))
                .map(str::to_string)
        };
        assert_eq!(login(1).as_deref(), Some("YWxpY2U6b25l"), "alice:one");
        std::fs::write(&file, "bob:two\n").unwrap();
        plug.signal(libc::SIGHUP);
        let reloaded = format!(": reloaded: proxy credentials from {}", file.display());
        plug.stderr.expect(|l| l.ends_with(&reloaded));
        assert_eq!(login(2).as_deref(), Some("Ym9iOnR3bw=="), "bob:two");
        // An unreadable file keeps the credentials plug has, and says why.
        std::fs::remove_file(&file).unwrap();
        plug.signal(libc::SIGHUP);
        let why = plug
            .stderr
            .expect(|l| l.contains("keeping the previous proxy credentials"));
        assert!(why.contains(file.to_str().unwrap()), "{why}");
        assert_eq!(login(3).as_deref(), Some("Ym9iOnR3bw=="));
    });
}

#[test]
fn health_checks_go_through_the_proxy_opt_10_conn_9() {
    each_binary(|bin| {
        let proxy = FakeProxy::start(|t| {
            if t.starts_with("dead.") {
                Reply::Close(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
            } else {
                Reply::Close(OK)
            }
        });
        let plug = Plug::start(
            bin,
            &[
                "--health-check",
                "1",
                "-h",
                &proxy.addr.to_string(),
                "{port}",
                "dead.example:1",
                "live.example:2",
            ],
        );
        // Before any client: a CONNECT exchange per destination, and the refused
        // one is down with the proxy's reason.
        let down = plug
            .stderr
            .expect(|l| l.contains("destination dead.example:1 down: "));
        assert!(down.contains("502"), "{down}");
        assert!(eventually(|| proxy
            .requests()
            .iter()
            .any(|r| r.starts_with("CONNECT live.example:2 HTTP/1.1\r\n"))));
        assert!(!plug.stderr.all().iter().any(|l| l.contains("failed for")));
        assert!(!plug
            .stderr
            .all()
            .iter()
            .any(|l| l.contains("live.example:2 down")));
    });
}

/// The state (`S` sleeping, `T` stopped, ...) of each of `pid`'s threads named
/// `name`, from /proc.
fn thread_states(pid: u32, name: &str) -> Vec<char> {
    threads_named(pid, name)
        .iter()
        .filter_map(|task| {
            let stat = std::fs::read_to_string(task.join("stat")).ok()?;
            stat.rsplit_once(") ")?.1.chars().next()
        })
        .collect()
}

/// OPT-10 and FAULT-6: a health check waiting for the proxy's reply when plug is
/// stopped and continued (a debugger, `systemctl freeze` and `thaw`) still takes
/// the reply as its answer. The kernel fails such a read with EINTR on the
/// continue; taken for the destination's answer, it marked a healthy
/// destination down ("Interrupted system call").
#[test]
fn a_health_check_through_a_stop_and_continue_still_gets_its_answer_opt_10() {
    each_binary(|bin| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = listener.local_addr().unwrap();
        let (held, held_rx) = std::sync::mpsc::channel();
        let (go, go_rx) = std::sync::mpsc::channel::<()>();
        let (next, next_rx) = std::sync::mpsc::channel();
        // The first probe (before plug serves) is answered at once; the second
        // is held until the test has stopped and continued plug; the third says
        // that the round after the held probe came.
        thread::spawn(move || {
            for (k, conn) in listener.incoming().take(3).enumerate() {
                let Ok(mut conn) = conn else { return };
                if read_head(&mut conn).is_none() {
                    return;
                }
                match k {
                    0 => {}
                    1 => {
                        let _ = held.send(());
                        let _ = go_rx.recv_timeout(DEADLINE);
                    }
                    _ => {
                        let _ = next.send(());
                    }
                }
                let _ = conn.write_all(OK);
            }
        });
        let plug = Plug::start(
            bin,
            &[
                "--health-check",
                "1",
                "--connect-timeout",
                "20",
                "-h",
                &proxy.to_string(),
                "{port}",
                "live.example:2",
            ],
        );
        held_rx
            .recv_timeout(DEADLINE)
            .expect("no second health check");
        // The probe thread has sent its CONNECT; once it sleeps, it is in the read.
        let pid = plug.pid();
        assert!(
            eventually(|| thread_states(pid, "probe") == ['S']),
            "no probe waiting for its reply: {:?}",
            thread_states(pid, "probe")
        );
        plug.signal(libc::SIGSTOP);
        assert!(eventually(|| thread_states(pid, "probe") == ['T']));
        plug.signal(libc::SIGCONT);
        assert!(eventually(|| thread_states(pid, "probe")
            .first()
            .is_none_or(|s| *s != 'T')));
        go.send(()).unwrap();
        next_rx
            .recv_timeout(DEADLINE)
            .expect("no health check after the held one");
        // The next probe of a destination starts after the last one's result,
        // and the dump asked for now is written after anything that result said.
        plug.signal(libc::SIGUSR1);
        plug.stderr
            .expect(|l| l.contains("destination live.example:2 ") && l.contains(" open "));
        let said = plug.stderr.all();
        assert!(
            !said.iter().any(|l| l.contains("live.example:2 down")),
            "the stop and continue was taken for the destination's answer: {said:?}"
        );
    });
}
