//! An event loop: one thread, one epoll set, every connection it accepted. Each
//! turn waits once for whatever is ready (or the earliest deadline), then runs
//! each connection that has something to do until the core says it waits
//! again. One `epoll_wait` serves every ready socket, a connection that keeps
//! waiting for the same things costs no `epoll_ctl`, and no connection's
//! readiness crosses to another thread.
//!
//! One loop in two watches every listener (EPOLLEXCLUSIVE: one loop is woken
//! per client) and keeps what it accepts: no hand-off at accept. Short
//! connections and small messages thus live on few loops, where one wait
//! serves many sockets. Bulk is spread instead: a connection that starts
//! splicing on a loop that already splices for more connections than another
//! loop (by more than one), accepting or not, moves to that loop, once, so
//! four bulk streams use every core.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plug_core::connection::relay::Side;
use plug_core::forwarder::AcceptNext;
use plug_core::threads;
use plug_shell::drive::conn::Conn;
use plug_shell::net::sockets;
use plug_shell::shared::lock;
use plug_shell::sys::{self, EPOLLEXCLUSIVE, EPOLLIN};
use plug_shell::{Context, Listener};

use crate::conn::{self, Entry, Next};

/// The key of the loop's wake-up counter.
const WAKE_KEY: u64 = u64::MAX;
/// Set in the low half of a listener's key (a connection's index stays below).
const LISTENER_BIT: u64 = 1 << 31;
/// At most this many connections live in one loop (their index must fit
/// below [`LISTENER_BIT`] beside the side bit); far beyond the descriptor limit.
const MAX_CONNECTIONS: usize = 1 << 30;
/// How many events one wait takes at most.
const EVENTS_PER_WAIT: usize = 256;
/// Clients accepted from one listener in a turn before the loop serves the
/// others: a flood of connects does not starve the open connections.
const ACCEPTS_PER_TURN: usize = 64;

/// A new key for side `side` of the connection in slot `index`: `counter`
/// (a loop's count of sockets registered, wrapping) makes it unique.
fn fresh_key(counter: &mut u32, index: usize, side: Side) -> u64 {
    *counter = counter.wrapping_add(1);
    conn::key(*counter, index, side)
}

/// A listener as the accepting loops share it: its socket (a duplicate of the one its
/// [`Listener`] keeps) is closed, and its accept loop reported ended, when the
/// last loop lets go of it.
#[derive(Debug)]
pub struct Accepting {
    ctx: Arc<Context>,
    listener: Arc<Listener>,
    socket: Option<TcpListener>,
}

impl Accepting {
    /// `listener`, served on `socket` (non-blocking).
    pub fn new(ctx: Arc<Context>, listener: Arc<Listener>, socket: TcpListener) -> Accepting {
        Accepting {
            ctx,
            listener,
            socket: Some(socket),
        }
    }

    fn socket(&self) -> Option<&TcpListener> {
        self.socket.as_ref()
    }

    fn ends(&self) -> bool {
        self.ctx.accept_should_end(&self.listener)
    }
}

impl Drop for Accepting {
    fn drop(&mut self) {
        // Closed first, so another process (or a later reload) can bind the port.
        drop(self.socket.take());
        self.ctx.accept_loop_ended();
    }
}

/// What other threads may hand a loop: listeners to watch, and connections
/// another loop moves to it. Writing its counter wakes it.
#[derive(Debug)]
pub struct Mailbox {
    wake: OwnedFd,
    listeners: Mutex<Vec<Arc<Accepting>>>,
    moved: Mutex<Vec<Entry>>,
    /// Connections the loop splices for, or has been moved: what bulk is
    /// spread by.
    splicing: AtomicUsize,
}

impl Mailbox {
    fn new() -> std::io::Result<Mailbox> {
        Ok(Mailbox {
            wake: sys::eventfd()?,
            listeners: Mutex::default(),
            moved: Mutex::default(),
            splicing: AtomicUsize::new(0),
        })
    }

    /// Hands `accepting` to the loop, which watches it from its next turn.
    pub fn add_listener(&self, accepting: Arc<Accepting>) {
        lock(&self.listeners).push(accepting);
        self.wake();
    }

    /// Wakes the loop, which then also looks for listeners that have ended.
    pub fn wake(&self) {
        sys::eventfd_signal(self.wake.as_raw_fd());
    }

    /// Moves a connection to the loop (already counted as splicing there).
    fn move_in(&self, entry: Entry) {
        lock(&self.moved).push(entry);
        self.wake();
    }

