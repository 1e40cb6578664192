//! plug-core: every decision plug makes, as pure state machines with no I/O.
//!
//! plug is a drop-in replacement for plugdaemon 2.5.5, the "dumb" TCP forwarding
//! daemon. This crate owns the behaviour contract (SPEC.md): the command line, accept
//! rules, destination selection and health, the sticky table, the CONNECT exchange,
//! the relay of each direction with byte accounting, and the texts of the log and
//! session lines. It never reads a clock, opens a socket or a file, or starts a
//! thread: time comes in as `now: Instant`, outcomes go out as values, and the
//! runtime adapters (`plug-std`, `plug-smol`, `plug-async-std`) carry them out.
//!
//! The pieces, in the order a connection meets them:
//! - [`cli::parse`] turns argv into a [`cli::Config`].
//! - [`rules::AcceptRules::allows`] admits or refuses a client (CONN-1).
//! - [`dial::Dialer`] reaches a destination chosen by the shared
//!   [`select::Balancer`], failing over (CONN-2..5, CONN-8, CONN-9, OPT-1), using
//!   [`connect`] for the CONNECT exchange.
//! - [`relay::Relay`] says what each direction does next until both end (CONN-6).
//! - [`session::SessionRecord::line`] and [`log`] produce the texts.
//!
//! [`connection::Connection`] ties these together for one client, from admission
//! to close, deciding what every I/O result means; [`forwarder::Forwarder`] is what
//! all connections of a listener share. Adapters feed the one and lock the other.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

/// The `bytes` crate, re-exported so adapters name the same `Bytes` type.
pub use bytes;

pub mod accept;
pub mod addr;
pub mod admission;
pub mod cli;
pub mod connect;
pub mod connection;
pub mod dial;
pub mod forwarder;
pub mod health;
pub mod log;
pub mod metrics;
pub mod process;
pub mod proxy_protocol;
pub mod relay;
pub mod rendezvous;
pub mod resolve;
pub mod rounds;
pub mod rules;
pub mod select;
pub mod session;
pub mod stats;

#[cfg(test)]
mod simulation;
#[cfg(test)]
mod test_clock;
