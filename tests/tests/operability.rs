//! SPEC §7 OPT-9..12: metrics, active health checks, host names, stateless
//! sticky hashing, on every binary.

use plug_tests::*;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

/// Sends `request` to the metrics listener and returns the whole reply.
fn http(addr: SocketAddr, request: &str) -> String {
    let mut s = connect(addr);
    s.write_all(request.as_bytes()).unwrap();
    let mut reply = vec![];
    let _ = s.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).into_owned()
}

fn scrape(addr: SocketAddr) -> String {
    let reply = http(addr, "GET /metrics HTTP/1.1\r\nHost: plug\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(
        reply.contains("\r\nContent-Type: text/plain; version=0.0.4"),
        "{reply}"
    );
    reply.split_once("\r\n\r\n").unwrap().1.to_string()
}

/// A small parser of the text exposition: every sample, by its name with
/// labels as written (`plug_bytes_total{destination="…",direction="in"}`);
/// checks each family is declared before its samples.
fn samples(text: &str) -> BTreeMap<String, f64> {
    let mut declared = vec![];
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            declared.push(rest.split(' ').next().unwrap().to_string());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (name, value) = line.rsplit_once(' ').unwrap();
        let family = name.split('{').next().unwrap();
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| family.strip_suffix(s))
            .filter(|b| declared.iter().any(|d| d == b))
            .unwrap_or(family);
        assert!(declared.iter().any(|d| d == base), "{family} undeclared");
        out.insert(name.to_string(), value.parse::<f64>().unwrap());
    }
    out
}

