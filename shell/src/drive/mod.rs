//! Carrying out the core's machines on sockets: a connection ([`conn::Conn`],
//! and with the `async` feature the async driver and the reactors it waits on),
//! a scrape, and the rounds of probes and lookups.

#[cfg(feature = "async")]
pub mod async_driver;
pub mod conn;
#[cfg(feature = "async")]
pub mod error_watch;
#[cfg(feature = "async")]
pub mod reactor;
pub mod rounds;
pub mod scrape;

/// How many threads a runtime runs connections on: the number in the
/// environment variable `var` when it is a positive integer, else one per
/// `cores_per_thread` cores (at least one).
pub fn thread_count(var: &str, cores_per_thread: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            cores.div_ceil(cores_per_thread.max(1))
        })
}
