//! Where lines go: one writer thread behind a bounded queue (FAULT-4), the log
//! and its syslog client, and the session file (§4).

pub mod log;
pub mod session_file;
pub mod syslog;
pub mod writer;
