//! plug-bench: measures what it costs to put a forwarder in the path, on loopback.
//!
//! ```sh
//! cargo build --release --workspace
//! cargo run --release -p plug-tests --bin plug-bench -- [--quick] [--rounds N] [--mode bulk|crr|rr|idle]... [--only a,b] [--with NAME=PATH]...
//! ```
//!
//! `--with NAME=PATH` adds another plug binary as a candidate, e.g. a build of an
//! earlier commit, so before and after are measured in the same run. Words after
//! the path are extra options for it:
//! `--with "std-ops=target/release/plug-std --metrics 127.0.0.1:19990 --health-check 1"`.
//!
//! Candidates: direct (no forwarder), plug-std, plug-smol, plug-async-std, and, when
//! installed, haproxy (tcp mode, splice) and pen as references. Candidates are
//! interleaved round by round (A B C A B C …) and medians reported, so a noisy
//! machine does not decide the result. Modes:
//! - bulk: 1 and 4 streams, upload and download; GB/s and CPU-seconds per GB of
//!   the forwarder process;
//! - crr: 16 workers doing connect / 64-byte echo / close; connections/s, p50/p99,
//!   and the forwarder's CPU per connection;
//! - rr: one connection, 1-byte ping-pong; round trips/s, p50/p99/p999, and the
//!   forwarder's CPU per round trip;
//! - idle: many open relayed connections; forwarder RSS and kernel memory per
//!   connection, from /proc.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use plug_tests::{cpu_ticks, free_port, rss_kib, RedisServer, TempDir};

/// Clock ticks per second in /proc/PID/stat.
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Clone)]
enum Kind {
    Direct,
    /// A plug binary and extra options for it.
    Plug(PathBuf, Vec<String>),
    Haproxy(PathBuf),
    Pen(PathBuf),
}

#[derive(Clone)]
struct Candidate {
    name: String,
    kind: Kind,
    reference: bool,
}

/// A forwarder running in front of one backend.
struct Running {
    child: Option<Child>,
    addr: SocketAddr,
    _dir: Option<TempDir>,
}

impl Running {
    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn which(program: &str) -> Option<PathBuf> {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .ok()?;
    let path = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!path.is_empty()).then(|| PathBuf::from(path))
}

fn candidates() -> Vec<Candidate> {
    let mut all = vec![Candidate {
        name: "direct".into(),
        kind: Kind::Direct,
        reference: false,
    }];
    // The plug binaries sit beside this one (target/release).
    let dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    for name in ["plug-std", "plug-smol", "plug-async-std"] {
        let path = dir.join(name);
        assert!(
            path.exists(),
            "{} is missing: run `cargo build --release --workspace` first",
            path.display()
        );
        all.push(Candidate {
            name: name.into(),
            kind: Kind::Plug(path, Vec::new()),
            reference: false,
        });
    }
    if let Some(p) = which("haproxy") {
        all.push(Candidate {
            name: "haproxy".into(),
            kind: Kind::Haproxy(p),
            reference: true,
        });
    }
    if let Some(p) = which("pen") {
        all.push(Candidate {
            name: "pen".into(),
            kind: Kind::Pen(p),
            reference: true,
        });
    }
    all
}

fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
    panic!("nothing listens on {addr}");
}

fn start(c: &Candidate, backend: SocketAddr) -> Running {
    if let Kind::Direct = c.kind {
        return Running {
            child: None,
            addr: backend,
            _dir: None,
        };
    }
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let (mut command, dir) = match &c.kind {
        Kind::Direct => unreachable!(),
        Kind::Plug(path, extra) => {
            let mut cmd = Command::new(path);
            cmd.args(extra);
            cmd.args([
                "-n",
                "-i",
                "127.0.0.1",
                &port.to_string(),
                &backend.to_string(),
            ]);
            (cmd, None)
        }
        Kind::Haproxy(path) => {
            let dir = TempDir::new("bench-haproxy");
            let cfg = dir.path("haproxy.cfg");
            std::fs::write(
                &cfg,
                format!(
                    "global\n  maxconn 9400\n  maxpipes 256\ndefaults\n  mode tcp\n  timeout connect 10s\n  timeout client 1h\n  \
                     timeout server 1h\n  option splice-auto\n  option splice-request\n  option splice-response\n\
                     listen fwd\n  bind 127.0.0.1:{port}\n  server s1 {backend}\n"
                ),
            )
            .unwrap();
            let mut cmd = Command::new(path);
            cmd.arg("-db").arg("-f").arg(&cfg);
            (cmd, Some(dir))
        }
        Kind::Pen(path) => {
            let mut cmd = Command::new(path);
            cmd.args([
                "-f",
                "-r",
                "-c",
                "20000",
                "-x",
                "20000",
                &format!("127.0.0.1:{port}"),
                &backend.to_string(),
            ]);
            (cmd, None)
        }
    };
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(addr);
    Running {
        child: Some(child),
        addr,
        _dir: dir,
    }
}

