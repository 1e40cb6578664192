//! plug-smol: plug on one `smol::Executor`, run by the main thread and by as many
//! more as [`async_conn::executor_threads`] says (`SMOL_THREADS`, else one per two
//! cores). The [`async_conn`] module, the accept loop and connection driver as
//! futures over async-io, is shared with plug-async-std.

pub mod async_conn;

use std::convert::Infallible;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

use smol::{Async, Executor};

use async_conn::Spawn;
use plug_std::process::Connection;

/// Spawns connection tasks on the shared executor.
struct SmolSpawn(Arc<Executor<'static>>);

impl Spawn for SmolSpawn {
    fn spawn(&self, conn: Connection, client: Async<TcpStream>) {
        self.0.spawn(async_conn::serve(conn, client)).detach();
    }
}

/// Runs plug on smol with the process's arguments; never returns.
pub fn main() -> ! {
    // Start-up (and the fork) happens here, before any executor thread exists.
    let boot = plug_std::process::boot(std::env::args_os());
    let executor = Arc::new(Executor::new());
    let (ctx, listener) = boot.serve(|listener: TcpListener| {
        let listener = Async::new(listener)?;
        // This thread runs the executor too, so one thread means no other.
        for i in 1..async_conn::executor_threads("SMOL_THREADS") {
            let ex = Arc::clone(&executor);
            std::thread::Builder::new()
                .name(format!("smol-{i}"))
                .spawn(move || smol::block_on(ex.run(smol::future::pending::<()>())))?;
        }
        Ok(listener)
    });
    // The accept loop is a task like the connections: the future given to `run`
    // is polled on every wake-up of this thread, and as that future the loop
    // would try accept(2) (EAGAIN) each time a connection's socket was ready.
    let accepting = Arc::clone(&ctx);
    let spawner = SmolSpawn(Arc::clone(&executor));
    let accept = executor.spawn(async move {
        async_conn::accept_loop(&accepting, listener, &spawner).await;
    });
    smol::block_on(executor.run(accept));
    // The listener is closed. Open connections may all be on this thread's
    // executor, so it keeps running them while another thread waits for the drain.
    let waiter = Arc::clone(&ctx);
    let drain = std::thread::Builder::new()
        .name("drain".into())
        .spawn(move || waiter.drain_and_exit());
    if let Err(e) = drain {
        ctx.log()
            .error(&format!("cannot start the drain thread: {e}"));
        ctx.exit(plug_core::cli::EXIT_FATAL)
    }
    match smol::block_on(executor.run(smol::future::pending::<Infallible>())) {}
}
