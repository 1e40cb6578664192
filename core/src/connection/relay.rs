//! The relay (CONN-6): what each direction of a connection does next, with exact
//! byte accounting, half-close and abort.
//!
//! The core works from counts. An adapter either reads into and writes from the
//! buffer a [`Half`] hands out (the copy path), or moves bytes through a kernel pipe
//! with splice(2) and reports only how many moved (the zero-copy path); the half
//! decides which, so bytes can never be reordered between the two. Buffers are
//! allocated on the first read and can be released while idle.

use std::time::{Duration, Instant};

use bytes::BytesMut;

/// The copy-path buffer size of one direction when none is configured.
pub const DEFAULT_BUFFER_SIZE: usize = 64 * 1024;

/// A spliced read smaller than this means the flow is interactive again, and the
/// direction goes back to copying (see `Half::wants_read`).
pub const SMALL_READ: usize = 4 * 1024;

/// The copy buffer of a direction that can splice: bulk goes through the pipe, so
/// copying only ever carries small messages, and an idle connection's buffer
/// stays small.
pub const SPLICING_BUFFER_SIZE: usize = 4 * 1024;

/// One end of a relayed connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The accepted client.
    Client,
    /// The destination (or the upstream proxy in front of it).
    Destination,
}

impl Side {
    /// 0 for the client, 1 for the destination: for arrays indexed by side.
    pub fn index(self) -> usize {
        match self {
            Side::Client => 0,
            Side::Destination => 1,
        }
    }

    /// The other end.
    pub fn other(self) -> Side {
        match self {
            Side::Client => Side::Destination,
            Side::Destination => Side::Client,
        }
    }
}

/// One direction of a relayed connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client to destination: the IN count of the session line.
    Upstream,
    /// Destination to client: the OUT count of the session line.
    Downstream,
}

impl Direction {
    /// Both directions.
    pub const BOTH: [Direction; 2] = [Direction::Upstream, Direction::Downstream];

    /// 0 for upstream, 1 for downstream: for arrays indexed by direction.
    pub fn index(self) -> usize {
        match self {
            Direction::Upstream => 0,
            Direction::Downstream => 1,
        }
    }

    /// The side this direction reads from.
    pub fn source(self) -> Side {
        match self {
            Direction::Upstream => Side::Client,
            Direction::Downstream => Side::Destination,
        }
    }

    /// The side this direction writes to.
    pub fn sink(self) -> Side {
        self.source().other()
    }

    /// The directions `flags` marks, by [`Direction::index`] (as
    /// [`Wait::buffers_offered`](crate::connection::Wait::buffers_offered)
    /// does).
    pub fn marked(flags: [bool; 2]) -> impl Iterator<Item = Direction> {
        Direction::BOTH
            .into_iter()
            .filter(move |d| flags[d.index()])
    }
}

/// Where the next read of a direction goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadInto {
    /// Into [`Half::read_space`], then [`Half::handle_read`].
    Buffer,
    /// splice(2) from the source socket into this direction's pipe, at most
    /// `Half::pipe_space` bytes, then `Half::handle_spliced_in`.
    Pipe,
}

/// Where the next write of a direction comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteFrom {
    /// From [`Half::write_data`], then [`Half::handle_written`].
    Buffer,
    /// splice(2) from this direction's pipe to the sink socket, at most
    /// [`Half::piped`] bytes, then `Half::handle_spliced_out`.
    Pipe,
}