/// Asks for SIGUSR1 dumps until the summary ends with `want` (the last
/// connection may still be closing when the first is taken); returns the last
/// summary, whatever it says, at the deadline.
fn summary_settles(plug: &Plug, want: &str) -> String {
    let deadline = Instant::now() + DEADLINE;
    let mut asked = plug
        .stderr
        .all()
        .iter()
        .filter(|l| l.contains("summary open"))
        .count();
    loop {
        plug.signal(libc::SIGUSR1);
        asked += 1;
        let summary = plug
            .stderr
            .wait_for_count(asked, |l| l.contains("summary open"))
            .pop()
            .unwrap_or_default();
        if summary.ends_with(want) || Instant::now() >= deadline {
            return summary;
        }
        // Paces the retries; the dump itself is the readiness signal.
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn metrics_agree_with_the_dump_and_the_session_lines_opt_9() {
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        let dead = dead_addr();
        let dir = TempDir::new("metrics");
        let sessions = dir.path("sessions");
        let mport = free_port();
        let metrics_at = format!("127.0.0.1:{mport}");
        let plug = Plug::start(
            bin,
            &[
                "--metrics",
                &metrics_at,
                "-a",
                "127.0.0.1",
                "-S",
                sessions.to_str().unwrap(),
                "{port}",
                &dead.to_string(),
                &backend.dest(),
            ],
        );
        let maddr: SocketAddr = metrics_at.parse().unwrap();
        for k in 0..3 {
            let data = payload(1000 * (k + 1), k as u64);
            assert_eq!(exchange(connect(plug.addr()), data.clone()), data);
        }
        let mut refused = connect_from("127.0.0.2", plug.addr());
        assert!(closed_without_data(&mut refused));
        assert!(eventually(
            || std::fs::read_to_string(&sessions).is_ok_and(|t| t.lines().count() == 3)
        ));
        let text = scrape(maddr);
        // Prometheus' own checker, lint included.
        if let Some(promtool) = optional_program("promtool", "prometheus") {
            assert_promtool_accepts(&promtool, &text);
        }
        let m = samples(&text);
        let get = |k: &str| {
            m.get(k)
                .copied()
                .unwrap_or_else(|| panic!("no {k} in\n{text}"))
        };
        let live = backend.dest();
        let d = |name: &str, dest: &str| format!("{name}{{destination=\"{dest}\"}}");
        let bytes =
            |dir: &str| format!("plug_bytes_total{{destination=\"{live}\",direction=\"{dir}\"}}");
        // The session lines' IN and OUT, summed.
        let lines = std::fs::read_to_string(&sessions).unwrap();
        let sum = |field: &str| -> f64 {
            lines
                .lines()
                .map(|l| session_fields(l)[field].parse::<f64>().unwrap())
                .sum()
        };
        assert_eq!(get(&bytes("in")), sum("in"));
        assert_eq!(get(&bytes("out")), sum("out"));
        assert_eq!(sum("in"), 6000.0);
        // The dump's numbers.
        let want = "summary open 0 accepted 3 refused 1 failed 0";
        let summary = summary_settles(&plug, want);
        assert!(summary.ends_with(want), "{summary}");
        assert_eq!(get("plug_connections_accepted_total"), 3.0);
        assert_eq!(get("plug_connections_refused_total{reason=\"rules\"}"), 1.0);
        assert_eq!(
            get("plug_connections_refused_total{reason=\"max_conns\"}"),
            0.0
        );
        assert_eq!(get("plug_connections_open"), 0.0);
        assert_eq!(get(&d("plug_destination_up", &live)), 1.0);
        assert_eq!(get(&d("plug_destination_up", &dead.to_string())), 0.0);
        assert_eq!(get(&d("plug_destination_connections_total", &live)), 3.0);
        assert_eq!(
            get(&d(
                "plug_destination_connect_failures_total",
                &dead.to_string()
            )),
            1.0
        );
        assert_eq!(get("plug_connection_duration_seconds_count"), 3.0);
        assert_eq!(
            get("plug_connection_duration_seconds_bucket{le=\"+Inf\"}"),
            3.0
        );
        let all = plug.stderr.all();
        let live_line = format!("destination {live} healthy open 0 total 3 in 6000 out 6000");
        assert!(all.iter().any(|l| l.ends_with(&live_line)), "{all:?}");
        // Other paths, methods and garbage.
        assert!(http(maddr, "GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        let post = http(maddr, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert!(
            post.starts_with("HTTP/1.1 405") && post.contains("Allow: GET"),
            "{post}"
        );
        assert!(http(maddr, "\x16\x03\x01\x02\r\n\r\n").starts_with("HTTP/1.1 400"));
        let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
        assert!(http(maddr, &huge).starts_with("HTTP/1.1 400"));
        // Scrapes are not connections.
        let summary = summary_settles(&plug, "accepted 3 refused 1 failed 0");
        assert!(
            summary.ends_with("accepted 3 refused 1 failed 0"),
            "{summary}"
        );
    });
}

/// Writes `input` to the child's stdin and waits for it.
#[test]
fn a_stalled_scrape_is_closed_after_ten_seconds_and_delays_nothing_opt_9() {
    // Every binary at once, so the suite waits the ten seconds only once.
    let backend = Backend::start(Behaviour::Echo);
    let mut running = vec![];
    for bin in binaries() {
        let mport = free_port();
        let at = format!("127.0.0.1:{mport}");
        let plug = Plug::start(&bin, &["--metrics", &at, "{port}", &backend.dest()]);
        let maddr: SocketAddr = at.parse().unwrap();
        // One says half a request and stops; one never reads its reply. plug
        // starts its 10 s after this instant: load can only make the close
        // later, never earlier.
        let since = Instant::now();
        let mut half = connect(maddr);
        half.write_all(b"GET /metr").unwrap();
        let mut deaf = connect(maddr);
        deaf.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        // Meanwhile relaying and other scrapes go on at once.
        assert_eq!(
            exchange(connect(plug.addr()), b"busy".to_vec()),
            b"busy",
            "[{}]",
            bin.label
        );
        scrape(maddr);
        running.push((bin, plug, half, since));
    }
    for (bin, _plug, mut half, since) in running {
        // Generous: the other binaries' set-up may take long on a loaded box.
        half.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut buf = [0u8; 64];
        let got = restarting(|| half.read(&mut buf));
        let waited = since.elapsed();
        assert!(
            matches!(got, Ok(0)) || got.is_err(),
            "[{}] a stalled scrape got {got:?}",
            bin.label
        );
        assert!(
            waited >= Duration::from_secs(10) && waited < Duration::from_secs(30),
            "[{}] closed after {waited:?}",
            bin.label
        );
    }
}

#[test]
fn health_checks_find_a_dead_destination_before_a_client_does_opt_10() {
    each_binary(|bin| {
        let live = Backend::start(Behaviour::Tagged("live".into()));
        let dead = dead_addr();
        let plug = Plug::start(
            bin,
            &[
                "-o",
                "--health-check",
                "1",
                "{port}",
                &dead.to_string(),
                &live.dest(),
            ],
        );
        // No client yet: the probe found it.
        let down = plug
            .stderr
            .expect(|l| l.contains(&format!("destination {dead} down: ")));
        assert!(down.contains("refused"), "{down}");
        assert!(
            eventually(|| !live.accepted().is_empty()),
            "the live destination is probed too"
        );
        // The first client goes straight to the live one: nobody paid.
        assert_eq!(which(plug.addr()), "live");
        assert!(!plug.stderr.all().iter().any(|l| l.contains("failed for")));
        // It comes back, and the probe says so without -r and without a client.
        let back = Backend::start_on(&dead.to_string(), Behaviour::Tagged("back".into()));
        plug.stderr
            .expect(|l| l.ends_with(&format!("destination {dead} up")));
        assert_eq!(
            which(plug.addr()),
            "back",
            "-o: the first healthy one again"
        );
        // Probes are never connections.
        let want = "summary open 0 accepted 2 refused 0 failed 0";
        let summary = summary_settles(&plug, want);
        assert!(summary.ends_with(want), "{summary}");
        assert!(
            eventually(|| back.accepted().len() >= 2),
            "probed, and one client"
        );
    });
}

#[test]
fn host_names_are_resolved_at_start_and_again_opt_11() {
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Tagged("by name".into()));
        let port = backend.addr.port();
        let dir = TempDir::new("resolve");
        let sessions = dir.path("sessions");
        let name = format!("localhost:{port}");
        let plug = Plug::start(
            bin,
            &[
                "--resolve",
                "60",
                "-S",
                sessions.to_str().unwrap(),
                "{port}",
                "plug-test-nowhere.invalid:80",
                &name,
            ],
        );
        // The unresolvable one is down, not fatal; the other was resolved at start.
        plug.stderr.expect(|l| {
            l.contains("destination plug-test-nowhere.invalid:80 down: cannot resolve")
        });
        plug.stderr
            .expect(|l| l.contains(&format!("destination {name} resolves to ")));
        for _ in 0..2 {
            assert_eq!(which(plug.addr()), "by name");
        }
        // Logs and session lines name the destination as given.
        assert!(eventually(
            || std::fs::read_to_string(&sessions).is_ok_and(|t| t.lines().count() == 2)
        ));
        let lines = std::fs::read_to_string(&sessions).unwrap();
        assert!(
            lines.lines().all(|l| session_fields(l)["to"] == name),
            "{lines}"
        );
    });
}

