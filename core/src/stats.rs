//! The counters behind the SIGUSR1 state dump (OPT-6) and the text of its lines.

use std::time::Instant;

use crate::relay::RelayOutcome;
use crate::select::{Balancer, DestId, Health};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct DestinationStats {
    open: u64,
    total: u64,
    from_client: u64,
    from_destination: u64,
}

/// Connection counts of one listener, overall and per destination.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    destinations: Vec<DestinationStats>,
    accepted: u64,
    refused: u64,
    failed: u64,
}

impl Stats {
    /// Creates zeroed counters for `destinations` destinations.
    pub fn new(destinations: usize) -> Self {
        Stats {
            destinations: vec![DestinationStats::default(); destinations],
            ..Stats::default()
        }
    }

    /// Counts a client that was admitted. The open count is not kept here: the
    /// admission's is the one count of open connections (FAULT-5).
    pub fn handle_accepted(&mut self) {
        self.accepted += 1;
    }

    /// Counts a client refused by the rules or a limit.
    pub fn handle_refused(&mut self) {
        self.refused += 1;
    }

    /// Counts a connection that reached `dest`.
    pub fn handle_established(&mut self, dest: DestId) {
        if let Some(d) = self.destinations.get_mut(dest.index()) {
            d.open += 1;
            d.total += 1;
        }
    }

    /// Counts the end of an admitted connection: with the destination it reached
    /// and its relay outcome, or with none when every destination failed.
    pub fn handle_closed(&mut self, reached: Option<DestId>, outcome: Option<&RelayOutcome>) {
        match reached.and_then(|r| self.destinations.get_mut(r.index())) {
            Some(d) => {
                d.open = d.open.saturating_sub(1);
                if let Some(o) = outcome {
                    d.from_client += o.from_client;
                    d.from_destination += o.from_destination;
                }
            }
            None => self.failed += 1,
        }
    }

    /// The dump's lines at `now` with `open` connections open: one per destination,
    /// `destination ADDR:PORT healthy|unhealthy[ since SECONDS] open N total N in N out N`,
    /// then `summary open N accepted N refused N failed N`.
    pub fn report(&self, now: Instant, balancer: &Balancer, open: usize) -> Vec<String> {
        let mut lines: Vec<String> = balancer
            .destinations()
            .iter()
            .enumerate()
            .map(|(i, dest)| {
                let d = self.destinations.get(i).copied().unwrap_or_default();
                let health = match balancer.health(DestId(i)) {
                    Some(Health::Unhealthy { since }) => {
                        format!(
                            "unhealthy since {}",
                            now.saturating_duration_since(since).as_secs()
                        )
                    }
                    _ => "healthy".to_string(),
                };
                format!(
                    "destination {dest} {health} open {} total {} in {} out {}",
                    d.open, d.total, d.from_client, d.from_destination
                )
            })
            .collect();
        lines.push(format!(
            "summary open {} accepted {} refused {} failed {}",
            open, self.accepted, self.refused, self.failed
        ));
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Destination;
    use crate::relay::RelayEnd;
    use crate::select::SelectPolicy;
    use std::time::Duration;

    use crate::test_clock::t0;

    #[test]
    fn report_lines_opt_6() {
        let now = t0();
        let dests = ["10.0.0.5:80", "[::1]:81"]
            .iter()
            .map(|w| Destination::parse(w, 1, false).unwrap())
            .collect();
        let mut b = Balancer::new(dests, SelectPolicy::default());
        let mut s = Stats::new(2);
        for _ in 0..4 {
            s.handle_accepted();
        }
        s.handle_refused();
        s.handle_established(DestId(0));
        s.handle_established(DestId(0));
        let out = RelayOutcome {
            from_client: 5,
            from_destination: 7,
            spliced: 0,
            end: RelayEnd::Finished,
        };
        s.handle_closed(Some(DestId(0)), Some(&out));
        s.handle_closed(None, None);
        b.handle_connect_failed(now, DestId(1), "refused");
        assert_eq!(
            s.report(now + Duration::from_secs(42), &b, 2),
            [
                "destination 10.0.0.5:80 healthy open 1 total 2 in 5 out 7",
                "destination [::1]:81 unhealthy since 42 open 0 total 0 in 0 out 0",
                "summary open 2 accepted 4 refused 1 failed 1",
            ]
        );
    }
}
