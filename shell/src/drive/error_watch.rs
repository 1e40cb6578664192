//! Errors and hang-ups on sockets that nothing reads or writes, for a reactor
//! that cannot report them itself (FAULT-1): async-io's, under async-std; plug's
//! own reactor does ([`Source::poll_trouble`](crate::drive::reactor::Source)).
//! async-io asks its reactor only for readable or
//! writable, so a socket the core watches for errors alone (a client while its
//! destination is dialed, or while its bytes wait for a stalled destination)
//! would never wake its task, and a reset there would wait for a deadline.
//!
//! Such sockets go into one epoll instance of plug's own with no interest at
//! all: epoll reports EPOLLERR and EPOLLHUP whatever is asked, once
//! (EPOLLONESHOT). A thread blocked in epoll_wait hands each event to the task
//! waiting for it. Errors are rare, so the thread costs nothing while none
//! comes; a socket is added only when a wait on it would otherwise sleep.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::task::{Context as TaskContext, Poll, Waker};

use plug_core::connection::Ready;

use crate::sys;

/// What one watched socket is waiting for.
#[derive(Debug, Default)]
struct Slot {
    waker: Option<Waker>,
    /// The epoll flags of an event not yet taken.
    fired: Option<u32>,
}

/// The process's error watch.
#[derive(Debug)]
pub struct ErrorWatch {
    epoll: OwnedFd,
    slots: Mutex<HashMap<u64, Slot>>,
    next_key: AtomicU64,
}

impl ErrorWatch {
    /// The process's watch, started on first use; `None` when the system
    /// refused an epoll instance or a thread (errors are then found as before:
    /// at the next read or write, or by a deadline).
    pub fn shared() -> Option<&'static ErrorWatch> {
        static WATCH: OnceLock<Option<ErrorWatch>> = OnceLock::new();
        WATCH
            .get_or_init(|| {
                let epoll = sys::epoll_create().ok()?;
                Some(ErrorWatch {
                    epoll,
                    slots: Mutex::new(HashMap::new()),
                    next_key: AtomicU64::new(0),
                })
            })
            .as_ref()
            .filter(|w| w.started())
    }

    /// Starts the thread that hands events over, once; false if it could not.
    fn started(&'static self) -> bool {
        static STARTED: OnceLock<bool> = OnceLock::new();
        *STARTED.get_or_init(|| {
            std::thread::Builder::new()
                .name("socket-errors".into())
                .stack_size(64 * 1024)
                .spawn(move || self.hand_over())
                .is_ok()
        })
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<u64, Slot>> {
        crate::shared::lock(&self.slots)
    }

    fn hand_over(&self) {
        let mut events = Vec::with_capacity(64);
        loop {
            events.clear();
            if sys::epoll_wait(self.epoll.as_raw_fd(), &mut events).is_err() {
                return;
            }
            let mut wake = Vec::with_capacity(events.len());
            {
                let mut slots = self.slots();
                for &(key, flags) in &events {
                    // A key already forgotten: its socket is gone.
                    if let Some(slot) = slots.get_mut(&key) {
                        slot.fired = Some(flags);
                        wake.extend(slot.waker.take());
                    }
                }
            }
            wake.into_iter().for_each(Waker::wake);
        }
    }

    /// A watch for the socket `fd`; nothing is asked of the kernel until a
    /// wait on it would sleep.
    pub fn watch(&'static self, fd: RawFd) -> Watched {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        self.slots().insert(key, Slot::default());
        Watched {
            watch: self,
            fd,
            key,
            added: false,
            armed: false,
        }
    }
}

/// One socket's place in the [`ErrorWatch`]. Drop it before the socket is
/// closed.
#[derive(Debug)]
pub struct Watched {
    watch: &'static ErrorWatch,
    fd: RawFd,
    key: u64,
    added: bool,
    armed: bool,
}

impl Watched {
    /// Ready with what happened once the socket has an error or hang-up;
    /// otherwise registers the task to be woken for it.
    pub fn poll_error(&mut self, cx: &mut TaskContext<'_>) -> Poll<Ready> {
        let mut slots = self.watch.slots();
        let Some(slot) = slots.get_mut(&self.key) else {
            return Poll::Pending;
        };
        if let Some(flags) = slot.fired.take() {
            self.armed = false;
            return Poll::Ready(Ready {
                error: flags & sys::EPOLLERR != 0,
                hangup: flags & sys::EPOLLHUP != 0,
                ..Ready::default()
            });
        }
        match &slot.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => slot.waker = Some(cx.waker().clone()),
        }
        drop(slots);
        if !self.armed {
            let epoll = self.watch.epoll.as_raw_fd();
            // Armed once until it fires: an error stays, so the next wait
            // finds it at once.
            self.armed = sys::epoll_watch_errors(epoll, self.fd, self.key, !self.added).is_ok();
            self.added |= self.armed;
        }
        Poll::Pending
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if self.added {
            sys::epoll_forget(self.watch.epoll.as_raw_fd(), self.fd);
        }
        self.watch.slots().remove(&self.key);
    }
}
