//! One client's whole life, admit → dial → relay → close, as a machine the adapter
//! feeds with what its sockets said and drains of what to do next (CONN-3..9,
//! OPT-1..4, FAULT-1..5).
//!
//! After every input the adapter calls [`Connection::poll_output`] until it says
//! [`Output::Wait`] (nothing more until a socket is ready or the deadline passes)
//! or [`Output::Done`]. Every rule about what an I/O result means lives here, so
//! every runtime behaves the same:
//! - a read of 0 bytes is the end of that direction's stream; a write of 0 bytes
//!   is as broken as a failed one;
//! - WouldBlock clears what the driver believed about the socket, so the next
//!   output waits for the poller instead of repeating the call (no spin);
//! - WouldBlock on a splice into a pipe that holds bytes means the pipe is full;
//! - an error or reset reported on either socket, in any phase, ends both
//!   directions at once (CONN-6); a hang-up with nothing wanted on that socket
//!   stops it being watched;
//! - every deadline (connect, idle, buffer release) is checked on every call,
//!   whatever the sockets report meanwhile (FAULT-2).
//!
//! What connections share (the balancer, the counts) is the listener's
//! forwarder's: the connection never touches it. It sends events
//! ([`ForwarderEvent`]: choose a destination, this one failed, reached,
//! closed) and takes answers ([`ConnectionEvent`]); [`Output::Forwarder`] asks
//! the adapter to hand them over under the forwarder's lock, once for all that
//! are waiting.

pub mod connect;
pub mod dial;
pub mod proxy_protocol;
pub mod relay;
#[cfg(test)]
mod simulation;

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::config::addr::{Destination, Source};
use crate::config::cli::ProxyProtocol;
use crate::connection::dial::{DialStep, Dialer};
use crate::connection::relay::{
    Direction, ReadInto, Relay, RelayEnd, RelayOptions, RelayOutcome, Side, WriteFrom,
};
use crate::forwarder::admission::PipeBudget;
use crate::forwarder::select::DestId;
use crate::reports::log::{self, CloseStatus, LogKind, LogLevel, LogRecord, LogSettings};
use crate::reports::session::SessionRecord;
use crate::shared::{ConnectionEvent, ForwarderEvent};

/// Bytes of the proxy's reply read at a time during the CONNECT exchange.
pub const REPLY_CHUNK: usize = 4096;

/// A pipe with nothing in flight is closed after this long (FAULT-3: pipes are
/// held while bytes move, not by quiet connections).
pub const PIPE_IDLE: Duration = Duration::from_secs(1);

/// I/O outputs in a row without a wait before the core asks the adapter to let
/// other connections run ([`Output::Yield`]).
pub const OUTPUTS_BEFORE_YIELD: u32 = 64;

/// What a runtime offers the connection machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Runtime {
    /// Its name, as `--version` reports it (`std`, `smol`, `async-std`).
    pub name: &'static str,
    /// Capacity of a splice pipe when the runtime can splice; `None` copies only.
    pub pipe_capacity: Option<usize>,
    /// How long a quiet direction keeps its copy buffer before giving it back.
    pub buffer_release_after: Duration,
    /// True when the runtime keeps given-back buffers for other connections
    /// ([`Wait::buffers_offered`], [`Output::Close`]); false when they are
    /// simply freed.
    pub reuse_buffers: bool,
    /// True when every [`Ready`] it reports carries the poller's error and
    /// hang-up flags with the readiness (epoll's event mask). A connecting socket
    /// then reported writable without either has connected: Linux reports
    /// EPOLLOUT for a TCP socket only once its handshake is done, and a failed
    /// connect with EPOLLERR and EPOLLHUP. The connect is taken as made without
    /// asking the socket ([`Output::FinishConnect`]): one system call less per
    /// connection. False where readiness comes without them (async-io).
    pub readiness_tells_errors: bool,
}

/// What every connection of a listener needs to know, made once at start-up.
#[derive(Debug)]
pub struct Settings {
    /// The listener (log tag, FROM field).
    pub source: Source,
    /// Buffer size and idle timeout.
    pub relay: RelayOptions,
    /// `--proxy-protocol`.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Which log lines are wanted.
    pub log: LogSettings,
    /// True with `-S`: session records are produced.
    pub sessions: bool,
    /// What the runtime offers.
    pub runtime: Runtime,
    /// The splice pipes that may still be opened, shared by every listener
    /// (FAULT-3).
    pub pipes: Arc<PipeBudget>,
    /// `-k`: SO_KEEPALIVE on both sockets.
    pub keepalive: bool,
    /// The listener's label (`listener="ADDR:PORT"` and the dump's TAG) when
    /// there are several (`--config`, OPT-13).
    pub label: Option<String>,
}

/// The result of one read, write or splice, as the adapter saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transfer {
    /// This many bytes moved (0: end of stream on a read, nothing taken on a write).
    Moved(usize),
    /// The socket (or pipe) could not move anything now.
    WouldBlock,
    /// A signal interrupted the call; nothing moved.
    Interrupted,
    /// Any other error: the reason, for the log.
    Failed(String),
}

impl From<io::Result<usize>> for Transfer {
    fn from(result: io::Result<usize>) -> Self {
        match result {
            Ok(n) => Transfer::Moved(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Transfer::WouldBlock,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Transfer::Interrupted,
            Err(e) => Transfer::Failed(e.to_string()),
        }
    }
}

/// Why an outgoing connect could not even start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectFailure {
    /// plug could not make or bind its socket (out of descriptors, bad `-p`):
    /// not the destination's fault.
    Local(String),
    /// The connect failed at once (refused, unreachable).
    Remote(String),
}

/// What a poller reported about one socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ready {
    /// It can be read (data, end of stream, or an error to collect).
    pub read: bool,
    /// It can be written.
    pub write: bool,
    /// An error is pending (POLLERR): the connection is reset or broken.
    pub error: bool,
    /// Both directions of the socket are shut (POLLHUP).
    pub hangup: bool,
}

impl Ready {
    /// Readable, and nothing said of errors.
    pub const READABLE: Ready = Ready {
        read: true,
        write: false,
        error: false,
        hangup: false,
    };
    /// Writable, and nothing said of errors.
    pub const WRITABLE: Ready = Ready {
        read: false,
        write: true,
        error: false,
        hangup: false,
    };

    /// What `self` and `other` say together: a poller's reports of one socket
    /// for reading and for writing, taken in one wait.
    pub fn union(self, other: Ready) -> Ready {
        Ready {
            read: self.read || other.read,
            write: self.write || other.write,
            error: self.error || other.error,
            hangup: self.hangup || other.hangup,
        }
    }
}

/// What to watch on one socket while waiting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Watch {
    /// Wake when it can be read.
    pub read: bool,
    /// Wake when it can be written.
    pub write: bool,
    /// Wake on an error or hang-up even when neither is wanted (poll(2) reports
    /// them always; a driver that cannot watch them alone may ignore this, see
    /// FAULT-1). False for a socket that is not open or already hung up.
    pub errors: bool,
}

/// Nothing can happen until a watched socket is ready or the deadline
/// ([`Connection::poll_timeout`]) passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    /// Per side ([`Side::index`]).
    pub watch: [Watch; 2],
    /// Per direction ([`Direction::index`]): its copy buffer is no longer
    /// needed (the direction is quiet). Take it with
    /// [`Connection::take_buffer`] and keep it for a later
    /// [`Connection::lend_buffer`], or leave it: one not taken before the next
    /// [`Connection::poll_output`] is dropped. Given with the wait rather than
    /// as an output of its own, as a quiet moment is when a relayed message
    /// ends: one output fewer per message.
    pub buffers_offered: [bool; 2],
}

/// Where [`Output::Connect`] connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectTo {
    /// The destination or the upstream proxy.
    pub addr: SocketAddr,
    /// The local address to bind (`-p`, port 0).
    pub bind: Option<SocketAddr>,
}

/// What the adapter does next. At most 16 bytes, so it travels in two
/// registers: a relayed message takes four of them, and larger ones were a
/// tenth of a message's instructions in copies. What is larger is boxed (given
/// once per connection) or asked for with a call.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Output {
    /// Events wait for the listener's forwarder: lock it once and call
    /// [`Forwarder::exchange`](crate::forwarder::Forwarder::exchange) with this
    /// connection (or hand each [`Connection::poll_forwarder_event`] to
    /// [`Forwarder::handle_event`](crate::forwarder::Forwarder::handle_event) and
    /// its answer to [`Connection::handle_event`]).
    Forwarder,
    /// Close any destination socket, start a non-blocking connect to the
    /// address (bound to the local one first when given), and report
    /// [`Connection::handle_connect_started`].
    Connect(Box<ConnectTo>),
    /// The connecting socket became ready: collect its error (SO_ERROR) and report
    /// [`Connection::handle_connect_result`].
    FinishConnect,
    /// Ask the client socket's local address (getsockname) and report
    /// [`Connection::handle_local_addr`] (for the PROXY header).
    LocalAddr,
    /// Open `dir`'s splice pipe; report [`Connection::handle_pipe_failed`] if it
    /// cannot be had.
    OpenPipe(Direction),
    /// Close `dir`'s splice pipe (it is empty).
    ClosePipe(Direction),
    /// Read from `dir`'s source into [`Connection::read_space`]; report
    /// [`Connection::handle_transfer`].
    Read(Direction),
    /// splice(2) up to `max` bytes from `dir`'s source into its pipe; report
    /// [`Connection::handle_transfer`].
    SpliceIn {
        /// The direction.
        dir: Direction,
        /// At most this many bytes.
        max: usize,
    },
    /// Write [`Connection::write_data`] to `dir`'s sink; report
    /// [`Connection::handle_transfer`].
    Write(Direction),
    /// splice(2) up to `max` bytes from `dir`'s pipe to its sink; report
    /// [`Connection::handle_transfer`].
    SpliceOut {
        /// The direction.
        dir: Direction,
        /// At most this many bytes.
        max: usize,
    },
    /// Shut down the write half of `dir`'s sink; report
    /// [`Connection::handle_shutdown`].
    ShutdownWrite(Direction),
    /// Write this line to the log.
    Log(Box<LogRecord>),
    /// Append this record's line to the session file (SPEC §4). Boxed: it is
    /// large and given once per connection, and every output moves through here.
    Session(Box<SessionRecord>),
    /// Wait for readiness or the deadline [`Connection::poll_timeout`] gives;
    /// report [`Connection::handle_ready`] (or just call
    /// [`Connection::poll_output`] again at the deadline).
    Wait(Wait),
    /// Let other connections run, then carry on: the output budget is used up.
    Yield,
    /// Close both sockets and any pipes; with `reset`, reset them (SO_LINGER 0) so a
    /// stream cut short never looks complete. Nothing is reported back.
    Close {
        /// Reset rather than close cleanly.
        reset: bool,
        /// Per direction, a copy buffer it no longer needs, as
        /// [`Wait::buffers_offered`] says.
        buffers_offered: [bool; 2],
    },
    /// The connection is over and accounted for: drop it.
    Done,
}

// Kept so: a variant that grows the output past two registers fails the build.
const _: () = assert!(std::mem::size_of::<Output>() <= 16);

/// An input for the dialer, kept until the next [`Connection::poll_output`].
#[derive(Debug)]
enum DialInput {
    Start,
    Connected,
    ConnectFailed(String),
    LocalFailure(String),
    Reply(usize),
    ReplyEof,
    Timeout,
}

