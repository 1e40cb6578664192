//! The texts plug logs: the syslog lines of `-l` (PROC-5), compatible with 2.5.5,
//! and the completion status of a connection. Pure functions of their inputs, so
//! tests assert exact text and adapters only write it.

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::config::addr::{canonical_ip, Destination, Source};
use crate::connection::relay::RelayEnd;

/// Where a log line belongs; [`LogTargets::route`] says where that is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// A connection line of `-l` (PROC-5): syslog with `-l`, stderr with `-d`.
    Connection,
    /// Something the operator should know (a destination failed, went down or
    /// came back): stderr in the foreground, syslog with `-l` or once detached.
    Notice,
    /// Something went wrong in plug itself: like [`LogLevel::Notice`], at error
    /// priority.
    Error,
    /// Detail shown when `-d` was given at least this many times.
    Debug(u8),
}

/// The kinds of line a client can cause as often as it likes, each rate-limited
/// on its own (FAULT-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogKind {
    /// A client refused by the accept rules (`-a`).
    Refused,
    /// A client closed because of `--max-conns` or `--max-conns-per-ip`.
    OverLimit,
    /// A destination that failed for a client.
    DestinationFailed,
    /// A destination going down or coming back, and the all-down reset.
    Health,
    /// Any other error that one connection met.
    ClientError,
    /// A session line that could not be written.
    SessionFile,
}

impl LogKind {
    /// Every kind, in the order of [`LogKind::index`].
    pub const ALL: [LogKind; 6] = [
        LogKind::Refused,
        LogKind::OverLimit,
        LogKind::DestinationFailed,
        LogKind::Health,
        LogKind::ClientError,
        LogKind::SessionFile,
    ];

    /// The position in [`LogKind::ALL`], for arrays indexed by kind.
    pub fn index(self) -> usize {
        match self {
            LogKind::Refused => 0,
            LogKind::OverLimit => 1,
            LogKind::DestinationFailed => 2,
            LogKind::Health => 3,
            LogKind::ClientError => 4,
            LogKind::SessionFile => 5,
        }
    }
}

/// One line for the log, made by the core and written by the adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Where it goes.
    pub level: LogLevel,
    /// The rate limit it is subject to; `None` for lines no client can repeat.
    pub kind: Option<LogKind>,
    /// The text, without the program name prefix or newline.
    pub text: String,
}

impl LogRecord {
    /// A record at `level` with `text`, not rate-limited.
    pub fn new(level: LogLevel, text: impl Into<String>) -> Self {
        LogRecord {
            level,
            kind: None,
            text: text.into(),
        }
    }

    /// A record of a kind clients can repeat: [`Limiter`] lets ten a second through.
    pub fn limited(kind: LogKind, level: LogLevel, text: impl Into<String>) -> Self {
        LogRecord {
            level,
            kind: Some(kind),
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

/// A syslog severity plug uses (RFC 5424 numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// 3: errors of plug itself.
    Error,
    /// 5: connection lines and notices, as 2.5.5 logged them.
    Notice,
}

impl Severity {
    /// The RFC 5424 severity number.
    pub fn code(self) -> u8 {
        match self {
            Severity::Error => 3,
            Severity::Notice => 5,
        }
    }
}

/// Where one line goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Send it to syslog at this severity.
    pub syslog: Option<Severity>,
    /// Write it on stderr.
    pub stderr: bool,
}

/// The process's log destinations: whether it left the terminal, `-l` and `-d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogTargets {
    /// True once the process has detached (stderr is /dev/null).
    pub detached: bool,
    /// `-l`: lines go to syslog.
    pub syslog: bool,
    /// `-d` count (implies the foreground).
    pub debug: u8,
}

impl LogTargets {
    /// Where a line at `level` goes. Connection lines go to syslog with `-l`;
    /// notices and errors go to syslog with `-l` or once detached, and otherwise
    /// to stderr; `-d` puts a copy of everything on stderr; debug lines go to
    /// stderr only.
    pub fn route(&self, level: LogLevel) -> Route {
        let debugging = !self.detached && self.debug > 0;
        match level {
            LogLevel::Debug(n) => Route {
                syslog: None,
                stderr: !self.detached && self.debug >= n,
            },
            LogLevel::Connection => Route {
                syslog: self.syslog.then_some(Severity::Notice),
                stderr: debugging,
            },
            LogLevel::Notice | LogLevel::Error => {
                let to_syslog = self.syslog || self.detached;
                let severity = match level {
                    LogLevel::Error => Severity::Error,
                    _ => Severity::Notice,
                };
                Route {
                    syslog: to_syslog.then_some(severity),
                    stderr: !self.detached && (!to_syslog || debugging),
                }
            }
        }
    }

