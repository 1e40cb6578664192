//! The accept loop and one connection, as futures over async-io: written once for
//! both async runtimes (smol and async-std drive the same reactor). Each
//! connection is one task that does what the core's `Dialer` and `Relay` say; no
//! thread per connection, and no buffer held while a direction has nothing in
//! flight (buffers go back to a per-thread pool).

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use async_io::{Async, Timer};
use bytes::BytesMut;
use std::io::{Read, Write};

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use plug_core::dial::DialStep;
use plug_core::relay::{Direction, ReadInto, Relay, Side, WriteFrom};
use plug_std::process::readiness::Readiness;
use plug_std::process::sockets::{self, ConnectError};
use plug_std::process::splice::Pipe;
use plug_std::process::{Connection, Context};

/// How a runtime starts a connection's task.
pub trait Spawn: Sync {
    /// Runs [`serve`] for this connection to completion in the background. The
    /// runtime spawns the future itself, unboxed: one allocation per connection.
    fn spawn(&self, conn: Connection, client: Async<TcpStream>);
}

/// Bytes read from a proxy per read while waiting for its reply head.
const REPLY_CHUNK: usize = 4096;

/// Rounds of relay work one poll may do before yielding, so a busy connection
/// cannot starve the others on its thread.
const BUDGET: usize = 16;

/// Pooled buffers kept per thread.
const POOL_SIZE: usize = 32;

/// Pooled pipes kept per thread: few, because each holds two descriptors that a
/// plug short of descriptors would rather spend on connections.
pub const PIPE_POOL_SIZE: usize = 4;

thread_local! {
    static POOL: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    static PIPES: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

/// An empty pipe from this thread's pool, or a new one.
fn pipe_take() -> io::Result<Pipe> {
    match PIPES.with(|p| p.borrow_mut().pop()) {
        Some(pipe) => Ok(pipe),
        None => Pipe::new(),
    }
}

/// Returns an empty pipe to this thread's pool (or closes it when the pool is full).
fn pipe_put(pipe: Pipe) {
    PIPES.with(|p| {
        let mut pool = p.borrow_mut();
        if pool.len() < PIPE_POOL_SIZE {
            pool.push(pipe);
        }
    });
}

/// What a connection task keeps beside the core's relay for the zero-copy path.
struct Lanes {
    /// Per direction: its pipe while bytes are in flight.
    pipes: [Option<Pipe>; 2],
    /// Whether each socket may be read / written: cleared when found drained or
    /// full, set again when the reactor reports it ready.
    ready: Readiness,
}

impl Lanes {
    /// Gives back the pipes of directions with nothing in flight.
    fn release_idle(&mut self, relay: &Relay) {
        for dir in Direction::BOTH {
            if relay.half(dir).piped() == 0 {
                if let Some(pipe) = self.pipes[dir.index()].take() {
                    pipe_put(pipe);
                }
            }
        }
    }
}

fn pool_take() -> Option<BytesMut> {
    POOL.with(|p| p.borrow_mut().pop())
}

fn pool_put(buffer: BytesMut) {
    POOL.with(|p| {
        let mut pool = p.borrow_mut();
        if pool.len() < POOL_SIZE {
            pool.push(buffer);
        }
    });
}

/// How many threads run connection tasks: the number in the environment variable
/// `var` when it is a positive integer, else one per two cores (at least one).
///
/// Why not one per core: async-io has one reactor for the process, so with more
/// executor threads than one, readiness found by one thread is usually for a task
/// on another, and the hand-over (a futex wake-up, and another reactor wait) costs
/// more than the second thread gains. plug-bench on 2 cores: one thread cut CPU
/// per round trip from 66-72 to 37-46 µs, with bulk still at 2.7-2.9 GB/s.
pub fn executor_threads(var: &str) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            cores.div_ceil(2)
        })
}

