//! SPEC §5 and OPT-3 under load: many concurrent connections, many sequential
//! ones, and no growth in descriptors or memory.
//!
//! A light version runs in every CI run. The full soak (9,000 concurrent and
//! 100,000 sequential connections per binary) is a separate command:
//!
//! ```sh
//! cargo test --release --workspace -- --ignored soak --nocapture
//! ```

use plug_tests::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;

/// Lets this test process use its whole descriptor allowance: 9,000 clients and
/// 9,000 backend sockets need 18,000.
fn raise_own_fd_limit() {
    let pid = std::process::id().to_string();
    let _ = Command::new("prlimit")
        .args(["--pid", &pid, "--nofile=20000:20000"])
        .status();
}

/// Opens `n` relayed connections at once, checks they all work, closes them, and
/// checks plug gives every descriptor back. Returns plug's (fds, RSS KiB) while
/// they were open.
fn concurrent(plug: &Plug, backend: &Backend, n: usize) -> (usize, u64) {
    // Warm up first: an async runtime opens its reactor's descriptors lazily.
    assert_eq!(exchange(connect(plug.addr()), b"warm".to_vec()), b"warm");
    assert!(eventually(|| backend.open() == 0));
    let baseline = open_fds(plug.pid());
    let mut clients: Vec<TcpStream> = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = connect(plug.addr());
        s.write_all(&[i as u8]).unwrap();
        clients.push(s);
    }
    for (i, s) in clients.iter_mut().enumerate() {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        assert_eq!(b[0], i as u8);
    }
    assert!(
        eventually(|| backend.open() == n),
        "backend has {} of {n}",
        backend.open()
    );
    let held = (open_fds(plug.pid()), rss_kib(plug.pid()));
    drop(clients);
    assert!(eventually(|| backend.open() == 0));
    // Pipes close with their connection: every descriptor comes back.
    let bound = baseline;
    assert!(
        eventually(|| open_fds(plug.pid()) <= bound),
        "{} fds left, baseline {baseline}",
        open_fds(plug.pid())
    );
    held
}

/// Runs `n` short connections one after another; returns (fds, RSS KiB) before
/// and after, once plug has settled.
fn sequential(plug: &Plug, n: usize) -> ((usize, u64), (usize, u64)) {
    for _ in 0..200 {
        assert_eq!(exchange(connect(plug.addr()), b"warm".to_vec()), b"warm");
    }
    let before = (open_fds(plug.pid()), rss_kib(plug.pid()));
    for i in 0..n {
        let msg = format!("short {i}").into_bytes();
        assert_eq!(exchange(connect(plug.addr()), msg.clone()), msg);
    }
    assert!(
        eventually(|| open_fds(plug.pid()) <= before.0),
        "{} fds, before {}",
        open_fds(plug.pid()),
        before.0
    );
    (before, (open_fds(plug.pid()), rss_kib(plug.pid())))
}

fn run(concurrent_n: usize, sequential_n: usize) {
    raise_own_fd_limit();
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        let plug = Plug::start(bin, &["-i", "127.0.0.1", "{port}", &backend.dest()]);
        let start_rss = rss_kib(plug.pid());
        let (fds, rss) = concurrent(&plug, &backend, concurrent_n);
        let per_conn = rss.saturating_sub(start_rss) * 1024 / concurrent_n as u64;
        eprintln!(
            "[{}] {concurrent_n} concurrent: plug held {fds} fds, RSS {rss} KiB (+{per_conn} B per connection)",
            bin.label
        );
        let (before, after) = sequential(&plug, sequential_n);
        eprintln!(
            "[{}] {sequential_n} sequential: fds {} -> {}, RSS {} -> {} KiB",
            bin.label, before.0, after.0, before.1, after.1
        );
        assert!(after.0 <= before.0, "descriptors grew");
        assert!(
            after.1 <= before.1 + 8 * 1024,
            "RSS grew from {} to {} KiB",
            before.1,
            after.1
        );
    });
}

#[test]
fn light_load_500_concurrent_2000_sequential_spec_5() {
    run(500, 2_000);
}

#[test]
#[ignore = "the full soak: cargo test --release --workspace -- --ignored soak --nocapture"]
fn soak_9000_concurrent_100000_sequential_spec_5() {
    run(9_000, 100_000);
}
