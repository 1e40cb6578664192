//! plug-std: plug on blocking accept, one thread per connection, non-blocking
//! sockets and poll(2). It carries out what plug-core decides; start-up and
//! everything else every runtime shares is plug-shell's.

mod conn;
mod serve;

use std::time::Duration;

use plug_core::connection::Runtime;
use plug_shell::splice::PIPE_CAPACITY;

/// What this runtime offers the core: splicing, and buffers kept through a quiet
/// second (a connection thread has nowhere better to put them).
pub const RUNTIME: Runtime = Runtime {
    pipe_capacity: Some(PIPE_CAPACITY),
    buffer_release_after: Duration::from_secs(1),
};

/// Runs plug on std threads with the process's arguments; never returns.
pub fn main() -> ! {
    serve::run(plug_shell::boot(std::env::args_os(), RUNTIME))
}
