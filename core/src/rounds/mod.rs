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
    pub fn period(&self) -> Duration {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_clock::t0;

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