/// What one direction should do next, in the order a blocking driver should do
/// it: the relay's rules in one view, for its tests (the connection asks
/// [`Half::wants_write`], `wants_shutdown` and `wants_read` itself).
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HalfNext {
    /// Write pending bytes to the sink.
    Write(WriteFrom),
    /// The source ended and everything was delivered: shut down the write half of
    /// the sink socket (once), then call [`Half::handle_shutdown`].
    ShutdownWrite,
    /// Read from the source.
    Read(ReadInto),
    /// This direction is finished.
    Done,
    /// The connection failed: close both sockets.
    Aborted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HalfState {
    Open,
    Draining,
    Closed,
    Aborted,
}

/// One direction's state: bytes read but not yet written, where they are, counts,
/// and whether the source has ended.
#[derive(Debug)]
pub struct Half {
    storage: BytesMut,
    head: usize,
    tail: usize,
    capacity: usize,
    piped: usize,
    pipe_capacity: usize,
    received: u64,
    delivered: u64,
    spliced: u64,
    /// The flow looks like bulk data (a copy read nearly filled the buffer), so
    /// splicing pays off; interactive flows are copied, which needs no pipe.
    bulk: bool,
    /// The last splice into the pipe found it full before its byte count said so
    /// (a pipe holds 16 buffers, however small each): drain before reading more.
    pipe_full: bool,
    state: HalfState,
}

impl Half {
    /// Creates an open direction whose copy buffer holds up to `capacity` bytes
    /// (at least 1); nothing is allocated until the first read.
    pub fn new(capacity: usize) -> Self {
        Half {
            storage: BytesMut::new(),
            head: 0,
            tail: 0,
            capacity: capacity.max(1),
            piped: 0,
            pipe_capacity: 0,
            received: 0,
            delivered: 0,
            spliced: 0,
            bulk: false,
            pipe_full: false,
            state: HalfState::Open,
        }
    }

    /// Switches the zero-copy path on (`Some(pipe capacity)`) or off (`None`), e.g.
    /// when a pipe cannot be had. Safe at any time: reads go to the pipe only while
    /// the buffer is empty and to the buffer only while the pipe is empty, and the
    /// buffer is always written first, so order is kept.
    pub(crate) fn set_splice(&mut self, pipe_capacity: Option<usize>) {
        self.pipe_capacity = pipe_capacity.unwrap_or(0);
    }

    /// Bytes read from the source so far (the session line's count).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Bytes written to the sink so far.
    #[cfg(test)]
    pub(crate) fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Bytes that went through the pipe (zero-copy) rather than the buffer.
    pub fn spliced(&self) -> u64 {
        self.spliced
    }

    /// Bytes held in the buffer.
    pub(crate) fn buffered(&self) -> usize {
        self.tail - self.head
    }

    /// Bytes held in the pipe.
    pub fn piped(&self) -> usize {
        self.piped
    }

    /// How many more bytes the pipe may take.
    pub(crate) fn pipe_space(&self) -> usize {
        self.pipe_capacity.saturating_sub(self.piped)
    }

    /// True when nothing read is waiting to be written (buffer and pipe empty).
    pub(crate) fn is_idle(&self) -> bool {
        self.buffered() == 0 && self.piped == 0
    }

    /// True when this direction has finished: shut down after its source ended, or
    /// aborted.
    pub(crate) fn is_done(&self) -> bool {
        matches!(self.state, HalfState::Closed | HalfState::Aborted)
    }

    /// Where a read should go now, or `None` when this direction must not read
    /// (source ended, buffer or pipe full, or the other store still holds bytes).
    ///
    /// With splice available, a direction splices only while its flow is bulk:
    /// a copy read that fills at least half the buffer switches it to the pipe, and
    /// a spliced read under [`SMALL_READ`] switches it back. Small interactive
    /// messages are cheaper copied than moved through a pipe, and need none.
    pub(crate) fn wants_read(&self) -> Option<ReadInto> {
        if self.state != HalfState::Open || self.pipe_full {
            return None;
        }
        if self.pipe_capacity > 0 && self.bulk {
            (self.buffered() == 0 && self.piped < self.pipe_capacity).then_some(ReadInto::Pipe)
        } else {
            (self.piped == 0 && self.buffered() < self.buffer_size()).then_some(ReadInto::Buffer)
        }
    }

    /// The copy buffer's size limit: while it holds bytes, the buffer it has;
    /// when empty, small if a pipe can carry bulk, else the configured capacity
    /// (never less than a buffer it already has, e.g. after a large preload).
    fn buffer_size(&self) -> usize {
        if self.head != self.tail {
            return self.storage.len();
        }
        let planned = if self.pipe_capacity > 0 {
            SPLICING_BUFFER_SIZE.min(self.capacity)
        } else {
            self.capacity
        };
        planned.max(self.storage.len())
    }

    /// Where the next write comes from, or `None` when nothing is pending. The
    /// buffer is always emptied before the pipe.
    pub(crate) fn wants_write(&self) -> Option<WriteFrom> {
        if self.is_done() {
            None
        } else if self.buffered() > 0 {
            Some(WriteFrom::Buffer)
        } else if self.piped > 0 {
            Some(WriteFrom::Pipe)
        } else {
            None
        }
    }

    /// True when the source ended and everything was delivered, so the sink's write
    /// half should be shut down now (exactly once).
    pub(crate) fn wants_shutdown(&self) -> bool {
        self.state == HalfState::Draining && self.is_idle()
    }

    /// The next step for a driver that does one thing at a time: write pending bytes
    /// first, then shut down, then read.
    #[cfg(test)]
    pub fn next(&self) -> HalfNext {
        match self.state {
            HalfState::Aborted => HalfNext::Aborted,
            HalfState::Closed => HalfNext::Done,
            _ => {
                if let Some(from) = self.wants_write() {
                    HalfNext::Write(from)
                } else if self.wants_shutdown() {
                    HalfNext::ShutdownWrite
                } else if let Some(into) = self.wants_read() {
                    HalfNext::Read(into)
                } else {
                    // Open with an empty buffer always wants a read, and Draining with
                    // nothing pending wants a shutdown; this arm is unreachable but a
                    // driver seeing it should simply close.
                    HalfNext::Aborted
                }
            }
        }
    }

    /// The free part of the buffer to read into; allocates the buffer on first use
    /// and moves pending bytes to the front when that makes room. Empty when this
    /// direction does not want a buffered read.
    pub fn read_space(&mut self) -> &mut [u8] {
        if self.wants_read() != Some(ReadInto::Buffer) {
            return &mut [];
        }
        let size = self.buffer_size();
        if self.storage.len() < size && self.head == self.tail {
            // First use, or splicing was switched off: (re)size while empty.
            self.storage = BytesMut::zeroed(size);
            self.head = 0;
            self.tail = 0;
        }
        if self.head == self.tail {
            self.head = 0;
            self.tail = 0;
        } else if self.tail == self.storage.len() {
            self.storage.copy_within(self.head..self.tail, 0);
            self.tail -= self.head;
            self.head = 0;
        }
        let end = self.storage.len().min(self.head + self.buffer_size());
        &mut self.storage[self.tail..end]
    }

    /// Records that `n` bytes were read into [`Half::read_space`]; `0` means the
    /// source ended (as read(2) reports it).
    pub fn handle_read(&mut self, n: usize) {
        if n == 0 {
            return self.handle_eof();
        }
        if self.state != HalfState::Open {
            return;
        }
        let n = n.min(self.storage.len() - self.tail);
        self.tail += n;
        self.received += n as u64;
        // Relative to the buffer in use: a read filling half of it is bulk.
        if n >= self.storage.len() / 2 {
            self.bulk = true;
        }
    }

    /// Records that `n` bytes were spliced from the source into the pipe; `0`
    /// means the source ended.
    pub(crate) fn handle_spliced_in(&mut self, n: usize) {
        if n == 0 {
            return self.handle_eof();
        }
        if self.state != HalfState::Open {
            return;
        }
        // Interactive again only if the socket had little to give, not when the
        // pipe had little room left.
        let offered = self.pipe_capacity.saturating_sub(self.piped);
        if n < SMALL_READ && n < offered {
            self.bulk = false;
        }
        self.piped += n;
        self.received += n as u64;
        self.spliced += n as u64;
    }

    /// Records that the source ended (EOF): what is pending is still delivered,
    /// then the sink's write half is shut down (CONN-6).
    pub fn handle_eof(&mut self) {
        if self.state == HalfState::Open {
            self.state = HalfState::Draining;
        }
    }

    /// The pending buffered bytes to write to the sink, oldest first.
    pub fn write_data(&self) -> &[u8] {
        self.storage.get(self.head..self.tail).unwrap_or(&[])
    }

    /// Records that the first `n` bytes of [`Half::write_data`] were written.
    pub fn handle_written(&mut self, n: usize) {
        if self.is_done() {
            return;
        }
        let n = n.min(self.buffered());
        self.head += n;
        self.delivered += n as u64;
        if self.head == self.tail {
            self.head = 0;
            self.tail = 0;
        }
    }

    /// Records that `n` bytes were spliced from the pipe to the sink.
    pub(crate) fn handle_spliced_out(&mut self, n: usize) {
        if self.is_done() {
            return;
        }
        let n = n.min(self.piped);
        self.piped -= n;
        self.delivered += n as u64;
        if n > 0 {
            self.pipe_full = false;
        }
    }

    /// Records that splicing into the pipe would block although the socket may
    /// have data, because the pipe is full: no read is wanted until some of it has
    /// been written out (so a driver does not wait on a readable socket and spin).
    /// Ignored when the pipe is empty, where blocking means the socket has nothing.
    pub(crate) fn handle_pipe_full(&mut self) {
        if self.piped > 0 {
            self.pipe_full = true;
        }
    }

    /// Records that the sink's write half was shut down; this direction is done.
    /// Ignored unless `Half::wants_shutdown` was true.
    pub fn handle_shutdown(&mut self) {
        if self.wants_shutdown() {
            self.state = HalfState::Closed;
        }
    }

    /// Ends this direction because the connection failed; pending bytes are dropped.
    pub(crate) fn abort(&mut self) {
        if self.state != HalfState::Closed {
            self.state = HalfState::Aborted;
        }
        let _ = self.release_idle_buffer();
    }

    /// Takes the buffer away when nothing is pending (or the direction is aborted), so
    /// an idle connection holds no buffer memory; returns it so the adapter can pool
    /// it, or `None` when there is none to give or bytes are still pending.
    pub(crate) fn release_idle_buffer(&mut self) -> Option<BytesMut> {
        if self.storage.is_empty() || (self.buffered() > 0 && self.state != HalfState::Aborted) {
            return None;
        }
        self.head = 0;
        self.tail = 0;
        Some(std::mem::take(&mut self.storage))
    }

    /// Lends a buffer (e.g. from a pool) for this direction's next reads; used only
    /// when it has none, resized to the configured capacity. Its old contents are
    /// never sent: only bytes read into it are written out.
    pub(crate) fn provide_buffer(&mut self, mut buffer: BytesMut) {
        if self.storage.is_empty() {
            buffer.resize(self.buffer_size(), 0);
            self.storage = buffer;
            self.head = 0;
            self.tail = 0;
        }
    }

    /// The size of buffer this direction would allocate for its next read.
    pub(crate) fn planned_buffer_size(&self) -> usize {
        self.buffer_size()
    }

    /// True when this direction holds a buffer.
    pub(crate) fn has_buffer(&self) -> bool {
        !self.storage.is_empty()
    }

    /// Puts bytes in front of everything else: CONNECT leftover (counted as
    /// received) or a PROXY protocol header (not counted).
    fn preload(&mut self, data: &[u8], counted: bool) {
        if data.is_empty() {
            return;
        }
        let mut storage = BytesMut::zeroed(self.capacity.max(data.len()));
        storage[..data.len()].copy_from_slice(data);
        self.storage = storage;
        self.head = 0;
        self.tail = data.len();
        if counted {
            self.received += data.len() as u64;
        }
    }
}

/// Settings of a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayOptions {
    /// Copy-path buffer size per direction.
    pub buffer_size: usize,
    /// `--idle-timeout`: close after this long with no byte in either direction.
    pub idle_timeout: Option<Duration>,
}

