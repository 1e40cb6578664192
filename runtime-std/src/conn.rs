//! One connection on one thread: non-blocking sockets and poll(2), doing what the
//! core's `Dialer` and `Relay` say. A single owner per relay keeps the connect,
//! CONNECT and idle timeouts simple: they are poll timeouts.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use plug_core::dial::DialStep;
use plug_core::relay::{Direction, ReadInto, Relay, Side, WriteFrom};

use crate::process::readiness::Readiness;
use crate::process::sockets::{self, ConnectError};
use crate::process::splice::Pipe;
use crate::process::sys::{self, PollFd, POLLERRS, POLLIN, POLLOUT};
use crate::process::Connection;

/// How long a quiet connection keeps its relay buffers before giving them back.
const BUFFER_RELEASE_AFTER: Duration = Duration::from_secs(1);

/// Bytes read from a proxy per read while waiting for its reply head.
const REPLY_CHUNK: usize = 4096;

/// Serves one admitted client (non-blocking, from `sockets::accept`) to the end.
pub fn serve(mut conn: Connection, client: TcpStream) {
    let keepalive = conn.keepalive();
    // `client` came from `sockets::accept`: already non-blocking.
    sockets::prepare_client(&client, keepalive);
    let Some((dest, leftover)) = dial(&mut conn, keepalive) else {
        conn.finish(Instant::now(), None);
        return;
    };
    let Some(mut relay) = conn.relay(Instant::now(), &leftover, || client.local_addr()) else {
        return conn.finish(Instant::now(), None);
    };
    drive(&mut relay, [&client, &dest]);
    let outcome = relay.outcome();
    sockets::reset_if_aborted(outcome.as_ref(), [&client, &dest]);
    drop(client);
    drop(dest);
    conn.finish(Instant::now(), outcome);
}

/// Waits until `fd` is ready for `events` or the dialer's deadline passes; on
/// timeout returns the core's next step instead.
fn wait_dial(conn: &mut Connection, stream: &TcpStream, events: i16) -> Result<(), DialStep> {
    loop {
        let timeout = conn
            .deadline()
            .map(|d| d.saturating_duration_since(Instant::now()));
        let mut fds = [PollFd {
            fd: stream.as_raw_fd(),
            events,
            revents: 0,
        }];
        match sys::poll(&mut fds, timeout) {
            Ok(0) => {
                if let Some(step) = conn.timeout(Instant::now()) {
                    return Err(step);
                }
            }
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(conn.step(|d, b| d.handle_connect_failed(Instant::now(), b, &e))),
        }
    }
}

/// Runs the dialer to the end: the connected destination socket and the leftover
/// tunnel bytes, or `None` when every destination failed.
fn dial(conn: &mut Connection, keepalive: bool) -> Option<(TcpStream, Vec<u8>)> {
    let mut step = conn.start(Instant::now());
    let mut stream: Option<TcpStream> = None;
    loop {
        step = match step {
            DialStep::Connect { addr, bind, .. } => {
                stream = None;
                match sockets::begin_connect(addr, bind) {
                    Err(ConnectError::Local(e)) => {
                        conn.step(|d, b| d.handle_local_failure(Instant::now(), b, &e))
                    }
                    Err(ConnectError::Remote(e)) => {
                        conn.step(|d, b| d.handle_connect_failed(Instant::now(), b, &e))
                    }
                    Ok(s) => match wait_dial(conn, &s, POLLOUT) {
                        Err(next) => next,
                        Ok(()) => match s.take_error() {
                            Ok(None) => {
                                sockets::prepare(&s, keepalive);
                                stream = Some(s);
                                conn.step(|d, b| d.handle_connected(Instant::now(), b))
                            }
                            Ok(Some(e)) | Err(e) => {
                                conn.step(|d, b| d.handle_connect_failed(Instant::now(), b, &e))
                            }
                        },
                    },
                }
            }
            DialStep::SendRequest { request } => {
                let s = stream.as_ref()?;
                match send_all(conn, s, &request) {
                    Ok(next) => next,
                    Err(next) => next,
                }
            }
            DialStep::ReadReply => {
                let s = stream.as_ref()?;
                match wait_dial(conn, s, POLLIN) {
                    Err(next) => next,
                    Ok(()) => {
                        // On the heap: a 4 KiB array would make this frame big
                        // enough for stack probes to touch (and keep) another
                        // page of every connection thread's stack.
                        let mut buf = vec![0u8; REPLY_CHUNK];
                        match (&*s).read(&mut buf) {
                            Ok(0) => conn.step(|d, b| d.handle_reply_eof(Instant::now(), b)),
                            Ok(n) => {
                                conn.step(|d, b| d.handle_reply_data(Instant::now(), b, &buf[..n]))
                            }
                            Err(e) if retry_later(&e) => DialStep::ReadReply,
                            Err(e) => {
                                conn.step(|d, b| d.handle_connect_failed(Instant::now(), b, &e))
                            }
                        }
                    }
                }
            }
            DialStep::Established { leftover, .. } => {
                return stream.map(|s| (s, leftover.to_vec()))
            }
            DialStep::GiveUp => return None,
        };
    }
}

