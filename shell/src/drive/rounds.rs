//! The work the core schedules in rounds, carried out on threads of their own,
//! never on the accept loop, a connection or an executor thread: host-name
//! lookups with the system resolver (`--resolve`, OPT-11) and health checks
//! (`--health-check`, OPT-10), each probe on a short-lived thread with blocking
//! sockets bounded by its deadline.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use plug_core::forwarder::Forwarder;
use plug_core::rounds::lookup::Lookup;
use plug_core::rounds::probe::{Probe, ProbeResult, ProbeStep};
use plug_core::rounds::{self, AfterRound};

use crate::listeners::Listener;
use crate::net::sockets::ConnectError;
use crate::Context;

/// Work of one listener's rounds.
type Of<T> = (Arc<Listener>, T);

/// Looks every name of `lookups` up (blocking) and reports the results.
fn resolve(ctx: &Context, lookups: Vec<Of<Lookup>>) {
    for (listener, lookup) in lookups {
        let result = (lookup.name.as_str(), lookup.port)
            .to_socket_addrs()
            .map(|addrs| addrs.map(|a| a.ip()).collect::<Vec<IpAddr>>())
            .map_err(|e| e.to_string());
        let now = Instant::now();
        ctx.with(&listener, now, |f| {
            f.handle_resolved(now, lookup.dest, result)
        });
    }
}

/// Takes what every listener has due now.
fn due_now<T>(
    ctx: &Context,
    now: Instant,
    poll: fn(&mut Forwarder, Instant) -> Vec<T>,
) -> Vec<Of<T>> {
    let mut due = Vec::new();
    for listener in ctx.listeners() {
        let work = ctx.with(&listener, now, |f| poll(f, now));
        due.extend(work.into_iter().map(|w| (Arc::clone(&listener), w)));
    }
    due
}

/// Looks up the names due now, before plug serves (OPT-11: at start), so the
/// first clients find addresses.
pub fn resolve_now(ctx: &Context) {
    let now = Instant::now();
    let lookups = due_now(ctx, now, Forwarder::poll_lookups);
    resolve(ctx, lookups);
}

/// Runs rounds of `work` on a thread named `name`: `poll` takes what is due from
/// the core, `next` says when to come back (`None`: nothing is due again, and
/// without `--config` nothing ever will be). With `--config` a reload wakes
/// the thread too: the new lines may have rounds of their own, or sooner.
fn every_round<T: Send + 'static>(
    ctx: &Arc<Context>,
    name: &str,
    poll: fn(&mut Forwarder, Instant) -> Vec<T>,
    next: fn(&Forwarder) -> Option<Instant>,
    work: fn(&Arc<Context>, Vec<Of<T>>),
) -> io::Result<()> {
    let ctx = Arc::clone(ctx);
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || loop {
            let seen = ctx.reloads();
            let now = Instant::now();
            let due = due_now(&ctx, now, poll);
            if !due.is_empty() {
                work(&ctx, due);
            }
            let soonest = ctx
                .listeners()
                .iter()
                .filter_map(|l| next(&l.forwarder()))
                .min();
            match rounds::after_round(soonest, ctx.file_start.is_some()) {
                AfterRound::End => return,
                // Until the core's next round or a reload: nothing to do before.
                AfterRound::Wait(until) => ctx.wait_for_reload(seen, until),
            }
        })?;
    Ok(())
}

/// True when some listener has rounds of this kind, or a reload could give it
/// some (`--config`).
fn wanted(ctx: &Context, has: fn(&plug_core::config::cli::Config) -> bool) -> bool {
    let some_line = ctx.listeners().iter().any(|l| has(&l.line()));
    rounds::wanted(some_line, ctx.file_start.is_some())
}

/// Starts the lookup thread when `--resolve` is given.
pub fn start_resolver(ctx: &Arc<Context>) -> io::Result<()> {
    if !wanted(ctx, |c| c.resolve.is_some()) {
        return Ok(());
    }
    every_round(
        ctx,
        "resolver",
        Forwarder::poll_lookups,
        Forwarder::poll_lookup_timeout,
        |ctx, lookups| resolve(ctx, lookups),
    )
}

/// Starts the health-check thread when `--health-check` is given (its first
/// round is due after [`probe_now`]'s).
pub fn start_prober(ctx: &Arc<Context>) -> io::Result<()> {
    if !wanted(ctx, |c| c.health_check.is_some()) {
        return Ok(());
    }
    every_round(
        ctx,
        "health-checks",
        Forwarder::poll_probes,
        Forwarder::poll_probe_timeout,
        |ctx, probes| {
            probe_all(ctx, probes);
        },
    )
}

/// Runs the first round of health checks and waits for it (each probe bounded by
/// `--connect-timeout`, all at once), before plug serves: a destination that is
/// down at start is out of rotation before the first client (OPT-10).
pub fn probe_now(ctx: &Arc<Context>) {
    let now = Instant::now();
    let probes = due_now(ctx, now, Forwarder::poll_probes);
    for handle in probe_all(ctx, probes) {
        let _ = handle.join();
    }
}