impl Default for RelayOptions {
    fn default() -> Self {
        RelayOptions {
            buffer_size: DEFAULT_BUFFER_SIZE,
            idle_timeout: None,
        }
    }
}

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEnd {
    /// Both directions ended with EOF and were delivered in full.
    Finished,
    /// A reset or error on `side` ended both directions.
    Failed {
        /// Where the error happened.
        side: Side,
    },
    /// No byte moved for the idle timeout (OPT-2).
    IdleTimeout,
}

impl RelayEnd {
    /// True when the surviving peer should see a reset rather than a clean close,
    /// so that a stream cut short is never mistaken for a complete one.
    pub(crate) fn is_abortive(self) -> bool {
        matches!(self, RelayEnd::Failed { .. })
    }
}

/// The summary of a finished relay, for the session line and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayOutcome {
    /// Bytes received from the client (IN), CONNECT leftover excluded.
    pub from_client: u64,
    /// Bytes received from the destination (OUT), CONNECT leftover included.
    pub from_destination: u64,
    /// Of those bytes, how many moved through a pipe without entering user space.
    pub spliced: u64,
    /// How it ended.
    pub end: RelayEnd,
}

/// Both directions of one connection, with the rules that tie them together: an
/// error on either side ends both, and the idle timeout covers both.
#[derive(Debug)]
pub struct Relay {
    upstream: Half,
    downstream: Half,
    idle_timeout: Option<Duration>,
    last_activity: Instant,
    failure: Option<RelayEnd>,
}

