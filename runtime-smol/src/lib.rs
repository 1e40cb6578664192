//! plug-smol: plug on one `smol::Executor`, run by the main thread and by as many
//! more as [`async_driver::executor_threads`] says (`SMOL_THREADS`, else one per
//! two cores). The connection driver is plug-shell's, futures over async-io.

use std::future::Future;
use std::net::{TcpListener, TcpStream};
use std::pin::Pin;
use std::sync::Arc;

use plug_shell::drive::async_driver::{self, Spawn};
use plug_shell::drive::conn::Conn;
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

/// Runs plug on smol with the process's arguments; never returns.
pub fn main() -> ! {
    // Start-up (and the fork) happens here, before any executor thread exists.
    let boot = plug_shell::boot(std::env::args_os(), async_driver::runtime("smol"));
    let executor = Arc::new(Executor::new());
    let (ctx, (listener, metrics)) = boot.serve(|listener: TcpListener, metrics| {
        let listener = Async::new(listener)?;
        let metrics = metrics.map(Async::new).transpose()?;
        // This thread runs the executor too, so one thread means no other.
        for i in 1..async_driver::executor_threads("SMOL_THREADS") {
            let ex = Arc::clone(&executor);
            std::thread::Builder::new()
                .name(format!("smol-{i}"))
                .spawn(move || smol::block_on(ex.run(smol::future::pending::<()>())))?;
        }
        Ok((listener, metrics))
    });
    // The accept loop is a task like the connections: the future given to `run`
    // is polled on every wake-up of this thread, and as that future the loop
    // would try accept(2) (EAGAIN) each time a connection's socket was ready.
    if let Some(metrics) = metrics {
        let scraping = Arc::clone(&ctx);
        let spawner = SmolSpawn(Arc::clone(&executor));
        executor
            .spawn(async move { async_driver::metrics_loop(&scraping, &metrics, &spawner).await })
            .detach();
    }
    let accepting = Arc::clone(&ctx);
    let spawner = SmolSpawn(Arc::clone(&executor));
    let accept = executor.spawn(async move {
        async_driver::accept_loop(&accepting, &listener, &spawner).await;
    });
    smol::block_on(executor.run(accept));
    // The listener is closed. Open connections may all be on this thread's
    // executor, so it keeps running them; the lifecycle thread exits the process.
    ctx.accept_ended();
    loop {
        smol::block_on(executor.run(smol::future::pending::<()>()));
    }
}
