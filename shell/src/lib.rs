//! plug-shell: what every plug runtime (std, smol, async-std) shares, written once:
//! start-up order, detaching, pid file, signals, syslog, the log and session
//! writer, systemd, socket options, splice pipes, and the handle through which a
//! connection driver consults the core ([`Conn`]). With the `async` feature, the
//! connection driver both async runtimes use, and plug's own reactor (smol's);
//! with `async-io`, async-io's reactor under the same driver (async-std's).
//!
//! Start-up order (PROC-1/2/3/6/7/9), single-threaded throughout: block the
//! signals plug handles → parse and validate → close inherited descriptors →
//! make relative paths absolute → read the proxy credentials → look up `--user`
//! → raise the descriptor limit → lock the pid file → bind the listener → connect
//! to syslog (everything so far still on the terminal, so failures print and exit
//! 4) → detach with a readiness pipe → write the pid file → switch to `--user` →
//! check the session file → the writer thread → the adapter starts its threads
//! or runtime and calls [`Boot::serve`]. Failures after detaching reach the
//! waiting parent, which prints them and exits 4.
//!
//! Folders, by concern:
//! - [`start`]: that order ([`boot`], [`Boot::serve`]), detaching and the pid
//!   file, `--user`, the proxy credentials;
//! - [`context`]: what a running plug shares ([`Context`]);
//! - [`listeners`]: each listener's state, started and reloaded as the core's
//!   reload plan says (OPT-13/15); what an adapter must do ([`Acceptor`]);
//! - [`lifecycle`]: the signal thread and the thread that carries out the
//!   core's process machine (stop, drain, cut, exit);
//! - [`drive`]: the core's machines carried out on sockets: a connection
//!   ([`Conn`], and the async driver and its reactors), a scrape, the rounds of probes and
//!   lookups;
//! - [`net`]: socket options, splice pipes, the sockets a cut resets;
//! - [`output`]: the writer thread, the log and syslog, the session file;
//! - [`sys`] (the only `unsafe`), [`systemd`], and [`shared`] (locking state
//!   that threads share).

pub mod context;
pub mod drive;
pub mod lifecycle;
pub mod listeners;
pub mod net;
pub mod output;
pub mod shared;
pub mod start;
pub mod sys;
pub mod systemd;

pub use context::Context;
pub use drive::conn::Conn;
pub use listeners::{Acceptor, Listener};
/// The core, re-exported so adapters name the same types.
pub use plug_core;
pub use start::{boot, Boot};