    fn take_moved(&self) -> Vec<Entry> {
        std::mem::take(&mut *lock(&self.moved))
    }

    fn take_listeners(&self) -> Vec<Arc<Accepting>> {
        std::mem::take(&mut *lock(&self.listeners))
    }
}

/// A listener in one loop.
#[derive(Debug)]
struct Watched {
    accepting: Arc<Accepting>,
    /// Until when its accepts pause (out of descriptors, §5); it is out of the
    /// epoll set meanwhile.
    paused_until: Option<Instant>,
}

/// One thread's loop.
#[derive(Debug)]
pub struct EventLoop {
    ctx: Arc<Context>,
    epoll: OwnedFd,
    mailbox: Arc<Mailbox>,
    /// Every loop's mailbox, to tell the others a listener has ended.
    all: Arc<[Arc<Mailbox>]>,
    listeners: Vec<Option<Watched>>,
    conns: Vec<Option<Entry>>,
    free: Vec<usize>,
    /// Connections' deadlines, earliest first, by slot.
    deadlines: BTreeMap<(Instant, usize), ()>,
    /// Connections that yielded, to run again after this turn's events.
    yielded: Vec<usize>,
    /// Sockets registered so far (wrapping): makes each key unique.
    registered: u32,
}

impl EventLoop {
    /// Makes a loop and its mailbox.
    pub fn new(ctx: Arc<Context>) -> std::io::Result<EventLoop> {
        let mailbox = Arc::new(Mailbox::new()?);
        let epoll = sys::epoll_create()?;
        sys::epoll_register(
            epoll.as_raw_fd(),
            mailbox.wake.as_raw_fd(),
            EPOLLIN,
            WAKE_KEY,
            true,
        )?;
        Ok(EventLoop {
            ctx,
            epoll,
            mailbox,
            all: Arc::new([]),
            listeners: Vec::new(),
            conns: Vec::new(),
            free: Vec::new(),
            deadlines: BTreeMap::new(),
            yielded: Vec::new(),
            registered: 0,
        })
    }

    /// Its mailbox.
    pub fn mailbox(&self) -> Arc<Mailbox> {
        Arc::clone(&self.mailbox)
    }

    /// Runs the loop on this thread, with `all` the mailboxes of every loop;
    /// returns only if epoll itself fails.
    pub fn run(mut self, all: Arc<[Arc<Mailbox>]>) -> std::io::Error {
        self.all = all;
        let mut events = [sys::EPOLL_EVENT; EVENTS_PER_WAIT];
        // The clock is read once per wake-up: the work in between takes microseconds.
        let mut now = Instant::now();
        loop {
            let timeout = match self.yielded.is_empty() {
                true => self
                    .next_deadline()
                    .map(|d| d.saturating_duration_since(now)),
                false => Some(Duration::ZERO),
            };
            let n = match sys::epoll_wait_for(self.epoll.as_raw_fd(), &mut events, timeout) {
                Ok(n) => n,
                Err(e) => return e,
            };
            now = Instant::now();
            for event in &events[..n] {
                let (key, flags) = (event.u64, event.events);
                self.dispatch(now, key, flags);
            }
            self.fire_deadlines(now);
            for index in std::mem::take(&mut self.yielded) {
                self.run_conn(now, index);
            }
        }
    }

    fn dispatch(&mut self, now: Instant, key: u64, flags: u32) {
        if key == WAKE_KEY {
            sys::eventfd_drain(self.mailbox.wake.as_raw_fd());
            for accepting in self.mailbox.take_listeners() {
                self.add_listener(accepting);
            }
            self.drop_ended_listeners();
            for entry in self.mailbox.take_moved() {
                match self.place(entry) {
                    Some(index) => self.run_conn(now, index),
                    // Dropped (accounted for, FAULT-5): it splices no more.
                    None => {
                        self.mailbox.splicing.fetch_sub(1, Ordering::Relaxed);
                    }
                }
            }
            return;
        }
        let low = key & 0xffff_ffff;
        if low & LISTENER_BIT != 0 {
            self.accept((low & !LISTENER_BIT) as usize, now);
            return;
        }
        let index = (low >> 1) as usize;
        let side = match low & 1 {
            0 => Side::Client,
            _ => Side::Destination,
        };
        let Some(Some(entry)) = self.conns.get_mut(index) else {
            return;
        };
        // An event taken before its socket was closed and replaced is not
        // the new socket's.
        if entry.key(side) != key {
            return;
        }
        entry.handle_event(now, side, flags);
        self.run_conn(now, index);
    }

