//! The texts plug logs: the syslog lines of `-l` (PROC-5), compatible with 2.5.5,
//! and the completion status of a connection. Pure functions of their inputs, so
//! tests assert exact text and adapters only write it.

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::addr::{canonical_ip, Destination, Source};
use crate::relay::RelayEnd;

/// Where a log line belongs; the adapter's logger routes it (syslog, stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// A connection line of `-l` (PROC-5): syslog with `-l`, stderr with `-d`.
    Connection,
    /// Something the operator should know: stderr in the foreground, syslog detached.
    Notice,
    /// Something went wrong in plug itself.
    Error,
    /// Detail shown when `-d` was given at least this many times.
    Debug(u8),
}

/// One line for the log, made by the core and written by the adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Where it goes.
    pub level: LogLevel,
    /// The text, without the program name prefix or newline.
    pub text: String,
}

impl LogRecord {
    /// A record at `level` with `text`.
    pub fn new(level: LogLevel, text: impl Into<String>) -> Self {
        LogRecord {
            level,
            text: text.into(),
        }
    }
}

/// Which log lines an adapter wants made at all, so the core formats nothing that
/// would be thrown away.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogSettings {
    /// `-d` count.
    pub debug: u8,
    /// `-l`.
    pub connections: bool,
}

impl LogSettings {
    /// True when a line at `level` is written anywhere.
    pub fn wants(&self, level: LogLevel) -> bool {
        match level {
            LogLevel::Connection => self.connections || self.debug > 0,
            LogLevel::Notice | LogLevel::Error => true,
            LogLevel::Debug(n) => self.debug >= n,
        }
    }
}

/// At most this many lines of one kind per [`RATE_WINDOW`] (FAULT-4).
pub const RATE_LIMIT: u32 = 10;

/// The window of [`RATE_LIMIT`].
pub const RATE_WINDOW: Duration = Duration::from_secs(1);

/// Rate limit for one kind of client-caused log line (FAULT-4): at most
/// [`RATE_LIMIT`] a second, then one `N similar messages suppressed` line per
/// second for what was held back.
#[derive(Debug, Clone, Default)]
pub struct RateLimit {
    window_start: Option<Instant>,
    in_window: u32,
    suppressed: u64,
}

impl RateLimit {
    /// Decides about one line at `now`: `true` to write it. Call
    /// [`RateLimit::poll_suppressed`] first so the count comes before new lines.
    pub fn allow(&mut self, now: Instant) -> bool {
        self.roll(now);
        if self.in_window < RATE_LIMIT {
            self.in_window += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    fn roll(&mut self, now: Instant) {
        let expired = self
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= RATE_WINDOW);
        if expired {
            self.window_start = Some(now);
            self.in_window = 0;
        }
    }

    /// The line about what was held back, once its window has ended; `None` while
    /// the window runs or when nothing was suppressed.
    #[must_use]
    pub fn poll_suppressed(&mut self, now: Instant) -> Option<String> {
        if self.suppressed == 0 {
            return None;
        }
        let ended = self
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= RATE_WINDOW);
        if !ended {
            return None;
        }
        let n = std::mem::take(&mut self.suppressed);
        self.roll(now);
        Some(suppressed(n))
    }

    /// When the suppressed count becomes due, if anything is held back.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.suppressed == 0 {
            return None;
        }
        self.window_start.and_then(|s| s.checked_add(RATE_WINDOW))
    }
}

/// `N similar messages suppressed` (FAULT-4).
pub fn suppressed(n: u64) -> String {
    format!("{n} similar messages suppressed")
}

impl fmt::Display for LogRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// How a connection ended, with 2.5.5's status numbers (S_NORMAL, S_CONNECT,
/// S_EXCEPT) for the `Complete, status=N.` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseStatus {
    /// Both directions ended cleanly.
    Normal,
    /// No destination could be reached.
    ConnectFailed,
    /// A reset or error ended the relay.
    Exception,
    /// The idle timeout closed the connection.
    IdleTimeout,
}

impl CloseStatus {
    /// The status number; 0 for a clean end.
    pub fn code(self) -> u8 {
        match self {
            CloseStatus::Normal => 0,
            CloseStatus::ConnectFailed => 2,
            CloseStatus::Exception | CloseStatus::IdleTimeout => 3,
        }
    }
}

impl CloseStatus {
    /// How an admitted connection ended: whether it reached a destination, and how
    /// its relay ended if one ran (none means it failed before relaying).
    pub fn of(reached: bool, end: Option<RelayEnd>) -> Self {
        match (reached, end) {
            // The client went away before a destination was reached.
            (false, Some(RelayEnd::Failed { .. })) => CloseStatus::Exception,
            (false, _) => CloseStatus::ConnectFailed,
            (true, Some(end)) => CloseStatus::from(end),
            (true, None) => CloseStatus::Exception,
        }
    }
}

