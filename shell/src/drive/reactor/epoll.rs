//! plug's own reactor: one epoll instance per executor thread, waited on by
//! that thread between its tasks ([`block_on`]), so readiness never crosses
//! threads and no helper thread takes the reactor from a busy one.
//!
//! Level-triggered, with each socket's interest following what its task waits
//! for, lazily: interest is added when a task waits for it, and dropped only
//! when the kernel reports readiness that no task waits for. A connection that
//! keeps waiting for the same thing (both sides readable, as relaying does)
//! costs no `epoll_ctl` at all, and one `epoll_wait` serves every socket that
//! is ready. Deadlines are a sorted map whose earliest entry is the wait's
//! timeout: no timerfd, and nothing armed for a wait without one.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use plug_core::connection::Ready;

use super::{Deadline, Reactor, Source};
use crate::shared::lock;
use crate::sys;

/// plug's reactor, as a [`Reactor`]: sockets and timers belong to the
/// [`block_on`] loop of the thread that first waits on them.
#[derive(Debug, Clone, Copy)]
pub struct Epoll;

impl Reactor for Epoll {
    type Stream = Socket<std::net::TcpStream>;
    type Listener = Socket<std::net::TcpListener>;
    type Timer = Timer;
    // Each readiness is taken with the event's EPOLLERR and EPOLLHUP.
    const TELLS_ERRORS: bool = true;
}

/// The key of the loop's own wake-up counter; sockets' keys start at 1.
const WAKE_KEY: u64 = 0;
/// How many events one wait takes at most.
const EVENTS_PER_WAIT: usize = 256;
/// A readiness a task has been woken for and not yet taken.
const READY_READ: u8 = 1;
/// As [`READY_READ`], for writing.
const READY_WRITE: u8 = 2;

thread_local! {
    /// The reactor of this thread's loop, while [`block_on`] runs.
    static CURRENT: RefCell<Option<Arc<Poller>>> = const { RefCell::new(None) };
}

