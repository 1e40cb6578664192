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
