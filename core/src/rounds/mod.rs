//! Work that comes in rounds, with no input to trigger it: the host-name lookups
//! of `--resolve` (OPT-11) and the health checks of `--health-check` (OPT-10).

pub mod lookup;
pub mod probe;

use std::time::{Duration, Instant};

/// When the next round is due: at once, then every `every`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rounds {
    every: Duration,
    due: Option<Instant>,
}

impl Rounds {
    /// A schedule whose first round is due at once.
    pub fn new(every: Duration) -> Self {
        Rounds { every, due: None }
    }

    /// How often rounds come.
    pub(crate) fn period(&self) -> Duration {
        self.every
    }

    /// True when a round is due at `now`; the next is then due `every` later.
    /// Idempotent within a round: a second call at the same `now` says false.
    pub fn poll(&mut self, now: Instant) -> bool {
        if self.due.is_some_and(|due| now < due) {
            return false;
        }
        self.due = now.checked_add(self.every);
        true
    }

    /// When the next round is due (`None`: at once).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.due
    }
}

/// What the worker that runs one kind of rounds (lookups, probes) does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterRound {
    /// Sleep until this instant (`None`: no round is due, only a reload can
    /// wake it), or until a reload.
    Wait(Option<Instant>),
    /// No round will ever be due: the worker ends.
    End,
}

/// Whether a worker for one kind of rounds is wanted at all: some listener's
/// line has them, or a reload of `--config` may give some (OPT-15).
pub fn wanted(some_line_has_them: bool, reloadable: bool) -> bool {
    some_line_has_them || reloadable
}

/// After a round: `next` is the soonest next round of any listener. Without
/// `--config` the lines never change, so a worker with nothing due ends.
pub fn after_round(next: Option<Instant>, reloadable: bool) -> AfterRound {
    match (next, reloadable) {
        (None, false) => AfterRound::End,
        (next, _) => AfterRound::Wait(next),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_clock::t0;

    #[test]
    fn a_worker_ends_only_when_no_round_can_come_opt_10_opt_11_opt_15() {
        let later = t0() + Duration::from_secs(5);
        assert_eq!(
            after_round(Some(later), false),
            AfterRound::Wait(Some(later))
        );
        assert_eq!(after_round(None, false), AfterRound::End);
        // With --config a reload may add rounds: wait for it.
        assert_eq!(after_round(None, true), AfterRound::Wait(None));
        assert_eq!(
            after_round(Some(later), true),
            AfterRound::Wait(Some(later))
        );
        assert!(wanted(true, false) && wanted(false, true));
        assert!(!wanted(false, false));
    }

    #[test]
    fn rounds_come_at_once_then_every_secs_opt_11() {
        let now = t0();
        let mut s = Rounds::new(Duration::from_secs(30));
        assert_eq!(s.poll_timeout(), None);
        assert!(s.poll(now));
        assert!(!s.poll(now), "one round per due time");
        assert_eq!(s.poll_timeout(), Some(now + Duration::from_secs(30)));
        assert!(!s.poll(now + Duration::from_secs(29)));
        // A late wake-up (the clock jumped) does one round, not a backlog.
        assert!(s.poll(now + Duration::from_secs(300)));
        assert!(!s.poll(now + Duration::from_secs(300)));
        assert_eq!(s.poll_timeout(), Some(now + Duration::from_secs(330)));
    }
}