#[cfg(test)]
thread_local! {
    /// How many times this thread's loop has waited: a loop that spins shows.
    static TURNS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// One loop's reactor.
#[derive(Debug)]
struct Poller {
    epoll: OwnedFd,
    /// Made readable to wake the loop's wait from another thread.
    wake: OwnedFd,
    sources: Mutex<Sources>,
    timers: Mutex<Timers>,
}

/// The sockets registered with a poller, by key (their index plus one).
#[derive(Debug, Default)]
struct Sources {
    slots: Vec<Option<Arc<Shared>>>,
    free: Vec<usize>,
}

/// Tasks waiting for a deadline, earliest first.
#[derive(Debug, Default)]
struct Timers {
    entries: BTreeMap<(Instant, u64), Waker>,
    next_id: u64,
}

impl Poller {
    fn new() -> io::Result<Poller> {
        let epoll = sys::epoll_create()?;
        let wake = sys::eventfd()?;
        sys::epoll_register(
            epoll.as_raw_fd(),
            wake.as_raw_fd(),
            sys::EPOLLIN,
            WAKE_KEY,
            true,
        )?;
        Ok(Poller {
            epoll,
            wake,
            sources: Mutex::default(),
            timers: Mutex::default(),
        })
    }

    /// This thread's poller.
    fn current() -> io::Result<Arc<Poller>> {
        CURRENT
            .with(|c| c.borrow().clone())
            .ok_or_else(|| io::Error::other("waited on outside a thread of plug's reactor"))
    }

    fn insert(&self, shared: Arc<Shared>) -> u64 {
        let mut sources = lock(&self.sources);
        let index = match sources.free.pop() {
            Some(i) => i,
            None => {
                sources.slots.push(None);
                sources.slots.len() - 1
            }
        };
        sources.slots[index] = Some(shared);
        index as u64 + 1
    }

    fn remove(&self, key: u64) {
        let mut sources = lock(&self.sources);
        let index = (key - 1) as usize;
        if let Some(slot) = sources.slots.get_mut(index) {
            *slot = None;
            sources.free.push(index);
        }
    }

    /// How long the loop may sleep before the earliest deadline (`None`: none).
    fn next_timeout(&self, now: Instant) -> Option<Duration> {
        let timers = lock(&self.timers);
        timers
            .entries
            .first_key_value()
            .map(|((at, _), _)| at.saturating_duration_since(now))
    }

    /// Wakes every task whose deadline is `now` or earlier.
    fn fire_timers(&self, now: Instant) {
        loop {
            let due = {
                let mut timers = lock(&self.timers);
                match timers.entries.first_key_value() {
                    Some(((at, _), _)) if *at <= now => timers.entries.pop_first(),
                    _ => None,
                }
            };
            match due {
                Some((_, waker)) => waker.wake(),
                None => return,
            }
        }
    }

    /// Hands each event to the task waiting for it, and stops reporting what
    /// no task waits for.
    fn dispatch(&self, events: &[libc::epoll_event]) {
        for event in events {
            let (key, flags) = (event.u64, event.events);
            if key == WAKE_KEY {
                sys::eventfd_drain(self.wake.as_raw_fd());
                continue;
            }
            let shared = lock(&self.sources)
                .slots
                .get((key - 1) as usize)
                .cloned()
                .flatten();
            if let Some(shared) = shared {
                shared.handle_event(self, flags);
            }
        }
    }
}

/// What a socket and the reactor share.
#[derive(Debug)]
struct Shared {
    fd: RawFd,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The poller it was registered with, and its key there; none until a task
    /// first waits on it.
    home: Option<(Arc<Poller>, u64)>,
    /// Whether the epoll set holds it (a hang-up nobody waits for takes it out).
    added: bool,
    /// The epoll interest it is registered with.
    interest: u32,
    /// Readiness a task was woken for and has not taken yet.
    ready: u8,
    /// The error and hang-up flags of the events behind that readiness, for
    /// reading and for writing: taken with it.
    flags_with: [u32; 2],
    /// The error and hang-up flags a task was woken for and has not taken yet.
    trouble: u32,
    reader: Option<Waker>,
    writer: Option<Waker>,
    /// A task waiting for an error or hang-up alone.
    watcher: Option<Waker>,
}

impl State {
    fn wanted(&self) -> u32 {
        let read = if self.reader.is_some() {
            sys::EPOLLIN
        } else {
            0
        };
        let write = if self.writer.is_some() {
            sys::EPOLLOUT
        } else {
            0
        };
        read | write
    }
}

fn set_waker(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

impl Shared {
    fn poll_ready(self: &Arc<Self>, cx: &mut Context<'_>, bit: u8) -> Poll<io::Result<Ready>> {
        let mut state = lock(&self.state);
        if state.ready & bit != 0 {
            state.ready &= !bit;
            let write = bit == READY_WRITE;
            let flags = std::mem::take(&mut state.flags_with[usize::from(write)]);
            return Poll::Ready(Ok(Ready {
                read: !write,
                write,
                error: flags & sys::EPOLLERR != 0,
                hangup: flags & sys::EPOLLHUP != 0,
            }));
        }
        match bit {
            READY_READ => set_waker(&mut state.reader, cx),
            _ => set_waker(&mut state.writer, cx),
        }
        self.register(state)
    }

    fn poll_trouble(self: &Arc<Self>, cx: &mut Context<'_>) -> Poll<Ready> {
        let mut state = lock(&self.state);
        if state.trouble != 0 {
            let flags = std::mem::take(&mut state.trouble);
            return Poll::Ready(Ready {
                error: flags & sys::EPOLLERR != 0,
                hangup: flags & sys::EPOLLHUP != 0,
                ..Ready::default()
            });
        }
        set_waker(&mut state.watcher, cx);
        // Should the kernel refuse, the error is found at the next read or write.
        let _ = self.register(state);
        Poll::Pending
    }

    /// Brings the epoll registration in line with what tasks wait for;
    /// Ready only with the kernel's refusal.
    fn register(self: &Arc<Self>, mut state: MutexGuard<'_, State>) -> Poll<io::Result<Ready>> {
        // Errors and hang-ups are reported whatever the interest.
        let wanted = state.wanted();
        if state.added && state.interest == wanted {
            return Poll::Pending;
        }
        let (poller, key) = match &state.home {
            Some((poller, key)) => (Arc::clone(poller), *key),
            None => {
                let poller = match Poller::current() {
                    Ok(p) => p,
                    Err(e) => return Poll::Ready(Err(e)),
                };
                let key = poller.insert(Arc::clone(self));
                state.home = Some((Arc::clone(&poller), key));
                (poller, key)
            }
        };
        let registered =
            sys::epoll_register(poller.epoll.as_raw_fd(), self.fd, wanted, key, !state.added);
        match registered {
            Ok(()) => {
                state.added = true;
                state.interest = wanted;
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn handle_event(&self, poller: &Poller, flags: u32) {
        let hangup = flags & (sys::EPOLLERR | sys::EPOLLHUP) != 0;
        let mut wake = [None, None, None];
        let mut unwanted = 0;
        {
            let mut state = lock(&self.state);
            let waiting =
                state.reader.is_some() || state.writer.is_some() || state.watcher.is_some();
            if hangup {
                if let Some(w) = state.watcher.take() {
                    state.trouble |= flags & (sys::EPOLLERR | sys::EPOLLHUP);
                    wake[2] = Some(w);
                }
            }
            let trouble = flags & (sys::EPOLLERR | sys::EPOLLHUP);
            if flags & sys::EPOLLIN != 0 || hangup {
                match state.reader.take() {
                    Some(w) => {
                        state.ready |= READY_READ;
                        state.flags_with[0] |= trouble;
                        wake[0] = Some(w);
                    }
                    None => unwanted |= sys::EPOLLIN,
                }
            }
            if flags & sys::EPOLLOUT != 0 || hangup {
                match state.writer.take() {
                    Some(w) => {
                        state.ready |= READY_WRITE;
                        state.flags_with[1] |= trouble;
                        wake[1] = Some(w);
                    }
                    None => unwanted |= sys::EPOLLOUT,
                }
            }
            // Level-triggered epoll reports it again on every wait until then.
            if hangup && !waiting {
                // Reported whatever the interest: only leaving the set stops it.
                sys::epoll_forget(poller.epoll.as_raw_fd(), self.fd);
                state.added = false;
                state.interest = 0;
            } else if state.interest & unwanted != 0 {
                let interest = state.interest & !unwanted;
                if let Some((_, key)) = state.home {
                    let fd = self.fd;
                    if sys::epoll_register(poller.epoll.as_raw_fd(), fd, interest, key, false)
                        .is_ok()
                    {
                        state.interest = interest;
                    }
                }
            }
        }
        for waker in wake.into_iter().flatten() {
            waker.wake();
        }
    }

    /// Takes the socket out of its poller before it is closed; out of the
    /// epoll set too unless `closing` does that (a descriptor no other holds).
    fn forget(&self, closing: bool) {
        let mut state = lock(&self.state);
        if let Some((poller, key)) = state.home.take() {
            if state.added && !closing {
                sys::epoll_forget(poller.epoll.as_raw_fd(), self.fd);
            }
            poller.remove(key);
        }
    }
}

/// A non-blocking socket on plug's reactor.
#[derive(Debug)]
pub struct Socket<T: Descriptor> {
    shared: Arc<Shared>,
    io: T,
}

impl<T: Descriptor + Send + Sync + 'static> Source<T> for Socket<T> {
    fn new(io: T) -> io::Result<Self> {
        let fd = io.as_fd().as_raw_fd();
        let state = Mutex::default();
        Ok(Socket {
            shared: Arc::new(Shared { fd, state }),
            io,
        })
    }

    fn get_ref(&self) -> &T {
        &self.io
    }

    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<Ready>> {
        self.shared.poll_ready(cx, READY_READ)
    }

    fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<Ready>> {
        self.shared.poll_ready(cx, READY_WRITE)
    }

    fn poll_trouble(&self, cx: &mut Context<'_>) -> Option<Poll<Ready>> {
        Some(self.shared.poll_trouble(cx))
    }
}

impl<T: Descriptor> Drop for Socket<T> {
    fn drop(&mut self) {
        // Before `io` closes the descriptor.
        self.shared.forget(T::ONLY_HOLDER);
    }
}

/// Whether a socket's descriptor is its only one, so closing it also takes
/// it out of the epoll set (one system call fewer per socket).
pub trait Descriptor: AsFd {
    /// True when no other descriptor refers to the same socket.
    const ONLY_HOLDER: bool;
}

impl Descriptor for std::net::TcpStream {
    // Accepted or connected by plug, and never duplicated.
    const ONLY_HOLDER: bool = true;
}

impl Descriptor for std::net::TcpListener {
    // The listener keeps the socket and its accept loop gets a duplicate
    // (listeners::start), so the listener can shut it to stop the loop.
    const ONLY_HOLDER: bool = false;
}

/// A deadline on plug's reactor.
#[derive(Debug)]
pub struct Timer {
    at: Option<Instant>,
    /// Its entry in its poller's timers, while a task waits for it.
    entry: Option<(Arc<Poller>, (Instant, u64))>,
}

impl Timer {
    fn cancel(&mut self) {
        if let Some((poller, key)) = self.entry.take() {
            lock(&poller.timers).entries.remove(&key);
        }
    }
}

impl Deadline for Timer {
    fn never() -> Self {
        Timer {
            at: None,
            entry: None,
        }
    }

    fn set_at(&mut self, at: Instant) {
        if self.at != Some(at) {
            self.cancel();
            self.at = Some(at);
        }
    }

    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(at) = self.at else {
            return Poll::Pending;
        };
        if Instant::now() >= at {
            self.cancel();
            return Poll::Ready(());
        }
        if let Some((poller, key)) = &self.entry {
            let mut timers = lock(&poller.timers);
            if let Some(waker) = timers.entries.get_mut(key) {
                if !waker.will_wake(cx.waker()) {
                    *waker = cx.waker().clone();
                }
                return Poll::Pending;
            }
        }
        // A deadline can only be kept by a loop; outside one it passes now.
        let Ok(poller) = Poller::current() else {
            return Poll::Ready(());
        };
        let key = {
            let mut timers = lock(&poller.timers);
            let key = (at, timers.next_id);
            timers.next_id += 1;
            timers.entries.insert(key, cx.waker().clone());
            key
        };
        self.entry = Some((poller, key));
        Poll::Pending
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// How a loop learns it has tasks to run: set by any thread, and an eventfd
/// write only when the loop sleeps in `epoll_wait`.
#[derive(Debug)]
struct LoopSignal {
    notified: AtomicBool,
    sleeping: AtomicBool,
    poller: Arc<Poller>,
}

impl Wake for LoopSignal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.notified.swap(true, Ordering::SeqCst) && self.sleeping.load(Ordering::SeqCst) {
            sys::eventfd_signal(self.poller.wake.as_raw_fd());
        }
    }
}

/// Runs `future` on this thread with a reactor of its own, until it ends:
/// poll it when woken, then wait for the sockets and deadlines of everything
/// it runs (an executor's tasks), without sleeping while it has work.
pub fn block_on<F: Future>(future: F) -> io::Result<F::Output> {
    let poller = Arc::new(Poller::new()?);
    CURRENT.with(|c| *c.borrow_mut() = Some(Arc::clone(&poller)));
    let signal = Arc::new(LoopSignal {
        notified: AtomicBool::new(true),
        sleeping: AtomicBool::new(false),
        poller: Arc::clone(&poller),
    });
    let waker = Waker::from(Arc::clone(&signal));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    let mut events = [sys::EPOLL_EVENT; EVENTS_PER_WAIT];
    let result = loop {
        if signal.notified.swap(false, Ordering::SeqCst) {
            if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                break Ok(out);
            }
        }
        signal.sleeping.store(true, Ordering::SeqCst);
        let timeout = if signal.notified.load(Ordering::SeqCst) {
            Some(Duration::ZERO)
        } else {
            poller.next_timeout(Instant::now())
        };
        #[cfg(test)]
        TURNS.with(|t| t.set(t.get() + 1));
        let waited = sys::epoll_wait_for(poller.epoll.as_raw_fd(), &mut events, timeout);
        signal.sleeping.store(false, Ordering::SeqCst);
        match waited {
            Ok(n) => poller.dispatch(&events[..n]),
            Err(e) => break Err(e),
        }
        poller.fire_timers(Instant::now());
    };
    CURRENT.with(|c| *c.borrow_mut() = None);
    result
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::mpsc;

    use super::*;
    use crate::drive::reactor::{readable, sleep_until};

    /// A connected pair on loopback: the peer, and plug's end (non-blocking).
    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (ours, _) = listener.accept().unwrap();
        ours.set_nonblocking(true).unwrap();
        (peer, ours)
    }

    fn turns() -> u64 {
        TURNS.with(std::cell::Cell::get)
    }

    /// Runs `future` on a loop of its own thread, failing rather than hanging
    /// if a wake-up is lost.
    fn run<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> T {
        let (done, outcome) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(block_on(future).unwrap());
        });
        outcome
            .recv_timeout(Duration::from_secs(20))
            .expect("the loop never finished: a wake-up was lost")
    }

    /// How many loop turns waiting `millis` takes on this loop.
    async fn turns_while_waiting(millis: u64) -> u64 {
        let before = turns();
        let at = Instant::now() + Duration::from_millis(millis);
        sleep_until::<Timer>(at).await;
        assert!(Instant::now() >= at, "a deadline passed early");
        turns() - before
    }

    #[test]
    fn a_task_is_woken_when_its_socket_becomes_readable() {
        let (mut peer, ours) = pair();
        let got = run(async move {
            let socket = Socket::new(ours).unwrap();
            let writer = std::thread::spawn(move || peer.write_all(b"x").map(|()| peer));
            readable(&socket).await.unwrap();
            let mut byte = [0u8; 1];
            let mut stream = socket.get_ref();
            let n = stream.read(&mut byte).unwrap();
            drop(writer.join());
            byte[..n].to_vec()
        });
        assert_eq!(got, b"x");
    }

    /// What `Runtime::readiness_tells_errors` rests on, on the kernel's own
    /// sockets: a connect that failed is reported writable with its error, one
    /// that was made without any.
    #[test]
    fn a_connects_writability_comes_with_its_error_flags_and_only_then() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap();
        let closed = {
            let gone = TcpListener::bind("127.0.0.1:0").unwrap();
            gone.local_addr().unwrap()
        };
        let said = run(async move {
            let mut said = Vec::new();
            for to in [open, closed] {
                // A refusal may come before connect(2) returns; the refused
                // connect under way is the case wanted, and the usual one.
                let stream = (0..100)
                    .find_map(|_| crate::net::sockets::begin_connect(to, None, false).ok())
                    .expect("every connect to a closed port was refused at once");
                let socket = Socket::new(stream).unwrap();
                let ready = std::future::poll_fn(|cx| socket.poll_writable(cx))
                    .await
                    .unwrap();
                said.push(ready);
            }
            said
        });
        assert!(
            said[0].write && !said[0].error && !said[0].hangup,
            "{:?}",
            said[0]
        );
        assert!(
            said[1].write && (said[1].error || said[1].hangup),
            "{:?}",
            said[1]
        );
        drop(listener);
    }

    #[test]
    fn a_deadline_is_kept_by_sleeping_not_spinning() {
        // A wait rounded down to the millisecond would wake early and spin.
        let spun = run(turns_while_waiting(30));
        assert!(spun <= 3, "{spun} turns of the loop for one deadline");
    }

    #[test]
    fn a_wake_from_another_thread_reaches_a_sleeping_loop() {
        let woken = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&woken);
        let mut started = false;
        run(std::future::poll_fn(move |cx| {
            if flag.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            if !started {
                started = true;
                let (flag, waker) = (Arc::clone(&flag), cx.waker().clone());
                // Nothing else would wake this loop: no socket, no deadline.
                std::thread::spawn(move || {
                    flag.store(true, Ordering::SeqCst);
                    waker.wake();
                });
            }
            Poll::Pending
        }));
        assert!(woken.load(Ordering::SeqCst));
    }

    #[test]
    fn readiness_nobody_waits_for_is_not_reported_again() {
        let (mut peer, ours) = pair();
        peer.write_all(b"unread").unwrap();
        let spun = run(async move {
            let socket = Socket::new(ours).unwrap();
            readable(&socket).await.unwrap();
            // Still readable, and no task waits for it now: level-triggered
            // epoll would report it on every turn if its interest stayed.
            readable(&socket).await.unwrap();
            turns_while_waiting(100).await
        });
        assert!(spun <= 4, "{spun} turns while nothing could move");
        drop(peer);
    }

    #[test]
    fn a_reset_wakes_a_task_watching_for_errors_alone_then_is_not_reported_again() {
        let (peer, ours) = pair();
        let (trouble, spun) = run(async move {
            let socket = Socket::new(ours).unwrap();
            let resetter = std::thread::spawn(move || {
                socket2::SockRef::from(&peer)
                    .set_linger(Some(Duration::ZERO))
                    .unwrap();
                drop(peer);
            });
            let trouble = std::future::poll_fn(|cx| match socket.poll_trouble(cx) {
                Some(p) => p,
                None => Poll::Ready(Ready::default()),
            })
            .await;
            resetter.join().unwrap();
            // A hang-up is reported whatever the interest: it must leave the set.
            (trouble, turns_while_waiting(100).await)
        });
        assert!(trouble.error || trouble.hangup, "{trouble:?}");
        assert!(spun <= 4, "{spun} turns after a hang-up nobody waits for");
    }
}