/// Where the dialing phase stands with its destination socket.
#[derive(Debug)]
enum DialIo {
    /// Waiting for the dialer's next step: a [`DialInput`] is pending, or the
    /// forwarder is choosing.
    Deciding,
    /// A connect to start ([`Output::Connect`] not yet given).
    Connect {
        addr: SocketAddr,
        bind: Option<SocketAddr>,
    },
    /// Connect asked for; its start not yet reported.
    Starting,
    /// The connect is under way: waiting for writability.
    Connecting,
    /// [`Output::FinishConnect`] given; its result not yet reported.
    Checking,
    /// Writing the CONNECT request.
    Sending { request: Bytes, sent: usize },
    /// Reading the proxy's reply head.
    Receiving { buf: Vec<u8> },
    /// Reached: the client's local address is needed for the PROXY header.
    LocalAddr { leftover: Bytes, asked: bool },
}

/// Checks `relay`'s idle deadline at `now` (OPT-2); true once it is finished,
/// whether by that deadline or by both directions. Without a deadline only the
/// directions can finish it, and that is all a relayed message asks of this.
/// Bytes a peer was heard to have sent are read before the deadline is taken.
fn relay_timeout(sockets: &[SocketState; 2], relay: &mut Relay, now: Instant) -> bool {
    if relay.poll_timeout().is_none() || unread(sockets, relay) {
        relay.is_finished()
    } else {
        relay.handle_timeout(now)
    }
}

/// True when a peer's bytes are waiting that plug has been told of and could
/// read now. They came in time even if plug looks late (it was stopped and
/// continued, or its clock jumped), so they are read before the idle deadline is
/// taken; the read is activity, and a read that finds nothing clears the flag.
fn unread(sockets: &[SocketState; 2], relay: &Relay) -> bool {
    Direction::BOTH.iter().any(|&dir| {
        sockets[dir.source().index()].readable && relay.half(dir).wants_read().is_some()
    })
}

#[derive(Debug)]
struct Dialing {
    dialer: Dialer,
    io: DialIo,
    input: Option<DialInput>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseStage {
    /// [`Output::Close`] still to give.
    Sockets { reset: bool },
    /// The [`ForwarderEvent::Closed`] (counts) still to give.
    Counts,
    /// Accounted for.
    Done,
}

#[derive(Debug)]
enum Phase {
    Dialing(Box<Dialing>),
    Relaying(Box<Relay>),
    Closing {
        stage: CloseStage,
        /// Boxed: a connection's state stays small while it relays.
        ended: Box<Ended>,
    },
}

/// How a connection ended, kept for its counts and lines.
#[derive(Debug)]
struct Ended {
    outcome: Option<RelayOutcome>,
    /// From accept to close, as the session line says.
    duration: Duration,
    /// The relay's copy buffers, until [`Connection::take_buffer`].
    buffers: [Option<BytesMut>; 2],
}

/// What the core believes about one socket, from the results of calls and the
/// poller's reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SocketState {
    readable: bool,
    writable: bool,
    hung_up: bool,
}

/// The operation the adapter was last asked to do, so its result can be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    None,
    Read(Direction, usize),
    SpliceIn(Direction, usize),
    Write(Direction, usize),
    SpliceOut(Direction, usize),
    Shutdown(Direction),
}

/// One accepted client: the machine of its whole life. Made by
/// [`Forwarder::handle_accepted`](crate::forwarder::Forwarder::handle_accepted).
#[derive(Debug)]
pub struct Connection {
    settings: Arc<Settings>,
    peer: SocketAddr,
    accepted_at: Instant,
    phase: Phase,
    sockets: [SocketState; 2],
    queue: VecDeque<Output>,
    /// A [`DialInput`] waits to be given to the dialer.
    dial_pending: bool,
    /// The destination reached is still to be told to the forwarder.
    reach_untold: bool,
    reached: Option<(DestId, Destination)>,
    pending: Pending,
    /// Which direction goes first when both could act (fairness).
    turn: u8,
    outputs_since_wait: u32,
    pipes: [bool; 2],
    /// When the last byte moved, for releasing idle buffers and pipes.
    quiet_since: Option<Instant>,
    /// The directions whose buffers the last output offered
    /// ([`Wait::buffers_offered`], [`Output::Close`]).
    offered: [bool; 2],
}

impl Connection {
    /// A connection for `peer`, accepted at `now`, that will dial with `dialer`.
    /// Its first output is [`Output::Forwarder`]: the first destination is to
    /// be chosen.
    pub(crate) fn new(
        settings: Arc<Settings>,
        peer: SocketAddr,
        now: Instant,
        dialer: Dialer,
    ) -> Self {
        let mut conn = Connection {
            settings,
            peer,
            accepted_at: now,
            phase: Phase::Dialing(Box::new(Dialing {
                dialer,
                io: DialIo::Deciding,
                input: Some(DialInput::Start),
            })),
            sockets: [
                // The client has usually sent its first bytes by now.
                SocketState {
                    readable: true,
                    writable: true,
                    hung_up: false,
                },
                SocketState {
                    readable: false,
                    writable: false,
                    hung_up: false,
                },
            ],
            queue: VecDeque::new(),
            dial_pending: true,
            reach_untold: false,
            reached: None,
            pending: Pending::None,
            turn: 0,
            outputs_since_wait: 0,
            pipes: [false; 2],
            quiet_since: None,
            offered: [false; 2],
        };
        conn.run_dial(now);
        conn
    }

    /// The settings of the listener's line it started under (OPT-15: a reload
    /// does not change them for an open connection).
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The destination reached, once reached.
    pub fn reached(&self) -> Option<&Destination> {
        self.reached.as_ref().map(|(_, d)| d)
    }

    /// True once the connection is over and accounted for ([`Output::Done`]).
    pub fn is_done(&self) -> bool {
        matches!(
            self.phase,
            Phase::Closing {
                stage: CloseStage::Done,
                ..
            }
        )
    }

    /// The next thing to do at `now`. Call after every input until it returns
    /// [`Output::Wait`] or [`Output::Done`]; deadlines are checked on every call.
    pub fn poll_output(&mut self, now: Instant) -> Output {
        if self.offered != [false; 2] {
            for dir in Direction::marked(std::mem::take(&mut self.offered)) {
                // Not taken: dropped, so it is not offered again and again.
                drop(self.take_buffer(dir));
            }
        }
        // Each pass either returns or moves the connection on to closing, which
        // always returns: at most a few passes.
        loop {
            // Lines already made go first: a client's failed attempt is
            // logged before the health line the forwarder makes of it.
            if let Some(out) = self.queue.pop_front() {
                return out;
            }
            if self.has_forwarder_event() {
                return Output::Forwarder;
            }
            if self.dial_pending {
                self.run_dial(now);
                continue;
            }
            let out = match self.phase {
                Phase::Dialing(_) => self.poll_dial(now),
                Phase::Relaying(_) => self.poll_relay(now),
                Phase::Closing { stage, ref ended } => Some(match stage {
                    CloseStage::Sockets { reset } => {
                        // The relay's buffers go back with the close.
                        let buffers_offered = ended.buffers.each_ref().map(Option::is_some);
                        self.offered = buffers_offered;
                        self.set_stage(CloseStage::Counts);
                        Output::Close {
                            reset,
                            buffers_offered,
                        }
                    }
                    // Told with the forwarder's events, above.
                    CloseStage::Counts => Output::Forwarder,
                    CloseStage::Done => Output::Done,
                }),
            };
            if let Some(out) = out {
                return self.budget(out);
            }
        }
    }

    /// Counts I/O outputs since the last wait; past [`OUTPUTS_BEFORE_YIELD`] the
    /// output is kept for later and [`Output::Yield`] given instead.
    fn budget(&mut self, out: Output) -> Output {
        match out {
            Output::Wait(_) => self.outputs_since_wait = 0,
            Output::Read(_)
            | Output::Write(_)
            | Output::SpliceIn { .. }
            | Output::SpliceOut { .. }
            | Output::ShutdownWrite(_) => {
                self.outputs_since_wait += 1;
                if self.outputs_since_wait > OUTPUTS_BEFORE_YIELD {
                    self.outputs_since_wait = 0;
                    self.queue.push_front(out);
                    return Output::Yield;
                }
            }
            _ => {}
        }
        out
    }