#[test]
fn a_name_that_moves_is_followed_every_secs_opt_11() {
    let dir = TempDir::new("hosts");
    let Some(launch) = hosts_launch(&dir, "127.0.0.1 backend.plug-test\n") else {
        return;
    };
    let hosts = dir.path("hosts");
    each_binary(|bin| {
        std::fs::write(&hosts, "127.0.0.1 backend.plug-test\n").unwrap();
        // A port of the suite's own, free on every address: one the kernel
        // picked for .1 could be held on .2 by another socket's ephemeral end.
        let port = free_port();
        let _first = Backend::start_on(
            &format!("127.0.0.1:{port}"),
            Behaviour::Tagged("first".into()),
        );
        let second = Backend::start_on(
            &format!("127.0.0.2:{port}"),
            Behaviour::Tagged("second".into()),
        );
        let dest = format!("backend.plug-test:{port}");
        let plug = Plug::start_with(bin, &launch, &["--resolve", "1", "{port}", &dest]);
        assert_eq!(which(plug.addr()), "first");
        // Rewritten in place: the bind mount shows the same file.
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&hosts)
            .unwrap()
            .write_all(b"127.0.0.2 backend.plug-test\n")
            .unwrap();
        plug.stderr
            .expect(|l| l.ends_with(&format!("destination {dest} resolves to 127.0.0.2")));
        assert_eq!(which(plug.addr()), "second");
        drop(second);
    });
}

