//! plug-std: plug on std alone, with no async runtime: epoll event loops, one
//! per core, each serving the connections it accepted (and the bulk ones moved
//! to it) on non-blocking sockets, doing what plug-core decides. Start-up and
//! everything else every runtime shares is plug-shell's.

mod conn;
mod event_loop;
mod serve;

use std::time::Duration;

use plug_core::connection::Runtime;
use plug_shell::net::splice::PIPE_CAPACITY;

/// What this runtime offers the core: splicing, buffers given back as soon as
/// a direction is quiet (thousands of idle connections then hold none) to a
/// per-thread pool that the next busy connection on the loop takes them from,
/// and readiness as epoll's whole event mask, errors and hang-ups included.
pub const RUNTIME: Runtime = Runtime {
    name: "std",
    pipe_capacity: Some(PIPE_CAPACITY),
    buffer_release_after: Duration::ZERO,
    reuse_buffers: true,
    readiness_tells_errors: true,
};

/// Runs plug on std event loops with the process's arguments; never returns.
pub fn main() -> ! {
    serve::run(plug_shell::boot(std::env::args_os(), RUNTIME))
}