    /// Checks the deadlines at `now` (also done by every [`Connection::poll_output`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        let dest = self.sockets[Side::Destination.index()];
        match &mut self.phase {
            Phase::Dialing(d) => {
                // Readiness reported but not yet looked at may be the answer the
                // dial waits for, come in time while plug was late (stopped and
                // continued, a clock jump): it is looked at first. A look that
                // finds nothing clears it, and the deadline then holds.
                let unseen = match d.io {
                    DialIo::Connecting | DialIo::Sending { .. } => dest.writable,
                    DialIo::Receiving { .. } => dest.readable,
                    _ => false,
                };
                if d.input.is_none() && !unseen && d.dialer.poll_timeout().is_some_and(|t| now >= t)
                {
                    d.input = Some(DialInput::Timeout);
                    self.dial_pending = true;
                }
            }
            Phase::Relaying(relay) => {
                relay_timeout(&self.sockets, relay, now);
            }
            Phase::Closing { .. } => {}
        }
    }

    fn set_stage(&mut self, stage: CloseStage) {
        if let Phase::Closing { stage: s, .. } = &mut self.phase {
            *s = stage;
        }
    }

    /// The next event for the forwarder, oldest first (after
    /// [`Output::Forwarder`]). They are not queued but read off the state, so
    /// an idle connection holds nothing for them.
    #[must_use]
    pub fn poll_forwarder_event(&mut self) -> Option<ForwarderEvent> {
        if std::mem::take(&mut self.reach_untold) {
            if let Some((dest, _)) = &self.reached {
                return Some(ForwarderEvent::Reached { dest: *dest });
            }
        }
        match &mut self.phase {
            Phase::Dialing(d) => d.dialer.poll_forwarder_event(),
            Phase::Closing {
                stage: CloseStage::Counts,
                ..
            } => self.account(),
            _ => None,
        }
    }

    /// True when [`Connection::poll_forwarder_event`] has one.
    fn has_forwarder_event(&self) -> bool {
        self.reach_untold
            || match &self.phase {
                Phase::Dialing(d) => d.dialer.has_forwarder_event(),
                Phase::Closing { stage, .. } => *stage == CloseStage::Counts,
                Phase::Relaying(_) => false,
            }
    }

    /// Takes the forwarder's answer to one of this connection's events.
    pub fn handle_event(&mut self, now: Instant, event: ConnectionEvent) {
        match event {
            ConnectionEvent::Chosen { plan, choice } => {
                if let Phase::Dialing(d) = &mut self.phase {
                    let step = d.dialer.handle_chosen(now, plan, choice);
                    self.after_dial_step(now, Some(step));
                }
            }
        }
    }

    /// The counts to hand over ([`ForwarderEvent::Closed`]); the lines that
    /// must find them there follow.
    fn account(&mut self) -> Option<ForwarderEvent> {
        let Phase::Closing { stage, ended } = &mut self.phase else {
            return None;
        };
        *stage = CloseStage::Done;
        let Ended {
            outcome, duration, ..
        } = **ended;
        // The session line and the `Complete` line come after the counts:
        // whoever reads them finds the dump and metrics agree (OPT-6, OPT-9).
        if let (true, Some((_, destination))) = (self.settings.sessions, &self.reached) {
            let relayed = outcome.unwrap_or(no_relay(Side::Destination));
            let record = SessionRecord::new(
                self.settings.source,
                self.peer.ip(),
                destination.clone(),
                &relayed,
                duration,
            );
            self.queue.push_back(Output::Session(Box::new(record)));
        }
        let status = CloseStatus::of(self.reached.is_some(), outcome.map(|o| o.end));
        let source = self.settings.source;
        self.log(LogLevel::Connection, || log::complete(&source, status));
        Some(ForwarderEvent::Closed {
            peer: self.peer,
            dest: self.reached.as_ref().map(|(id, _)| *id),
            outcome,
            duration,
        })
    }

    /// Gives the dialer its pending input and does what it says next.
    fn run_dial(&mut self, now: Instant) {
        self.dial_pending = false;
        let Phase::Dialing(d) = &mut self.phase else {
            return;
        };
        let Some(input) = d.input.take() else {
            return;
        };
        let step = match input {
            DialInput::Start => Some(d.dialer.start(now)),
            DialInput::Connected => Some(d.dialer.handle_connected(now)),
            DialInput::ConnectFailed(e) => Some(d.dialer.handle_connect_failed(now, &e)),
            DialInput::LocalFailure(e) => Some(d.dialer.handle_local_failure(now, &e)),
            DialInput::Reply(n) => {
                let data = match &d.io {
                    DialIo::Receiving { buf } => buf.get(..n).unwrap_or(&[]),
                    _ => &[],
                };
                Some(d.dialer.handle_reply_data(now, data))
            }
            DialInput::ReplyEof => Some(d.dialer.handle_reply_eof(now)),
            DialInput::Timeout => d.dialer.handle_timeout(now),
        };
        self.after_dial_step(now, step);
    }

    /// Logs what the dialer noticed and does what it says next (`None`:
    /// nothing, a deadline had not passed after all).
    fn after_dial_step(&mut self, now: Instant, step: Option<DialStep>) {
        let Phase::Dialing(d) = &mut self.phase else {
            return;
        };
        // A client's failed attempts, at the normal level, so an operator sees
        // which destination failed, for whom and why (FAULT-4 limits them);
        // the forwarder learns of them after these lines.
        let mut lines = Vec::new();
        while let Some(event) = d.dialer.poll_event() {
            let record = LogRecord::limited(
                LogKind::DestinationFailed,
                LogLevel::Notice,
                event.to_string(),
            );
            lines.push(record);
        }
        for record in lines {
            if self.settings.log.wants(record.level) {
                self.queue_log(record);
            }
        }
        if let Some(step) = step {
            self.apply_step(now, step);
        }
    }

    fn apply_step(&mut self, now: Instant, step: DialStep) {
        let Phase::Dialing(d) = &mut self.phase else {
            return;
        };
        match step {
            DialStep::Choose => d.io = DialIo::Deciding,
            DialStep::Wait => {}
            DialStep::Connect { addr, bind, .. } => {
                d.io = DialIo::Connect { addr, bind };
                self.sockets[Side::Destination.index()] = SocketState {
                    readable: false,
                    writable: false,
                    hung_up: false,
                };
            }
            DialStep::SendRequest { request } => {
                d.io = DialIo::Sending { request, sent: 0 };
            }
            DialStep::ReadReply => {
                if !matches!(d.io, DialIo::Receiving { .. }) {
                    d.io = DialIo::Receiving {
                        buf: vec![0; REPLY_CHUNK],
                    };
                }
            }
            DialStep::Established { dest, leftover } => {
                if let Some(destination) = d.dialer.destination().cloned() {
                    let (source, peer) = (self.settings.source, self.peer.ip());
                    self.log(LogLevel::Connection, || {
                        log::connect_from(&source, peer, &destination)
                    });
                    self.reached = Some((dest, destination));
                    self.reach_untold = true;
                }
                match self.settings.proxy_protocol {
                    Some(_) => {
                        if let Phase::Dialing(d) = &mut self.phase {
                            d.io = DialIo::LocalAddr {
                                leftover,
                                asked: false,
                            };
                        }
                    }
                    None => self.start_relay(now, &leftover, &[]),
                }
            }
            DialStep::GiveUp => self.finish(now, None),
        }
    }

    fn start_relay(&mut self, now: Instant, leftover: &[u8], preamble: &[u8]) {
        let mut relay = Relay::with_preamble(now, self.settings.relay, leftover, preamble);
        for dir in Direction::BOTH {
            relay
                .half_mut(dir)
                .set_splice(self.settings.runtime.pipe_capacity);
        }
        // A destination just connected has rarely sent anything yet: ask the
        // poller before spending a read on it.
        self.sockets[Side::Destination.index()].readable = false;
        self.sockets[Side::Destination.index()].writable = true;
        self.quiet_since = None;
        self.phase = Phase::Relaying(Box::new(relay));
    }

    /// Ends the connection: queues its records and moves to closing. `outcome` is
    /// the relay's, when one ran.
    fn finish(&mut self, now: Instant, outcome: Option<RelayOutcome>) {
        let mut buffers = [None, None];
        if let Phase::Relaying(relay) = &mut self.phase {
            for dir in Direction::BOTH {
                let buffer = relay.half_mut(dir).release_idle_buffer();
                if self.settings.runtime.reuse_buffers {
                    buffers[dir.index()] = buffer;
                }
            }
        }
        let end = outcome.map(|o| o.end);
        if let Some(o) = outcome {
            let peer = self.peer;
            self.log(LogLevel::Debug(1), || {
                format!(
                    "{peer} closed: {:?}, in {} out {}, spliced {}",
                    o.end, o.from_client, o.from_destination, o.spliced
                )
            });
        }
        let duration = now.saturating_duration_since(self.accepted_at);
        for dir in Direction::BOTH {
            if std::mem::take(&mut self.pipes[dir.index()]) {
                self.settings.pipes.give_back();
            }
        }
        let reset = end.is_some_and(RelayEnd::is_abortive) && self.reached.is_some();
        self.pending = Pending::None;
        self.phase = Phase::Closing {
            stage: CloseStage::Sockets { reset },
            ended: Box::new(Ended {
                outcome,
                duration,
                buffers,
            }),
        };
    }

    /// Ends the connection wherever it is, as if both sockets had failed: for an
    /// adapter that cannot go on with it (its thread or task could not start). Drain
    /// [`Connection::poll_output`] afterwards so it is accounted for (FAULT-5).
    pub fn abandon(&mut self, now: Instant) {
        match &mut self.phase {
            Phase::Closing { .. } => {}
            Phase::Relaying(relay) => {
                relay.handle_error(now, Side::Client);
                let outcome = relay.outcome();
                self.finish(now, outcome);
            }
            Phase::Dialing(_) => self.finish(now, Some(no_relay(Side::Client))),
        }
        // A choice asked for and not yet made is no longer wanted (it went
        // with the dialing phase).
        self.dial_pending = false;
    }

    /// Reports that the process cut this connection at the end of a drain
    /// (OPT-8): its sockets were reset from outside. It ends as if both had
    /// failed, with its session line and a non-zero `Complete` status; one
    /// already closing finishes as it was. Repeating it changes nothing.
    pub fn handle_cut(&mut self, now: Instant) {
        self.abandon(now);
    }

    fn log(&mut self, level: LogLevel, text: impl FnOnce() -> String) {
        if self.settings.log.wants(level) {
            self.queue_log(LogRecord::new(level, text()));
        }
    }

    /// Queues `record` for the log, after the outputs already queued.
    fn queue_log(&mut self, record: LogRecord) {
        self.queue.push_back(Output::Log(Box::new(record)));
    }

    fn poll_dial(&mut self, now: Instant) -> Option<Output> {
        self.handle_timeout(now);
        if self.dial_pending {
            return None;
        }
        let dest = self.sockets[Side::Destination.index()];
        let client_errors = !self.sockets[Side::Client.index()].hung_up;
        let Phase::Dialing(d) = &mut self.phase else {
            return None;
        };
        let wait = |dest_read: bool, dest_write: bool, dest_errors: bool| {
            Output::Wait(Wait {
                watch: [
                    Watch {
                        read: false,
                        write: false,
                        errors: client_errors,
                    },
                    Watch {
                        read: dest_read,
                        write: dest_write,
                        errors: dest_errors,
                    },
                ],
                buffers_offered: [false; 2],
            })
        };
        let out = match &mut d.io {
            DialIo::Deciding => wait(false, false, false),
            DialIo::Connect { addr, bind } => {
                let out = Output::Connect(Box::new(ConnectTo {
                    addr: *addr,
                    bind: *bind,
                }));
                d.io = DialIo::Starting;
                out
            }
            DialIo::Starting | DialIo::Checking => wait(false, false, false),
            DialIo::Connecting => {
                if dest.writable {
                    d.io = DialIo::Checking;
                    Output::FinishConnect
                } else {
                    wait(false, true, true)
                }
            }
            DialIo::Sending { request, sent } => {
                if dest.writable {
                    self.pending = Pending::Write(Direction::Upstream, request.len() - *sent);
                    Output::Write(Direction::Upstream)
                } else {
                    wait(false, true, true)
                }
            }
            DialIo::Receiving { buf } => {
                if dest.readable {
                    self.pending = Pending::Read(Direction::Downstream, buf.len());
                    Output::Read(Direction::Downstream)
                } else {
                    wait(true, false, true)
                }
            }
            DialIo::LocalAddr { asked, .. } => {
                if *asked {
                    wait(false, false, true)
                } else {
                    *asked = true;
                    Output::LocalAddr
                }
            }
        };
        Some(out)
    }

    fn poll_relay(&mut self, now: Instant) -> Option<Output> {
        let Phase::Relaying(relay) = &mut self.phase else {
            return None;
        };
        if relay_timeout(&self.sockets, relay, now) {
            let outcome = relay.outcome();
            self.finish(now, outcome);
            return None;
        }
        for k in 0..2 {
            let dir = Direction::BOTH[(usize::from(self.turn) + k) % 2];
            let sink = self.sockets[dir.sink().index()];
            let source = self.sockets[dir.source().index()];
            let half = relay.half(dir);
            if let (Some(from), true) = (half.wants_write(), sink.writable) {
                self.turn ^= 1;
                return Some(match from {
                    WriteFrom::Buffer => {
                        self.pending = Pending::Write(dir, half.buffered());
                        Output::Write(dir)
                    }
                    WriteFrom::Pipe => {
                        let max = half.piped();
                        self.pending = Pending::SpliceOut(dir, max);
                        Output::SpliceOut { dir, max }
                    }
                });
            }
            if half.wants_shutdown() {
                let other = Direction::BOTH[(dir.index() + 1) % 2];
                if relay.half(other).is_done() {
                    // The last direction to end: closing both sockets sends the
                    // same FIN, so no shutdown(2) of its own.
                    relay.handle_shutdown(now, dir);
                    return None;
                }
                self.pending = Pending::Shutdown(dir);
                return Some(Output::ShutdownWrite(dir));
            }
            if !source.readable {
                continue;
            }
            if half.wants_read() == Some(ReadInto::Pipe) && !self.pipes[dir.index()] {
                if self.settings.pipes.try_take() {
                    self.pipes[dir.index()] = true;
                    return Some(Output::OpenPipe(dir));
                }
                // No pipe to be had: this direction copies (FAULT-3).
                relay.half_mut(dir).set_splice(None);
            }
            match relay.half(dir).wants_read() {
                Some(ReadInto::Buffer) => {
                    self.turn ^= 1;
                    // The size is known once the adapter asks for the space.
                    self.pending = Pending::Read(dir, 0);
                    return Some(Output::Read(dir));
                }
                Some(ReadInto::Pipe) => {
                    self.turn ^= 1;
                    let max = relay.half(dir).pipe_space();
                    self.pending = Pending::SpliceIn(dir, max);
                    return Some(Output::SpliceIn { dir, max });
                }
                None => {}
            }
        }
        // Nothing can move now: hand back what quiet directions hold, then wait.
        let holds = |relay: &Relay, dir: Direction, pipes: &[bool; 2]| {
            let half = relay.half(dir);
            half.is_idle() && (half.has_buffer() || pipes[dir.index()])
        };
        let holding = Direction::BOTH
            .iter()
            .any(|&dir| holds(relay, dir, &self.pipes));
        if holding {
            let since = *self.quiet_since.get_or_insert(now);
            // Quiet for `wait` by now; no clock arithmetic for an immediate release.
            let quiet_for =
                |wait: Duration| wait.is_zero() || now.saturating_duration_since(since) >= wait;
            for dir in Direction::BOTH {
                let half = relay.half_mut(dir);
                if half.is_idle() && self.pipes[dir.index()] && quiet_for(PIPE_IDLE) {
                    self.pipes[dir.index()] = false;
                    self.settings.pipes.give_back();
                    return Some(Output::ClosePipe(dir));
                }
            }
            // Buffers last: they go out with the wait below.
            for dir in Direction::BOTH {
                let half = relay.half_mut(dir);
                if half.is_idle()
                    && half.has_buffer()
                    && quiet_for(self.settings.runtime.buffer_release_after)
                {
                    if self.settings.runtime.reuse_buffers {
                        // Taken by the adapter, or dropped at the next poll.
                        self.offered[dir.index()] = true;
                    } else {
                        drop(half.release_idle_buffer());
                    }
                }
            }
        }
        let mut watch = [Watch::default(); 2];
        for dir in Direction::BOTH {
            let half = relay.half(dir);
            if half.wants_read().is_some() {
                watch[dir.source().index()].read = true;
            }
            if half.wants_write().is_some() {
                watch[dir.sink().index()].write = true;
            }
        }
        for side in [Side::Client, Side::Destination] {
            watch[side.index()].errors = !self.sockets[side.index()].hung_up;
        }
        Some(Output::Wait(Wait {
            watch,
            buffers_offered: self.offered,
        }))
    }

    /// When to call [`Connection::poll_output`] again even if no socket is
    /// ready, after [`Output::Wait`]: the connect or proxy deadline while
    /// dialing; the idle timeout, or the release of a quiet direction's buffer
    /// or pipe, while relaying.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Dialing(d) => d.dialer.poll_timeout(),
            Phase::Relaying(relay) => earliest(
                relay.poll_timeout(),
                self.quiet_since
                    .and_then(|since| self.release_deadline_at(since)),
            ),
            Phase::Closing { .. } => None,
        }
    }

    /// Takes `dir`'s copy buffer after [`Wait::buffers_offered`] or
    /// [`Output::Close`] offered it.
    pub fn take_buffer(&mut self, dir: Direction) -> Option<BytesMut> {
        match &mut self.phase {
            Phase::Relaying(relay) => relay.half_mut(dir).release_idle_buffer(),
            Phase::Closing { ended, .. } => ended.buffers[dir.index()].take(),
            Phase::Dialing(_) => None,
        }
    }

    /// When held buffers or pipes of directions quiet since `quiet_since` are due
    /// to be given back.
    fn release_deadline_at(&self, quiet_since: Instant) -> Option<Instant> {
        let Phase::Relaying(relay) = &self.phase else {
            return None;
        };
        let mut due = None;
        for dir in Direction::BOTH {
            let half = relay.half(dir);
            if !half.is_idle() {
                continue;
            }
            // One offered is given back, or dropped at the next poll.
            if half.has_buffer() && !self.offered[dir.index()] {
                due = earliest(
                    due,
                    quiet_since.checked_add(self.settings.runtime.buffer_release_after),
                );
            }
            if self.pipes[dir.index()] {
                due = earliest(due, quiet_since.checked_add(PIPE_IDLE));
            }
        }
        due
    }

    /// The buffer to read into after [`Output::Read`]: the relay's for `dir`, or
    /// the proxy reply buffer while dialing. Empty when no read was asked for.
    pub fn read_space(&mut self, dir: Direction) -> &mut [u8] {
        match &mut self.phase {
            Phase::Relaying(relay) => {
                let space = relay.half_mut(dir).read_space();
                if let Pending::Read(d, _) = self.pending {
                    if d == dir {
                        self.pending = Pending::Read(dir, space.len());
                    }
                }
                space
            }
            Phase::Dialing(d) => match &mut d.io {
                DialIo::Receiving { buf } if dir == Direction::Downstream => buf,
                _ => &mut [],
            },
            Phase::Closing { .. } => &mut [],
        }
    }

    /// The buffer size `dir` needs before the [`Output::Read`] just given, when it
    /// holds none: a driver with a spare buffer of that size may
    /// [`Connection::lend_buffer`] it; otherwise the read allocates one.
    pub fn wants_buffer(&self, dir: Direction) -> Option<usize> {
        match &self.phase {
            Phase::Relaying(relay) => {
                let half = relay.half(dir);
                (!half.has_buffer() && half.wants_read() == Some(ReadInto::Buffer))
                    .then(|| half.planned_buffer_size())
            }
            _ => None,
        }
    }

    /// Lends `buffer` to `dir` for its next reads (see [`Connection::wants_buffer`]).
    /// Its old contents are never sent; ignored when `dir` already has a buffer.
    pub fn lend_buffer(&mut self, dir: Direction, buffer: BytesMut) {
        if let Phase::Relaying(relay) = &mut self.phase {
            relay.half_mut(dir).provide_buffer(buffer);
        }
    }

    /// The bytes to write after [`Output::Write`]: the relay's for `dir`, or the
    /// rest of the CONNECT request while dialing.
    pub fn write_data(&self, dir: Direction) -> &[u8] {
        match &self.phase {
            Phase::Relaying(relay) => relay.half(dir).write_data(),
            Phase::Dialing(d) => match &d.io {
                DialIo::Sending { request, sent } if dir == Direction::Upstream => {
                    request.get(*sent..).unwrap_or(&[])
                }
                _ => &[],
            },
            Phase::Closing { .. } => &[],
        }
    }

    /// Reports what the poller said about `side` after [`Output::Wait`].
    pub fn handle_ready(&mut self, now: Instant, side: Side, ready: Ready) {
        let socket = &mut self.sockets[side.index()];
        // An error or hang-up is revealed by the next read or write, so both may
        // be tried.
        socket.readable |= ready.read || ready.error || ready.hangup;
        socket.writable |= ready.write || ready.error || ready.hangup;
        match &mut self.phase {
            Phase::Dialing(d) => {
                if side == Side::Client && (ready.error || ready.hangup) {
                    // The client is gone before a destination was reached.
                    self.abandon(now);
                } else if side == Side::Destination
                    && matches!(d.io, DialIo::Connecting)
                    && self.settings.runtime.readiness_tells_errors
                    && ready.write
                    && !(ready.error || ready.hangup)
                {
                    // Connected, as the poller's flags say (see
                    // `Runtime::readiness_tells_errors`); a failed connect still
                    // has its error collected, for the log line.
                    self.dial_input(DialInput::Connected);
                }
            }
            Phase::Relaying(relay) => {
                if ready.error {
                    // CONN-6: a reset or error on either side ends both at once.
                    relay.handle_error(now, side);
                } else if ready.hangup {
                    // Nothing more can arrive or be taken there; a wanted read or
                    // write will say so. Not watched again for errors: poll(2)
                    // would report the hang-up forever.
                    self.sockets[side.index()].hung_up = true;
                }
            }
            Phase::Closing { .. } => {}
        }
    }

    /// Reports the start of the connect asked for by [`Output::Connect`].
    pub fn handle_connect_started(&mut self, _now: Instant, result: Result<(), ConnectFailure>) {
        let Phase::Dialing(d) = &mut self.phase else {
            return;
        };
        if !matches!(d.io, DialIo::Starting) {
            return;
        }
        match result {
            Ok(()) => d.io = DialIo::Connecting,
            Err(ConnectFailure::Local(e)) => self.dial_input(DialInput::LocalFailure(e)),
            Err(ConnectFailure::Remote(e)) => self.dial_input(DialInput::ConnectFailed(e)),
        }
    }

    /// Reports the connect's outcome after [`Output::FinishConnect`] (the socket's
    /// pending error, if any).
    pub fn handle_connect_result(&mut self, _now: Instant, result: Result<(), String>) {
        let Phase::Dialing(d) = &self.phase else {
            return;
        };
        if !matches!(d.io, DialIo::Checking) {
            return;
        }
        match result {
            Ok(()) => {
                self.sockets[Side::Destination.index()].writable = true;
                self.dial_input(DialInput::Connected)
            }
            Err(e) => self.dial_input(DialInput::ConnectFailed(e)),
        }
    }

    /// Reports the client socket's local address after [`Output::LocalAddr`]. When
    /// it cannot be had no PROXY header can be made, and the connection ends.
    pub fn handle_local_addr(&mut self, now: Instant, result: Result<SocketAddr, String>) {
        let Phase::Dialing(d) = &mut self.phase else {
            return;
        };
        let DialIo::LocalAddr { leftover, .. } = &mut d.io else {
            return;
        };
        let leftover = std::mem::take(leftover);
        match (result, self.settings.proxy_protocol) {
            (Ok(local), Some(version)) => {
                let header = proxy_protocol::header(version, self.peer, local);
                self.start_relay(now, &leftover, &header);
            }
            (Ok(_), None) => self.start_relay(now, &leftover, &[]),
            (Err(e), _) => {
                let text = format!("cannot learn the local address for the PROXY header: {e}");
                let record = LogRecord::limited(LogKind::ClientError, LogLevel::Error, text);
                self.queue_log(record);
                self.finish(now, Some(no_relay(Side::Client)));
            }
        }
    }

    /// Reports that the pipe asked for by [`Output::OpenPipe`] could not be made:
    /// that direction copies instead (FAULT-3).
    pub fn handle_pipe_failed(&mut self, _now: Instant, dir: Direction) {
        if std::mem::take(&mut self.pipes[dir.index()]) {
            self.settings.pipes.give_back();
        }
        if let Phase::Relaying(relay) = &mut self.phase {
            if relay.half(dir).piped() == 0 {
                relay.half_mut(dir).set_splice(None);
            }
        }
    }

    fn dial_input(&mut self, input: DialInput) {
        if let Phase::Dialing(d) = &mut self.phase {
            d.input = Some(input);
            self.dial_pending = true;
            if !matches!(d.io, DialIo::Receiving { .. }) {
                d.io = DialIo::Deciding;
            }
        }
    }

    /// Reports the result of the last [`Output::Read`], [`Output::SpliceIn`],
    /// [`Output::Write`] or [`Output::SpliceOut`].
    pub fn handle_transfer(&mut self, now: Instant, result: Transfer) {
        let pending = std::mem::replace(&mut self.pending, Pending::None);
        if matches!(self.phase, Phase::Dialing(_)) {
            return self.handle_dial_transfer(pending, result);
        }
        let Phase::Relaying(relay) = &mut self.phase else {
            return;
        };
        match pending {
            Pending::Read(dir, asked) | Pending::SpliceIn(dir, asked) => {
                let spliced = matches!(pending, Pending::SpliceIn(..));
                let source = dir.source();
                match result {
                    Transfer::Moved(n) => {
                        if spliced {
                            relay.handle_spliced_in(now, dir, n);
                        } else {
                            relay.handle_read(now, dir, n);
                        }
                        if self.settings.log.debug >= 2 {
                            // -dd: every read, as 2.5.5's extra -d showed.
                            let from = match source {
                                Side::Client => "client",
                                Side::Destination => "destination",
                            };
                            let text = match n {
                                0 => format!("{}: end of stream from the {from}", self.peer),
                                n => format!("{}: {n} bytes from the {from}", self.peer),
                            };
                            let record = LogRecord::new(LogLevel::Debug(2), text);
                            self.queue_log(record);
                        }
                        if n > 0 {
                            self.quiet_since = None;
                            if n < asked {
                                // A short read almost always means drained.
                                self.sockets[source.index()].readable = false;
                            }
                        }
                    }
                    Transfer::WouldBlock => {
                        if spliced && relay.half(dir).piped() > 0 {
                            // The pipe is full, not the socket empty.
                            relay.handle_pipe_full(now, dir);
                        } else {
                            self.sockets[source.index()].readable = false;
                        }
                    }
                    Transfer::Interrupted => {}
                    Transfer::Failed(_) => relay.handle_error(now, source),
                }
            }
            Pending::Write(dir, offered) | Pending::SpliceOut(dir, offered) => {
                let spliced = matches!(pending, Pending::SpliceOut(..));
                let sink = dir.sink();
                match result {
                    // A socket that takes nothing is as broken as one that fails.
                    Transfer::Moved(0) | Transfer::Failed(_) => relay.handle_error(now, sink),
                    Transfer::Moved(n) => {
                        if spliced {
                            relay.handle_spliced_out(now, dir, n);
                        } else {
                            relay.handle_written(now, dir, n);
                        }
                        self.quiet_since = None;
                        if n < offered {
                            self.sockets[sink.index()].writable = false;
                        }
                    }
                    Transfer::WouldBlock => self.sockets[sink.index()].writable = false,
                    Transfer::Interrupted => {}
                }
            }
            Pending::Shutdown(_) | Pending::None => {}
        }
    }

    fn handle_dial_transfer(&mut self, pending: Pending, result: Transfer) {
        let Phase::Dialing(d) = &mut self.phase else {
            return;
        };
        let dest = &mut self.sockets[Side::Destination.index()];
        let input = match (pending, &mut d.io) {
            (Pending::Write(_, offered), DialIo::Sending { request, sent }) => match result {
                Transfer::Moved(0) => Some(DialInput::ConnectFailed(
                    "the proxy took no bytes".to_string(),
                )),
                Transfer::Moved(n) => {
                    if n < offered {
                        // As in the relay: a short write says the socket is full.
                        dest.writable = false;
                    }
                    *sent = (*sent + n).min(request.len());
                    if *sent == request.len() {
                        d.io = DialIo::Receiving {
                            buf: vec![0; REPLY_CHUNK],
                        };
                    }
                    None
                }
                Transfer::WouldBlock => {
                    dest.writable = false;
                    None
                }
                Transfer::Interrupted => None,
                Transfer::Failed(e) => Some(DialInput::ConnectFailed(e)),
            },
            (Pending::Read(..), DialIo::Receiving { .. }) => match result {
                Transfer::Moved(0) => Some(DialInput::ReplyEof),
                Transfer::Moved(n) => Some(DialInput::Reply(n)),
                Transfer::WouldBlock => {
                    dest.readable = false;
                    None
                }
                Transfer::Interrupted => None,
                Transfer::Failed(e) => Some(DialInput::ConnectFailed(e)),
            },
            _ => None,
        };
        if let Some(input) = input {
            self.dial_input(input);
        }
    }

    /// Reports the result of [`Output::ShutdownWrite`]. A failed shutdown means
    /// the peer is gone: an error on that side (CONN-6).
    pub fn handle_shutdown(&mut self, now: Instant, result: Result<(), String>) {
        let pending = std::mem::replace(&mut self.pending, Pending::None);
        let (Phase::Relaying(relay), Pending::Shutdown(dir)) = (&mut self.phase, pending) else {
            return;
        };
        match result {
            Ok(()) => relay.handle_shutdown(now, dir),
            Err(_) => relay.handle_error(now, dir.sink()),
        }
    }
}