#[test]
fn hashing_sends_a_client_to_the_same_destination_in_every_plug_opt_12() {
    each_binary(|bin| {
        // One is stopped and started again: addresses of this test's own, so no
        // other test's backend can take a freed port meanwhile.
        let backends: Vec<Backend> = (0..3)
            .map(|i| {
                Backend::start_on(&dead_addr().to_string(), Behaviour::Tagged(format!("b{i}")))
            })
            .collect();
        let dests: Vec<String> = backends.iter().map(Backend::dest).collect();
        let mut reversed = dests.clone();
        reversed.reverse();
        let args = |list: &[String]| {
            let mut a = vec![
                "-f".to_string(),
                "--hash".into(),
                "-r".into(),
                "1".into(),
                "{port}".into(),
            ];
            a.extend(list.iter().cloned());
            a
        };
        let one = args(&dests);
        let two = args(&reversed);
        let a = Plug::start(bin, &one.iter().map(String::as_str).collect::<Vec<_>>());
        let b = Plug::start(bin, &two.iter().map(String::as_str).collect::<Vec<_>>());
        let clients: Vec<String> = (2..26).map(|k| format!("127.0.0.{k}")).collect();
        let tag = |plug: &Plug, c: &str| {
            let mut s = connect_from(c, plug.addr());
            let t = read_line(&mut s);
            let _ = s.shutdown(std::net::Shutdown::Write);
            t
        };
        let on_a: Vec<String> = clients.iter().map(|c| tag(&a, c)).collect();
        let on_b: Vec<String> = clients.iter().map(|c| tag(&b, c)).collect();
        assert_eq!(
            on_a, on_b,
            "two plugs, list in another order, no shared state"
        );
        let used: std::collections::BTreeSet<&String> = on_a.iter().collect();
        assert!(
            used.len() >= 2,
            "24 clients all on one destination: {on_a:?}"
        );
        // The same again later: no table, nothing expires.
        assert_eq!(clients.iter().map(|c| tag(&a, c)).collect::<Vec<_>>(), on_a);
        // A destination goes away: only its clients move.
        let gone = on_a[0].clone();
        let k: usize = gone[1..].parse().unwrap();
        let addr = backends[k].addr;
        let mut backends = backends;
        drop(backends.remove(k));
        let during: Vec<String> = clients.iter().map(|c| tag(&a, c)).collect();
        for (before, now) in on_a.iter().zip(&during) {
            if *before == gone {
                assert_ne!(now, &gone);
            } else {
                assert_eq!(now, before, "a client of another destination moved");
            }
        }
        // It comes back: once -r lets it be tried, its clients return.
        let _back = Backend::start_on(&addr.to_string(), Behaviour::Tagged(gone.clone()));
        let deadline = Instant::now() + DEADLINE;
        while tag(&a, &clients[0]) != gone {
            assert!(Instant::now() < deadline, "{:?}", a.stderr.all());
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(clients.iter().map(|c| tag(&a, c)).collect::<Vec<_>>(), on_a);
    });
}

#[test]
fn new_options_are_validated_cli_7() {
    each_binary(|bin| {
        for (args, word) in [
            (&["--hash", "8080", "127.0.0.1:9"][..], "-f"),
            (&["--resolve", "0", "8080", "127.0.0.1:9"], "'0'"),
            (&["--health-check", "soon", "8080", "127.0.0.1:9"], "soon"),
            (
                &["--metrics", "127.0.0.1:", "8080", "127.0.0.1:9"],
                "127.0.0.1:",
            ),
            (
                &[
                    "--resolve",
                    "5",
                    "-h",
                    "127.0.0.1:3128",
                    "8080",
                    "x.example",
                ],
                "-h",
            ),
            (&["8080", "backend.example:80"], "--resolve"),
        ] {
            let out = Command::new(&bin.path).args(args).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(5), "{args:?}: {err}");
            assert!(
                err.lines().next().unwrap_or("").contains(word),
                "{args:?}: {err}"
            );
        }
        // A metrics port that is taken is fatal, on the terminal.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let at = taken.local_addr().unwrap().to_string();
        let (_, out) = run_on_free_port(bin, &["--metrics", &at, "{port}", "127.0.0.1:9"]);
        assert_eq!(out.status.code(), Some(4));
        assert!(String::from_utf8_lossy(&out.stderr).contains("--metrics"));
    });
}
