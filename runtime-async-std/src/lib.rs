//! plug-async-std: plug on async-std's task runtime, with as many threads as
//! `ASYNC_STD_THREAD_COUNT` says, else one per two cores (see
//! [`async_driver::executor_threads`]).
//!
//! async-std is discontinued upstream (RUSTSEC-2025-0052, "use smol instead"); this
//! adapter is kept minimal and smol or std is the recommended deployment. The
//! connection driver is plug-shell's, futures over async-io, which is async-std's
//! own reactor; only task spawning and the accept loop's executor are async-std's.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_global_executor::GlobalExecutorConfig;
use plug_shell::drive::async_driver::{self, AcceptTasks, Spawn};
use plug_shell::drive::conn::Conn;
use plug_shell::drive::reactor::async_io::AsyncIo;
use plug_shell::drive::reactor::Reactor;

/// Spawns tasks on async-std's executor; accept loops too, so a new
/// connection starts where it was accepted.
#[derive(Debug, Clone, Copy)]
struct AsyncStdSpawn;

impl Spawn for AsyncStdSpawn {
    type Reactor = AsyncIo;

    fn spawn(&self, conn: Conn, client: <AsyncIo as Reactor>::Stream) {
        // Dropping the handle detaches the task.
        drop(async_std::task::spawn(async_driver::serve::<AsyncIo>(
            conn, client,
        )));
    }

    fn spawn_boxed(&self, task: Pin<Box<dyn Future<Output = ()> + Send + 'static>>) {
        drop(async_std::task::spawn(task));
    }
}

/// Runs plug on async-std with the process's arguments; never returns.
pub fn main() -> ! {
    // Start-up (and the fork) happens here; async-std starts its threads lazily, on
    // the first spawn, so none exists yet.
    let boot = plug_shell::boot(
        std::env::args_os(),
        async_driver::runtime::<AsyncIo>("async-std"),
    );
    // async-std's own default is a thread per core; configured first, this wins.
    let threads = async_driver::executor_threads("ASYNC_STD_THREAD_COUNT");
    async_global_executor::init_with_config(
        GlobalExecutorConfig::default()
            .with_min_threads(threads)
            .with_max_threads(threads)
            .with_thread_name_fn(|| "async-std/runtime".to_string()),
    );
    // This thread only waits, without taking turns at the reactor (which would
    // hand readiness between threads); the lifecycle thread exits the process.
    boot.serve(Arc::new(AcceptTasks(AsyncStdSpawn)))
        .wait_for_exit()
}
