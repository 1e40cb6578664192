//! plug-std: plug on blocking accept, one thread per connection, non-blocking
//! sockets and poll(2). It carries out what plug-core decides; the [`process`]
//! module is the start-up and bookkeeping every plug runtime shares.

pub mod process;

mod conn;
mod serve;

/// Runs plug on std threads with the process's arguments; never returns.
pub fn main() -> ! {
    serve::run(process::boot(std::env::args_os()))
}
