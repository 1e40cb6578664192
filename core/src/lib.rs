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
//! The folders, in the order a client meets them:
//! - [`config`]: [`config::cli::parse`] turns argv into a [`config::cli::Config`];
//!   `config::rules::AcceptRules::allows` admits or refuses a client (CONN-1).
//! - [`forwarder`]: what every connection of a listener shares
//!   ([`forwarder::Forwarder`]): admission, the [`forwarder::select::Balancer`]
//!   with health and the sticky table (CONN-2..5, OPT-12), the counts, the
//!   descriptor, pipe and scrape budgets.
//! - [`connection`]: one client's whole life ([`connection::Connection`]): the
//!   [`connection::dial::Dialer`] reaches a destination, failing over (CONN-3/4,
//!   CONN-8/9, OPT-1), through the CONNECT exchange of [`connection::connect`];
//!   the [`connection::relay::Relay`] says what each direction does next (CONN-6).
//! - [`rounds`]: work with no input to trigger it: health probes
//!   ([`rounds::probe::Probe`], OPT-10) and name lookups (OPT-11).
//! - [`process`]: the process's own life ([`process::Process`]): stop, drain,
//!   cut, exit, and what each signal means (PROC-4, OPT-8, FAULT-7).
//! - [`reports`]: the texts: log lines, session lines, `/metrics`.
//! - [`shared`]: the events a connection and its forwarder exchange.
//! - [`threads`]: how many threads run connections, how many accept, and
//!   where a bulk connection moves.
//!
//! Adapters feed a `Connection`, and lock the `Forwarder` only to hand it the
//! connection's events ([`forwarder::Forwarder::exchange`]); one `Process` per
//! process is fed signals, counts and time.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

/// The `bytes` crate, re-exported so adapters name the same `Bytes` type.
pub use bytes;

pub mod config;
pub mod connection;
pub mod forwarder;
pub mod process;
pub mod reports;
pub mod rounds;
pub mod shared;
pub mod threads;

#[cfg(test)]
mod test_clock;
