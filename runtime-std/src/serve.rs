//! The accept loop: each admitted connection runs on a thread of its own, taken
//! from a small pool of idle threads when one is waiting, so that a busy listener
//! does not pay for creating and tearing down a thread per connection.

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use plug_core::forwarder::AcceptNext;
use plug_core::reports::log::LogLevel;
use plug_shell::drive::conn::Conn;
use plug_shell::sys::{self, PollFd, POLLIN};
use plug_shell::{drive::scrape, net::sockets, Acceptor, Boot, Context, Listener};

use crate::conn;

/// Stack for connection threads: the driver keeps its buffers on the heap.
const CONNECTION_STACK: usize = 128 * 1024;

/// Threads kept waiting for the next connection once theirs has ended: enough for
/// a steady stream of short connections, few enough that a burst of thousands
/// does not leave thousands of stacks behind.
const MAX_IDLE_THREADS: usize = 64;

/// How long an idle thread waits for a connection before it exits.
const IDLE_THREAD_LIFETIME: Duration = Duration::from_secs(30);

/// A connection waiting for a thread.
type Job = (Conn, TcpStream);

/// Threads between connections, and connections handed to them.
#[derive(Debug, Default)]
struct Pool {
    state: Mutex<PoolState>,
    handed: Condvar,
}

#[derive(Debug, Default)]
struct PoolState {
    jobs: VecDeque<Job>,
    /// Threads waiting on `handed` (each will take at most one job).
    idle: usize,
}

impl Pool {
    /// Gives `job` to an idle thread, or returns it when none is waiting.
    fn hand_over(&self, job: Job) -> Option<Job> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.idle > state.jobs.len() {
            state.jobs.push_back(job);
            drop(state);
            self.handed.notify_one();
            None
        } else {
            Some(job)
        }
    }

    /// Waits for the next job after one has ended; `None` when this thread should
    /// exit (the pool is full, or nothing came for a while).
    fn next_job(&self) -> Option<Job> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.idle >= MAX_IDLE_THREADS {
            return None;
        }
        state.idle += 1;
        let deadline = Instant::now() + IDLE_THREAD_LIFETIME;
        loop {
            if let Some(job) = state.jobs.pop_front() {
                state.idle -= 1;
                return Some(job);
            }
            let now = Instant::now();
            if now >= deadline {
                state.idle -= 1;
                return None;
            }
            state = self
                .handed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// A connection thread: serves its first connection, then whatever the pool hands it.
fn work(pool: &Pool, first: Job) {
    let mut job = first;
    loop {
        let (connection, client) = job;
        conn::serve(connection, client);
        match pool.next_job() {
            Some(next) => job = next,
            None => return,
        }
    }
}

/// Stack for scrape threads: a scrape holds its reply on the heap.
const SCRAPE_STACK: usize = 64 * 1024;

/// Stack for accept threads: they hold nothing but the loop.
const ACCEPT_STACK: usize = 64 * 1024;

/// Accepts on `socket` until it is shut and `ends` says so, handing each
/// socket to `serve`; what a failed accept means is the core's (§5, FAULT-1).
fn accept_each(
    socket: &TcpListener,
    ends: impl Fn() -> bool,
    failed: impl Fn(&std::io::Error) -> AcceptNext,
    mut serve: impl FnMut(TcpStream, SocketAddr),
) {
    loop {
        match sockets::accept(socket) {
            Ok((client, peer)) => serve(client, peer),
            Err(_) if ends() => return,
            Err(e) => match failed(&e) {
                AcceptNext::Retry => {}
                AcceptNext::Pause(pause) => std::thread::sleep(pause),
                AcceptNext::WaitReadable => wait_readable(socket),
            },
        }
    }
}

/// Serves scrapes of the `--metrics` listener (OPT-9), a thread each, as
/// connections are served.
fn serve_metrics(ctx: &Arc<Context>, socket: &TcpListener) {
    accept_each(
        socket,
        || ctx.is_stopping(),
        |e| ctx.scrape_accept_failed(e),
        |stream, _| {
            // Over the budget: dropped, so closed at once (FAULT-6).
            let Some(ticket) = scrape::admit(ctx) else {
                return;
            };
            let mine = Arc::clone(ctx);
            let spawned = std::thread::Builder::new()
                .name("scrape".into())
                .stack_size(SCRAPE_STACK)
                .spawn(move || {
                    scrape::serve(&mine, stream);
                    drop(ticket);
                });
            if let Err(e) = spawned {
                ctx.log(
                    LogLevel::Error,
                    format!("cannot start a scrape thread: {e}"),
                );
            }
        },
    );
}

/// Serves `listener`'s clients until a stop or a reload shuts it, each
/// admitted one on a thread of the pool.
fn serve_clients(
    ctx: &Arc<Context>,
    pool: &Arc<Pool>,
    listener: &Arc<Listener>,
    socket: &TcpListener,
) {
    accept_each(
        socket,
        || ctx.accept_should_end(listener),
        |e| ctx.accept_failed(listener, Instant::now(), e),
        |client, peer| {
            // Refused: dropping `client` closes it at once (CONN-1).
            let Some(connection) = ctx.accept(listener, Instant::now(), peer) else {
                return;
            };
            let Some(job) = pool.hand_over((connection, client)) else {
                return;
            };
            let mine = Arc::clone(pool);
            let spawned = std::thread::Builder::new()
                .stack_size(CONNECTION_STACK)
                .spawn(move || work(&mine, job));
            // A thread that cannot start drops its job: the connection is still
            // accounted for (FAULT-5), and the failure logged.
            if let Err(e) = spawned {
                let text = format!("cannot start a connection thread: {e}");
                ctx.log(LogLevel::Error, text);
            }
        },
    );
}

/// Runs each accept loop on a thread of its own, connections on the pool's.
#[derive(Debug, Default)]
struct Threads {
    pool: Arc<Pool>,
}

impl Acceptor for Threads {
    fn serve(
        &self,
        ctx: &Arc<Context>,
        listener: Arc<Listener>,
        socket: TcpListener,
    ) -> std::io::Result<()> {
        let ctx = Arc::clone(ctx);
        let pool = Arc::clone(&self.pool);
        std::thread::Builder::new()
            .name("accept".into())
            .stack_size(ACCEPT_STACK)
            .spawn(move || {
                serve_clients(&ctx, &pool, &listener, &socket);
                // Closed now, so a new instance (or a reload) can bind the port.
                drop(socket);
                ctx.accept_loop_ended();
            })
            .map(drop)
    }

    fn serve_metrics(&self, ctx: &Arc<Context>, socket: TcpListener) -> std::io::Result<()> {
        let ctx = Arc::clone(ctx);
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || serve_metrics(&ctx, &socket))
            .map(drop)
    }
}

/// Serves until the lifecycle thread exits the process, as the core says.
pub fn run(boot: Boot) -> ! {
    let ctx = boot.serve(Arc::new(Threads::default()));
    ctx.wait_for_exit()
}

/// Waits until a non-blocking listener has a client (or is shut down).
fn wait_readable(listener: &TcpListener) {
    let mut fds = [PollFd {
        fd: listener.as_raw_fd(),
        events: POLLIN,
        revents: 0,
    }];
    let _ = sys::poll(&mut fds, None);
}