/// Writes the whole CONNECT request; `Ok(ReadReply)` when sent.
fn send_all(conn: &mut Connection, s: &TcpStream, mut data: &[u8]) -> Result<DialStep, DialStep> {
    while !data.is_empty() {
        match (&*s).write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if retry_later(&e) => wait_dial(conn, s, POLLOUT)?,
            Err(e) => return Err(conn.step(|d, b| d.handle_connect_failed(Instant::now(), b, &e))),
        }
    }
    Ok(DialStep::ReadReply)
}

fn retry_later(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// What the std driver keeps beside the core's relay: readiness it has learned,
/// and each direction's pipe for the zero-copy path.
struct Wire<'a> {
    socks: [&'a TcpStream; 2],
    /// Whether each socket may be read / written; cleared on EAGAIN, set by poll.
    ready: Readiness,
    /// Per direction: its pipe while bytes are in flight.
    pipes: [Option<Pipe>; 2],
}

/// Relays until both directions are done, as the core directs (CONN-6): copying
/// through a buffer, or on Linux splicing through a pipe per direction.
fn drive(relay: &mut Relay, socks: [&TcpStream; 2]) {
    let mut wire = Wire {
        socks,
        ready: Readiness::default(),
        pipes: [None, None],
    };
    while !relay.is_finished() {
        let mut progressed = false;
        for dir in Direction::BOTH {
            progressed |= write(relay, &mut wire, dir);
            if relay.half(dir).wants_shutdown() {
                match wire.socks[dir.sink().index()].shutdown(Shutdown::Write) {
                    Ok(()) => relay.handle_shutdown(Instant::now(), dir),
                    Err(_) => relay.handle_error(Instant::now(), dir.sink()),
                }
                progressed = true;
            }
            progressed |= read(relay, &mut wire, dir);
        }
        if progressed || relay.is_finished() {
            continue;
        }
        wait_relay(relay, &mut wire);
    }
}

/// One write toward `dir`'s sink, if the core wants one and the socket may take it;
/// true when something happened.
fn write(relay: &mut Relay, wire: &mut Wire<'_>, dir: Direction) -> bool {
    let sink = dir.sink().index();
    if !wire.ready.can_write(dir.sink()) {
        return false;
    }
    let mut offered = usize::MAX;
    let result = match relay.half(dir).wants_write() {
        None => return false,
        Some(WriteFrom::Buffer) => {
            let mut out: &TcpStream = wire.socks[sink];
            let data = relay.half(dir).write_data();
            offered = data.len();
            out.write(data)
        }
        Some(WriteFrom::Pipe) => match &wire.pipes[dir.index()] {
            Some(pipe) => pipe.drain_to(wire.socks[sink], relay.half(dir).piped()),
            None => Err(io::Error::other("bytes in a pipe that does not exist")),
        },
    };
    match result {
        Ok(n) if n > 0 => {
            match relay.half(dir).wants_write() {
                Some(WriteFrom::Pipe) => {
                    relay.handle_spliced_out(Instant::now(), dir, n);
                }
                _ => relay.handle_written(Instant::now(), dir, n),
            }
            wire.ready.handle_written(dir.sink(), n, offered);
            true
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            wire.ready.handle_full(dir.sink());
            false
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
        // A socket that takes nothing is as broken as one that fails.
        Ok(_) | Err(_) => {
            relay.handle_error(Instant::now(), dir.sink());
            true
        }
    }
}

/// One read from `dir`'s source, if the core wants one and the socket may have
/// data; true when something happened.
fn read(relay: &mut Relay, wire: &mut Wire<'_>, dir: Direction) -> bool {
    let src = dir.source().index();
    if !wire.ready.can_read(dir.source()) {
        return false;
    }
    let mut asked = usize::MAX;
    let result = match relay.half(dir).wants_read() {
        None => return false,
        Some(ReadInto::Buffer) => {
            let mut input: &TcpStream = wire.socks[src];
            let space = relay.half_mut(dir).read_space();
            asked = space.len();
            input.read(space)
        }
        Some(ReadInto::Pipe) => {
            if wire.pipes[dir.index()].is_none() {
                match Pipe::new() {
                    Ok(pipe) => wire.pipes[dir.index()] = Some(pipe),
                    Err(_) => {
                        // No descriptors for a pipe: copy instead (order is kept).
                        relay.half_mut(dir).set_splice(None);
                        return true;
                    }
                }
            }
            match &wire.pipes[dir.index()] {
                Some(pipe) => pipe.fill_from(wire.socks[src], relay.half(dir).pipe_space()),
                None => return false,
            }
        }
    };
    match result {
        Ok(n) => {
            match relay.half(dir).wants_read() {
                Some(ReadInto::Pipe) => relay.handle_spliced_in(Instant::now(), dir, n),
                _ => relay.handle_read(Instant::now(), dir, n),
            }
            wire.ready.handle_read(dir.source(), n, asked);
            true
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            if relay.half(dir).piped() > 0 {
                relay.handle_pipe_full(Instant::now(), dir);
            } else {
                wire.ready.handle_drained(dir.source());
                // Nothing in flight: a pipe is held only while bytes are, so that
                // thousands of quiet connections do not hold two descriptors each.
                wire.pipes[dir.index()] = None;
            }
            false
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
        Err(_) => {
            relay.handle_error(Instant::now(), dir.source());
            true
        }
    }
}

/// Polls for what the blocked directions want; handles the idle timeout, and
/// after a quiet second hands back idle buffers and pipes.
fn wait_relay(relay: &mut Relay, wire: &mut Wire<'_>) {
    let mut fds = [
        PollFd {
            fd: wire.socks[0].as_raw_fd(),
            events: 0,
            revents: 0,
        },
        PollFd {
            fd: wire.socks[1].as_raw_fd(),
            events: 0,
            revents: 0,
        },
    ];
    for dir in Direction::BOTH {
        if relay.half(dir).wants_read().is_some() {
            fds[dir.source().index()].events |= POLLIN;
        }
        if relay.half(dir).wants_write().is_some() {
            fds[dir.sink().index()].events |= POLLOUT;
        }
    }
    if fds.iter().all(|f| f.events == 0) {
        // Nothing is wanted yet nothing is finished: cannot happen with a correct
        // core, but never sleep forever on it.
        relay.handle_error(Instant::now(), Side::Destination);
        return;
    }
    let deadline = relay.poll_timeout();
    let mut released = false;
    loop {
        let now = Instant::now();
        let until_deadline = deadline.map(|d| d.saturating_duration_since(now));
        let timeout = match (released, until_deadline) {
            (false, Some(t)) => Some(t.min(BUFFER_RELEASE_AFTER)),
            (false, None) => Some(BUFFER_RELEASE_AFTER),
            (true, t) => t,
        };
        match sys::poll(&mut fds, timeout) {
            Ok(0) => {
                if relay.handle_timeout(Instant::now()) {
                    return;
                }
                if !released {
                    for dir in Direction::BOTH {
                        drop(relay.half_mut(dir).release_idle_buffer());
                        if relay.half(dir).piped() == 0 {
                            wire.pipes[dir.index()] = None;
                        }
                    }
                    released = true;
                }
            }
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                relay.handle_error(Instant::now(), Side::Destination);
                return;
            }
        }
    }
    for (side, f) in [Side::Client, Side::Destination].into_iter().zip(fds) {
        if f.revents & (POLLIN | POLLERRS) != 0 {
            wire.ready.handle_readable(side);
        }
        if f.revents & (POLLOUT | POLLERRS) != 0 {
            wire.ready.handle_writable(side);
        }
    }
}
