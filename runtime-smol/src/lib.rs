//! plug-smol: plug on one `smol::Executor` run by one thread per core. The
//! [`async_conn`] module, the accept loop and connection driver as futures over
//! async-io, is shared with plug-async-std.

pub mod async_conn;

use std::net::TcpListener;
use std::sync::Arc;

use smol::{Async, Executor};

use async_conn::Spawn;

/// Spawns connection tasks on the shared executor.
struct SmolSpawn(Arc<Executor<'static>>);

impl Spawn for SmolSpawn {
    fn spawn(&self, task: async_conn::Task) {
        self.0.spawn(task).detach();
    }
}

/// Runs plug on smol with the process's arguments; never returns.
pub fn main() -> ! {
    // Start-up (and the fork) happens here, before any executor thread exists.
    let boot = plug_std::process::boot(std::env::args_os());
    let executor = Arc::new(Executor::new());
    let (ctx, listener) = boot.serve(|listener: TcpListener| {
        let listener = Async::new(listener)?;
        // One executor thread per core besides this one, and at least one so that
        // connections still run while this thread waits for them to drain.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        for i in 0..cores.saturating_sub(1).max(1) {
            let ex = Arc::clone(&executor);
            std::thread::Builder::new()
                .name(format!("smol-{i}"))
                .spawn(move || smol::block_on(ex.run(smol::future::pending::<()>())))?;
        }
        Ok(listener)
    });
    let spawner = SmolSpawn(Arc::clone(&executor));
    smol::block_on(executor.run(async_conn::accept_loop(&ctx, listener, &spawner)));
    ctx.drain_and_exit()
}
