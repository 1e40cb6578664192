//! plug-std: plug on blocking accept, one thread per connection, non-blocking
//! sockets and poll(2). It carries out what plug-core decides; start-up and
//! everything else every runtime shares is plug-shell's.

mod conn;
mod serve;

use std::time::Duration;

use plug_core::connection::Runtime;
use plug_shell::net::splice::PIPE_CAPACITY;

/// What this runtime offers the core: splicing, and buffers kept through a quiet
/// second, then freed: a thread serves one connection at a time, so a buffer kept
/// on it for others would sit there while thousands of threads wait idle.
pub const RUNTIME: Runtime = Runtime {
    name: "std",
    pipe_capacity: Some(PIPE_CAPACITY),
    buffer_release_after: Duration::from_secs(1),
    reuse_buffers: false,
};

/// Runs plug on std threads with the process's arguments; never returns.
pub fn main() -> ! {
    serve::run(plug_shell::boot(std::env::args_os(), RUNTIME))
}