impl Relay {
    /// Starts relaying at `now`. `leftover` (tunnel bytes that came with the CONNECT
    /// reply) is delivered to the client before anything else.
    pub fn new(now: Instant, options: RelayOptions, leftover: &[u8]) -> Self {
        Relay::with_preamble(now, options, leftover, &[])
    }

    /// Like [`Relay::new`], and `preamble` (a PROXY protocol header, OPT-4) goes to
    /// the destination before any client byte; it is not counted as received.
    pub(crate) fn with_preamble(
        now: Instant,
        options: RelayOptions,
        leftover: &[u8],
        preamble: &[u8],
    ) -> Self {
        let mut downstream = Half::new(options.buffer_size);
        downstream.preload(leftover, true);
        let mut upstream = Half::new(options.buffer_size);
        upstream.preload(preamble, false);
        Relay {
            upstream,
            downstream,
            idle_timeout: options.idle_timeout,
            last_activity: now,
            failure: None,
        }
    }

    /// One direction's state.
    pub fn half(&self, dir: Direction) -> &Half {
        match dir {
            Direction::Upstream => &self.upstream,
            Direction::Downstream => &self.downstream,
        }
    }

    /// One direction's state, for [`Half::read_space`], [`Half::set_splice`] and
    /// [`Half::release_idle_buffer`]. Report I/O through the `Relay` methods so the
    /// idle timer sees it.
    pub(crate) fn half_mut(&mut self, dir: Direction) -> &mut Half {
        match dir {
            Direction::Upstream => &mut self.upstream,
            Direction::Downstream => &mut self.downstream,
        }
    }

    /// What `dir` should do next (see `Half::next`).
    #[cfg(test)]
    pub fn next(&self, dir: Direction) -> HalfNext {
        self.half(dir).next()
    }

    fn touch(&mut self, now: Instant, n: usize) {
        if n > 0 {
            self.last_activity = self.last_activity.max(now);
        }
    }

    /// Records `n` bytes read into `dir`'s buffer (`0`: its source ended).
    pub fn handle_read(&mut self, now: Instant, dir: Direction, n: usize) {
        self.touch(now, n);
        self.half_mut(dir).handle_read(n);
    }

    /// Records `n` bytes spliced into `dir`'s pipe (`0`: its source ended).
    pub(crate) fn handle_spliced_in(&mut self, now: Instant, dir: Direction, n: usize) {
        self.touch(now, n);
        self.half_mut(dir).handle_spliced_in(n);
    }

    /// Records that `dir`'s pipe was found full (see [`Half::handle_pipe_full`]).
    pub(crate) fn handle_pipe_full(&mut self, _now: Instant, dir: Direction) {
        self.half_mut(dir).handle_pipe_full();
    }

    /// Records that `dir`'s source ended.
    pub fn handle_eof(&mut self, _now: Instant, dir: Direction) {
        self.half_mut(dir).handle_eof();
    }

    /// Records `n` bytes written from `dir`'s buffer.
    pub fn handle_written(&mut self, now: Instant, dir: Direction, n: usize) {
        self.touch(now, n);
        self.half_mut(dir).handle_written(n);
    }

    /// Records `n` bytes spliced out of `dir`'s pipe.
    pub(crate) fn handle_spliced_out(&mut self, now: Instant, dir: Direction, n: usize) {
        self.touch(now, n);
        self.half_mut(dir).handle_spliced_out(n);
    }

    /// Records that `dir`'s sink had its write half shut down.
    pub fn handle_shutdown(&mut self, _now: Instant, dir: Direction) {
        self.half_mut(dir).handle_shutdown();
    }

    /// Records a reset or error on `side` (a failed read, write or shutdown): both
    /// directions end at once (CONN-6).
    pub(crate) fn handle_error(&mut self, _now: Instant, side: Side) {
        if self.is_finished() {
            return;
        }
        self.failure.get_or_insert(RelayEnd::Failed { side });
        self.upstream.abort();
        self.downstream.abort();
    }

