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

/// How many threads a runtime runs connections on: what `decide` (one of
/// [`plug_core::threads`]) says of the environment variable `var` and this
/// machine's cores.
pub fn thread_count(var: &str, decide: fn(Option<&str>, usize) -> usize) -> usize {
    let configured = std::env::var(var).ok();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    decide(configured.as_deref(), cores)
}
