//! A connection as a driver holds it: the core's [`Connection`] with the shared
//! state it syncs with, and the I/O every driver does the same way on
//! non-blocking sockets (read, write, splice, shut down, connect).
//!
//! A driver loops on [`Conn::next`]: it carries out the I/O outputs with
//! [`Conn::perform`] and waits as [`Output::Wait`] says in its own way (std's
//! epoll loops, or a reactor). Dropping a `Conn` before the core said [`Output::Done`] still
//! accounts for the connection (FAULT-5).

use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

use plug_core::connection::relay::{Direction, Side};
use plug_core::connection::{ConnectFailure, Connection, Output, Transfer, Wait};

use crate::listeners::Listener;
use crate::net::live::Slot;
use crate::net::sockets::{self, ConnectError};
use crate::net::splice::Pipe;
use crate::output::session_file::SessionWriter;
use crate::Context;

/// One accepted client, on its way through plug.
#[derive(Debug)]
pub struct Conn {
    ctx: Arc<Context>,
    /// The listener that accepted it: the shared state it syncs with.
    listener: Arc<Listener>,
    /// Where its session line goes: its listener's when it started (OPT-15).
    session: Option<Arc<SessionWriter>>,
    core: Connection,
    /// Its sockets' place among the open connections' (for a cut, OPT-8), from
    /// [`Conn::start`] until [`Conn::before_close`].
    slot: Option<Slot>,
    /// True once [`Output::Done`] was given: every line is queued.
    finished: bool,
}

/// The pipe of each direction (by `Direction::index`) while the core holds one.
pub type Pipes = [Option<Pipe>; 2];

impl Conn {
    pub(crate) fn new(ctx: Arc<Context>, listener: Arc<Listener>, core: Connection) -> Self {
        ctx.report_opened();
        Conn {
            finished: false,
            ctx,
            session: listener.session(),
            listener,
            core,
            slot: None,
        }
    }

    /// Takes the client socket (non-blocking, from `sockets::accept`): sets it up
    /// and records it among the open connections' sockets. Call first.
    pub fn start(&mut self, client: &TcpStream) {
        sockets::prepare_client(client, self.core.settings().keepalive);
        self.slot = Some(self.ctx.live.insert(client.as_raw_fd(), self.listener.id()));
    }

    /// Before the sockets of [`Output::Close`] are closed: forgets them, and
    /// makes the close a reset when the core says so.
    pub fn before_close(&mut self, reset: bool, sockets: [Option<&TcpStream>; 2]) {
        if let Some(slot) = self.slot.take() {
            self.ctx.live.remove(slot);
        }
        sockets::before_close(reset, sockets);
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.core.peer()
    }

    /// The core machine, for the inputs a driver reports.
    pub fn core(&mut self) -> &mut Connection {
        &mut self.core
    }

    /// The next output a driver must carry out at `now`. What needs no socket is
    /// done here: [`Output::Forwarder`] with the shared state, log and session lines
    /// to the writer thread, and the buffers a wait or a close offers kept for
    /// this thread's next reads.
    pub fn next(&mut self, now: Instant) -> Output {
        // Cut by the end of a drain (OPT-8): what that means is the core's.
        if self.ctx.is_cutting() || self.listener.is_cutting() {
            self.core.handle_cut(now);
        }
        loop {
            let out = self.core.poll_output(now);
            match out {
                Output::Forwarder => {
                    let core = &mut self.core;
                    self.ctx
                        .with(&self.listener, now, |f| f.exchange(now, core));
                }
                Output::Log(record) => self.ctx.writer.log(*record),
                Output::Wait(Wait {
                    buffers_offered, ..
                })
                | Output::Close {
                    buffers_offered, ..
                } if buffers_offered != [false; 2] => {
                    for dir in Direction::marked(buffers_offered) {
                        if let Some(buffer) = self.core.take_buffer(dir) {
                            buffers::put(buffer);
                        }
                    }
                    return out;
                }
                Output::Session(record) => {
                    if let Some(to) = &self.session {
                        self.ctx.writer.session(Arc::clone(to), record);
                    }
                }
                Output::Done => {
                    if !std::mem::replace(&mut self.finished, true) {
                        self.ctx.report_finished();
                    }
                    return Output::Done;
                }
                other => return other,
            }
        }
    }

