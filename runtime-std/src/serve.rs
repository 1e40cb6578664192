//! The accept loops. Each listener has a crew of threads that all wait in
//! accept(2); the one the kernel hands a client to serves it itself, so a new
//! connection costs no hand-over between threads. A crew member that takes a
//! client while no other is waiting starts one first, so the listener always
//! has a thread in accept; one that finishes while enough are waiting exits.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use plug_core::forwarder::AcceptNext;
use plug_core::reports::log::LogLevel;
use plug_shell::sys::{self, PollFd, POLLIN};
use plug_shell::{drive::scrape, net::sockets, Acceptor, Boot, Context, Listener};

use crate::conn;

/// Stack for connection threads: the driver keeps its buffers on the heap.
const CONNECTION_STACK: usize = 128 * 1024;

/// Threads a listener keeps waiting in accept once their connections have
/// ended: enough for a steady stream of short connections, few enough that a
/// burst of thousands does not leave thousands of stacks behind.
const MAX_WAITING: usize = 64;

/// How long a thread waits in accept for a client before it exits, when
/// another thread of its crew is waiting too.
const IDLE_THREAD_LIFETIME: Duration = Duration::from_secs(30);

/// The threads serving one listener, and its accepting socket. Those waiting
/// in accept hold it; a thread serving a connection holds it only weakly, so
/// a listener a reload closed is let go as soon as nobody accepts on it.
#[derive(Debug)]
struct Crew {
    ctx: Arc<Context>,
    listener: Arc<Listener>,
    socket: TcpListener,
    /// Threads in (or about to be in) accept(2).
    waiting: AtomicUsize,
    /// Dropped after `socket` (fields drop in order), so the port is free
    /// by the time the loop's end is reported.
    end: LoopEnd,
}

/// Reports the end of a listener's accept loop when dropped.
#[derive(Debug)]
struct LoopEnd {
    ctx: Arc<Context>,
    /// False when the loop never started: its end is not this crew's to report.
    armed: AtomicBool,
}

impl Crew {
    /// Starts a thread that waits in accept.
    fn add_member(self: &Arc<Self>) -> std::io::Result<()> {
        let crew = Arc::clone(self);
        std::thread::Builder::new()
            .stack_size(CONNECTION_STACK)
            .spawn(move || work(crew))
            .map(drop)
    }
}

impl Drop for LoopEnd {
    fn drop(&mut self) {
        // The last thread has left accept and the socket is closed, so
        // another process (or a later reload) can bind the port.
        if self.armed.load(Ordering::SeqCst) {
            self.ctx.accept_loop_ended();
        }
    }
}

/// A crew member: accepts, serves what it accepted, and accepts again, until
/// the listener is shut or there are threads enough without it.
fn work(crew: Arc<Crew>) {
    let mut crew = crew;
    loop {
        crew.waiting.fetch_add(1, Ordering::SeqCst);
        let accepted = sockets::accept(&crew.socket);
        let others = crew.waiting.fetch_sub(1, Ordering::SeqCst) - 1;
        let (client, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(_) if crew.ctx.accept_should_end(&crew.listener) => return,
            // Idle for IDLE_THREAD_LIFETIME while another waits: not needed.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && others > 0 => return,
            Err(e) => {
                match crew.ctx.accept_failed(&crew.listener, Instant::now(), &e) {
                    AcceptNext::Retry => {}
                    AcceptNext::Pause(pause) => std::thread::sleep(pause),
                    AcceptNext::WaitReadable => wait_readable(&crew.socket),
                }
                continue;
            }
        };
        // Should no other thread start, this one accepts again once it is
        // free, and holds the socket meanwhile: it is the crew.
        let alone = others == 0
            && crew.add_member().is_err_and(|e| {
                let text = format!("cannot start a connection thread: {e}");
                crew.ctx.log(LogLevel::Error, text);
                true
            });
        // Refused: dropping `client` closes it at once (CONN-1).
        let Some(connection) = crew.ctx.accept(&crew.listener, Instant::now(), peer) else {
            continue;
        };
        if alone {
            conn::serve(connection, client);
            continue;
        }
        let held: Weak<Crew> = Arc::downgrade(&crew);
        drop(crew);
        conn::serve(connection, client);
        crew = match held.upgrade() {
            Some(crew) if crew.waiting.load(Ordering::SeqCst) < MAX_WAITING => crew,
            _ => return,
        };
    }
}

/// Stack for scrape threads: a scrape holds its reply on the heap.
const SCRAPE_STACK: usize = 64 * 1024;

/// Stack for the `--metrics` accept thread: it holds nothing but the loop.
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

/// Runs each listener's accept loop as a [`Crew`] of connection threads, and
/// the `--metrics` listener's on a thread of its own.
#[derive(Debug)]
struct Threads;

impl Acceptor for Threads {
    fn serve(
        &self,
        ctx: &Arc<Context>,
        listener: Arc<Listener>,
        socket: TcpListener,
    ) -> std::io::Result<()> {
        // A thread idle in accept this long learns so (EAGAIN) and may exit.
        sockets::set_accept_timeout(&socket, IDLE_THREAD_LIFETIME)?;
        let crew = Arc::new(Crew {
            ctx: Arc::clone(ctx),
            listener,
            socket,
            waiting: AtomicUsize::new(0),
            end: LoopEnd {
                ctx: Arc::clone(ctx),
                armed: AtomicBool::new(true),
            },
        });
        crew.add_member().inspect_err(|_| {
            // The caller reports the end of a loop that could not start.
            crew.end.armed.store(false, Ordering::SeqCst);
        })
    }

    fn serve_metrics(&self, ctx: &Arc<Context>, socket: TcpListener) -> std::io::Result<()> {
        let ctx = Arc::clone(ctx);
        std::thread::Builder::new()
            .name("metrics".into())
            .stack_size(ACCEPT_STACK)
            .spawn(move || serve_metrics(&ctx, &socket))
            .map(drop)
    }
}

/// Serves until the lifecycle thread exits the process, as the core says.
pub fn run(boot: Boot) -> ! {
    let ctx = boot.serve(Arc::new(Threads));
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
