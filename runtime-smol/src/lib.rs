//! plug-smol: plug on one `smol::Executor`, run by the main thread and by as many
//! more as [`async_driver::executor_threads`] says (`SMOL_THREADS`, else one per
//! two cores). The connection driver is plug-shell's, futures over async-io.

use std::future::Future;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::pin::Pin;
use std::sync::Arc;

use plug_shell::drive::async_driver::{self, Spawn};
use plug_shell::drive::conn::Conn;
use plug_shell::{Acceptor, Context, Listener};
use smol::{Async, Executor};

/// Spawns connection tasks on the shared executor.
struct SmolSpawn(Arc<Executor<'static>>);

impl Spawn for SmolSpawn {
    fn spawn(&self, conn: Conn, client: Async<TcpStream>) {
        self.0.spawn(async_driver::serve(conn, client)).detach();
    }

    fn spawn_boxed(&self, task: Pin<Box<dyn Future<Output = ()> + Send + 'static>>) {
        self.0.spawn(task).detach();
    }
}

/// Runs accept loops as tasks on the shared executor.
///
/// An accept loop is a task like the connections: as the future given to
/// `run` it would be polled on every wake-up of the main thread, and try
/// accept(2) (EAGAIN) each time a connection's socket was ready.
struct Tasks(Arc<Executor<'static>>);

impl std::fmt::Debug for Tasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("smol tasks")
    }
}

impl Acceptor for Tasks {
    fn serve(
        &self,
        ctx: &Arc<Context>,
        listener: Arc<Listener>,
        socket: TcpListener,
    ) -> io::Result<()> {
        let socket = Async::new(socket)?;
        let ctx = Arc::clone(ctx);
        let spawner = SmolSpawn(Arc::clone(&self.0));
        self.0
            .spawn(
                async move { async_driver::accept_loop(&ctx, &listener, socket, &spawner).await },
            )
            .detach();
        Ok(())
    }

    fn serve_metrics(&self, ctx: &Arc<Context>, socket: TcpListener) -> io::Result<()> {
        let socket = Async::new(socket)?;
        let ctx = Arc::clone(ctx);
        let spawner = SmolSpawn(Arc::clone(&self.0));
        self.0
            .spawn(async move { async_driver::metrics_loop(&ctx, &socket, &spawner).await })
            .detach();
        Ok(())
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
    let _ctx = boot.serve(Arc::new(Tasks(Arc::clone(&executor))));
    // The lifecycle thread exits the process; until then this thread runs tasks.
    loop {
        smol::block_on(executor.run(smol::future::pending::<()>()));
    }
}