/// Accepts clients until a graceful stop shuts the listener, spawning one task per
/// admitted client; then returns (the listener is closed when dropped).
pub async fn accept_loop(ctx: &Arc<Context>, listener: Async<TcpListener>, spawner: &dyn Spawn) {
    loop {
        let accepted = listener.read_with(sockets::accept).await;
        match accepted.and_then(|(c, peer)| Ok((Async::new_nonblocking(c)?, peer))) {
            Ok((client, peer)) => {
                if let Some(conn) = ctx.admit(Instant::now(), peer) {
                    spawner.spawn(conn, client);
                }
                // A refused client is dropped here: closed at once (CONN-1).
            }
            Err(_) if ctx.is_stopping() => break,
            Err(e) => {
                if let Some(pause) = ctx.accept_failed(Instant::now(), &e) {
                    Timer::after(pause).await;
                }
            }
        }
    }
}

/// Serves one admitted client to the end.
pub async fn serve(mut conn: Connection, client: Async<TcpStream>) {
    let keepalive = conn.keepalive();
    sockets::prepare_client(client.get_ref(), keepalive);
    // Boxed: the dialing state then lives only while dialing, instead of
    // enlarging every connection's task for its whole life.
    let Some((dest, leftover)) = Box::pin(dial(&mut conn, keepalive)).await else {
        conn.finish(Instant::now(), None);
        return;
    };
    let local = || client.get_ref().local_addr();
    let Some(mut relay) = conn.relay(Instant::now(), &leftover, local) else {
        return conn.finish(Instant::now(), None);
    };
    drop(leftover); // the relay has it; not kept in the task across the relay
    let socks = [&client, &dest];
    // Made only when the relay has a deadline (-T): most never need one.
    let mut timer: Option<Box<Timer>> = None;
    let mut lanes = Lanes {
        pipes: [None, None],
        ready: Readiness::default(),
    };
    future::poll_fn(|cx| poll_relay(cx, &mut relay, socks, &mut lanes, &mut timer)).await;
    lanes.release_idle(&relay);
    let outcome = relay.outcome();
    sockets::reset_if_aborted(outcome.as_ref(), [client.get_ref(), dest.get_ref()]);
    drop(client);
    drop(dest);
    conn.finish(Instant::now(), outcome);
}

/// Runs `work` until the dialer's deadline; on timeout returns the core's next step.
async fn bounded<T>(conn: &mut Connection, work: impl Future<Output = T>) -> Result<T, DialStep> {
    let mut work = pin!(work);
    loop {
        let deadline = conn.deadline();
        let expired = async {
            match deadline {
                Some(at) => {
                    Timer::at(at).await;
                }
                None => future::pending::<()>().await,
            }
            None
        };
        if let Some(done) = future::or(async { Some(work.as_mut().await) }, expired).await {
            return Ok(done);
        }
        if let Some(next) = conn.timeout(Instant::now()) {
            return Err(next);
        }
    }
}