/// The outcome of a connection that failed on `side` before any byte was relayed.
fn no_relay(side: Side) -> RelayOutcome {
    RelayOutcome {
        from_client: 0,
        from_destination: 0,
        spliced: 0,
        end: RelayEnd::Failed { side },
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

impl fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectFailure::Local(e) | ConnectFailure::Remote(e) => f.write_str(e),
        }
    }
}

#[cfg(test)]
mod tests {
    //! What the whole-connection simulation does not pin: what an I/O error
    //! means, when the connection is over, how long it may run before letting
    //! others, that both directions take turns, and when quiet buffers go.
    use super::*;
    use crate::config::cli::{self, Action};
    use crate::forwarder::Forwarder;
    use crate::test_clock::t0;
    use std::ffi::OsString;

    #[test]
    fn would_block_and_interrupted_are_not_errors_fault_1() {
        let err = |k: io::ErrorKind| Transfer::from(Err(io::Error::from(k)));
        assert_eq!(err(io::ErrorKind::WouldBlock), Transfer::WouldBlock);
        assert_eq!(err(io::ErrorKind::Interrupted), Transfer::Interrupted);
        assert!(matches!(
            err(io::ErrorKind::ConnectionReset),
            Transfer::Failed(_)
        ));
        assert_eq!(Transfer::from(Ok(7)), Transfer::Moved(7));
    }

