//! plug-smol: plug on smol executors, one per thread, each run by its thread
//! on a reactor of plug's own ([`epoll::block_on`]): the main thread and as
//! many more as [`async_driver::executor_threads`] says (`SMOL_THREADS`, else
//! one per two cores). The connection driver is plug-shell's.
//!
//! Why not async-io's reactor, smol's usual one: it is one per process, so a
//! socket's readiness is often found by another thread than its task's (its
//! own "async-io" thread takes the reactor whenever the executor thread is
//! busy for 50 µs), and it re-arms a one-shot registration and a timerfd on
//! every wait. Here each thread waits on its own epoll instance between its
//! own tasks, and a connection that keeps waiting for the same thing costs no
//! `epoll_ctl` at all.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use plug_shell::drive::async_driver::{self, AcceptTasks, Spawn};
use plug_shell::drive::conn::Conn;
use plug_shell::drive::reactor::epoll::{self, Epoll};
use plug_shell::drive::reactor::Reactor;
use smol::Executor;

/// Spawns tasks on the executors in turn; a task stays on the thread of its
/// executor, and its sockets on that thread's reactor. Accept loops are tasks
/// like the connections.
#[derive(Clone)]
struct SmolSpawn {
    executors: Arc<[Arc<Executor<'static>>]>,
    next: Arc<AtomicUsize>,
}

impl SmolSpawn {
    fn executor(&self) -> &Executor<'static> {
        let n = self.executors.len();
        let i = match n {
            1 => 0,
            _ => self.next.fetch_add(1, Ordering::Relaxed) % n,
        };
        &self.executors[i]
    }
}

impl std::fmt::Debug for SmolSpawn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} smol executors", self.executors.len())
    }
}

impl Spawn for SmolSpawn {
    type Reactor = Epoll;

    fn spawn(&self, conn: Conn, client: <Epoll as Reactor>::Stream) {
        self.executor()
            .spawn(async_driver::serve::<Epoll>(conn, client))
            .detach();
    }

    fn spawn_boxed(&self, task: Pin<Box<dyn Future<Output = ()> + Send + 'static>>) {
        self.executor().spawn(task).detach();
    }
}

/// Runs `executor` on this thread, on a reactor of its own, forever.
fn run(executor: &Executor<'static>) -> std::io::Error {
    match epoll::block_on(executor.run(smol::future::pending::<std::convert::Infallible>())) {
        Err(e) => e,
        Ok(never) => match never {},
    }
}

/// Runs plug on smol with the process's arguments; never returns.
pub fn main() -> ! {
    // Start-up (and the fork) happens here, before any executor thread exists.
    let boot = plug_shell::boot(std::env::args_os(), async_driver::runtime::<Epoll>("smol"));
    let threads = async_driver::executor_threads("SMOL_THREADS");
    let executors: Arc<[Arc<Executor<'static>>]> =
        (0..threads).map(|_| Arc::new(Executor::new())).collect();
    // This thread runs the first executor, so one thread means no other.
    for (i, executor) in executors.iter().enumerate().skip(1) {
        let (ex, ctx) = (Arc::clone(executor), Arc::clone(&boot.ctx));
        let spawned = std::thread::Builder::new()
            .name(format!("smol-{i}"))
            .spawn(move || {
                let e = run(&ex);
                ctx.fatal(&format!("executor thread {i} stopped: {e}"))
            });
        if let Err(e) = spawned {
            boot.ctx
                .fatal(&format!("cannot start an executor thread: {e}"))
        }
    }
    let first = Arc::clone(&executors[0]);
    let spawn = SmolSpawn {
        executors,
        next: Arc::new(AtomicUsize::new(0)),
    };
    let ctx = boot.serve(Arc::new(AcceptTasks(spawn)));
    // The lifecycle thread exits the process; until then this thread runs tasks.
    let e = run(&first);
    ctx.fatal(&format!("executor stopped: {e}"))
}
