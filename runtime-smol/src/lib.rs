//! plug-smol: plug on one `smol::Executor`, run by the main thread and by as many
//! more as [`async_driver::executor_threads`] says (`SMOL_THREADS`, else one per
//! two cores). The connection driver is plug-shell's, futures over async-io.

use std::future::Future;
use std::net::TcpStream;
use std::pin::Pin;
use std::sync::Arc;

use plug_shell::drive::async_driver::{self, AcceptTasks, Spawn};
use plug_shell::drive::conn::Conn;
use smol::{Async, Executor};

/// Spawns tasks on the shared executor. Accept loops are tasks like the
/// connections: as the future given to `run` a loop would be polled on every
/// wake-up of the main thread, and try accept(2) (EAGAIN) each time a
/// connection's socket was ready.
#[derive(Clone)]
struct SmolSpawn(Arc<Executor<'static>>);

impl std::fmt::Debug for SmolSpawn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("smol executor")
    }
}

impl Spawn for SmolSpawn {
    fn spawn(&self, conn: Conn, client: Async<TcpStream>) {
        self.0.spawn(async_driver::serve(conn, client)).detach();
    }

    fn spawn_boxed(&self, task: Pin<Box<dyn Future<Output = ()> + Send + 'static>>) {
        self.0.spawn(task).detach();
    }
}

/// Runs plug on smol with the process's arguments; never returns.
pub fn main() -> ! {
    // Start-up (and the fork) happens here, before any executor thread exists.
    let boot = plug_shell::boot(std::env::args_os(), async_driver::runtime("smol"));
    let executor = Arc::new(Executor::new());
    // This thread runs the executor too, so one thread means no other.
    for i in 1..async_driver::executor_threads("SMOL_THREADS") {
        let ex = Arc::clone(&executor);
        let spawned = std::thread::Builder::new()
            .name(format!("smol-{i}"))
            .spawn(move || smol::block_on(ex.run(smol::future::pending::<()>())));
        if let Err(e) = spawned {
            boot.ctx
                .fatal(&format!("cannot start an executor thread: {e}"))
        }
    }
    let _ctx = boot.serve(Arc::new(AcceptTasks(SmolSpawn(Arc::clone(&executor)))));
    // The lifecycle thread exits the process; until then this thread runs tasks.
    loop {
        smol::block_on(executor.run(smol::future::pending::<()>()));
    }
}