    /// A connection relaying between two sockets that are always ready.
    fn relaying(release_after: Duration) -> (Forwarder, Connection, Instant) {
        relaying_with(&[], None, release_after)
    }

    /// A connection accepted by a forwarder made from `options` (before the
    /// port and destination) on a runtime splicing through pipes of
    /// `pipe_capacity`, if any.
    fn accepted(
        options: &[&str],
        pipe_capacity: Option<usize>,
        release_after: Duration,
    ) -> (Forwarder, Connection, Instant) {
        let words: Vec<&str> = options
            .iter()
            .copied()
            .chain(["8080", "127.0.0.1:9000"])
            .collect();
        let runtime = Runtime {
            name: "test",
            pipe_capacity,
            buffer_release_after: release_after,
            reuse_buffers: true,
            readiness_tells_errors: false,
        };
        accepted_by(&words, runtime)
    }

    /// A connection accepted by a forwarder made from the command line
    /// `words` on `runtime`.
    fn accepted_by(words: &[&str], runtime: Runtime) -> (Forwarder, Connection, Instant) {
        let now = t0();
        let argv = words.iter().map(OsString::from).collect();
        let Ok(Action::Run(config)) = cli::parse(argv) else {
            panic!("bad command line");
        };
        let mut f = Forwarder::new(&config, None, 1024, runtime);
        let c = f
            .handle_accepted(now, "10.0.0.7:4000".parse().unwrap())
            .unwrap();
        (f, c, now)
    }

    /// As [`relaying`], with `options` and pipes of `pipe_capacity`.
    fn relaying_with(
        options: &[&str],
        pipe_capacity: Option<usize>,
        release_after: Duration,
    ) -> (Forwarder, Connection, Instant) {
        let (mut f, mut c, now) = accepted(options, pipe_capacity, release_after);
        assert!(!c.is_done(), "a new connection is not over");
        let writable = Ready {
            write: true,
            ..Ready::default()
        };
        for _ in 0..20 {
            match c.poll_output(now) {
                Output::Forwarder => f.exchange(now, &mut c),
                Output::Connect { .. } => c.handle_connect_started(now, Ok(())),
                Output::Wait(_) if c.reached().is_none() => {
                    c.handle_ready(now, Side::Destination, writable)
                }
                Output::FinishConnect => c.handle_connect_result(now, Ok(())),
                Output::Log(_) => {}
                Output::Read(Direction::Upstream) => {
                    // Relaying: the client's first read is the test's.
                    return (f, c, now);
                }
                other => panic!("{other:?}"),
            }
        }
        panic!("never relaying")
    }

    /// Drives `c` at `at` (one instant: no time passes while plug catches up),
    /// with `reply` from a CONNECT proxy in one read, if any, and nothing more
    /// ready after it, until it waits, relays or ends; whether it reached its
    /// destination, and the lines it logged.
    fn catch_up(
        f: &mut Forwarder,
        c: &mut Connection,
        at: Instant,
        reply: Option<&[u8]>,
    ) -> (bool, Vec<String>) {
        let mut said = vec![];
        let mut reply = reply;
        for _ in 0..40 {
            match c.poll_output(at) {
                Output::Forwarder => f.exchange(at, c),
                Output::FinishConnect => c.handle_connect_result(at, Ok(())),
                Output::Write(Direction::Upstream) if c.reached().is_none() => {
                    let n = c.write_data(Direction::Upstream).len();
                    c.handle_transfer(at, Transfer::Moved(n));
                }
                Output::Read(Direction::Downstream) if c.reached().is_none() => {
                    match reply.take() {
                        Some(bytes) => {
                            c.read_space(Direction::Downstream)[..bytes.len()]
                                .copy_from_slice(bytes);
                            c.handle_transfer(at, Transfer::Moved(bytes.len()));
                        }
                        None => c.handle_transfer(at, Transfer::WouldBlock),
                    }
                }
                Output::Log(record) => said.push(record.text),
                Output::Wait(_) | Output::Read(Direction::Upstream) | Output::Done => break,
                Output::Close { .. } | Output::Session(_) => {}
                other => panic!("{other:?}"),
            }
        }
        (c.reached().is_some(), said)
    }

