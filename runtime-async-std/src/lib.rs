//! plug-async-std: plug on async-std's task runtime, with as many threads as
//! `ASYNC_STD_THREAD_COUNT` says, else one per two cores (see
//! [`async_driver::executor_threads`]).
//!
//! async-std is discontinued upstream (RUSTSEC-2025-0052, "use smol instead"); this
//! adapter is kept minimal and smol or std is the recommended deployment. The
//! connection driver is plug-shell's, futures over async-io, which is async-std's
//! own reactor; only task spawning and the accept loop's executor are async-std's.

use std::future::Future;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::pin::Pin;
use std::sync::Arc;

use async_global_executor::GlobalExecutorConfig;
use plug_shell::drive::async_driver::{self, Async, Spawn};
use plug_shell::drive::conn::Conn;
use plug_shell::{Acceptor, Context, Listener};

/// Spawns connection tasks on async-std's executor.
struct AsyncStdSpawn;

impl Spawn for AsyncStdSpawn {
    fn spawn(&self, conn: Conn, client: Async<TcpStream>) {
        // Dropping the handle detaches the task.
        drop(async_std::task::spawn(async_driver::serve(conn, client)));
    }

    fn spawn_boxed(&self, task: Pin<Box<dyn Future<Output = ()> + Send + 'static>>) {
        drop(async_std::task::spawn(task));
    }
}

/// Runs accept loops as tasks on async-std's executor.
#[derive(Debug)]
struct Tasks;

impl Acceptor for Tasks {
    fn serve(
        &self,
        ctx: &Arc<Context>,
        listener: Arc<Listener>,
        socket: TcpListener,
    ) -> io::Result<()> {
        let socket = Async::new(socket)?;
        let ctx = Arc::clone(ctx);
        // The accept loop runs on the runtime's threads beside the connections, so
        // a new connection starts where it was accepted.
        drop(async_std::task::spawn(async move {
            async_driver::accept_loop(&ctx, &listener, socket, &AsyncStdSpawn).await;
        }));
        Ok(())
    }

    fn serve_metrics(&self, ctx: &Arc<Context>, socket: TcpListener) -> io::Result<()> {
        let socket = Async::new(socket)?;
        let ctx = Arc::clone(ctx);
        drop(async_std::task::spawn(async move {
            async_driver::metrics_loop(&ctx, &socket, &AsyncStdSpawn).await;
        }));
        Ok(())
    }
}

/// Runs plug on async-std with the process's arguments; never returns.
pub fn main() -> ! {
    // Start-up (and the fork) happens here; async-std starts its threads lazily, on
    // the first spawn, so none exists yet.
    let boot = plug_shell::boot(std::env::args_os(), async_driver::runtime("async-std"));
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
    boot.serve(Arc::new(Tasks)).wait_for_exit()
}