    /// Carries out an I/O output on the sockets and pipes and reports its result
    /// to the core. `dest` is the destination socket once a connect has started.
    /// Returns false for an output that is not I/O on an open socket (the driver
    /// handles those: connect, wait, yield, close, done).
    pub fn perform(
        &mut self,
        now: Instant,
        out: &Output,
        client: &TcpStream,
        dest: Option<&TcpStream>,
        pipes: &mut Pipes,
    ) -> bool {
        let socket = |side: Side| match side {
            Side::Client => Some(client),
            Side::Destination => dest,
        };
        let core = &mut self.core;
        match *out {
            Output::Read(dir) => {
                if let Some(buffer) = core.wants_buffer(dir).and_then(buffers::take) {
                    core.lend_buffer(dir, buffer);
                }
                let result = match socket(dir.source()) {
                    Some(s) => sockets::recv(s, core.read_space(dir)),
                    None => Err(missing()),
                };
                core.handle_transfer(now, Transfer::from(result));
            }
            Output::Write(dir) => {
                let result = match socket(dir.sink()) {
                    Some(s) => sockets::send(s, core.write_data(dir)),
                    None => Err(missing()),
                };
                core.handle_transfer(now, Transfer::from(result));
            }
            Output::SpliceIn { dir, max } => {
                let result = match (&pipes[dir.index()], socket(dir.source())) {
                    (Some(pipe), Some(s)) => pipe.fill_from(s, max),
                    _ => Err(missing()),
                };
                core.handle_transfer(now, Transfer::from(result));
            }
            Output::SpliceOut { dir, max } => {
                let result = match (&pipes[dir.index()], socket(dir.sink())) {
                    (Some(pipe), Some(s)) => pipe.drain_to(s, max),
                    _ => Err(missing()),
                };
                core.handle_transfer(now, Transfer::from(result));
            }
            Output::ShutdownWrite(dir) => {
                let result = match socket(dir.sink()) {
                    Some(s) => s.shutdown(Shutdown::Write).map_err(|e| e.to_string()),
                    None => Err(missing().to_string()),
                };
                core.handle_shutdown(now, result);
            }
            Output::OpenPipe(dir) => match Pipe::new() {
                Ok(pipe) => pipes[dir.index()] = Some(pipe),
                Err(_) => core.handle_pipe_failed(now, dir),
            },
            Output::ClosePipe(dir) => pipes[dir.index()] = None,
            Output::FinishConnect => {
                let result = match dest.map(TcpStream::take_error) {
                    Some(Ok(None)) => Ok(()),
                    Some(Ok(Some(e)) | Err(e)) => Err(e.to_string()),
                    None => Err(missing().to_string()),
                };
                core.handle_connect_result(now, result);
            }
            Output::LocalAddr => {
                let result = client.local_addr().map_err(|e| e.to_string());
                core.handle_local_addr(now, result);
            }
            _ => return false,
        }
        true
    }

    /// Starts the connect [`Output::Connect`] asks for, reports how it started,
    /// and returns the new socket.
    pub fn connect(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        bind: Option<SocketAddr>,
    ) -> Option<TcpStream> {
        // The socket of an earlier attempt is closed once this returns.
        if let Some(slot) = self.slot {
            self.ctx.live.set_destination(slot, None);
        }
        match sockets::begin_connect(addr, bind, self.core.settings().keepalive) {
            Ok(s) => {
                if let Some(slot) = self.slot {
                    self.ctx.live.set_destination(slot, Some(s.as_raw_fd()));
                }
                self.core.handle_connect_started(now, Ok(()));
                Some(s)
            }
            Err(e) => {
                let failure = match e {
                    ConnectError::Local(e) => ConnectFailure::Local(e.to_string()),
                    ConnectError::Remote(e) => ConnectFailure::Remote(e.to_string()),
                };
                self.core.handle_connect_started(now, Err(failure));
                None
            }
        }
    }

    /// Reports that a socket the driver made for the connect could not be
    /// registered with its reactor: plug's own failure, not the destination's.
    pub fn connect_failed_locally(&mut self, now: Instant, error: &std::io::Error) {
        let failure = ConnectFailure::Local(error.to_string());
        self.core.handle_connect_started(now, Err(failure));
    }
}

/// Copy buffers given back by quiet connections, kept per thread for the next
/// read of any connection on it: a burst then costs no allocation and no zeroing.
mod buffers {
    use std::cell::RefCell;

    use plug_core::bytes::BytesMut;

    /// Buffers kept per thread.
    const KEPT: usize = 32;

    thread_local! {
        static SPARE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    }

    /// A spare buffer of exactly `size` bytes, if this thread has one.
    pub fn take(size: usize) -> Option<BytesMut> {
        SPARE.with(|s| {
            let mut spare = s.borrow_mut();
            let i = spare.iter().rposition(|b| b.len() == size)?;
            Some(spare.swap_remove(i))
        })
    }

    /// Keeps `buffer` for a later [`take`], unless enough are kept already.
    pub fn put(buffer: BytesMut) {
        SPARE.with(|s| {
            let mut spare = s.borrow_mut();
            if spare.len() < KEPT {
                spare.push(buffer);
            }
        });
    }
}

fn missing() -> std::io::Error {
    std::io::Error::other("no such socket or pipe")
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.ctx.live.remove(slot);
        }
        if self.finished {
            return;
        }
        // The driver could not carry the connection to its end (its thread or task
        // never ran, or it panicked): it still ends, with its records and counts.
        let now = Instant::now();
        self.core.abandon(now);
        for _ in 0..64 {
            match self.next(now) {
                Output::Done => return,
                _ => continue,
            }
        }
    }
}
