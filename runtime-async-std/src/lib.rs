//! plug-async-std: plug on async-std's task runtime (threads as set by
//! `ASYNC_STD_THREAD_COUNT`, one per core by default).
//!
//! async-std is discontinued upstream (RUSTSEC-2025-0052, "use smol instead"); this
//! adapter is kept minimal and smol or std is the recommended deployment. The
//! connection driver is plug-smol's `async_conn`, futures over async-io, which is
//! async-std's own reactor; only task spawning and the accept loop's executor are
//! async-std's.

use plug_smol::async_conn::{self, Spawn, Task};

/// Spawns connection tasks on async-std's executor.
struct AsyncStdSpawn;

impl Spawn for AsyncStdSpawn {
    fn spawn(&self, task: Task) {
        // Dropping the handle detaches the task.
        drop(async_std::task::spawn(task));
    }
}

/// Runs plug on async-std with the process's arguments; never returns.
pub fn main() -> ! {
    // Start-up (and the fork) happens here; async-std starts its threads lazily, on
    // the first spawn, so none exists yet.
    let boot = plug_std::process::boot(std::env::args_os());
    let (ctx, listener) = boot.serve(async_io::Async::new);
    async_std::task::block_on(async_conn::accept_loop(&ctx, listener, &AsyncStdSpawn));
    ctx.drain_and_exit()
}