/// Starts every probe on a thread of its own, so a destination that hangs
/// delays no other; each reports its own outcome.
fn probe_all(ctx: &Arc<Context>, probes: Vec<Of<Probe>>) -> Vec<std::thread::JoinHandle<()>> {
    let mut running = Vec::new();
    for (listener, probe) in probes {
        let mine = Arc::clone(ctx);
        let dest = probe.dest();
        let theirs = Arc::clone(&listener);
        let spawned = std::thread::Builder::new()
            .name("probe".into())
            .spawn(move || {
                let (dest, result) = run(probe);
                let now = Instant::now();
                mine.with(&theirs, now, |f| f.handle_probe_result(now, dest, result));
            });
        match spawned {
            Ok(handle) => running.push(handle),
            Err(e) => {
                let now = Instant::now();
                // plug's own failure: the destination's health stays (FAULT-6).
                let result = ProbeResult::Inconclusive(format!("cannot start a health check: {e}"));
                ctx.with(&listener, now, |f| f.handle_probe_result(now, dest, result));
            }
        }
    }
    running
}

/// The time left until `deadline`, or a timeout error when none is.
fn remaining(deadline: Option<Instant>) -> io::Result<Option<Duration>> {
    match deadline {
        None => Ok(None),
        Some(d) => match d.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => Ok(Some(left)),
            _ => Err(io::ErrorKind::TimedOut.into()),
        },
    }
}

/// Reads once from `s` within `deadline`. A read with a timeout fails with EINTR
/// when plug is stopped and continued (a debugger, `systemctl freeze` and
/// `thaw`), even though plug's signals are taken by sigwait: that is no answer
/// from the destination, so the read is made again with the time left.
fn read_within(s: &mut TcpStream, buf: &mut [u8], deadline: Option<Instant>) -> io::Result<usize> {
    for _ in 0..1_000 {
        s.set_read_timeout(remaining(deadline)?)?;
        match s.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            read => return read,
        }
    }
    Err(io::ErrorKind::Interrupted.into())
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

/// Carries out one probe with blocking sockets, each step bounded by the probe's
/// deadline; returns its destination and outcome.
fn run(mut probe: Probe) -> (plug_core::forwarder::select::DestId, ProbeResult) {
    let mut socket: Option<TcpStream> = None;
    let mut buf = [0u8; 4096];
    let mut step = probe.start(Instant::now());
    // Each step either ends the probe or moves it on; the deadline bounds the
    // whole, and the count keeps a confused machine from looping.
    for _ in 0..64 {
        let deadline = probe.deadline();
        let outcome: io::Result<ProbeStep> = match step {
            ProbeStep::Done(result) => return (probe.dest(), result),
            ProbeStep::Connect { addr, bind } => match connect(addr, bind, deadline) {
                Ok(s) => {
                    socket = Some(s);
                    Ok(probe.handle_connected(Instant::now()))
                }
                // No socket, or no bind: plug's own failure (FAULT-6).
                Err(ConnectError::Local(e)) => {
                    Ok(probe.handle_local_failure(Instant::now(), &e.to_string()))
                }
                Err(ConnectError::Remote(e)) => Err(e),
            },
            ProbeStep::Send(request) => (|| {
                let s = socket.as_mut().ok_or(io::ErrorKind::NotConnected)?;
                s.set_write_timeout(remaining(deadline)?)?;
                s.write_all(&request)?;
                Ok(probe.handle_sent(Instant::now()))
            })(),
            ProbeStep::Read => (|| {
                let s = socket.as_mut().ok_or(io::ErrorKind::NotConnected)?;
                let n = read_within(s, &mut buf, deadline)?;
                let now = Instant::now();
                Ok(match buf.get(..n) {
                    Some([]) | None => probe.handle_eof(now),
                    Some(data) => probe.handle_read(now, data),
                })
            })(),
        };
        let now = Instant::now();
        step = match outcome {
            Ok(next) => next,
            Err(e) if is_timeout(&e) => probe.handle_timeout(now),
            Err(e) => probe.handle_failed(now, &e.to_string()),
        };
    }
    let stuck = "health check did not finish".to_string();
    (probe.dest(), ProbeResult::Inconclusive(stuck))
}

/// A blocking connect bounded by `deadline`; what failed says whose fault it is.
fn connect(
    addr: SocketAddr,
    bind: Option<SocketAddr>,
    deadline: Option<Instant>,
) -> Result<TcpStream, ConnectError> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .map_err(ConnectError::Local)?;
    if let Some(bind) = bind {
        socket.bind(&bind.into()).map_err(ConnectError::Local)?;
    }
    let left = remaining(deadline).map_err(ConnectError::Remote)?;
    let connected = match left {
        Some(left) => socket.connect_timeout(&addr.into(), left),
        None => socket.connect(&addr.into()),
    };
    connected.map_err(ConnectError::Remote)?;
    Ok(socket.into())
}