    /// CONN-3, CONN-4: on a poller whose readiness carries the error flags
    /// (epoll, `readiness_tells_errors`), a connect reported writable without
    /// an error has connected and is relayed at once, with no SO_ERROR look
    /// (one system call less per connection); one reported with an error still
    /// has its error collected, for the log, and the next destination is tried.
    #[test]
    fn a_connect_the_poller_reports_made_is_taken_and_one_it_reports_failed_fails_over_conn_4() {
        let runtime = Runtime {
            name: "test",
            pipe_capacity: None,
            buffer_release_after: Duration::ZERO,
            reuse_buffers: true,
            readiness_tells_errors: true,
        };
        let words = ["8080", "127.0.0.1:9000", "127.0.0.2:9000"];
        let (mut f, mut c, now) = accepted_by(&words, runtime);
        let refused = Ready {
            write: true,
            error: true,
            hangup: true,
            ..Ready::default()
        };
        let made = Ready {
            write: true,
            ..Ready::default()
        };
        let (mut dialed, mut asked, mut said) = (vec![], 0, vec![]);
        for _ in 0..40 {
            match c.poll_output(now) {
                Output::Forwarder => f.exchange(now, &mut c),
                Output::Connect(to) => {
                    dialed.push(to.addr.to_string());
                    c.handle_connect_started(now, Ok(()));
                }
                // The first destination refuses, the second accepts.
                Output::Wait(_) => {
                    let ready = if dialed.len() == 1 { refused } else { made };
                    c.handle_ready(now, Side::Destination, ready);
                }
                Output::FinishConnect => {
                    asked += 1;
                    let result = match dialed.len() {
                        1 => Err("Connection refused (os error 111)".to_string()),
                        _ => Ok(()),
                    };
                    c.handle_connect_result(now, result);
                }
                Output::Log(record) => said.push(record.text.clone()),
                Output::Read(Direction::Upstream) => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(dialed, ["127.0.0.1:9000", "127.0.0.2:9000"]);
        assert_eq!(asked, 1, "only the failed connect is asked for its error");
        assert!(
            said.iter()
                .any(|l| l.contains("127.0.0.1:9000") && l.contains("Connection refused")),
            "{said:?}"
        );
        assert_eq!(
            c.reached().map(ToString::to_string).as_deref(),
            Some("127.0.0.2:9000")
        );
    }

    /// A poller's two reports of one socket, for reading and for writing, lose
    /// nothing when taken together: an error said with either still counts.
    #[test]
    fn readiness_taken_together_keeps_what_each_report_said() {
        let hung_up = Ready {
            hangup: true,
            ..Ready::READABLE
        };
        let both = hung_up.union(Ready::WRITABLE);
        assert!(both.read && both.write && both.hangup && !both.error);
        assert_eq!(Ready::default().union(Ready::default()), Ready::default());
        let failed = Ready {
            error: true,
            ..Ready::WRITABLE
        };
        assert!(Ready::READABLE.union(failed).error);
    }

    #[test]
    fn a_connect_that_completed_while_plug_was_stopped_is_not_failed_by_its_deadline_conn_4() {
        let writable = Ready {
            write: true,
            ..Ready::default()
        };
        // The kernel finished the connect in time; plug hears of it 5 s late,
        // past --connect-timeout (stopped and continued, or the clock jumped).
        let (mut f, mut c, now, _) = connecting(&["--connect-timeout", "1"]);
        let late = now + Duration::from_secs(5);
        c.handle_ready(late, Side::Destination, writable);
        c.handle_timeout(late);
        let (reached, said) = catch_up(&mut f, &mut c, late, None);
        let timed_out = said.iter().any(|l| l.contains("timed out"));
        assert!(
            reached && !timed_out,
            "failed for plug's own lateness: {said:?}"
        );
        // Nothing came in time: the deadline holds.
        let (mut f, mut c, now, _) = connecting(&["--connect-timeout", "1"]);
        let late = now + Duration::from_secs(5);
        c.handle_timeout(late);
        let (reached, said) = catch_up(&mut f, &mut c, late, None);
        assert!(!reached);
        assert!(said.iter().any(|l| l.contains("timed out")), "{said:?}");
    }

    #[test]
    fn a_proxy_reply_that_came_while_plug_was_stopped_is_taken_conn_4_conn_9() {
        let ok: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";
        // Connected and the CONNECT request sent at once; the proxy's reply not
        // there yet when plug looked.
        let sent = || {
            let options = ["--connect-timeout", "1", "-h", "127.0.0.1:3128"];
            let (mut f, mut c, now, _) = connecting(&options);
            let writable = Ready {
                write: true,
                ..Ready::default()
            };
            c.handle_ready(now, Side::Destination, writable);
            assert_eq!(catch_up(&mut f, &mut c, now, None), (false, vec![]));
            (f, c, now + Duration::from_secs(5))
        };
        // The 200 came in time; plug hears of it 5 s late.
        let (mut f, mut c, late) = sent();
        let readable = Ready {
            read: true,
            ..Ready::default()
        };
        c.handle_ready(late, Side::Destination, readable);
        c.handle_timeout(late);
        let (reached, said) = catch_up(&mut f, &mut c, late, Some(ok));
        let timed_out = said.iter().any(|l| l.contains("timed out"));
        assert!(
            reached && !timed_out,
            "failed for plug's own lateness: {said:?}"
        );
        // Nothing came in time: the deadline holds.
        let (mut f, mut c, late) = sent();
        c.handle_timeout(late);
        let (reached, said) = catch_up(&mut f, &mut c, late, Some(ok));
        assert!(!reached);
        assert!(said.iter().any(|l| l.contains("timed out")), "{said:?}");
    }

    #[test]
    fn bytes_that_came_while_plug_was_stopped_are_read_before_the_idle_timeout_opt_2() {
        // Relaying, and both peers quiet: every read finds nothing.
        let quiet = || {
            let options = ["--idle-timeout", "1"];
            let (f, mut c, now) = relaying_with(&options, None, Duration::from_secs(60));
            for _ in 0..20 {
                match c.poll_output(now) {
                    Output::Read(dir) => {
                        c.read_space(dir);
                        c.handle_transfer(now, Transfer::WouldBlock);
                    }
                    Output::Wait(_) => return (f, c, now + Duration::from_secs(5)),
                    other => panic!("{other:?}"),
                }
            }
            panic!("never quiet")
        };
        let readable = Ready {
            read: true,
            ..Ready::default()
        };
        // The client's bytes came in time; plug hears of them 5 s late, past
        // --idle-timeout (stopped and continued, or the clock jumped).
        let (_f, mut c, late) = quiet();
        c.handle_ready(late, Side::Client, readable);
        c.handle_timeout(late);
        assert_eq!(c.poll_output(late), Output::Read(Direction::Upstream));
        c.read_space(Direction::Upstream);
        c.handle_transfer(late, Transfer::Moved(3));
        assert_eq!(c.poll_output(late), Output::Write(Direction::Upstream));
        // Nothing came: the idle timeout holds.
        let (_f, mut c, late) = quiet();
        c.handle_timeout(late);
        let mut outputs = vec![];
        for _ in 0..20 {
            let out = c.poll_output(late);
            let over = matches!(out, Output::Done | Output::Forwarder);
            outputs.push(out);
            if over {
                break;
            }
        }
        assert!(
            outputs.iter().any(|o| matches!(o, Output::Close { .. })),
            "{outputs:?}"
        );
        assert!(!outputs
            .iter()
            .any(|o| matches!(o, Output::Read(_) | Output::Write(_))));
    }

    /// Does `out` as sockets that always have data and always take it all,
    /// and whose poller says so whenever asked.
    fn busy(c: &mut Connection, now: Instant, out: &Output) {
        all(c, now, out);
        let ready = Ready {
            read: true,
            write: true,
            ..Ready::default()
        };
        c.handle_ready(now, Side::Client, ready);
        c.handle_ready(now, Side::Destination, ready);
    }

    #[test]
    fn a_connection_that_can_always_move_lets_others_run_after_its_budget() {
        let (_f, mut c, now) = relaying(Duration::from_secs(60));
        busy(&mut c, now, &Output::Read(Direction::Upstream));
        // Counted from the first yield: I/O outputs in a row, none waiting.
        let mut since_yield = None;
        let mut yields = 0;
        for _ in 0..1_000 {
            let out = c.poll_output(now);
            match out {
                Output::Yield => {
                    if let Some(n) = since_yield {
                        // The output the yield put off, then its budget.
                        assert_eq!(n, OUTPUTS_BEFORE_YIELD + 1, "exactly its budget");
                    }
                    since_yield = Some(0);
                    yields += 1;
                }
                Output::Wait(_) => since_yield = since_yield.map(|_| 0),
                Output::Read(_) | Output::Write(_) => {
                    since_yield = since_yield.map(|n| n + 1);
                }
                _ => {}
            }
            busy(&mut c, now, &out);
        }
        assert!(yields >= 5, "{yields}");
    }

    #[test]
    fn both_directions_take_turns_conn_6() {
        // Copying, and splicing once both flows are bulk.
        for pipes in [None, Some(PIPE)] {
            let (_f, mut c, now) = relaying_with(&[], pipes, Duration::from_secs(60));
            busy(&mut c, now, &Output::Read(Direction::Upstream));
            let mut reads = [1usize, 0];
            let mut spliced = [0usize; 2];
            let mut last = Some(Direction::Upstream);
            for _ in 0..800 {
                let out = c.poll_output(now);
                let moved = match out {
                    Output::Read(dir) | Output::Write(dir) => Some(dir),
                    Output::SpliceIn { dir, .. } | Output::SpliceOut { dir, .. } => Some(dir),
                    _ => None,
                };
                if let Some(dir) = moved {
                    // Both can always move: each transfer is the other's turn.
                    assert_ne!(last, Some(dir), "{pipes:?}: {dir:?} twice in a row");
                    last = Some(dir);
                }
                match out {
                    Output::Read(dir) => reads[dir.index()] += 1,
                    Output::SpliceIn { dir, .. } => spliced[dir.index()] += 1,
                    _ => {}
                }
                busy(&mut c, now, &out);
            }
            let moved = if pipes.is_some() { spliced } else { reads };
            // Both always have data: neither starves the other.
            assert!(moved[0] > 50 && moved[1] > 50, "{pipes:?}: {moved:?}");
            assert!(moved[0].abs_diff(moved[1]) <= 2, "{pipes:?}: {moved:?}");
        }
    }

    #[test]
    fn a_quiet_direction_gives_its_buffer_back_when_due_fault_3() {
        let release = Duration::from_secs(5);
        let (_f, mut c, now) = relaying(release);
        // One client message, relayed; then nothing more.
        let n = c.read_space(Direction::Upstream).len().min(10);
        c.handle_transfer(now, Transfer::Moved(n));
        let mut deadline = None;
        for _ in 0..20 {
            match c.poll_output(now) {
                Output::Write(dir) => {
                    let n = c.write_data(dir).len();
                    c.handle_transfer(now, Transfer::Moved(n));
                }
                Output::Read(_) => c.handle_transfer(now, Transfer::WouldBlock),
                Output::Wait(wait) => {
                    assert_eq!(wait.buffers_offered, [false; 2], "before it is due");
                    deadline = c.poll_timeout();
                    break;
                }
                _ => {}
            }
        }
        assert_eq!(
            deadline,
            Some(now + release),
            "woken when the buffer is due"
        );
        let later = now + release;
        let mut returned = false;
        for _ in 0..10 {
            if let Output::Wait(wait) = c.poll_output(later) {
                returned = wait.buffers_offered[Direction::Upstream.index()];
                break;
            }
        }
        assert!(returned, "the quiet buffer goes back at its deadline");
    }

    /// Issue 20's rule: a short read says the socket is drained, so the next
    /// read of that direction waits for the poller instead of spending a
    /// call on EAGAIN; a full read reads again at once.
    #[test]
    fn a_short_read_waits_for_the_poller_a_full_one_reads_on() {
        for full in [false, true] {
            let (_f, mut c, now) = relaying(Duration::from_secs(60));
            let space = c.read_space(Direction::Upstream).len();
            let n = if full { space } else { space / 2 };
            c.handle_transfer(now, Transfer::Moved(n));
            let mut read_again = false;
            for _ in 0..10 {
                match c.poll_output(now) {
                    Output::Read(Direction::Upstream) => {
                        read_again = true;
                        break;
                    }
                    Output::Write(dir) => {
                        let n = c.write_data(dir).len();
                        c.handle_transfer(now, Transfer::Moved(n));
                    }
                    Output::Wait(_) => break,
                    _ => {}
                }
            }
            assert_eq!(read_again, full, "full read: {full}");
        }
    }

    /// The pipe size of the splicing tests.
    const PIPE: usize = 64 * 1024;

    /// Drives `c` until an output `stop` accepts, doing reads and writes as
    /// `io` says; panics if none comes within 50 outputs.
    fn until(
        c: &mut Connection,
        now: Instant,
        mut io: impl FnMut(&mut Connection, &Output),
        stop: impl Fn(&Output) -> bool,
    ) -> Output {
        for _ in 0..50 {
            let out = c.poll_output(now);
            if stop(&out) {
                return out;
            }
            io(c, &out);
        }
        panic!("the output looked for never came");
    }

    /// Moves everything offered: reads fill their space, writes and splices
    /// take all.
    fn all(c: &mut Connection, now: Instant, out: &Output) {
        match *out {
            Output::Read(dir) => {
                let n = c.read_space(dir).len();
                c.handle_transfer(now, Transfer::Moved(n));
            }
            Output::Write(dir) => {
                let n = c.write_data(dir).len();
                c.handle_transfer(now, Transfer::Moved(n));
            }
            Output::SpliceIn { max, .. } | Output::SpliceOut { max, .. } => {
                c.handle_transfer(now, Transfer::Moved(max));
            }
            _ => {}
        }
    }

    /// [`all`] at the tests' start time, as [`until`] takes it.
    fn moved(c: &mut Connection, out: &Output) {
        all(c, t0(), out);
    }

    /// A relaying connection whose upstream flow is bulk, with its pipe
    /// opened: the next output is the first splice in.
    fn splicing() -> (Forwarder, Connection, Instant) {
        let (f, mut c, now) = relaying_with(&[], Some(PIPE), Duration::from_secs(60));
        // A full read marks the flow bulk; once written, the pipe takes over.
        all(&mut c, now, &Output::Read(Direction::Upstream));
        let open = until(&mut c, now, moved, |o| matches!(o, Output::OpenPipe(_)));
        assert_eq!(open, Output::OpenPipe(Direction::Upstream));
        let first = c.poll_output(now);
        assert!(
            matches!(
                first,
                Output::SpliceIn {
                    dir: Direction::Upstream,
                    ..
                }
            ),
            "{first:?}"
        );
        // Handed back to the test: the splice is pending.
        (f, c, now)
    }

    fn is_wait(out: &Output) -> bool {
        matches!(out, Output::Wait(_))
    }

    /// FAULT-3: a direction whose pipe cannot be made copies instead, and the
    /// pipe goes back to the budget.
    #[test]
    fn a_pipe_that_cannot_be_made_leaves_its_direction_copying_fault_3() {
        let (_f, mut c, now) = relaying_with(&[], Some(PIPE), Duration::from_secs(60));
        let free = c.settings.pipes.free();
        all(&mut c, now, &Output::Read(Direction::Upstream));
        let open = until(&mut c, now, moved, |o| matches!(o, Output::OpenPipe(_)));
        assert_eq!(open, Output::OpenPipe(Direction::Upstream));
        assert_eq!(c.settings.pipes.free(), free - 1, "a pipe was taken");
        c.handle_pipe_failed(now, Direction::Upstream);
        assert_eq!(c.settings.pipes.free(), free, "and given back");
        let next = until(&mut c, now, moved, |o| {
            matches!(
                o,
                Output::Read(Direction::Upstream) | Output::SpliceIn { .. } | Output::OpenPipe(_)
            )
        });
        assert_eq!(next, Output::Read(Direction::Upstream), "copies instead");
    }

    /// A splice in that would block on an empty pipe means the client has
    /// nothing: wait for it. On a pipe with bytes in it, it means the pipe is
    /// full: splice in again as soon as some went out, without waiting.
    #[test]
    fn a_full_pipe_is_not_an_empty_socket() {
        // Empty pipe: the next output is a wait for the client.
        let (_f, mut c, now) = splicing();
        c.handle_transfer(now, Transfer::WouldBlock);
        let Output::Wait(w) = c.poll_output(now) else {
            panic!("no wait after the client had nothing");
        };
        assert!(w.watch[Side::Client.index()].read, "{w:?}");

        // The pipe filled as asked; the destination takes only some of it,
        // so there is room, but the kernel's pipe turns out full.
        let (_f, mut c, now) = splicing();
        c.handle_transfer(now, Transfer::Moved(PIPE));
        let out = c.poll_output(now);
        assert!(
            matches!(out, Output::SpliceOut { max: PIPE, .. }),
            "{out:?}"
        );
        c.handle_transfer(now, Transfer::Moved(1000));
        let out = c.poll_output(now);
        assert!(matches!(out, Output::SpliceIn { max: 1000, .. }), "{out:?}");
        c.handle_transfer(now, Transfer::WouldBlock);
        let Output::Wait(w) = c.poll_output(now) else {
            panic!("no wait with the pipe full and the destination full");
        };
        assert!(!w.watch[Side::Client.index()].read, "a full pipe: {w:?}");
        assert!(w.watch[Side::Destination.index()].write, "{w:?}");
        let writable = Ready {
            write: true,
            ..Ready::default()
        };
        c.handle_ready(now, Side::Destination, writable);
        let out = c.poll_output(now);
        let rest = PIPE - 1000;
        assert!(
            matches!(out, Output::SpliceOut { max, .. } if max == rest),
            "{out:?}"
        );
        c.handle_transfer(now, Transfer::Moved(rest));
        let out = c.poll_output(now);
        assert!(
            matches!(out, Output::SpliceIn { .. }),
            "the client was never found empty: {out:?}"
        );
    }

    /// A quiet direction keeps its pipe for PIPE_IDLE, then closes it and
    /// gives it back.
    #[test]
    fn a_quiet_pipe_is_closed_after_pipe_idle_fault_3() {
        let (_f, mut c, now) = splicing();
        let free = c.settings.pipes.free();
        // The last bytes for a while: spliced in, then out.
        c.handle_transfer(now, Transfer::Moved(1000));
        let quiet = |c: &mut Connection, out: &Output| match out {
            Output::Read(_) | Output::SpliceIn { .. } => {
                c.handle_transfer(t0(), Transfer::WouldBlock)
            }
            other => all(c, t0(), other),
        };
        let Output::Wait(_) = until(&mut c, now, quiet, |o| {
            is_wait(o) || matches!(o, Output::ClosePipe(_))
        }) else {
            panic!("the pipe was closed at once");
        };
        assert_eq!(
            c.poll_timeout(),
            Some(now + PIPE_IDLE),
            "woken when it is due"
        );
        let later = now + PIPE_IDLE;
        let out = until(&mut c, later, quiet, |o| {
            is_wait(o) || matches!(o, Output::ClosePipe(_))
        });
        assert_eq!(out, Output::ClosePipe(Direction::Upstream));
        assert_eq!(c.settings.pipes.free(), free + 1, "given back");
    }

    /// CONN-6: when the second direction ends, both sockets are closed, which
    /// sends its FIN: one shutdown(2), for the first direction to end only.
    #[test]
    fn only_the_first_direction_to_end_is_shut_down_conn_6() {
        let (_f, mut c, now) = relaying(Duration::from_secs(60));
        let mut shutdowns = Vec::new();
        let mut ended = [false; 2];
        for _ in 0..50 {
            match c.poll_output(now) {
                Output::Read(dir) if !ended[dir.index()] => {
                    ended[dir.index()] = true;
                    c.handle_transfer(now, Transfer::Moved(0));
                }
                Output::Read(_) => c.handle_transfer(now, Transfer::WouldBlock),
                Output::Wait(_) => {
                    let readable = Ready {
                        read: true,
                        ..Ready::default()
                    };
                    c.handle_ready(now, Side::Client, readable);
                    c.handle_ready(now, Side::Destination, readable);
                }
                Output::ShutdownWrite(dir) => {
                    shutdowns.push(dir);
                    c.handle_shutdown(now, Ok(()));
                }
                Output::Close { reset, .. } => {
                    assert!(!reset, "both ended cleanly");
                    assert_eq!(shutdowns, [Direction::Upstream]);
                    return;
                }
                _ => {}
            }
        }
        panic!("never closed: {shutdowns:?} {ended:?}");
    }

    /// -dd logs every read with its size, and each end of stream; -d none.
    #[test]
    fn every_read_is_logged_at_dd_only() {
        for (options, logged) in [(&["-d"][..], false), (&["-d", "-d"][..], true)] {
            let (_f, mut c, now) = relaying_with(options, None, Duration::from_secs(60));
            let mut texts = Vec::new();
            let _ = c.read_space(Direction::Upstream);
            c.handle_transfer(now, Transfer::Moved(5));
            let mut eof = false;
            for _ in 0..20 {
                match c.poll_output(now) {
                    Output::Log(r) => texts.push(r.text),
                    Output::Read(_) if !eof => {
                        eof = true;
                        c.handle_transfer(now, Transfer::Moved(0));
                    }
                    Output::Write(dir) => {
                        let n = c.write_data(dir).len();
                        c.handle_transfer(now, Transfer::Moved(n));
                    }
                    Output::Read(_) => c.handle_transfer(now, Transfer::WouldBlock),
                    Output::Wait(_) if !eof => {
                        let readable = Ready {
                            read: true,
                            ..Ready::default()
                        };
                        c.handle_ready(now, Side::Client, readable);
                    }
                    Output::Wait(_) => break,
                    _ => {}
                }
            }
            let expected = [
                "10.0.0.7:4000: 5 bytes from the client",
                "10.0.0.7:4000: end of stream from the client",
            ];
            for line in expected {
                assert_eq!(
                    texts.iter().any(|t| t == line),
                    logged,
                    "{options:?}: {texts:?}"
                );
            }
        }
    }

    /// Issue 20's rule, for writes: a short write says the socket is full, so
    /// the rest waits for the poller; a full write goes on.
    #[test]
    fn a_short_write_waits_for_the_poller_a_full_one_goes_on() {
        for full in [false, true] {
            let (_f, mut c, now) = relaying(Duration::from_secs(60));
            let _ = c.read_space(Direction::Upstream);
            c.handle_transfer(now, Transfer::Moved(100));
            let out = until(&mut c, now, |_, _| {}, |o| matches!(o, Output::Write(_)));
            assert_eq!(out, Output::Write(Direction::Upstream));
            let n = if full { 100 } else { 40 };
            c.handle_transfer(now, Transfer::Moved(n));
            let next = c.poll_output(now);
            let wrote_on = matches!(next, Output::Write(_));
            if full {
                assert!(!wrote_on, "nothing left to write: {next:?}");
            } else {
                let Output::Wait(w) = next else {
                    panic!("a short write tried again at once: {next:?}");
                };
                assert!(w.watch[Side::Destination.index()].write, "{w:?}");
            }
        }
    }

    /// A wait says the poller was asked; only I/O in a row without one counts
    /// toward the yield budget.
    #[test]
    fn a_connection_that_waits_never_yields() {
        let (_f, mut c, now) = relaying(Duration::from_secs(60));
        let _ = c.read_space(Direction::Upstream);
        c.handle_transfer(now, Transfer::Moved(10));
        let readable = Ready {
            read: true,
            ..Ready::default()
        };
        for _ in 0..(10 * OUTPUTS_BEFORE_YIELD) {
            match c.poll_output(now) {
                Output::Yield => panic!("yielded although it waited each time"),
                Output::Write(dir) => {
                    let n = c.write_data(dir).len();
                    c.handle_transfer(now, Transfer::Moved(n));
                }
                Output::Read(dir) => {
                    // A short read: drained until the poller says more came.
                    let _ = c.read_space(dir);
                    c.handle_transfer(now, Transfer::Moved(10));
                }
                Output::Wait(_) => c.handle_ready(now, Side::Client, readable),
                _ => {}
            }
        }
    }

    /// The poller saying "readable" is what makes a drained socket read again.
    #[test]
    fn readable_after_a_wait_reads_again() {
        let (_f, mut c, now) = relaying(Duration::from_secs(60));
        c.handle_transfer(now, Transfer::WouldBlock);
        let quiet = |c: &mut Connection, out: &Output| {
            if let Output::Read(_) = out {
                c.handle_transfer(t0(), Transfer::WouldBlock);
            }
        };
        assert!(is_wait(&until(&mut c, now, quiet, is_wait)));
        let readable = Ready {
            read: true,
            ..Ready::default()
        };
        c.handle_ready(now, Side::Client, readable);
        assert_eq!(c.poll_output(now), Output::Read(Direction::Upstream));
    }

    /// A connection that has asked for its destination's connect.
    fn connecting(options: &[&str]) -> (Forwarder, Connection, Instant, Wait) {
        let (mut f, mut c, now) = accepted(options, None, Duration::from_secs(60));
        for _ in 0..20 {
            match c.poll_output(now) {
                Output::Forwarder => f.exchange(now, &mut c),
                Output::Connect { .. } => c.handle_connect_started(now, Ok(())),
                Output::Wait(w) => return (f, c, now, w),
                Output::Log(_) => {}
                other => panic!("{other:?}"),
            }
        }
        panic!("never connecting");
    }

    /// FAULT-1: while its destination is dialed, the client is watched for
    /// errors and hang-ups, and either alone means it left: the dial stops.
    #[test]
    fn a_client_that_leaves_while_dialing_ends_the_dial_fault_1() {
        let (_f, _c, _now, wait) = connecting(&[]);
        assert!(wait.watch[Side::Client.index()].errors, "{wait:?}");
        for (error, hangup) in [(true, false), (false, true)] {
            let (mut f, mut c, now, _) = connecting(&[]);
            let gone = Ready {
                error,
                hangup,
                ..Ready::default()
            };
            c.handle_ready(now, Side::Client, gone);
            let mut closed = false;
            for _ in 0..20 {
                match c.poll_output(now) {
                    Output::Forwarder => f.exchange(now, &mut c),
                    Output::FinishConnect | Output::Wait(_) => break,
                    Output::Close { .. } | Output::Done => {
                        closed = true;
                        break;
                    }
                    _ => {}
                }
            }
            assert!(closed, "error {error}, hang-up {hangup}: still dialing");
        }
    }

    /// An ended connection offers each direction's buffer with its close.
    #[test]
    fn an_ended_connection_offers_its_buffers_with_the_close_fault_3() {
        // Buffers are kept while quiet here, so only the end gives them back.
        let (_f, mut c, now) = relaying(Duration::from_secs(60));
        let mut read = [0usize; 2];
        for _ in 0..60 {
            match c.poll_output(now) {
                Output::Read(dir) => {
                    // Ten bytes each way, then the end of both streams.
                    let n = c.read_space(dir).len().min(10);
                    let result = if read[dir.index()] == 0 { n } else { 0 };
                    read[dir.index()] += 1;
                    c.handle_transfer(now, Transfer::Moved(result));
                }
                Output::Write(dir) => {
                    let n = c.write_data(dir).len();
                    c.handle_transfer(now, Transfer::Moved(n));
                }
                Output::ShutdownWrite(_) => c.handle_shutdown(now, Ok(())),
                Output::Wait(wait) => {
                    assert_eq!(wait.buffers_offered, [false; 2], "held while quiet");
                    for side in [Side::Client, Side::Destination] {
                        c.handle_ready(now, side, Ready::READABLE);
                    }
                }
                Output::Close {
                    reset,
                    buffers_offered,
                } => {
                    assert!(!reset, "both ended cleanly");
                    assert_eq!(buffers_offered, [true; 2], "each direction's buffer");
                    for dir in Direction::BOTH {
                        let buffer = c.take_buffer(dir).expect("offered");
                        assert!(!buffer.is_empty());
                    }
                    return;
                }
                Output::Done => panic!("done before closing"),
                _ => {}
            }
        }
        panic!("never closed");
    }

    /// Moves everything offered, and finds every socket empty.
    fn drained(c: &mut Connection, out: &Output) {
        match out {
            Output::Read(_) => c.handle_transfer(t0(), Transfer::WouldBlock),
            other => all(c, t0(), other),
        }
    }

    /// The directions a wait offers buffers for.
    fn offered_with(out: &Output) -> Vec<Direction> {
        match out {
            Output::Wait(wait) => Direction::marked(wait.buffers_offered).collect(),
            _ => Vec::new(),
        }
    }

    /// A connection (buffers given back at once) that read ten bytes upstream
    /// into a buffer of its own and is run until it waits, offering that
    /// buffer back; with the size it asked for.
    fn offering_its_buffer() -> (Forwarder, Connection, Instant, usize) {
        let (f, mut c, now) = relaying(Duration::ZERO);
        // None is held before the first read.
        let size = c.wants_buffer(Direction::Upstream).expect("asked for");
        assert!(size > 1, "{size}");
        let _ = c.read_space(Direction::Upstream);
        assert_eq!(c.wants_buffer(Direction::Upstream), None, "it has one");
        c.handle_transfer(now, Transfer::Moved(10));
        let wait = until(&mut c, now, drained, is_wait);
        assert_eq!(offered_with(&wait), [Direction::Upstream]);
        (f, c, now, size)
    }

    #[test]
    fn a_buffer_offered_and_not_taken_is_offered_once_and_dropped_fault_3() {
        // An adapter that keeps no buffers: it never takes one.
        let (_f, mut c, now, size) = offering_its_buffer();
        // It waits again, and is not offered the same buffer again, nor woken
        // to give it back.
        let out = until(&mut c, now, drained, is_wait);
        assert_eq!(offered_with(&out), [], "offered again");
        assert_eq!(c.poll_timeout(), None, "a deadline for a buffer gone");
        assert_eq!(c.take_buffer(Direction::Upstream).map(|b| b.len()), None);
        // Its next read asks for a buffer: the one not taken is gone.
        c.handle_ready(now, Side::Client, Ready::READABLE);
        assert_eq!(c.poll_output(now), Output::Read(Direction::Upstream));
        assert_eq!(c.wants_buffer(Direction::Upstream), Some(size));
    }

    /// A buffer given back when quiet is asked for again at the next read,
    /// and one lent then is the one read into.
    #[test]
    fn a_returned_buffer_is_asked_for_again_and_a_lent_one_used_fault_3() {
        let (_f, mut c, now, size) = offering_its_buffer();
        let buffer = c.take_buffer(Direction::Upstream).expect("offered");
        assert!(buffer.capacity() >= size, "{}", buffer.capacity());
        let _ = until(&mut c, now, drained, is_wait);
        let readable = Ready {
            read: true,
            ..Ready::default()
        };
        c.handle_ready(now, Side::Client, readable);
        assert_eq!(c.poll_output(now), Output::Read(Direction::Upstream));
        assert_eq!(c.wants_buffer(Direction::Upstream), Some(size));
        // Told apart from one it would allocate by its capacity (an address
        // could be reused).
        c.lend_buffer(Direction::Upstream, BytesMut::with_capacity(3 * size));
        assert_eq!(c.wants_buffer(Direction::Upstream), None, "it has one");
        assert_eq!(c.read_space(Direction::Upstream).len(), size);
        c.handle_transfer(now, Transfer::Moved(10));
        let wait = until(&mut c, now, drained, is_wait);
        assert_eq!(offered_with(&wait), [Direction::Upstream]);
        let again = c.take_buffer(Direction::Upstream).expect("offered");
        assert!(again.capacity() >= 3 * size, "the lent one was used");
    }

    /// What a failed connect logs is the system's own text.
    #[test]
    fn a_connect_failure_reads_as_the_system_said_it() {
        let refused = "Connection refused (os error 111)".to_string();
        assert_eq!(ConnectFailure::Remote(refused.clone()).to_string(), refused);
        assert_eq!(ConnectFailure::Local(refused.clone()).to_string(), refused);
    }

    /// With `-h`, a short write of the CONNECT request waits for the proxy's
    /// socket to be writable again; a full one goes on to read the reply.
    #[test]
    fn a_short_write_of_the_connect_request_waits_for_the_proxy() {
        for full in [false, true] {
            let (mut f, mut c, now) =
                accepted(&["-h", "127.0.0.9:3128"], None, Duration::from_secs(60));
            let writable = Ready {
                write: true,
                ..Ready::default()
            };
            let mut request = 0;
            let mut after = None;
            for _ in 0..30 {
                let out = c.poll_output(now);
                match out {
                    Output::Forwarder => f.exchange(now, &mut c),
                    Output::Connect { .. } => c.handle_connect_started(now, Ok(())),
                    Output::FinishConnect => c.handle_connect_result(now, Ok(())),
                    Output::Wait(_) if request == 0 => {
                        c.handle_ready(now, Side::Destination, writable)
                    }
                    Output::Write(Direction::Upstream) if request == 0 => {
                        request = c.write_data(Direction::Upstream).len();
                        assert!(request > 10, "{request}");
                        // Only the direction asked for has bytes to write.
                        assert!(c.write_data(Direction::Downstream).is_empty());
                        let n = if full { request } else { request / 2 };
                        c.handle_transfer(now, Transfer::Moved(n));
                    }
                    Output::Log(_) => {}
                    other => {
                        after = Some(other);
                        break;
                    }
                }
            }
            let after = after.expect("nothing after the request");
            // Only the direction asked for has space to read into.
            assert!(c.read_space(Direction::Upstream).is_empty());
            match (full, after) {
                (true, Output::Read(Direction::Downstream)) => {}
                (true, Output::Wait(w)) => {
                    assert!(w.watch[Side::Destination.index()].read, "{w:?}")
                }
                (false, Output::Wait(w)) => {
                    assert!(w.watch[Side::Destination.index()].write, "{w:?}")
                }
                (full, other) => panic!("full write {full}: {other:?}"),
            }
        }
    }

    /// FAULT-1: an error reported alone (as an error watch reports it) is
    /// collected by the next read or write of that socket: a connect's by
    /// finishing it, a proxy's by reading its reply.
    #[test]
    fn an_error_alone_is_collected_by_the_next_read_or_write_fault_1() {
        let error = Ready {
            error: true,
            ..Ready::default()
        };
        let (_f, mut c, now, _) = connecting(&[]);
        c.handle_ready(now, Side::Destination, error);
        assert_eq!(c.poll_output(now), Output::FinishConnect);

        let (mut f, mut c, now) =
            accepted(&["-h", "127.0.0.9:3128"], None, Duration::from_secs(60));
        let writable = Ready {
            write: true,
            ..Ready::default()
        };
        for _ in 0..30 {
            match c.poll_output(now) {
                Output::Forwarder => f.exchange(now, &mut c),
                Output::Connect { .. } => c.handle_connect_started(now, Ok(())),
                Output::FinishConnect => c.handle_connect_result(now, Ok(())),
                Output::Write(dir) => {
                    let n = c.write_data(dir).len();
                    c.handle_transfer(now, Transfer::Moved(n));
                }
                Output::Wait(w) if w.watch[Side::Destination.index()].read => {
                    // Waiting for the proxy's reply; its socket fails instead.
                    c.handle_ready(now, Side::Destination, error);
                    assert_eq!(c.poll_output(now), Output::Read(Direction::Downstream));
                    return;
                }
                Output::Wait(_) => c.handle_ready(now, Side::Destination, writable),
                _ => {}
            }
        }
        panic!("never waited for the proxy's reply");
    }

    /// An end of stream is no activity (as for the idle timeout): buffers
    /// quiet since before it still go back when due (FAULT-3).
    #[test]
    fn an_end_of_stream_does_not_restart_the_quiet_clock_fault_3() {
        let release = Duration::from_secs(5);
        let (_f, mut c, now) = relaying(release);
        let readable = Ready {
            read: true,
            ..Ready::default()
        };
        // Ten bytes each way at `now`, then nothing.
        let _ = c.read_space(Direction::Upstream);
        c.handle_transfer(now, Transfer::Moved(10));
        let mut down = false;
        let mut deadline = None;
        for _ in 0..30 {
            match c.poll_output(now) {
                Output::Write(dir) => {
                    let n = c.write_data(dir).len();
                    c.handle_transfer(now, Transfer::Moved(n));
                }
                Output::Read(Direction::Downstream) if !down => {
                    down = true;
                    let _ = c.read_space(Direction::Downstream);
                    c.handle_transfer(now, Transfer::Moved(10));
                }
                Output::Read(_) => c.handle_transfer(now, Transfer::WouldBlock),
                Output::Wait(_) if !down => c.handle_ready(now, Side::Destination, readable),
                Output::Wait(_) => {
                    deadline = c.poll_timeout();
                    break;
                }
                _ => {}
            }
        }
        assert_eq!(deadline, Some(now + release));
        // The client ends its sending three seconds later.
        let later = now + Duration::from_secs(3);
        c.handle_ready(later, Side::Client, readable);
        let mut ended = false;
        for _ in 0..30 {
            match c.poll_output(later) {
                Output::Read(Direction::Upstream) if !ended => {
                    ended = true;
                    c.handle_transfer(later, Transfer::Moved(0));
                }
                Output::Read(_) => c.handle_transfer(later, Transfer::WouldBlock),
                Output::ShutdownWrite(_) => c.handle_shutdown(later, Ok(())),
                Output::Wait(_) if ended => {
                    assert_eq!(c.poll_timeout(), Some(now + release), "quiet since before");
                    return;
                }
                _ => {}
            }
        }
        panic!("never waited after the end of stream");
    }
}