    /// The earliest deadline of a connection or a paused listener.
    fn next_deadline(&self) -> Option<Instant> {
        let conn = self.deadlines.first_key_value().map(|((at, _), ())| *at);
        let paused = self
            .listeners
            .iter()
            .flatten()
            .filter_map(|w| w.paused_until)
            .min();
        match (conn, paused) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn fire_deadlines(&mut self, now: Instant) {
        while let Some(((at, index), ())) = self.deadlines.first_key_value() {
            if *at > now {
                break;
            }
            let index = *index;
            self.deadlines.pop_first();
            if let Some(Some(entry)) = self.conns.get_mut(index) {
                entry.deadline = None;
            }
            self.run_conn(now, index);
        }
        for i in 0..self.listeners.len() {
            let due = match &self.listeners[i] {
                Some(w) => w.paused_until.is_some_and(|t| t <= now),
                None => false,
            };
            if due {
                self.resume_listener(i);
            }
        }
    }

    /// Runs the connection in slot `index` until it waits, and keeps its
    /// deadline; drops it once it is done.
    fn run_conn(&mut self, now: Instant, index: usize) {
        let epoll = self.epoll.as_raw_fd();
        let registered = &mut self.registered;
        let Some(Some(entry)) = self.conns.get_mut(index) else {
            return;
        };
        let next = entry.run(now, epoll, || {
            fresh_key(registered, index, Side::Destination)
        });
        let old = entry.deadline;
        let new = match next {
            Next::Wait(deadline) => deadline,
            // A yielded connection keeps its wait's deadline until it runs.
            Next::Yield => {
                self.yielded.push(index);
                old
            }
            Next::Done => None,
        };
        if old != new {
            if let Some(at) = old {
                self.deadlines.remove(&(at, index));
            }
            if let Some(at) = new {
                self.deadlines.insert((at, index), ());
            }
            entry.deadline = new;
        }
        let splicing = next != Next::Done && entry.splicing();
        if splicing != entry.counted_splicing {
            entry.counted_splicing = splicing;
            match splicing {
                true => self.mailbox.splicing.fetch_add(1, Ordering::Relaxed),
                false => self.mailbox.splicing.fetch_sub(1, Ordering::Relaxed),
            };
            if splicing {
                self.spread(index);
            }
        }
        if next == Next::Done {
            // Its sockets leave the epoll set as they are closed.
            self.conns[index] = None;
            self.free.push(index);
        }
    }

    fn add_listener(&mut self, accepting: Arc<Accepting>) {
        let index = match self.listeners.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.listeners.push(None);
                self.listeners.len() - 1
            }
        };
        self.listeners[index] = Some(Watched {
            accepting,
            paused_until: None,
        });
        self.resume_listener(index);
    }

    /// Puts listener `index` (back) in the epoll set.
    fn resume_listener(&mut self, index: usize) {
        let Some(Some(w)) = self.listeners.get_mut(index) else {
            return;
        };
        w.paused_until = None;
        let Some(socket) = w.accepting.socket() else {
            return;
        };
        let key = LISTENER_BIT | index as u64;
        let fd = socket.as_raw_fd();
        if let Err(e) = sys::epoll_register(
            self.epoll.as_raw_fd(),
            fd,
            EPOLLIN | EPOLLEXCLUSIVE,
            key,
            true,
        ) {
            // Without epoll this loop cannot watch it; the others still do.
            let text = format!("cannot watch a listening socket: {e}");
            self.ctx.log(plug_core::reports::log::LogLevel::Error, text);
            self.listeners[index] = None;
        }
    }

    fn forget_listener(&mut self, index: usize) {
        if let Some(w) = self.listeners.get_mut(index).and_then(Option::take) {
            if let (Some(socket), None) = (w.accepting.socket(), w.paused_until) {
                sys::epoll_forget(self.epoll.as_raw_fd(), socket.as_raw_fd());
            }
        }
    }

    /// Lets go of every listener whose accept loop should end (a stop, or a
    /// reload that closed it): the last loop to let go closes its socket.
    fn drop_ended_listeners(&mut self) {
        for i in 0..self.listeners.len() {
            if self.listeners[i]
                .as_ref()
                .is_some_and(|w| w.accepting.ends())
            {
                self.forget_listener(i);
            }
        }
    }

    /// Accepts what listener `index` has, up to [`ACCEPTS_PER_TURN`], then
    /// runs the new connections; what a failed accept means is the core's (§5,
    /// FAULT-1).
    fn accept(&mut self, index: usize, now: Instant) {
        let mut fresh = Vec::new();
        self.accept_some(index, now, &mut fresh);
        for conn in fresh {
            self.run_conn(now, conn);
        }
    }

    /// Accepts clients into slots listed in `fresh`, not yet run: a burst of
    /// clients is taken as it comes, before any of them connects onwards, so
    /// the accept is what meets a lack of descriptors first, as with a task
    /// or a thread per connection (§5).
    fn accept_some(&mut self, index: usize, now: Instant, fresh: &mut Vec<usize>) {
        for _ in 0..ACCEPTS_PER_TURN {
            let Some(Some(w)) = self.listeners.get(index) else {
                return;
            };
            let accepting = Arc::clone(&w.accepting);
            let Some(socket) = accepting.socket() else {
                return;
            };
            match sockets::accept(socket) {
                Ok((client, peer)) => {
                    let ctx = &accepting.ctx;
                    // Refused: dropping `client` closes it at once (CONN-1).
                    if let Some(conn) = ctx.accept(&accepting.listener, now, peer) {
                        fresh.extend(self.insert(conn, client));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) if accepting.ends() => {
                    self.forget_listener(index);
                    // The others may not have been woken (EPOLLEXCLUSIVE).
                    for mailbox in self.all.iter() {
                        if !Arc::ptr_eq(mailbox, &self.mailbox) {
                            mailbox.wake();
                        }
                    }
                    return;
                }
                Err(e) => match accepting.ctx.accept_failed(&accepting.listener, now, &e) {
                    AcceptNext::Retry => {}
                    AcceptNext::WaitReadable => return,
                    AcceptNext::Pause(pause) => {
                        sys::epoll_forget(self.epoll.as_raw_fd(), socket.as_raw_fd());
                        if let Some(Some(w)) = self.listeners.get_mut(index) {
                            w.paused_until = Some(now + pause);
                        }
                        return;
                    }
                },
            }
        }
    }

    /// Moves the connection in slot `index`, which has just started
    /// splicing, to the loop that splices for the fewest, if this one splices
    /// for more than one more than that: bulk then runs on every core, and a
    /// connection moves at most once per burst.
    fn spread(&mut self, index: usize) {
        let mine = self.mailbox.splicing.load(Ordering::Relaxed);
        let loads: Vec<usize> = self
            .all
            .iter()
            .map(|m| m.splicing.load(Ordering::Relaxed))
            .collect();
        let Some(target) = threads::spread_to(mine, &loads)
            .and_then(|i| self.all.get(i))
            .map(Arc::clone)
        else {
            return;
        };
        let Some(mut entry) = self.conns.get_mut(index).and_then(Option::take) else {
            return;
        };
        self.free.push(index);
        if let Some(at) = entry.deadline.take() {
            self.deadlines.remove(&(at, index));
        }
        entry.leave(self.epoll.as_raw_fd());
        self.mailbox.splicing.fetch_sub(1, Ordering::Relaxed);
        target.splicing.fetch_add(1, Ordering::Relaxed);
        target.move_in(entry);
    }

    /// Takes a connection another loop moved here into a slot of this one;
    /// the slot, to run it.
    fn place(&mut self, mut entry: Entry) -> Option<usize> {
        let index = self.slot()?;
        let counter = &mut self.registered;
        entry.rekey([Side::Client, Side::Destination].map(|side| fresh_key(counter, index, side)));
        self.conns[index] = Some(entry);
        Some(index)
    }

    /// A free slot for a connection.
    fn slot(&mut self) -> Option<usize> {
        match self.free.pop() {
            Some(i) => Some(i),
            None if self.conns.len() < MAX_CONNECTIONS => {
                self.conns.push(None);
                Some(self.conns.len() - 1)
            }
            None => None,
        }
    }

    /// Takes an admitted client into the loop; its slot, to run it.
    fn insert(&mut self, conn: Conn, client: TcpStream) -> Option<usize> {
        // None: dropped, and the connection still ends accounted for (FAULT-5).
        let index = self.slot()?;
        let key = fresh_key(&mut self.registered, index, Side::Client);
        self.conns[index] = Some(Entry::new(conn, client, key));
        Some(index)
    }
}
