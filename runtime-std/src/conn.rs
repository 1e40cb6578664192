//! One connection on one thread: non-blocking sockets and poll(2), doing what the
//! core's `Dialer` and `Relay` say. A single owner per relay keeps the connect,
//! CONNECT and idle timeouts simple: they are poll timeouts.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use plug_core::dial::DialStep;
use plug_core::relay::{Direction, Relay, Side};
use socket2::SockRef;

use crate::process::sockets::{self, ConnectError};
use crate::process::sys::{self, PollFd, POLLERRS, POLLIN, POLLOUT};
use crate::process::Connection;

/// How long a quiet connection keeps its relay buffers before giving them back.
const BUFFER_RELEASE_AFTER: Duration = Duration::from_secs(1);

/// Bytes read from a proxy per read while waiting for its reply head.
const REPLY_CHUNK: usize = 4096;

/// Serves one admitted client to the end.
pub fn serve(mut conn: Connection, client: TcpStream) {
    let keepalive = conn.keepalive();
    if client.set_nonblocking(true).is_err() {
        conn.finish(Instant::now(), None);
        return;
    }
    if keepalive {
        let _ = SockRef::from(&client).set_keepalive(true);
    }
    let Some((dest, leftover)) = dial(&mut conn, keepalive) else {
        conn.finish(Instant::now(), None);
        return;
    };
    let local = match client.local_addr() {
        Ok(local) => local,
        Err(_) => return conn.finish(Instant::now(), None),
    };
    let mut relay = conn.relay(Instant::now(), &leftover, local);
    drive(&mut relay, [&client, &dest]);
    let outcome = relay.outcome();
    if outcome.is_some_and(|o| o.end.is_abortive()) {
        // A stream cut short must not look complete to the surviving peer.
        let _ = SockRef::from(&client).set_linger(Some(Duration::ZERO));
        let _ = SockRef::from(&dest).set_linger(Some(Duration::ZERO));
    }
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
                                if keepalive {
                                    let _ = SockRef::from(&s).set_keepalive(true);
                                }
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
                        let mut buf = [0u8; REPLY_CHUNK];
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

/// Relays until both directions are done, as the core directs (CONN-6).
fn drive(relay: &mut Relay, socks: [&TcpStream; 2]) {
    // Whether each socket may be readable / writable; cleared on EAGAIN, set by poll.
    let mut readable = [true; 2];
    let mut writable = [true; 2];
    while !relay.is_finished() {
        let mut progressed = false;
        for dir in Direction::BOTH {
            let (src, sink) = (dir.source().index(), dir.sink().index());
            if writable[sink] && relay.half(dir).wants_write().is_some() {
                let data = relay.half(dir).write_data();
                let mut out: &TcpStream = socks[sink];
                match out.write(data) {
                    Ok(n) => {
                        relay.handle_written(Instant::now(), dir, n);
                        progressed = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => writable[sink] = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => progressed = true,
                    Err(_) => relay.handle_error(Instant::now(), dir.sink()),
                }
            }
            if relay.half(dir).wants_shutdown() {
                match socks[sink].shutdown(Shutdown::Write) {
                    Ok(()) => relay.handle_shutdown(Instant::now(), dir),
                    Err(_) => relay.handle_error(Instant::now(), dir.sink()),
                }
                progressed = true;
            }
            if readable[src] && relay.half(dir).wants_read().is_some() {
                let space = relay.half_mut(dir).read_space();
                let mut input: &TcpStream = socks[src];
                match input.read(space) {
                    Ok(n) => {
                        relay.handle_read(Instant::now(), dir, n);
                        progressed = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => readable[src] = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => progressed = true,
                    Err(_) => relay.handle_error(Instant::now(), dir.source()),
                }
            }
        }
        if progressed || relay.is_finished() {
            continue;
        }
        wait_relay(relay, socks, &mut readable, &mut writable);
    }
}

/// Polls for what the blocked directions want; handles the idle timeout.
fn wait_relay(
    relay: &mut Relay,
    socks: [&TcpStream; 2],
    readable: &mut [bool; 2],
    writable: &mut [bool; 2],
) {
    let mut fds = [
        PollFd {
            fd: socks[0].as_raw_fd(),
            events: 0,
            revents: 0,
        },
        PollFd {
            fd: socks[1].as_raw_fd(),
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
        // Wake once after a quiet second to hand back idle buffers.
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
    for (i, f) in fds.iter().enumerate() {
        if f.revents & (POLLIN | POLLERRS) != 0 {
            readable[i] = true;
        }
        if f.revents & (POLLOUT | POLLERRS) != 0 {
            writable[i] = true;
        }
    }
}
