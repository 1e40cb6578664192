//! async-io's reactor: one for the process, driven by whichever thread is
//! idle (async-std's runtime and its "async-io" thread).

use std::future::Future;
use std::io;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use async_io::{Async, Timer};
use plug_core::connection::Ready;

use super::{Deadline, Reactor, Source};

/// async-io, as a [`Reactor`].
#[derive(Debug, Clone, Copy)]
pub struct AsyncIo;

impl Reactor for AsyncIo {
    type Stream = Async<std::net::TcpStream>;
    type Listener = Async<std::net::TcpListener>;
    type Timer = Timer;
    // It reports a socket readable or writable, and nothing of why.
    const TELLS_ERRORS: bool = false;
}

impl<T: AsFd + Send + Sync + 'static> Source<T> for Async<T> {
    fn new(io: T) -> io::Result<Self> {
        Async::new_nonblocking(io)
    }

    fn get_ref(&self) -> &T {
        Async::get_ref(self)
    }

    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<Ready>> {
        Async::poll_readable(self, cx).map_ok(|()| Ready::READABLE)
    }

    fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<Ready>> {
        Async::poll_writable(self, cx).map_ok(|()| Ready::WRITABLE)
    }
}

impl Deadline for Timer {
    fn never() -> Self {
        Timer::never()
    }

    fn set_at(&mut self, at: Instant) {
        Timer::set_at(self, at);
    }

    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(self).poll(cx).map(|_| ())
    }
}
