//! The texts plug logs: the syslog lines of `-l` (PROC-5), compatible with 2.5.5,
//! and the completion status of a connection. Pure functions of their inputs, so
//! tests assert exact text and adapters only write it.

use std::net::IpAddr;

use crate::addr::{canonical_ip, Destination, Source};
use crate::relay::RelayEnd;

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