/// What a backend does with each connection.
#[derive(Clone, Copy)]
enum Serve {
    /// Read and discard until EOF.
    Sink,
    /// Send this many bytes, then close.
    Source(u64),
    /// Echo until EOF.
    Echo,
}

/// A thread-per-connection loopback backend, stopped when dropped.
struct Backend {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Backend {
    fn start(serve: Serve) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let st = Arc::clone(&stop);
        thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let _ = thread::Builder::new().stack_size(64 * 1024).spawn(move || {
                    let mut buf = vec![0u8; 256 * 1024];
                    match serve {
                        Serve::Sink => while matches!(conn.read(&mut buf), Ok(n) if n > 0) {},
                        Serve::Source(mut left) => {
                            while left > 0 {
                                let n = left.min(buf.len() as u64) as usize;
                                if conn.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                                left -= n as u64;
                            }
                            let _ = conn.shutdown(Shutdown::Write);
                            let _ = conn.read(&mut buf[..1]);
                        }
                        Serve::Echo => {
                            let _ = conn.set_nodelay(true);
                            buf.truncate(4096);
                            while let Ok(n) = conn.read(&mut buf) {
                                if n == 0 || conn.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                });
            }
        });
        Backend { addr, stop }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn cpu_seconds(run: &Running) -> f64 {
    run.pid()
        .map_or(0.0, |p| cpu_ticks(p) as f64 / TICKS_PER_SECOND)
}

/// Bulk transfer: returns (GB/s, forwarder CPU-seconds per GB).
fn bulk(c: &Candidate, streams: usize, upload: bool, total: u64) -> (f64, f64) {
    let per = total / streams as u64;
    let backend = Backend::start(if upload {
        Serve::Sink
    } else {
        Serve::Source(per)
    });
    let run = start(c, backend.addr);
    let cpu0 = cpu_seconds(&run);
    let t0 = Instant::now();
    let workers: Vec<_> = (0..streams)
        .map(|_| {
            let addr = run.addr;
            thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                let mut buf = vec![b'x'; 256 * 1024];
                if upload {
                    let mut left = per;
                    while left > 0 {
                        let n = left.min(buf.len() as u64) as usize;
                        s.write_all(&buf[..n]).unwrap();
                        left -= n as u64;
                    }
                    s.shutdown(Shutdown::Write).unwrap();
                    let _ = s.read(&mut buf);
                } else {
                    let mut got = 0u64;
                    loop {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => got += n as u64,
                        }
                    }
                    assert_eq!(got, per, "short download");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let secs = t0.elapsed().as_secs_f64();
    let gb = (per * streams as u64) as f64 / 1e9;
    (gb / secs, (cpu_seconds(&run) - cpu0) / gb)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

/// Connect / 64-byte echo / close from 16 workers: (connections/s, p50 µs, p99 µs,
/// forwarder CPU-µs per connection).
fn crr(c: &Candidate, duration: Duration) -> (f64, f64, f64, f64) {
    let backend = Backend::start(Serve::Echo);
    let run = start(c, backend.addr);
    let lat = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (addr, lat, done) = (run.addr, Arc::clone(&lat), Arc::clone(&done));
            thread::spawn(move || {
                let mut mine = Vec::new();
                let mut buf = [7u8; 64];
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let Ok(mut s) = TcpStream::connect(addr) else {
                        continue;
                    };
                    let _ = s.set_nodelay(true);
                    if s.write_all(&buf).is_err() || s.read_exact(&mut buf).is_err() {
                        continue;
                    }
                    drop(s);
                    mine.push(t.elapsed());
                }
                done.fetch_add(mine.len() as u64, Ordering::SeqCst);
                lat.lock().unwrap().extend(mine);
            })
        })
        .collect();
    let t0 = Instant::now();
    let cpu0 = cpu_seconds(&run);
    for w in workers {
        w.join().unwrap();
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(&run) - cpu0;
    let mut lat = lat.lock().unwrap().clone();
    lat.sort_unstable();
    let n = done.load(Ordering::SeqCst) as f64;
    (
        n / secs,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        cpu * 1e6 / n.max(1.0),
    )
}

/// One-byte ping-pong on one connection: (round trips/s, p50, p99, p999 µs,
/// forwarder CPU-µs per round trip).
fn rr(c: &Candidate, duration: Duration) -> (f64, f64, f64, f64, f64) {
    let backend = Backend::start(Serve::Echo);
    let run = start(c, backend.addr);
    let mut s = TcpStream::connect(run.addr).unwrap();
    s.set_nodelay(true).unwrap();
    let mut byte = [1u8; 1];
    let mut lat = Vec::new();
    let cpu0 = cpu_seconds(&run);
    let t0 = Instant::now();
    while t0.elapsed() < duration {
        let t = Instant::now();
        s.write_all(&byte).unwrap();
        s.read_exact(&mut byte).unwrap();
        lat.push(t.elapsed());
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(&run) - cpu0;
    let n = lat.len() as f64;
    lat.sort_unstable();
    (
        n / secs,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        percentile(&lat, 0.999),
        cpu * 1e6 / n.max(1.0),
    )
}

/// A redis-server of the bench's own, and the redis-benchmark to drive it.
struct Redis {
    server: RedisServer,
    bench: PathBuf,
}

impl Redis {
    /// Starts redis-server on a free port; `None` (said loudly) when redis is
    /// not installed.
    fn start() -> Option<Redis> {
        let (Some(server), Some(bench)) = (which("redis-server"), which("redis-benchmark")) else {
            eprintln!(
                "!!! SKIPPED: redis mode: redis-server or redis-benchmark is not installed \
                 (apt-get install redis-server redis-tools) !!!"
            );
            return None;
        };
        Some(Redis {
            server: RedisServer::start(&server),
            bench,
        })
    }
}

/// redis-benchmark through the candidate (20 clients, SET and GET, `n` each):
/// (requests/s, forwarder CPU-µs per request).
fn redis(c: &Candidate, redis: &Redis, n: u64) -> (f64, f64) {
    let run = start(c, redis.server.addr);
    let cpu0 = cpu_seconds(&run);
    let t0 = Instant::now();
    let out = Command::new(&redis.bench)
        .args(["-h", "127.0.0.1", "-p", &run.addr.port().to_string()])
        .args([
            "-c",
            "20",
            "-n",
            &n.to_string(),
            "-t",
            "set,get",
            "-q",
            "--csv",
        ])
        .output();
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(&run) - cpu0;
    match out {
        Ok(o) if o.status.success() => {
            let requests = 2.0 * n as f64;
            (requests / secs, cpu * 1e6 / requests)
        }
        _ => {
            eprintln!("{}: redis-benchmark failed", c.name);
            (f64::NAN, f64::NAN)
        }
    }
}

/// Kernel memory in KiB: slab, kernel stacks, page tables and TCP socket buffers.
fn kernel_kib() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| -> u64 {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    let tcp_pages: u64 = sockstat
        .lines()
        .find(|l| l.starts_with("TCP:"))
        .and_then(|l| {
            l.split_whitespace()
                .skip_while(|w| *w != "mem")
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    field("Slab:") + field("KernelStack:") + field("PageTables:") + tcp_pages * 4
}

/// `n` open relayed connections: (forwarder RSS bytes per connection, kernel bytes
/// per connection including the client and backend sockets).
fn idle(c: &Candidate, n: usize) -> (f64, f64) {
    let backend = Backend::start(Serve::Echo);
    let run = start(c, backend.addr);
    let mut warm = TcpStream::connect(run.addr).unwrap();
    warm.write_all(b"w").unwrap();
    let mut b = [0u8; 1];
    warm.read_exact(&mut b).unwrap();
    drop(warm);
    thread::sleep(Duration::from_millis(300));
    let rss0 = run.pid().map_or(0, rss_kib);
    let k0 = kernel_kib();
    let mut conns = Vec::with_capacity(n);
    // A candidate that drops connections under this load gets no figure (NaN,
    // shown as "failed") rather than ending the whole run.
    for k in 0..n {
        let opened = TcpStream::connect(run.addr).and_then(|mut s| s.write_all(b"i").map(|()| s));
        match opened {
            Ok(s) => conns.push(s),
            Err(e) => {
                eprintln!("{}: connection {k} of the idle test failed: {e}", c.name);
                return (f64::NAN, f64::NAN);
            }
        }
    }
    for s in &mut conns {
        if s.read_exact(&mut b).is_err() {
            eprintln!("{}: a connection failed during the idle test", c.name);
            return (f64::NAN, f64::NAN);
        }
    }
    // Let the forwarders settle into idleness (plug-std hands buffers back after a
    // quiet second).
    thread::sleep(Duration::from_millis(1500));
    let rss = run.pid().map_or(0, rss_kib).saturating_sub(rss0);
    let kernel = kernel_kib().saturating_sub(k0);
    drop(conns);
    (
        rss as f64 * 1024.0 / n as f64,
        kernel as f64 * 1024.0 / n as f64,
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Results per (metric, candidate), one value per round.
type Table = BTreeMap<(String, String), Vec<f64>>;

fn record(t: &mut Table, metric: &str, cand: &str, v: f64) {
    t.entry((metric.to_string(), cand.to_string()))
        .or_default()
        .push(v);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let rounds: usize = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(if quick { 1 } else { 3 });
    let modes: Vec<&str> = args
        .windows(2)
        .filter(|w| w[0] == "--mode")
        .map(|w| w[1].as_str())
        .collect();
    let modes = if modes.is_empty() {
        vec!["bulk", "crr", "rr", "redis", "idle"]
    } else {
        modes
    };
    let redis_server = modes.contains(&"redis").then(Redis::start).flatten();
    let redis_n: u64 = if quick { 20_000 } else { 100_000 };
    let bulk_bytes: u64 = if quick { 512 << 20 } else { 2 << 30 };
    let timed = Duration::from_secs(if quick { 1 } else { 3 });
    let idle_n = if quick { 1000 } else { 9000 };
    let _ = Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            "--nofile=20000:20000",
        ])
        .status();

    // `--only a,b`: just these candidates (quicker experiments).
    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|l| l.split(',').map(str::to_string).collect());
    let mut all = candidates();
    for w in args.windows(2).filter(|w| w[0] == "--with") {
        let mut words = w[1].split_whitespace();
        if let Some((name, path)) = words.next().and_then(|w| w.split_once('=')) {
            let extra = words.map(str::to_string).collect();
            all.push(Candidate {
                name: name.to_string(),
                kind: Kind::Plug(PathBuf::from(path), extra),
                reference: false,
            });
        }
    }
    let cands: Vec<Candidate> = all
        .into_iter()
        .filter(|c| only.as_ref().is_none_or(|o| o.contains(&c.name)))
        .collect();
    eprintln!(
        "candidates: {}",
        cands
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut t = Table::new();
    let mut direct_kernel = 0.0;
    for round in 0..rounds {
        for c in &cands {
            eprintln!("round {} {}", round + 1, c.name);
            if modes.contains(&"bulk") {
                for (streams, up) in [(1, true), (1, false), (4, true), (4, false)] {
                    let (gbs, cpu) = bulk(c, streams, up, bulk_bytes);
                    let dir = if up { "up" } else { "down" };
                    record(&mut t, &format!("bulk {streams}x {dir} GB/s"), &c.name, gbs);
                    if !matches!(c.kind, Kind::Direct) {
                        record(
                            &mut t,
                            &format!("bulk {streams}x {dir} CPU-s/GB"),
                            &c.name,
                            cpu,
                        );
                    }
                }
            }
            if modes.contains(&"crr") {
                let (rate, p50, p99, cpu) = crr(c, timed);
                record(&mut t, "crr conn/s", &c.name, rate);
                record(&mut t, "crr p50 µs", &c.name, p50);
                record(&mut t, "crr p99 µs", &c.name, p99);
                if !matches!(c.kind, Kind::Direct) {
                    record(&mut t, "crr CPU-µs/conn", &c.name, cpu);
                }
            }
            if modes.contains(&"rr") {
                let (rate, p50, p99, p999, cpu) = rr(c, timed);
                if !matches!(c.kind, Kind::Direct) {
                    record(&mut t, "rr CPU-µs/round trip", &c.name, cpu);
                }
                record(&mut t, "rr round trips/s", &c.name, rate);
                record(&mut t, "rr p50 µs", &c.name, p50);
                record(&mut t, "rr p99 µs", &c.name, p99);
                record(&mut t, "rr p999 µs", &c.name, p999);
            }
            if let Some(server) = &redis_server {
                let (rate, cpu) = redis(c, server, redis_n);
                record(&mut t, "redis requests/s", &c.name, rate);
                if !matches!(c.kind, Kind::Direct) {
                    record(&mut t, "redis CPU-µs/request", &c.name, cpu);
                }
            }
            if modes.contains(&"idle") && round == 0 {
                let (user, kernel) = idle(c, idle_n);
                if matches!(c.kind, Kind::Direct) {
                    // The client and backend sockets: every candidate has them too.
                    direct_kernel = kernel;
                    record(
                        &mut t,
                        &format!("idle@{idle_n} kernel B/conn (endpoints)"),
                        &c.name,
                        kernel,
                    );
                } else {
                    record(&mut t, &format!("idle@{idle_n} user B/conn"), &c.name, user);
                    record(
                        &mut t,
                        &format!("idle@{idle_n} kernel extra B/conn"),
                        &c.name,
                        kernel - direct_kernel,
                    );
                }
            }
        }
    }
    print_table(&t, &cands);
}

fn print_table(t: &Table, cands: &[Candidate]) {
    let metrics: Vec<String> = {
        let mut m: Vec<String> = t.keys().map(|(metric, _)| metric.clone()).collect();
        m.dedup();
        m
    };
    let higher_better = |m: &str| m.ends_with("GB/s") || m.ends_with("/s") && !m.contains("CPU");
    println!(
        "| metric | {} |",
        cands
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|{}", "---|".repeat(cands.len()));
    for m in metrics {
        let med = |name: &str| {
            t.get(&(m.clone(), name.to_string()))
                .map(|v| median(v.clone()))
        };
        let direct = med("direct");
        let best_ref = cands
            .iter()
            .filter(|c| c.reference)
            .filter_map(|c| med(&c.name))
            .reduce(|a, b| {
                if higher_better(&m) {
                    a.max(b)
                } else {
                    a.min(b)
                }
            });
        let cells: Vec<String> = cands
            .iter()
            .map(|c| match med(&c.name) {
                None => "–".to_string(),
                Some(v) if v.is_nan() => "failed".to_string(),
                Some(v) => {
                    let mut cell = format!("{v:.3}");
                    if v >= 100.0 {
                        cell = format!("{v:.0}");
                    }
                    if let Some(d) = direct.filter(|d| *d > 0.0 && c.name != "direct") {
                        cell.push_str(&format!(" ({:.2}×d", v / d));
                        match best_ref.filter(|r| *r > 0.0 && !c.reference) {
                            Some(r) => cell.push_str(&format!(", {:.2}×ref)", v / r)),
                            None => cell.push(')'),
                        }
                    }
                    cell
                }
            })
            .collect();
        println!("| {m} | {} |", cells.join(" | "));
    }
    println!("\n(×d: ratio to direct; ×ref: ratio to the best reference; medians of the rounds)");
}