/// Runs the dialer to the end: the connected destination socket and the leftover
/// tunnel bytes, or `None` when every destination failed.
async fn dial(conn: &mut Connection, keepalive: bool) -> Option<(Async<TcpStream>, Vec<u8>)> {
    let mut step = conn.start(Instant::now());
    let mut stream: Option<Async<TcpStream>> = None;
    loop {
        step = match step {
            DialStep::Connect { addr, bind, .. } => {
                stream = None;
                let started = sockets::begin_connect(addr, bind)
                    .and_then(|s| Async::new_nonblocking(s).map_err(ConnectError::Local));
                match started {
                    Err(ConnectError::Local(e)) => {
                        conn.step(|d, b| d.handle_local_failure(Instant::now(), b, &e))
                    }
                    Err(ConnectError::Remote(e)) => {
                        conn.step(|d, b| d.handle_connect_failed(Instant::now(), b, &e))
                    }
                    Ok(s) => match bounded(conn, s.writable()).await {
                        Err(next) => next,
                        Ok(ready) => match ready.and_then(|()| s.get_ref().take_error()) {
                            Ok(None) => {
                                sockets::prepare(s.get_ref(), keepalive);
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
                let mut s = stream.as_ref()?;
                match bounded(conn, s.write_all(&request)).await {
                    Err(next) => next,
                    Ok(Ok(())) => DialStep::ReadReply,
                    Ok(Err(e)) => conn.step(|d, b| d.handle_connect_failed(Instant::now(), b, &e)),
                }
            }
            DialStep::ReadReply => {
                let mut s = stream.as_ref()?;
                // On the heap, and only during the CONNECT exchange: an array here
                // would sit in every connection's future for its whole life.
                let mut buf = vec![0u8; REPLY_CHUNK];
                match bounded(conn, s.read(&mut buf)).await {
                    Err(next) => next,
                    Ok(Ok(0)) => conn.step(|d, b| d.handle_reply_eof(Instant::now(), b)),
                    Ok(Ok(n)) => {
                        conn.step(|d, b| d.handle_reply_data(Instant::now(), b, &buf[..n]))
                    }
                    Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => DialStep::ReadReply,
                    Ok(Err(e)) => conn.step(|d, b| d.handle_connect_failed(Instant::now(), b, &e)),
                }
            }
            DialStep::Established { leftover, .. } => {
                return stream.map(|s| (s, leftover.to_vec()))
            }
            DialStep::GiveUp => return None,
        };
    }
}

/// One poll of the relay: does every read, write and shutdown the core wants that
/// the sockets allow, until nothing more can happen now (CONN-6, OPT-2).
fn poll_relay(
    cx: &mut TaskContext<'_>,
    relay: &mut Relay,
    socks: [&Async<TcpStream>; 2],
    lanes: &mut Lanes,
    timer: &mut Option<Box<Timer>>,
) -> Poll<()> {
    for _ in 0..BUDGET {
        let mut progressed = false;
        for dir in Direction::BOTH {
            progressed |= poll_write(cx, relay, socks[dir.sink().index()], lanes, dir);
            if relay.half(dir).wants_shutdown() {
                match socks[dir.sink().index()]
                    .get_ref()
                    .shutdown(Shutdown::Write)
                {
                    Ok(()) => relay.handle_shutdown(Instant::now(), dir),
                    Err(_) => relay.handle_error(Instant::now(), dir.sink()),
                }
                progressed = true;
            }
            progressed |= poll_read(cx, relay, socks[dir.source().index()], lanes, dir);
        }
        if relay.is_finished() {
            for dir in Direction::BOTH {
                if let Some(buffer) = relay.half_mut(dir).release_idle_buffer() {
                    pool_put(buffer);
                }
            }
            return Poll::Ready(());
        }
        if !progressed {
            let Some(deadline) = relay.poll_timeout() else {
                return Poll::Pending;
            };
            let timer = timer.get_or_insert_with(|| Box::new(Timer::never()));
            timer.set_at(deadline);
            if Pin::new(&mut **timer).poll(cx).is_pending() {
                return Poll::Pending;
            }
            relay.handle_timeout(Instant::now());
        }
    }
    // Used the budget with work left: let other tasks run, then come back.
    cx.waker().wake_by_ref();
    Poll::Pending
}

/// Whether `sock` may be read (`write` false) or written (`write` true) now: yes
/// unless the last attempt found it drained or full; then the reactor is asked,
/// which registers the task for a wake-up when it says no.
fn may(
    cx: &mut TaskContext<'_>,
    sock: &Async<TcpStream>,
    side: Side,
    write: bool,
    ready: &mut Readiness,
) -> io::Result<bool> {
    let known = if write {
        ready.can_write(side)
    } else {
        ready.can_read(side)
    };
    if known {
        return Ok(true);
    }
    let polled = if write {
        sock.poll_writable(cx)
    } else {
        sock.poll_readable(cx)
    };
    match polled {
        Poll::Ready(Ok(())) if write => ready.handle_writable(side),
        Poll::Ready(Ok(())) => ready.handle_readable(side),
        Poll::Ready(Err(e)) => return Err(e),
        Poll::Pending => return Ok(false),
    }
    Ok(true)
}

/// One write toward `dir`'s sink if the core wants one; true when something
/// happened, false when the socket is not writable (the task will be woken).
fn poll_write(
    cx: &mut TaskContext<'_>,
    relay: &mut Relay,
    sink: &Async<TcpStream>,
    lanes: &mut Lanes,
    dir: Direction,
) -> bool {
    loop {
        let from = match relay.half(dir).wants_write() {
            None => return false,
            Some(from) => from,
        };
        match may(cx, sink, dir.sink(), true, &mut lanes.ready) {
            Ok(true) => {}
            Ok(false) => return false,
            Err(_) => break,
        }
        let (result, offered) = match from {
            WriteFrom::Buffer => {
                let data = relay.half(dir).write_data();
                (sink.get_ref().write(data), data.len())
            }
            WriteFrom::Pipe => match &lanes.pipes[dir.index()] {
                Some(pipe) => {
                    let piped = relay.half(dir).piped();
                    (pipe.drain_to(sink.get_ref(), piped), piped)
                }
                None => break, // bytes in a pipe that does not exist
            },
        };
        match result {
            Ok(n) if n > 0 => {
                match from {
                    WriteFrom::Buffer => relay.handle_written(Instant::now(), dir, n),
                    WriteFrom::Pipe => relay.handle_spliced_out(Instant::now(), dir, n),
                }
                lanes.ready.handle_written(dir.sink(), n, offered);
                return true;
            }
            // A socket that takes nothing is as broken as one that fails.
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => lanes.ready.handle_full(dir.sink()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    relay.handle_error(Instant::now(), dir.sink());
    true
}

/// One read from `dir`'s source if the core wants one; true when something
/// happened, false when there is nothing to read now (the task will be woken) or
/// the pipe must drain first.
fn poll_read(
    cx: &mut TaskContext<'_>,
    relay: &mut Relay,
    source: &Async<TcpStream>,
    lanes: &mut Lanes,
    dir: Direction,
) -> bool {
    loop {
        let into = match relay.half(dir).wants_read() {
            None => {
                // Ended (or full): a buffer with nothing in it goes back now, not
                // when the other direction ends too. When thousands of clients
                // leave at once, this is what keeps their buffers from piling up.
                if let Some(buffer) = relay.half_mut(dir).release_idle_buffer() {
                    pool_put(buffer);
                }
                return false;
            }
            Some(into) => into,
        };
        match may(cx, source, dir.source(), false, &mut lanes.ready) {
            Ok(true) => {}
            Ok(false) => {
                // Nothing in flight in this direction: hand its buffer and pipe back.
                if let Some(buffer) = relay.half_mut(dir).release_idle_buffer() {
                    pool_put(buffer);
                }
                lanes.release_idle(relay);
                return false;
            }
            Err(_) => break,
        }
        let (result, asked) = match into {
            ReadInto::Buffer => {
                if !relay.half(dir).has_buffer() {
                    if let Some(buffer) = pool_take() {
                        relay.half_mut(dir).provide_buffer(buffer);
                    }
                }
                let space = relay.half_mut(dir).read_space();
                let asked = space.len();
                (source.get_ref().read(space), asked)
            }
            ReadInto::Pipe => {
                if lanes.pipes[dir.index()].is_none() {
                    match pipe_take() {
                        Ok(pipe) => lanes.pipes[dir.index()] = Some(pipe),
                        Err(_) => {
                            // No descriptors for a pipe: copy instead (order is kept).
                            relay.half_mut(dir).set_splice(None);
                            return true;
                        }
                    }
                }
                let Some(pipe) = &lanes.pipes[dir.index()] else {
                    return false;
                };
                let space = relay.half(dir).pipe_space();
                (pipe.fill_from(source.get_ref(), space), space)
            }
        };
        match result {
            Ok(n) => {
                match into {
                    ReadInto::Buffer => relay.handle_read(Instant::now(), dir, n),
                    ReadInto::Pipe => relay.handle_spliced_in(Instant::now(), dir, n),
                }
                lanes.ready.handle_read(dir.source(), n, asked);
                return true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if matches!(into, ReadInto::Pipe) && relay.half(dir).piped() > 0 {
                    // The pipe is full, not the socket empty.
                    relay.handle_pipe_full(Instant::now(), dir);
                    return false;
                }
                lanes.ready.handle_drained(dir.source());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    relay.handle_error(Instant::now(), dir.source());
    true
}
