//! The accept loop and one connection as futures, for both async runtimes, over
//! whichever [`Reactor`] the runtime waits on (plug's own under smol, async-io's
//! under async-std). Each connection is one task doing what the core says; it
//! waits on the reactor for what the core's [`Wait`] names, or its deadline, and
//! does everything else with [`Conn::perform`].

use std::future::Future;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_lite::future;
use plug_core::connection::relay::Side;
use plug_core::connection::{Output, Ready, Runtime, Wait};
use plug_core::forwarder::AcceptNext;

use plug_core::reports::metrics::{Scrape, ScrapeOutput};

use crate::drive::conn::{Conn, Pipes};
use crate::drive::error_watch::{ErrorWatch, Watched};
use crate::drive::reactor::{self, Deadline, Reactor, Source};
use crate::drive::scrape;
use crate::listeners::{Acceptor, Listener};
use crate::net::sockets;
use crate::net::splice::PIPE_CAPACITY;
use crate::Context;

/// What an async runtime named `name` (`smol`, `async-std`) offers the core:
/// splicing, and buffers given back as soon as a direction is quiet (thousands
/// of idle tasks then hold none), to a per-thread pool that the next busy
/// connection on the thread takes them from; on reactor `R`, whose readiness
/// may come with the error flags (plug's) or not (async-io's, so a connect's
/// end is asked of the socket).
pub const fn runtime<R: Reactor>(name: &'static str) -> Runtime {
    Runtime {
        name,
        pipe_capacity: Some(PIPE_CAPACITY),
        buffer_release_after: Duration::ZERO,
        reuse_buffers: true,
        readiness_tells_errors: R::TELLS_ERRORS,
    }
}

/// How a runtime starts a connection's task.
pub trait Spawn: Sync {
    /// The reactor its tasks wait on.
    type Reactor: Reactor;

    /// Runs [`serve`] for this connection to completion in the background. The
    /// runtime spawns the future itself, unboxed: one allocation per connection.
    fn spawn(&self, conn: Conn, client: <Self::Reactor as Reactor>::Stream);

    /// Runs a rarer task (a scrape) in the background; boxed, as it is rare.
    fn spawn_boxed(&self, task: Pin<Box<dyn Future<Output = ()> + Send + 'static>>);
}

/// Runs accept loops as tasks of the runtime the [`Spawn`] spawns on, beside
/// the connections, so a new connection starts where it was accepted.
#[derive(Debug)]
pub struct AcceptTasks<S>(pub S);

impl<S: Spawn + Clone + Send + std::fmt::Debug + 'static> Acceptor for AcceptTasks<S> {
    fn serve(
        &self,
        ctx: &Arc<Context>,
        listener: Arc<Listener>,
        socket: TcpListener,
    ) -> std::io::Result<()> {
        socket.set_nonblocking(true)?;
        let socket = <S::Reactor as Reactor>::Listener::new(socket)?;
        let (ctx, spawner) = (Arc::clone(ctx), self.0.clone());
        self.0.spawn_boxed(Box::pin(async move {
            accept_loop(&ctx, &listener, socket, &spawner).await;
        }));
        Ok(())
    }

    fn serve_metrics(&self, ctx: &Arc<Context>, socket: TcpListener) -> std::io::Result<()> {
        socket.set_nonblocking(true)?;
        let socket = <S::Reactor as Reactor>::Listener::new(socket)?;
        let (ctx, spawner) = (Arc::clone(ctx), self.0.clone());
        self.0.spawn_boxed(Box::pin(async move {
            metrics_loop(&ctx, &socket, &spawner).await;
        }));
        Ok(())
    }
}

/// How many threads run connection tasks, as the core's
/// [`plug_core::threads::executors`] says of the environment variable `var`.
pub fn executor_threads(var: &str) -> usize {
    crate::drive::thread_count(var, plug_core::threads::executors)
}

/// Accepts on `socket` until it is shut and `ends` says so, handing each
/// socket (registered with the reactor) to `serve`; what a failed accept means
/// is the core's (§5, FAULT-1), for `listener` or, for scrapes, its own pause.
async fn accept_each<R: Reactor>(
    socket: &R::Listener,
    ends: impl Fn() -> bool,
    failed: impl Fn(&std::io::Error) -> AcceptNext,
    mut serve: impl FnMut(R::Stream, std::net::SocketAddr),
) {
    loop {
        // `read_with` waits on the reactor whenever accept says EAGAIN.
        let accepted = reactor::read_with(socket, sockets::accept).await;
        match accepted.and_then(|(c, peer)| Ok((R::Stream::new(c)?, peer))) {
            Ok((client, peer)) => serve(client, peer),
            Err(_) if ends() => break,
            Err(e) => match failed(&e) {
                AcceptNext::Retry | AcceptNext::WaitReadable => {}
                AcceptNext::Pause(pause) => {
                    reactor::sleep_until::<R::Timer>(Instant::now() + pause).await;
                }
            },
        }
    }
}