impl From<RelayEnd> for CloseStatus {
    fn from(end: RelayEnd) -> Self {
        match end {
            RelayEnd::Finished => CloseStatus::Normal,
            RelayEnd::Failed { .. } => CloseStatus::Exception,
            RelayEnd::IdleTimeout => CloseStatus::IdleTimeout,
        }
    }
}

/// `TAG: Plugdaemon started.`
pub fn started(source: &Source) -> String {
    format!("{}: Plugdaemon started.", source.log_tag())
}

/// `TAG: Connect from ADDR to DEST`
pub fn connect_from(source: &Source, peer: IpAddr, dest: &Destination) -> String {
    format!(
        "{}: Connect from {} to {dest}",
        source.log_tag(),
        canonical_ip(peer)
    )
}

/// `TAG: Connect from ADDR Refused.`
pub fn refused(source: &Source, peer: IpAddr) -> String {
    format!(
        "{}: Connect from {} Refused.",
        source.log_tag(),
        canonical_ip(peer)
    )
}

/// `TAG: Connect from ADDR refused: REASON` for a client over a connection limit
/// (OPT-3); clients refused by the accept rules keep 2.5.5's [`refused`] text.
pub fn over_limit(source: &Source, peer: IpAddr, reason: &crate::admission::Refusal) -> String {
    format!(
        "{}: Connect from {} refused: {reason}",
        source.log_tag(),
        canonical_ip(peer)
    )
}

/// `TAG: Complete.` or `TAG: Complete, status=N.`
pub fn complete(source: &Source, status: CloseStatus) -> String {
    match status.code() {
        0 => format!("{}: Complete.", source.log_tag()),
        n => format!("{}: Complete, status={n}.", source.log_tag()),
    }
}

/// The version line of `-V`: `PROG: VERSION-STRING`.
pub fn version(program: &str) -> String {
    format!(
        "{program}: plug {} (plugdaemon 2.5.5 compatible)",
        env!("CARGO_PKG_VERSION")
    )
}

/// Returns the program name for messages: the last path component of argv\[0\].
pub fn program_name(argv0: &str) -> &str {
    match argv0.rsplit('/').next() {
        Some(name) if !name.is_empty() => name,
        _ => "plug",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::Side;

    #[test]
    fn syslog_texts_proc_5() {
        let s = Source::parse("119").unwrap();
        let peer: IpAddr = "::ffff:192.168.0.20".parse().unwrap();
        let d = Destination::parse("10.0.3.15", 119, false).unwrap();
        assert_eq!(started(&s), "(119): Plugdaemon started.");
        assert_eq!(
            connect_from(&s, peer, &d),
            "(119): Connect from 192.168.0.20 to 10.0.3.15:119"
        );
        assert_eq!(
            refused(&s, peer),
            "(119): Connect from 192.168.0.20 Refused."
        );
        assert_eq!(complete(&s, CloseStatus::Normal), "(119): Complete.");
        let s = Source::parse("192.168.0.14:119").unwrap();
        assert_eq!(
            complete(&s, CloseStatus::ConnectFailed),
            "(192.168.0.14 119): Complete, status=2."
        );
    }

    #[test]
    fn over_limit_text_opt_3() {
        let s = Source::parse("80").unwrap();
        let r = crate::admission::Refusal::Capacity { limit: 2 };
        assert_eq!(
            over_limit(&s, "10.0.0.1".parse().unwrap(), &r),
            "(80): Connect from 10.0.0.1 refused: 2 connections open (--max-conns)"
        );
    }

    #[test]
    fn connection_ends_map_to_statuses_proc_5() {
        assert_eq!(CloseStatus::of(false, None), CloseStatus::ConnectFailed);
        assert_eq!(
            CloseStatus::of(true, Some(RelayEnd::Finished)),
            CloseStatus::Normal
        );
        assert_eq!(CloseStatus::of(true, None).code(), 3);
    }

    #[test]
    fn relay_ends_map_to_statuses_proc_5() {
        assert_eq!(CloseStatus::from(RelayEnd::Finished).code(), 0);
        assert_eq!(
            CloseStatus::from(RelayEnd::Failed { side: Side::Client }).code(),
            3
        );
        assert_eq!(CloseStatus::from(RelayEnd::IdleTimeout).code(), 3);
    }

    #[test]
    fn version_and_program_name_cli_2() {
        assert!(version("plug-std").starts_with("plug-std: plug "));
        assert_eq!(program_name("/usr/local/sbin/plug"), "plug");
        assert_eq!(program_name("plug-smol"), "plug-smol");
        assert_eq!(program_name(""), "plug");
        assert_eq!(program_name("dir/"), "plug");
    }
}
