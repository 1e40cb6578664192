//! What plug tells the operator: the log lines and where each goes (PROC-5,
//! FAULT-4), the session-file line (§4), and the `/metrics` exposition with the
//! machine of one scrape (OPT-9).

pub mod log;
pub mod metrics;
pub mod session;