/// Accepts `listener`'s clients until a stop or a reload shuts it, spawning
/// one task per admitted client; then reports that its loop has ended.
pub async fn accept_loop<R: Reactor>(
    ctx: &Arc<Context>,
    listener: &Arc<Listener>,
    socket: R::Listener,
    spawner: &dyn Spawn<Reactor = R>,
) {
    accept_each::<R>(
        &socket,
        || ctx.accept_should_end(listener),
        |e| ctx.accept_failed(listener, Instant::now(), e),
        |client, peer| {
            // A refused client is dropped here: closed at once (CONN-1).
            if let Some(conn) = ctx.accept(listener, Instant::now(), peer) {
                spawner.spawn(conn, client);
            }
        },
    )
    .await;
    // Closed now, so another process (or a later reload) can bind the port.
    drop(socket);
    ctx.accept_loop_ended();
}

/// Accepts scrapes on the `--metrics` listener until a graceful stop shuts it,
/// one task each (OPT-9); then returns.
pub async fn metrics_loop<R: Reactor>(
    ctx: &Arc<Context>,
    socket: &R::Listener,
    spawner: &dyn Spawn<Reactor = R>,
) {
    accept_each::<R>(
        socket,
        || ctx.is_stopping(),
        |e| ctx.scrape_accept_failed(e),
        |client, _| {
            // Over the budget: dropped, so closed at once (FAULT-6).
            if let Some(ticket) = scrape::admit(ctx) {
                let task = serve_scrape::<R>(Arc::clone(ctx), client);
                spawner.spawn_boxed(Box::pin(async move {
                    task.await;
                    drop(ticket);
                }));
            }
        },
    )
    .await;
}

/// Serves one scrape to its end, doing what the core's [`Scrape`] says.
pub async fn serve_scrape<R: Reactor>(ctx: Arc<Context>, stream: R::Stream) {
    let mut scrape = Scrape::new(Instant::now());
    loop {
        let now = Instant::now();
        let out = scrape.poll_output(now);
        if scrape::perform(&ctx, &mut scrape, now, &out, stream.get_ref()) {
            continue;
        }
        match out {
            ScrapeOutput::Wait { read, deadline } => {
                let ready = async {
                    let _ = match read {
                        true => reactor::readable(&stream).await,
                        false => reactor::writable(&stream).await,
                    };
                    true
                };
                let expired = async {
                    reactor::sleep_until::<R::Timer>(deadline).await;
                    false
                };
                if future::or(ready, expired).await {
                    scrape.handle_ready(Instant::now());
                }
            }
            _ => return,
        }
    }
}

/// Serves one admitted client to the end.
///
/// An async block, not an `async fn`: an `async fn` keeps its arguments in the
/// future beside the locals they are moved into (rust-lang/rust#62958), which
/// made every connection's task hold its `Conn` twice: 224 bytes more of an
/// idle connection's memory.
#[allow(clippy::manual_async_fn)]
pub fn serve<R: Reactor>(mut conn: Conn, client: R::Stream) -> impl Future<Output = ()> + Send {
    async move { serving::<R>(&mut conn, client).await }
}

async fn serving<R: Reactor>(conn: &mut Conn, client: R::Stream) {
    conn.start(client.get_ref());
    let mut client = Some(client);
    let mut dest: Option<R::Stream> = None;
    let mut pipes: Pipes = [None, None];
    // Made only when a wait has a deadline: most never need one. Boxed, so an
    // idle connection without one holds a pointer, not a timer.
    let mut timer: Option<Box<R::Timer>> = None;
    // Each socket's place in the error watch, made when a wait for its errors
    // alone would sleep (boxed: most connections never need one); dropped
    // before the socket is closed, and once the destination is reached, so an
    // idle relayed connection holds none.
    let mut watched: [Option<Box<Watched>>; 2] = [None, None];
    let mut dialing = true;
    // The clock is read once per wake-up: the work in between takes microseconds.
    let mut now = Instant::now();
    loop {
        let out = conn.next(now);
        let (Some(c), false) = (&client, out == Output::Done) else {
            return;
        };
        let d = dest.as_ref().map(Source::get_ref);
        if conn.perform(now, &out, c.get_ref(), d, &mut pipes) {
            continue;
        }
        match out {
            Output::Connect(to) => {
                // The earlier attempt's socket is closed only after `connect`
                // has forgotten it.
                let made = conn.connect(now, to.addr, to.bind);
                watched[Side::Destination.index()] = None;
                dest = None;
                if let Some(s) = made {
                    match R::Stream::new(s) {
                        Ok(s) => dest = Some(s),
                        Err(e) => conn.connect_failed_locally(now, &e),
                    }
                }
            }
            Output::Wait(wait) => {
                if dialing && conn.core().reached().is_some() {
                    dialing = false;
                    watched = [None, None];
                }
                let socks = [Some(c), dest.as_ref()];
                now = wait_for::<R>(conn, &wait, socks, &mut timer, &mut watched).await;
            }
            Output::Yield => {
                future::yield_now().await;
                now = Instant::now();
            }
            Output::Close { reset, .. } => {
                let socks = [client.as_ref(), dest.as_ref()].map(|s| s.map(Source::get_ref));
                conn.before_close(reset, socks);
                watched = [None, None];
                client = None;
                dest = None;
                pipes = [None, None];
            }
            _ => {}
        }
    }
}