    /// The instant the idle timeout fires, or `None` without one or once finished.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_finished() {
            return None;
        }
        self.idle_timeout
            .and_then(|t| self.last_activity.checked_add(t))
    }

    /// Checks the idle timeout at `now`; ends both directions if it has passed.
    /// Idempotent; returns true when the relay is finished.
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        if let Some(deadline) = self.poll_timeout() {
            if now >= deadline {
                self.failure.get_or_insert(RelayEnd::IdleTimeout);
                self.upstream.abort();
                self.downstream.abort();
            }
        }
        self.is_finished()
    }

    /// True when both directions are done: close both sockets then.
    pub(crate) fn is_finished(&self) -> bool {
        self.upstream.is_done() && self.downstream.is_done()
    }

    /// The summary, once finished; `None` before.
    pub fn outcome(&self) -> Option<RelayOutcome> {
        self.is_finished().then(|| RelayOutcome {
            from_client: self.upstream.received(),
            from_destination: self.downstream.received(),
            spliced: self.upstream.spliced() + self.downstream.spliced(),
            end: self.failure.unwrap_or(RelayEnd::Finished),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    use crate::test_clock::t0;

    #[test]
    fn eof_drains_then_half_closes_once_conn_6() {
        let now = t0();
        let mut r = Relay::new(
            now,
            RelayOptions {
                buffer_size: 8,
                idle_timeout: None,
            },
            b"",
        );
        let up = Direction::Upstream;
        assert_eq!(r.next(up), HalfNext::Read(ReadInto::Buffer));
        let space = r.half_mut(up).read_space();
        assert_eq!(space.len(), 8);
        space[..5].copy_from_slice(b"hello");
        r.handle_read(now, up, 5);
        r.handle_eof(now, up);
        assert_eq!(r.next(up), HalfNext::Write(WriteFrom::Buffer));
        assert_eq!(r.half(up).write_data(), b"hello");
        r.handle_written(now, up, 2);
        assert_eq!(r.half(up).write_data(), b"llo");
        // Shutting down before the buffer drained is refused.
        r.handle_shutdown(now, up);
        assert_eq!(r.next(up), HalfNext::Write(WriteFrom::Buffer));
        r.handle_written(now, up, 3);
        assert_eq!(r.next(up), HalfNext::ShutdownWrite);
        r.handle_shutdown(now, up);
        assert_eq!(r.next(up), HalfNext::Done);
        // The other direction keeps relaying after one side half-closed.
        assert!(!r.is_finished());
        assert_eq!(
            r.next(Direction::Downstream),
            HalfNext::Read(ReadInto::Buffer)
        );
        r.handle_read(now, Direction::Downstream, 0);
        assert_eq!(r.next(Direction::Downstream), HalfNext::ShutdownWrite);
        r.handle_shutdown(now, Direction::Downstream);
        assert_eq!(
            r.outcome(),
            Some(RelayOutcome {
                from_client: 5,
                from_destination: 0,
                spliced: 0,
                end: RelayEnd::Finished
            })
        );
    }

    #[test]
    fn an_error_on_either_side_ends_both_conn_6() {
        let now = t0();
        let mut r = Relay::new(now, RelayOptions::default(), b"");
        r.half_mut(Direction::Upstream).read_space();
        r.handle_read(now, Direction::Upstream, 10);
        r.handle_error(now, Side::Destination);
        assert_eq!(r.next(Direction::Upstream), HalfNext::Aborted);
        assert_eq!(r.next(Direction::Downstream), HalfNext::Aborted);
        let out = r.outcome().unwrap();
        assert_eq!(
            out.end,
            RelayEnd::Failed {
                side: Side::Destination
            }
        );
        assert!(out.end.is_abortive());
        assert_eq!(out.from_client, 10);
    }

    #[test]
    fn leftover_goes_to_the_client_first_and_counts_as_out_conn_9() {
        let now = t0();
        let mut r = Relay::new(
            now,
            RelayOptions {
                buffer_size: 4,
                idle_timeout: None,
            },
            b"tunnel-bytes",
        );
        let down = Direction::Downstream;
        // Splice is on, but the leftover is written from the buffer before any read.
        r.half_mut(down).set_splice(Some(1024));
        assert_eq!(r.next(down), HalfNext::Write(WriteFrom::Buffer));
        assert_eq!(r.half(down).write_data(), b"tunnel-bytes");
        r.handle_written(now, down, 12);
        // A full buffer-sized read marks the flow as bulk: the pipe takes over.
        assert_eq!(r.next(down), HalfNext::Read(ReadInto::Buffer));
        let space = r.half_mut(down).read_space();
        let n = space.len();
        space.fill(b'm');
        r.handle_read(now, down, n);
        r.handle_written(now, down, n);
        assert_eq!(r.next(down), HalfNext::Read(ReadInto::Pipe));
        r.handle_spliced_in(now, down, 100);
        assert_eq!(r.next(down), HalfNext::Write(WriteFrom::Pipe));
        assert_eq!(r.half(down).received(), 12 + n as u64 + 100);
    }

    /// The sizes the README gives, as literals (the constants could drift
    /// with the code): a direction that can splice copies its small messages
    /// through 4 KiB, one that cannot through 64 KiB.
    #[test]
    fn copy_buffers_are_4_kib_beside_a_pipe_else_64_kib() {
        let mut copying = Half::new(DEFAULT_BUFFER_SIZE);
        assert_eq!(copying.read_space().len(), 64 * 1024);
        let mut splicing = Half::new(DEFAULT_BUFFER_SIZE);
        splicing.set_splice(Some(1 << 20));
        assert_eq!(splicing.read_space().len(), 4 * 1024);
    }

    /// A spliced read under 4 KiB, with room for more in the pipe, means the
    /// flow is interactive again: it goes back to copying.
    #[test]
    fn a_spliced_read_under_4_kib_goes_back_to_copying() {
        for (n, spliced_on) in [(4 * 1024 - 1, false), (4 * 1024, true)] {
            let mut h = Half::new(DEFAULT_BUFFER_SIZE);
            h.set_splice(Some(1 << 20));
            let full = h.read_space().len();
            h.handle_read(full);
            h.handle_written(full);
            assert_eq!(h.wants_read(), Some(ReadInto::Pipe), "bulk");
            h.handle_spliced_in(n);
            h.handle_spliced_out(n);
            let next = h.wants_read();
            let expected = if spliced_on {
                ReadInto::Pipe
            } else {
                ReadInto::Buffer
            };
            assert_eq!(next, Some(expected), "after {n} bytes");
        }
    }

    /// A read reported larger than the space it was given counts only that
    /// space: no byte that was not read is ever written.
    #[test]
    fn a_read_larger_than_its_space_counts_only_the_space() {
        let mut h = Half::new(DEFAULT_BUFFER_SIZE);
        let _ = h.read_space();
        h.handle_read(10);
        let space = h.read_space().len();
        h.handle_read(space + 10);
        assert_eq!(h.buffered(), space + 10);
        assert_eq!(h.write_data().len(), space + 10);
        assert_eq!(h.received(), (space + 10) as u64);
    }

    /// A pipe found full stays full until some of it has gone out: nothing
    /// written is no room made.
    #[test]
    fn a_full_pipe_waits_for_bytes_to_go_out() {
        let mut h = Half::new(DEFAULT_BUFFER_SIZE);
        h.set_splice(Some(1 << 20));
        let full = h.read_space().len();
        h.handle_read(full);
        h.handle_written(full);
        h.handle_spliced_in(100_000);
        h.handle_pipe_full();
        h.handle_spliced_out(0);
        assert_eq!(h.wants_read(), None, "still full");
        h.handle_spliced_out(1);
        assert_eq!(h.wants_read(), Some(ReadInto::Pipe));
    }

    /// What a relay reports as spliced is what both directions spliced.
    #[test]
    fn the_outcome_counts_what_either_direction_spliced() {
        let now = t0();
        let mut r = Relay::new(now, RelayOptions::default(), b"");
        let up = Direction::Upstream;
        r.half_mut(up).set_splice(Some(1 << 20));
        let full = r.half_mut(up).read_space().len();
        r.handle_read(now, up, full);
        r.handle_written(now, up, full);
        r.handle_spliced_in(now, up, 100);
        r.handle_spliced_out(now, up, 100);
        r.handle_error(now, Side::Client);
        let outcome = r.outcome().expect("finished");
        assert_eq!(outcome.spliced, 100);
    }

    /// What a direction holds is what was read and not yet written.
    #[test]
    fn a_partial_write_leaves_the_rest_buffered() {
        let mut h = Half::new(DEFAULT_BUFFER_SIZE);
        let _ = h.read_space();
        h.handle_read(100);
        h.handle_written(40);
        assert_eq!(h.buffered(), 60);
        assert_eq!(h.write_data().len(), 60);
    }

    #[test]
    fn only_bulk_flows_are_spliced() {
        let mut h = Half::new(DEFAULT_BUFFER_SIZE);
        h.set_splice(Some(64 * 1024));
        // Interactive: small reads stay on the copy path, no pipe needed.
        assert_eq!(h.wants_read(), Some(ReadInto::Buffer));
        h.read_space();
        h.handle_read(100);
        h.handle_written(100);
        assert_eq!(h.wants_read(), Some(ReadInto::Buffer));
        // A read that fills half the buffer or more: bulk, so splice.
        h.read_space();
        h.handle_read(DEFAULT_BUFFER_SIZE / 2);
        assert_eq!(
            h.wants_read(),
            None,
            "the buffer drains before the pipe is used"
        );
        h.handle_written(DEFAULT_BUFFER_SIZE / 2);
        assert_eq!(h.wants_read(), Some(ReadInto::Pipe));
        h.handle_spliced_in(60_000);
        h.handle_spliced_out(60_000);
        assert_eq!(h.wants_read(), Some(ReadInto::Pipe));
        // A pipe found full wants no read until some of it is written out.
        h.handle_spliced_in(60_000);
        h.handle_pipe_full();
        assert_eq!(h.wants_read(), None);
        h.handle_spliced_out(60_000);
        assert_eq!(h.wants_read(), Some(ReadInto::Pipe));
        // A small read because the pipe was nearly full: still bulk.
        h.handle_spliced_in(64 * 1024 - 100);
        h.handle_spliced_in(100);
        assert_eq!(h.wants_read(), None, "pipe full");
        h.handle_spliced_out(64 * 1024);
        assert_eq!(h.wants_read(), Some(ReadInto::Pipe));
        // A small spliced read with room to spare: interactive again; the pipe
        // drains first.
        h.handle_spliced_in(10);
        assert_eq!(h.wants_read(), None);
        h.handle_spliced_out(10);
        assert_eq!(h.wants_read(), Some(ReadInto::Buffer));
        assert_eq!(h.spliced(), 120_010 + 64 * 1024);
    }

    #[test]
    fn preamble_goes_first_and_is_not_counted_opt_4() {
        let now = t0();
        let mut r = Relay::with_preamble(now, RelayOptions::default(), b"", b"PROXY x\r\n");
        let up = Direction::Upstream;
        // Client bytes read meanwhile queue behind the header.
        r.half_mut(up).read_space()[..2].copy_from_slice(b"hi");
        r.handle_read(now, up, 2);
        assert_eq!(r.half(up).write_data(), b"PROXY x\r\nhi");
        r.handle_written(now, up, 11);
        assert_eq!(r.half(up).received(), 2, "IN excludes the header");
        assert_eq!(r.half(up).delivered(), 11);
    }

    #[test]
    fn idle_timeout_closes_quiet_connections_opt_2() {
        let now = t0();
        let idle = Duration::from_secs(30);
        let mut r = Relay::new(
            now,
            RelayOptions {
                buffer_size: 16,
                idle_timeout: Some(idle),
            },
            b"",
        );
        assert_eq!(r.poll_timeout(), Some(now + idle));
        assert!(!r.handle_timeout(now + Duration::from_secs(29)));
        r.half_mut(Direction::Upstream).read_space();
        r.handle_read(now + Duration::from_secs(29), Direction::Upstream, 1);
        assert!(
            !r.handle_timeout(now + Duration::from_secs(30)),
            "activity restarts the timer"
        );
        assert!(r.handle_timeout(now + Duration::from_secs(59)));
        assert!(
            r.handle_timeout(now + Duration::from_secs(59)),
            "idempotent"
        );
        assert_eq!(r.outcome().unwrap().end, RelayEnd::IdleTimeout);
        assert_eq!(r.poll_timeout(), None);
    }

    /// OPT-2 counts bytes: an end of stream moves none, so it does not
    /// restart the idle timer.
    #[test]
    fn an_end_of_stream_is_no_activity_opt_2() {
        let now = t0();
        let idle = Duration::from_secs(30);
        let options = RelayOptions {
            buffer_size: 16,
            idle_timeout: Some(idle),
        };
        let mut r = Relay::new(now, options, b"");
        r.handle_read(now + Duration::from_secs(10), Direction::Upstream, 0);
        assert_eq!(r.poll_timeout(), Some(now + idle));
    }

    #[test]
    fn idle_buffers_are_released_and_can_be_lent_back() {
        let mut h = Half::new(1024);
        assert!(
            h.release_idle_buffer().is_none(),
            "nothing allocated before the first read"
        );
        h.read_space()[0] = 7;
        h.handle_read(1);
        assert!(
            h.release_idle_buffer().is_none(),
            "pending bytes keep the buffer"
        );
        h.handle_written(1);
        let pooled = h.release_idle_buffer().unwrap();
        assert!(!h.has_buffer());
        assert_eq!(pooled.len(), 1024);
        // A lent buffer's old contents are never written out.
        let mut other = Half::new(16);
        let mut dirty = BytesMut::new();
        dirty.extend_from_slice(b"secret from another connection");
        other.provide_buffer(dirty);
        assert!(other.has_buffer());
        assert_eq!(other.write_data(), b"");
        other.read_space()[..2].copy_from_slice(b"ok");
        other.handle_read(2);
        assert_eq!(other.write_data(), b"ok");
        assert_eq!(other.read_space().len(), 14, "resized to the capacity");
    }

    #[test]
    fn misreported_counts_never_panic() {
        let mut h = Half::new(4);
        h.handle_read(100); // nothing was handed out: nothing is counted
        assert_eq!(h.received(), 0);
        h.read_space();
        h.handle_read(100);
        assert_eq!(h.buffered(), 4);
        h.handle_written(100);
        h.handle_spliced_out(100);
        assert_eq!(h.delivered(), 4);
        assert_eq!(h.write_data(), b"");
    }

    /// A simulated pair of sockets for one direction: the source's bytes, the
    /// kernel pipe, and what the sink received.
    struct Wire {
        source: Vec<u8>,
        read_at: usize,
        pipe: VecDeque<u8>,
        sink: Vec<u8>,
        shutdowns: usize,
        shutdown_after: Option<usize>,
        /// How much the sink had when an error ended the relay.
        failed_at: Option<usize>,
    }

    #[derive(Debug, Clone)]
    enum Step {
        Read(Direction, usize),
        Write(Direction, usize),
        Shutdown(Direction),
        Splice(Direction, Option<usize>),
        Release(Direction),
        PipeFull(Direction),
        Error(Side),
    }

    fn dir() -> impl Strategy<Value = Direction> {
        prop_oneof![Just(Direction::Upstream), Just(Direction::Downstream)]
    }

    fn step(errors: bool) -> impl Strategy<Value = Step> {
        let error_weight = if errors { 1 } else { 0 };
        prop_oneof![
            // Large reads too, so flows turn bulk and take the splice path.
            6 => (dir(), prop_oneof![1usize..300, 2_000usize..70_000]).prop_map(|(d, n)| Step::Read(d, n)),
            6 => (dir(), 1usize..300).prop_map(|(d, n)| Step::Write(d, n)),
            2 => dir().prop_map(Step::Shutdown),
            1 => (dir(), proptest::option::of(1usize..200)).prop_map(|(d, p)| Step::Splice(d, p)),
            1 => dir().prop_map(Step::Release),
            1 => dir().prop_map(Step::PipeFull),
            error_weight => prop_oneof![Just(Side::Client), Just(Side::Destination)].prop_map(Step::Error),
        ]
    }

    /// Does `step` to the simulated wires if the relay allows it, as any driver
    /// (blocking or readiness-based) might.
    fn apply(r: &mut Relay, wires: &mut [Wire; 2], now: Instant, step: &Step) {
        let idx = |d: Direction| usize::from(d == Direction::Downstream);
        match *step {
            Step::Read(d, max) => {
                let w = &mut wires[idx(d)];
                match r.half(d).wants_read() {
                    Some(ReadInto::Buffer) => {
                        let space = r.half_mut(d).read_space();
                        // An empty slice would make read(2) return 0: a false EOF.
                        assert!(
                            !space.is_empty(),
                            "a buffered read was wanted with no space"
                        );
                        let n = max.min(space.len()).min(w.source.len() - w.read_at);
                        space[..n].copy_from_slice(&w.source[w.read_at..w.read_at + n]);
                        w.read_at += n;
                        r.handle_read(now, d, n);
                    }
                    Some(ReadInto::Pipe) => {
                        let n = max
                            .min(r.half(d).pipe_space())
                            .min(w.source.len() - w.read_at);
                        w.pipe.extend(&w.source[w.read_at..w.read_at + n]);
                        w.read_at += n;
                        r.handle_spliced_in(now, d, n);
                    }
                    None => {}
                }
            }
            Step::Write(d, max) => {
                let w = &mut wires[idx(d)];
                match r.half(d).wants_write() {
                    Some(WriteFrom::Buffer) => {
                        let data = r.half(d).write_data();
                        let n = max.min(data.len());
                        w.sink.extend_from_slice(&data[..n]);
                        r.handle_written(now, d, n);
                    }
                    Some(WriteFrom::Pipe) => {
                        let n = max.min(r.half(d).piped());
                        assert!(
                            n <= w.pipe.len(),
                            "core thinks the pipe holds more than it does"
                        );
                        w.sink.extend(w.pipe.drain(..n));
                        r.handle_spliced_out(now, d, n);
                    }
                    None => {}
                }
            }
            Step::Shutdown(d) => {
                if r.half(d).wants_shutdown() {
                    let w = &mut wires[idx(d)];
                    w.shutdowns += 1;
                    w.shutdown_after = Some(w.sink.len());
                    r.handle_shutdown(now, d);
                }
            }
            Step::Splice(d, cap) => r.half_mut(d).set_splice(cap),
            Step::Release(d) => {
                // Pool the buffer and lend it straight back, as an adapter would.
                if let Some(buf) = r.half_mut(d).release_idle_buffer() {
                    r.half_mut(d).provide_buffer(buf);
                }
            }
            Step::PipeFull(d) => r.handle_pipe_full(now, d),
            Step::Error(side) => {
                if !r.is_finished() && wires[0].failed_at.is_none() {
                    for w in wires.iter_mut() {
                        w.failed_at = Some(w.sink.len());
                    }
                }
                r.handle_error(now, side)
            }
        }
    }

    fn run(
        up: Vec<u8>,
        down: Vec<u8>,
        leftover: Vec<u8>,
        buffer: usize,
        steps: &[Step],
    ) -> (Relay, [Wire; 2]) {
        let now = t0();
        let mut r = Relay::new(
            now,
            RelayOptions {
                buffer_size: buffer,
                idle_timeout: None,
            },
            &leftover,
        );
        let wire = |source: Vec<u8>| Wire {
            source,
            read_at: 0,
            pipe: VecDeque::new(),
            sink: vec![],
            shutdowns: 0,
            shutdown_after: None,
            failed_at: None,
        };
        let mut down_source = leftover.clone();
        down_source.extend_from_slice(&down);
        let mut wires = [wire(up), wire(down)];
        for s in steps {
            apply(&mut r, &mut wires, now, s);
        }
        // Then drive to the end as a blocking driver would, bounded.
        for _ in 0..100_000 {
            if r.is_finished() {
                break;
            }
            for d in Direction::BOTH {
                let s = match r.next(d) {
                    HalfNext::Write(_) => Step::Write(d, 97),
                    HalfNext::ShutdownWrite => Step::Shutdown(d),
                    HalfNext::Read(_) => {
                        let w = &wires[usize::from(d == Direction::Downstream)];
                        if w.read_at == w.source.len() {
                            r.handle_eof(now, d);
                            continue;
                        }
                        Step::Read(d, 89)
                    }
                    HalfNext::Done | HalfNext::Aborted => continue,
                };
                apply(&mut r, &mut wires, now, &s);
            }
        }
        // For the checks, the downstream source is leftover + what the destination sent.
        wires[1].source = down_source;
        (r, wires)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// CONN-6: whatever the read/write sizes, interleaving, splice switching and
        /// buffer releases, every byte arrives once, in order; the write half is shut
        /// down exactly once and only after everything was delivered; the counts
        /// equal the bytes delivered.
        #[test]
        fn relay_conserves_bytes_in_order(
            up in proptest::collection::vec(any::<u8>(), 0..12_000),
            down in proptest::collection::vec(any::<u8>(), 0..12_000),
            leftover in proptest::collection::vec(any::<u8>(), 0..50),
            buffer in prop_oneof![1usize..512, 4_096usize..65_536],
            steps in proptest::collection::vec(step(false), 0..200),
        ) {
            let (r, wires) = run(up, down, leftover, buffer, &steps);
            prop_assert!(r.is_finished());
            let out = r.outcome().unwrap();
            prop_assert_eq!(out.end, RelayEnd::Finished);
            for (w, d) in wires.iter().zip(Direction::BOTH) {
                prop_assert_eq!(&w.sink, &w.source);
                prop_assert_eq!(w.shutdowns, 1);
                prop_assert_eq!(w.shutdown_after, Some(w.source.len()));
                prop_assert_eq!(r.half(d).received(), w.source.len() as u64);
                prop_assert_eq!(r.half(d).delivered(), w.source.len() as u64);
            }
            prop_assert_eq!(out.from_client, wires[0].source.len() as u64);
            prop_assert_eq!(out.from_destination, wires[1].source.len() as u64);
        }

        /// CONN-6: with errors at random moments, what was delivered is always an
        /// in-order prefix of what was sent, an error ends both directions, and no
        /// direction is shut down before it delivered everything.
        #[test]
        fn errors_end_both_directions_without_reordering(
            up in proptest::collection::vec(any::<u8>(), 0..20_000),
            down in proptest::collection::vec(any::<u8>(), 0..20_000),
            buffer in prop_oneof![1usize..256, 4_096usize..65_536],
            steps in proptest::collection::vec(step(true), 0..200),
        ) {
            let (r, wires) = run(up, down, vec![], buffer, &steps);
            prop_assert!(r.is_finished());
            let out = r.outcome().unwrap();
            for (w, d) in wires.iter().zip(Direction::BOTH) {
                prop_assert!(w.source.starts_with(&w.sink));
                prop_assert!(w.shutdowns <= 1);
                if let Some(at) = w.shutdown_after {
                    prop_assert_eq!(at, w.source.len());
                }
                prop_assert_eq!(r.half(d).delivered(), w.sink.len() as u64);
                prop_assert!(r.half(d).received() >= r.half(d).delivered());
            }
            if steps.iter().any(|s| matches!(s, Step::Error(_))) && out.end == RelayEnd::Finished {
                // Only possible when both directions had already finished cleanly.
                prop_assert!(wires.iter().all(|w| w.shutdowns == 1));
            }
            // An error that struck a live relay fails it, and nothing is delivered
            // after it.
            if wires[0].failed_at.is_some() {
                let failed = matches!(out.end, RelayEnd::Failed { .. });
                prop_assert!(failed);
                for w in &wires {
                    prop_assert_eq!(w.failed_at, Some(w.sink.len()));
                }
            }
        }
    }
}
