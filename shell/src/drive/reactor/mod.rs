//! What the async connection driver needs of a reactor, and the two it runs on:
//! async-io's ([`async_io`], async-std's own reactor) and plug's own
//! ([`epoll`], one per executor thread, under smol's executor).
//!
//! The driver only ever asks three things: is this socket readable, is it
//! writable, has this deadline passed; each answer wakes the task that asked.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::task::{Context, Poll};
use std::time::Instant;

use plug_core::connection::Ready;

#[cfg(feature = "async-io")]
pub mod async_io;
pub mod epoll;

/// A reactor: the socket and timer types the driver waits on.
pub trait Reactor: Send + Sync + 'static {
    /// A connected socket registered with the reactor.
    type Stream: Source<TcpStream>;
    /// A listening socket registered with the reactor.
    type Listener: Source<TcpListener>;
    /// A deadline that wakes the task that polls it.
    type Timer: Deadline;
    /// True when its readiness comes with the kernel's error and hang-up
    /// flags ([`Runtime::readiness_tells_errors`](plug_core::connection::Runtime)).
    const TELLS_ERRORS: bool;
}

/// A non-blocking socket whose readiness the reactor reports.
pub trait Source<T>: Send + Sync + Sized + 'static {
    /// Wraps `io`, which must already be non-blocking.
    fn new(io: T) -> io::Result<Self>;

    /// The socket itself, for the system calls the core asks for.
    fn get_ref(&self) -> &T;

    /// Ready once the socket is readable (or has an error or hang-up), with
    /// the error and hang-up flags that came with it where the reactor
    /// [tells them](Reactor::TELLS_ERRORS); otherwise wakes the task when it
    /// may be.
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<Ready>>;

    /// As [`Source::poll_readable`], for writing.
    fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<Ready>>;

    /// Ready with what happened once the socket has an error or hang-up,
    /// whatever else it is waited for; otherwise wakes the task then. `None`
    /// when this reactor cannot tell (async-io asks only for readable or
    /// writable): the driver's [`ErrorWatch`](crate::drive::error_watch::ErrorWatch)
    /// does it instead.
    fn poll_trouble(&self, _cx: &mut Context<'_>) -> Option<Poll<Ready>> {
        None
    }
}

/// A deadline, reset as a connection's waits change.
pub trait Deadline: Send + Sized + 'static {
    /// A deadline that never passes until set.
    fn never() -> Self;

    /// Moves the deadline to `at`.
    fn set_at(&mut self, at: Instant);

    /// Ready once the deadline has passed; otherwise wakes the task then.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()>;
}

/// Waits until `source` is readable.
pub async fn readable<T, S: Source<T>>(source: &S) -> io::Result<()> {
    std::future::poll_fn(|cx| source.poll_readable(cx))
        .await
        .map(drop)
}

/// Waits until `source` is writable.
pub async fn writable<T, S: Source<T>>(source: &S) -> io::Result<()> {
    std::future::poll_fn(|cx| source.poll_writable(cx))
        .await
        .map(drop)
}

/// Waits until `at`.
pub async fn sleep_until<D: Deadline>(at: Instant) {
    let mut deadline = D::never();
    deadline.set_at(at);
    std::future::poll_fn(|cx| deadline.poll_expired(cx)).await;
}

/// Runs `op` on `source` until it does not say WouldBlock, waiting for
/// readability in between (accept(2) on a listener).
pub async fn read_with<T, S: Source<T>, R>(
    source: &S,
    mut op: impl FnMut(&T) -> io::Result<R>,
) -> io::Result<R> {
    loop {
        match op(source.get_ref()) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => readable(source).await?,
            done => return done,
        }
    }
}
