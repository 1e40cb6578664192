//! The event loops and what feeds them: one loop in two watches every
//! listener and serves what it accepts, the others the bulk connections moved
//! to them ([`EventLoop`]); the `--metrics` listener keeps a
//! thread of its own, and a thread per scrape, as scrapes are rare.

use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use plug_core::forwarder::AcceptNext;
use plug_core::reports::log::LogLevel;
use plug_core::threads;
use plug_shell::sys::{self, PollFd, POLLIN};
use plug_shell::{drive::scrape, net::sockets, Acceptor, Boot, Context, Listener};

use crate::event_loop::{Accepting, EventLoop, Mailbox};

/// Stack for scrape threads: a scrape holds its reply on the heap.
const SCRAPE_STACK: usize = 64 * 1024;

/// Serves scrapes of the `--metrics` listener (OPT-9), a thread each, until a
/// graceful stop shuts it; what a failed accept means is the core's (§5,
/// FAULT-1).
fn serve_metrics(ctx: &Arc<Context>, socket: &TcpListener) {
    loop {
        match sockets::accept(socket) {
            Ok((stream, _)) => serve_scrape(ctx, stream),
            Err(_) if ctx.is_stopping() => return,
            Err(e) => match ctx.scrape_accept_failed(&e) {
                AcceptNext::Retry => {}
                AcceptNext::Pause(pause) => std::thread::sleep(pause),
                AcceptNext::WaitReadable => wait_readable(socket),
            },
        }
    }
}

/// Serves one scrape on a thread of its own, or closes it at once when over
/// the budget (FAULT-6).
fn serve_scrape(ctx: &Arc<Context>, stream: TcpStream) {
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
}

/// Hands each listener to the accepting loops: the first
/// [`threads::accepting_loops`] of them.
#[derive(Debug)]
struct Loops {
    mailboxes: Arc<[Arc<Mailbox>]>,
    accepting: usize,
}

impl Acceptor for Loops {
    fn serve(
        &self,
        ctx: &Arc<Context>,
        listener: Arc<Listener>,
        socket: TcpListener,
    ) -> std::io::Result<()> {
        socket.set_nonblocking(true)?;
        let accepting = Arc::new(Accepting::new(Arc::clone(ctx), listener, socket));
        for mailbox in self.mailboxes.iter().take(self.accepting) {
            mailbox.add_listener(Arc::clone(&accepting));
        }
        Ok(())
    }

    fn serve_metrics(&self, ctx: &Arc<Context>, socket: TcpListener) -> std::io::Result<()> {
        let ctx = Arc::clone(ctx);
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || serve_metrics(&ctx, &socket))
            .map(drop)
    }
}

/// Serves until the lifecycle thread exits the process, as the core says: this
/// thread runs the first loop, and one more thread each of the others.
pub fn run(boot: Boot) -> ! {
    let ctx = Arc::clone(&boot.ctx);
    let event_loops = plug_shell::drive::thread_count("PLUG_THREADS", threads::event_loops);
    let loops: Vec<EventLoop> = match (0..event_loops)
        .map(|_| EventLoop::new(Arc::clone(&ctx)))
        .collect()
    {
        Ok(loops) => loops,
        Err(e) => ctx.fatal(&format!("cannot start an event loop: {e}")),
    };
    let mailboxes: Arc<[Arc<Mailbox>]> = loops.iter().map(EventLoop::mailbox).collect();
    let ctx = boot.serve(Arc::new(Loops {
        mailboxes: Arc::clone(&mailboxes),
        accepting: threads::accepting_loops(mailboxes.len()),
    }));
    let mut loops = loops.into_iter();
    let first = loops.next();
    for (i, event_loop) in loops.enumerate() {
        let (all, mine) = (Arc::clone(&mailboxes), Arc::clone(&ctx));
        let spawned = std::thread::Builder::new()
            .name(format!("loop-{}", i + 1))
            .spawn(move || {
                let e = event_loop.run(all);
                mine.fatal(&format!("event loop {} stopped: {e}", i + 1))
            });
        if let Err(e) = spawned {
            ctx.fatal(&format!("cannot start an event loop thread: {e}"))
        }
    }
    match first {
        Some(event_loop) => {
            let e = event_loop.run(mailboxes);
            ctx.fatal(&format!("event loop stopped: {e}"))
        }
        None => ctx.wait_for_exit(),
    }
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
