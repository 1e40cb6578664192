//! What to do when accepting a client fails (SPEC §5): never exit, pause when out of
//! descriptors or memory, and log without flooding.

use std::time::{Duration, Instant};

/// How long the accept loop pauses after running out of descriptors or memory.
pub const EXHAUSTED_PAUSE: Duration = Duration::from_millis(100);

/// The least time between two log lines about the same accept trouble.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// A failed accept, classified by the adapter from the OS error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptFailure {
    /// EMFILE or ENFILE: no descriptor for the new client.
    OutOfDescriptors,
    /// ENOBUFS or ENOMEM.
    OutOfMemory,
    /// The client went away before it was accepted (ECONNABORTED, EPROTO,
    /// EINTR): nothing is wrong with plug.
    ClientGone,
    /// EAGAIN on a non-blocking listener (systemd `NonBlocking=yes`): nobody is
    /// waiting; wait for the listener to become readable (FAULT-1).
    WouldBlock,
    /// Anything else.
    Other,
}

/// What the accept loop should do about a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptAction {
    /// Sleep this long before accepting again.
    pub pause: Option<Duration>,
    /// Log this line (rate-limited).
    pub log: Option<String>,
}

/// Rate-limits accept trouble: one line per [`LOG_INTERVAL`], counting what it held
/// back.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    last_logged: Option<Instant>,
    suppressed: u64,
}

impl AcceptBackoff {
    /// Creates a backoff that has logged nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decides what to do after accept failed at `now` with `failure`; `detail` is
    /// the OS error text for the log.
    pub(crate) fn handle_failure(
        &mut self,
        now: Instant,
        failure: AcceptFailure,
        detail: &str,
    ) -> AcceptAction {
        let pause = match failure {
            AcceptFailure::OutOfDescriptors | AcceptFailure::OutOfMemory => Some(EXHAUSTED_PAUSE),
            // An unknown error might repeat at once; a short pause keeps it from
            // spinning a core while still serving as soon as it clears.
            AcceptFailure::Other => Some(Duration::from_millis(10)),
            AcceptFailure::ClientGone | AcceptFailure::WouldBlock => None,
        };
        if matches!(
            failure,
            AcceptFailure::ClientGone | AcceptFailure::WouldBlock
        ) {
            return AcceptAction { pause, log: None };
        }
        let due = self
            .last_logged
            .is_none_or(|last| now.saturating_duration_since(last) >= LOG_INTERVAL);
        if !due {
            self.suppressed += 1;
            return AcceptAction { pause, log: None };
        }
        let what = match failure {
            AcceptFailure::OutOfDescriptors => "out of file descriptors",
            AcceptFailure::OutOfMemory => "out of memory",
            _ => "failed",
        };
        let mut line = format!("accept: {what} ({detail}); still listening, retrying");
        if self.suppressed > 0 {
            line.push_str(&format!(
                " ({} more since the last report)",
                self.suppressed
            ));
        }
        self.last_logged = Some(now);
        self.suppressed = 0;
        AcceptAction {
            pause,
            log: Some(line),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_clock::t0;

    #[test]
    fn descriptor_exhaustion_pauses_and_logs_without_flooding_spec_5() {
        let now = t0();
        let mut b = AcceptBackoff::new();
        let a = b.handle_failure(now, AcceptFailure::OutOfDescriptors, "Too many open files");
        assert_eq!(a.pause, Some(EXHAUSTED_PAUSE));
        // The first report has nothing suppressed to tell of.
        assert_eq!(
            a.log.as_deref(),
            Some(
                "accept: out of file descriptors (Too many open files); still listening, retrying"
            )
        );
        for k in 1..50 {
            let a = b.handle_failure(
                now + Duration::from_millis(100 * k),
                AcceptFailure::OutOfDescriptors,
                "x",
            );
            assert_eq!(a.log, None);
            assert_eq!(a.pause, Some(EXHAUSTED_PAUSE));
        }
        let a = b.handle_failure(now + LOG_INTERVAL, AcceptFailure::OutOfDescriptors, "x");
        assert!(a.log.unwrap().ends_with("(49 more since the last report)"));
    }

    /// Out of memory is exhaustion too, said as such; an error plug does not
    /// know gets a short pause, so it cannot spin a core.
    #[test]
    fn memory_and_unknown_errors_are_named_and_paused_spec_5() {
        let mut b = AcceptBackoff::new();
        let a = b.handle_failure(t0(), AcceptFailure::OutOfMemory, "Cannot allocate memory");
        assert_eq!(a.pause, Some(EXHAUSTED_PAUSE));
        assert_eq!(
            a.log.as_deref(),
            Some("accept: out of memory (Cannot allocate memory); still listening, retrying")
        );
        let mut b = AcceptBackoff::new();
        let a = b.handle_failure(t0(), AcceptFailure::Other, "Protocol error");
        assert_eq!(a.pause, Some(Duration::from_millis(10)));
        assert_eq!(
            a.log.as_deref(),
            Some("accept: failed (Protocol error); still listening, retrying")
        );
    }

    #[test]
    fn a_vanished_client_is_not_news_spec_5() {
        let mut b = AcceptBackoff::new();
        let a = b.handle_failure(
            t0(),
            AcceptFailure::ClientGone,
            "Software caused connection abort",
        );
        assert_eq!(
            a,
            AcceptAction {
                pause: None,
                log: None
            }
        );
    }
}