    /// True when a line that syslog did not take (no /dev/log, nobody reading
    /// it) should go to stderr instead: in the foreground, where someone sees it.
    pub fn falls_back_to_stderr(&self, route: Route) -> bool {
        !self.detached && !route.stderr
    }
}

/// The facility plug logs as: daemon (PROC-5).
pub const SYSLOG_FACILITY_DAEMON: u8 = 3;

/// The datagram sent to /dev/log for one line, in the form the C library's
/// syslog(3) sends: `<PRI>Mmm dd HH:MM:SS IDENT[PID]: TEXT`, with PRI the daemon
/// facility and `severity`, and the time local.
pub fn syslog_datagram(
    severity: Severity,
    time: &crate::reports::session::WallTime,
    ident: &str,
    pid: u32,
    text: &str,
) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS
        .get(usize::from(time.month.saturating_sub(1)))
        .copied()
        .unwrap_or("Jan");
    let pri = u16::from(SYSLOG_FACILITY_DAEMON) * 8 + u16::from(severity.code());
    format!(
        "<{pri}>{month} {:>2} {:02}:{:02}:{:02} {ident}[{pid}]: {text}",
        time.day, time.hour, time.minute, time.second
    )
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
    /// `RateLimit::poll_suppressed` first so the count comes before new lines.
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
    pub(crate) fn poll_suppressed(&mut self, now: Instant) -> Option<String> {
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

/// The rate limits of every [`LogKind`] (FAULT-4), as one machine for whoever
/// writes the lines: feed it each record with [`Limiter::handle_record`], and at
/// [`Limiter::poll_timeout`] drain [`Limiter::poll_record`] for the
/// `N similar messages suppressed` lines, so they come out when their second
/// ends even if nothing else is logged.
#[derive(Debug, Clone, Default)]
pub struct Limiter {
    limits: [RateLimit; LogKind::ALL.len()],
    /// The level of the last line of each kind, for its summary.
    levels: [Option<LogLevel>; LogKind::ALL.len()],
}

impl Limiter {
    /// A limiter that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decides about `record` at `now`: `Some` to write it (lines without a kind
    /// always pass), `None` when its kind is over the limit. Drain
    /// [`Limiter::poll_record`] first so a count comes before newer lines.
    #[must_use]
    pub fn handle_record(&mut self, now: Instant, record: LogRecord) -> Option<LogRecord> {
        let Some(kind) = record.kind else {
            return Some(record);
        };
        let i = kind.index();
        self.levels[i] = Some(record.level);
        self.limits[i].allow(now).then_some(record)
    }

    /// The next `N similar messages suppressed` line that is due at `now`.
    #[must_use]
    pub fn poll_record(&mut self, now: Instant) -> Option<LogRecord> {
        for kind in LogKind::ALL {
            let i = kind.index();
            if let Some(text) = self.limits[i].poll_suppressed(now) {
                let level = self.levels[i].unwrap_or(LogLevel::Notice);
                return Some(LogRecord::limited(kind, level, text));
            }
        }
        None
    }

    /// When the next suppressed count is due, if anything is held back.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.limits.iter().filter_map(RateLimit::poll_timeout).min()
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
pub(crate) fn over_limit(
    source: &Source,
    peer: IpAddr,
    reason: &crate::forwarder::admission::Refusal,
) -> String {
    format!(
        "{}: Connect from {} refused: {reason}",
        source.log_tag(),
        canonical_ip(peer)
    )
}

/// The last word on stderr when `lost` log or session lines could not be
/// written before exit (FAULT-7: counted and dropped, never waited for), or
/// nothing when every line was written.
pub fn lost_at_exit(lost: u64) -> Option<String> {
    (lost > 0).then(|| {
        format!("plug: {lost} log or session lines not written at exit: their output was not being read")
    })
}

/// What SIGHUP re-read (PROC-8, OPT-15): the proxy credentials from `file`, or
/// nothing, which is said too, since an operator who edited the unit and ran
/// `systemctl reload` must not believe the destinations changed.
pub fn reloaded(file: Option<&str>) -> String {
    match file {
        Some(file) => format!("reloaded: proxy credentials from {file}"),
        None => "reloaded: nothing to reload; destinations change only with --config".into(),
    }
}

/// `TAG: Complete.` or `TAG: Complete, status=N.`
pub fn complete(source: &Source, status: CloseStatus) -> String {
    match status.code() {
        0 => format!("{}: Complete.", source.log_tag()),
        n => format!("{}: Complete, status={n}.", source.log_tag()),
    }
}

/// The version string: plug's version, the runtime underneath and what it is a
/// drop-in replacement for.
fn version_string(runtime: &str) -> String {
    format!(
        "plug {} ({runtime} runtime; plugdaemon 2.5.5 compatible)",
        env!("CARGO_PKG_VERSION")
    )
}

/// The line of `-V`, `PROG: VERSION-STRING` (CLI-2), or of `--version`, the
/// version string alone as GNU programs print it.
pub fn version(program: &str, runtime: &str, long: bool) -> String {
    match long {
        true => version_string(runtime),
        false => format!("{program}: {}", version_string(runtime)),
    }
}

/// What `--check` prints on stdout for a valid configuration (OPT-14).
pub fn configuration_ok(program: &str, listeners: usize) -> String {
    format!("{program}: configuration OK ({listeners} listeners)")
}

/// The start-up error for a listener that cannot be bound; a refused port below
/// 1024 says what would allow it.
pub fn cannot_listen(addr: std::net::SocketAddr, error: &std::io::Error) -> String {
    let hint = match (error.kind(), addr.port()) {
        (std::io::ErrorKind::PermissionDenied, 1..=1023) => {
            " (a port below 1024 needs root or CAP_NET_BIND_SERVICE: \
             AmbientCapabilities=CAP_NET_BIND_SERVICE in a systemd unit, or \
             setcap cap_net_bind_service=+ep on the binary)"
        }
        _ => "",
    };
    format!("cannot listen on {addr}: {error}{hint}")
}

/// What to say on the terminal before detaching when no syslog can be reached
/// (most containers): a detached plug's stderr is /dev/null, so its log lines
/// would go nowhere. `None` when they have somewhere to go.
pub fn unlogged_warning(detached: bool, syslog_reachable: bool) -> Option<&'static str> {
    (detached && !syslog_reachable).then_some(
        "warning: no syslog at /dev/log, so a detached plug's log lines go nowhere; \
         run it in the foreground (-n) under a supervisor that keeps stderr, or give it a syslog",
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
    use crate::connection::relay::Side;

    /// FAULT-7's last word: said only when lines were lost, with their count.
    #[test]
    fn lines_lost_at_exit_are_counted_only_when_some_were_fault_7() {
        assert_eq!(lost_at_exit(0), None);
        assert_eq!(
            lost_at_exit(3).as_deref(),
            Some(
                "plug: 3 log or session lines not written at exit: their output was not being read"
            )
        );
    }

    /// OPT-14's line, as the SPEC writes it.
    #[test]
    fn check_says_the_configuration_is_ok_with_its_listener_count_opt_14() {
        assert_eq!(
            configuration_ok("plug", 3),
            "plug: configuration OK (3 listeners)"
        );
    }

    /// A record shows as its text, without prefix or newline.
    #[test]
    fn a_record_shows_as_its_text() {
        let record = LogRecord::new(LogLevel::Notice, "Plugdaemon started.");
        assert_eq!(record.to_string(), "Plugdaemon started.");
    }

    /// Connection lines are made with `-l` or any `-d`, and not without
    /// either; errors and notices always; `-d` lines up to the `-d` count.
    #[test]
    fn which_lines_are_made_follows_l_and_d_cli_2() {
        let settings = |debug, connections| LogSettings { debug, connections };
        assert!(!settings(0, false).wants(LogLevel::Connection));
        assert!(settings(0, true).wants(LogLevel::Connection));
        assert!(settings(1, false).wants(LogLevel::Connection));
        assert!(settings(2, false).wants(LogLevel::Connection));
        for s in [settings(0, false), settings(3, true)] {
            assert!(s.wants(LogLevel::Error) && s.wants(LogLevel::Notice));
        }
        assert!(settings(1, false).wants(LogLevel::Debug(1)));
        assert!(!settings(1, false).wants(LogLevel::Debug(2)));
        assert!(settings(2, false).wants(LogLevel::Debug(2)));
        assert!(!settings(0, true).wants(LogLevel::Debug(1)));
    }

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

    fn targets(detached: bool, syslog: bool, debug: u8) -> LogTargets {
        LogTargets {
            detached,
            syslog,
            debug,
        }
    }

    #[test]
    fn lines_go_where_the_operator_looks_proc_5() {
        let both = |syslog: Option<Severity>, stderr| Route { syslog, stderr };
        let notice = Some(Severity::Notice);
        // Foreground without -l: notices and errors on stderr; connection lines
        // only exist with -l or -d.
        let t = targets(false, false, 0);
        assert_eq!(t.route(LogLevel::Notice), both(None, true));
        assert_eq!(t.route(LogLevel::Error), both(None, true));
        assert_eq!(t.route(LogLevel::Debug(1)), both(None, false));
        // -n -l: syslog, and stderr only if syslog does not take the line.
        let t = targets(false, true, 0);
        assert_eq!(t.route(LogLevel::Connection), both(notice, false));
        assert_eq!(t.route(LogLevel::Notice), both(notice, false));
        assert_eq!(t.route(LogLevel::Error), both(Some(Severity::Error), false));
        assert!(t.falls_back_to_stderr(t.route(LogLevel::Connection)));
        // Detached: syslog only, never a fallback to the /dev/null stderr.
        let t = targets(true, false, 0);
        assert_eq!(t.route(LogLevel::Notice), both(notice, false));
        assert_eq!(t.route(LogLevel::Connection), both(None, false));
        assert!(!t.falls_back_to_stderr(t.route(LogLevel::Notice)));
        // -d -l: a copy of everything on stderr; -dd lines need two.
        let t = targets(false, true, 1);
        assert_eq!(t.route(LogLevel::Connection), both(notice, true));
        assert_eq!(t.route(LogLevel::Notice), both(notice, true));
        assert_eq!(t.route(LogLevel::Debug(1)), both(None, true));
        assert_eq!(t.route(LogLevel::Debug(2)), both(None, false));
        assert!(!t.falls_back_to_stderr(t.route(LogLevel::Notice)));
    }

    #[test]
    fn syslog_datagram_is_what_syslog_3_sends_proc_5() {
        let time = crate::reports::session::WallTime {
            year: 2026,
            month: 12,
            day: 2,
            hour: 7,
            minute: 5,
            second: 9,
        };
        assert_eq!(
            syslog_datagram(Severity::Notice, &time, "plug", 42, "(80): Complete."),
            "<29>Dec  2 07:05:09 plug[42]: (80): Complete."
        );
        let time = crate::reports::session::WallTime { day: 12, ..time };
        assert_eq!(
            syslog_datagram(Severity::Error, &time, "plug-smol", 7, "x"),
            "<27>Dec 12 07:05:09 plug-smol[7]: x"
        );
    }

    #[test]
    fn limiter_passes_ten_a_second_per_kind_and_counts_the_rest_fault_4() {
        let now = crate::test_clock::t0();
        let mut l = Limiter::new();
        let refused = || LogRecord::limited(LogKind::Refused, LogLevel::Connection, "r");
        let failed = || LogRecord::limited(LogKind::DestinationFailed, LogLevel::Notice, "f");
        let passed = (0..30)
            .filter(|_| l.handle_record(now, refused()).is_some())
            .count();
        assert_eq!(passed, 10);
        assert_eq!(l.poll_timeout(), Some(now + RATE_WINDOW));
        // Another kind has its own budget; unlimited lines always pass.
        assert!(l.handle_record(now, failed()).is_some());
        for _ in 0..1000 {
            assert!(l
                .handle_record(now, LogRecord::new(LogLevel::Error, "e"))
                .is_some());
        }
        assert_eq!(l.poll_record(now + Duration::from_millis(999)), None);
        let due = now + RATE_WINDOW;
        let summary = l.poll_record(due).unwrap();
        assert_eq!(summary.text, "20 similar messages suppressed");
        assert_eq!(summary.level, LogLevel::Connection, "where its kind goes");
        assert_eq!(l.poll_record(due), None);
        assert_eq!(l.poll_timeout(), None);
        // A new window: ten more pass.
        let passed = (0..12)
            .filter(|_| l.handle_record(due, refused()).is_some())
            .count();
        assert_eq!(passed, 10);
    }

    #[test]
    fn over_limit_text_opt_3() {
        let s = Source::parse("80").unwrap();
        let r = crate::forwarder::admission::Refusal::Capacity { limit: 2 };
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
        let v = version("plug-std", "smol", false);
        assert!(v.starts_with("plug-std: plug "), "{v}");
        assert!(
            v.ends_with(" (smol runtime; plugdaemon 2.5.5 compatible)"),
            "{v}"
        );
        let long = version("plug-std", "std", true);
        assert!(
            long.starts_with("plug ") && long.contains("(std runtime;"),
            "{long}"
        );
        let refused = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let low = cannot_listen("0.0.0.0:80".parse().unwrap(), &refused);
        assert!(low.contains("CAP_NET_BIND_SERVICE"), "{low}");
        let high = cannot_listen("0.0.0.0:8080".parse().unwrap(), &refused);
        assert!(!high.contains("CAP_NET_BIND_SERVICE"), "{high}");
        let taken = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        assert!(!cannot_listen("0.0.0.0:80".parse().unwrap(), &taken).contains("CAP_"));
        assert!(unlogged_warning(true, false).is_some());
        assert_eq!(unlogged_warning(true, true), None);
        assert_eq!(unlogged_warning(false, false), None);
        assert_eq!(program_name("/usr/local/sbin/plug"), "plug");
        assert_eq!(program_name("plug-smol"), "plug-smol");
        assert_eq!(program_name(""), "plug");
        assert_eq!(program_name("dir/"), "plug");
    }
}