/// Adds to `ready` what the reactor said of one readiness `asked` for, with
/// the flags that came with it. A socket the reactor cannot take (an Err) is
/// reported ready for what was asked: the read or write then meets the error.
fn take(ready: &mut Ready, polled: Poll<std::io::Result<Ready>>, asked: Ready) {
    if let Poll::Ready(said) = polled {
        *ready = ready.union(said.unwrap_or(asked));
    }
}

/// Waits until a socket is ready as `wait` says, or its deadline; reports what
/// the reactor said and returns the time it woke. A socket watched for errors
/// alone is handed to the [`ErrorWatch`] when nothing else is ready (FAULT-1).
async fn wait_for<R: Reactor>(
    conn: &mut Conn,
    wait: &Wait,
    socks: [Option<&R::Stream>; 2],
    timer: &mut Option<Box<R::Timer>>,
    watched: &mut [Option<Box<Watched>>; 2],
) -> Instant {
    let deadline = conn.core().poll_timeout();
    match deadline {
        Some(deadline) => timer
            .get_or_insert_with(|| Box::new(R::Timer::never()))
            .set_at(deadline),
        // A timer left registered (the connect deadline) would only wake the task
        // for nothing later, and cost the reactor on every turn.
        None => *timer = None,
    }
    future::poll_fn(|cx| {
        let mut ready = [Ready::default(); 2];
        for (i, sock) in socks.iter().enumerate() {
            let (Some(sock), w) = (sock, wait.watch[i]) else {
                continue;
            };
            if w.read {
                take(&mut ready[i], sock.poll_readable(cx), Ready::READABLE);
            }
            if w.write {
                take(&mut ready[i], sock.poll_writable(cx), Ready::WRITABLE);
            }
        }
        let expired = match (deadline, timer.as_mut()) {
            (Some(_), Some(t)) => t.poll_expired(cx).is_ready(),
            _ => false,
        };
        // Errors alone: asked of the kernel only when the task would sleep.
        if !expired && ready.iter().all(|r| *r == Ready::default()) {
            for (i, sock) in socks.iter().enumerate() {
                let w = wait.watch[i];
                let (Some(sock), true) = (sock, w.errors && !w.read && !w.write) else {
                    continue;
                };
                match sock.poll_trouble(cx) {
                    Some(Poll::Ready(r)) => {
                        ready[i] = r;
                        continue;
                    }
                    Some(Poll::Pending) => continue,
                    None => {}
                }
                let Some(errors) = ErrorWatch::shared() else {
                    break;
                };
                let watch = watched[i]
                    .get_or_insert_with(|| Box::new(errors.watch(sock.get_ref().as_raw_fd())));
                if let Poll::Ready(r) = watch.poll_error(cx) {
                    ready[i] = r;
                }
            }
        }
        let mut any = expired;
        // Only read when something is to be reported.
        let now = if expired || ready.iter().any(|r| *r != Ready::default()) {
            Instant::now()
        } else {
            return Poll::Pending;
        };
        for (side, r) in [Side::Client, Side::Destination].into_iter().zip(ready) {
            if r != Ready::default() {
                conn.core().handle_ready(now, side, r);
                any = true;
            }
        }
        if any {
            Poll::Ready(now)
        } else {
            Poll::Pending
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drive::reactor::epoll::Epoll;

    /// The size of the future `f` makes, without making one.
    fn future_size<A, B, F: Future>(_: impl Fn(A, B) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// An idle connection's memory is mostly its task: that holds its `Conn`
    /// once, and what one wait needs beside it (312 bytes now; as an
    /// `async fn`, `serve` held the `Conn` twice, 536 bytes beside it).
    #[test]
    fn a_connection_task_holds_its_conn_once() {
        let conn = std::mem::size_of::<Conn>();
        let task = future_size(serve::<Epoll>);
        assert!(task >= conn, "{task} < {conn}");
        assert!(task - conn < 400, "{task} bytes for a Conn of {conn}");
    }
}
