//! The counters behind the SIGUSR1 state dump (OPT-6) and the text of its lines.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::connection::relay::RelayOutcome;
use crate::forwarder::admission::Refusal;
use crate::forwarder::select::{Balancer, DestId, Health};

/// The counts of one destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DestinationStats {
    /// Connections to it open now.
    pub open: u64,
    /// Connections that reached it.
    pub total: u64,
    /// Connects to it (or CONNECT exchanges) that failed for a client.
    pub connect_failures: u64,
    /// Bytes received from clients of closed connections (the session lines' IN).
    pub from_client: u64,
    /// Bytes received from it, of closed connections (the session lines' OUT).
    pub from_destination: u64,
}

/// The upper bounds, in seconds, of the connection-duration histogram's
/// buckets (the `+Inf` bucket is the count).
pub const DURATION_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
    3600.0,
];

/// How long connections that reached a destination lasted, accept to close.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DurationHistogram {
    /// Per bucket of [`DURATION_BUCKETS`]: connections no longer than its bound
    /// (not cumulative; those longer than every bound are in `count` only).
    pub buckets: [u64; DURATION_BUCKETS.len()],
    /// The sum of the durations, in microseconds (exact, as the session lines).
    pub sum_micros: u128,
    /// How many.
    pub count: u64,
}

impl DurationHistogram {
    /// Counts one connection that lasted `d`.
    pub(crate) fn observe(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = DURATION_BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i] += 1;
        }
        self.sum_micros += d.as_micros();
        self.count += 1;
    }
}

/// Clients refused, by why (OPT-3, CONN-1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefusedStats {
    /// By the accept rules.
    pub rules: u64,
    /// By `--max-conns`.
    pub max_conns: u64,
    /// By `--max-conns-per-ip`.
    pub max_conns_per_ip: u64,
}

impl RefusedStats {
    /// All refusals.
    pub fn total(&self) -> u64 {
        self.rules + self.max_conns + self.max_conns_per_ip
    }
}

/// Connection counts of one listener, overall and per destination.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Per destination, by identity: a reload keeps a staying destination's
    /// counts (OPT-15) whatever its new place.
    pub destinations: BTreeMap<DestId, DestinationStats>,
    /// Clients admitted.
    pub accepted: u64,
    /// Clients refused.
    pub refused: RefusedStats,
    /// Admitted clients that reached no destination.
    pub failed: u64,
    /// Durations of connections that reached a destination.
    pub durations: DurationHistogram,
}

impl Stats {
    /// Creates zeroed counters for `destinations` destinations, identified by
    /// their positions (as [`Balancer::new`] identifies them).
    pub fn new(destinations: usize) -> Self {
        Stats {
            destinations: (0..destinations)
                .map(|i| (DestId(i), DestinationStats::default()))
                .collect(),
            ..Stats::default()
        }
    }

    /// After a reload (OPT-15): counters for the destinations `ids` names, the
    /// ones that stayed keeping theirs.
    pub(crate) fn reconfigure(&mut self, ids: impl Iterator<Item = DestId>) {
        let mut old = std::mem::take(&mut self.destinations);
        self.destinations = ids
            .map(|id| (id, old.remove(&id).unwrap_or_default()))
            .collect();
    }

    /// The counts of `id` (zero for one not known).
    pub fn of(&self, id: DestId) -> DestinationStats {
        self.destinations.get(&id).copied().unwrap_or_default()
    }

    /// Counts a client that was admitted. The open count is not kept here: the
    /// admission's is the one count of open connections (FAULT-5).
    pub fn handle_accepted(&mut self) {
        self.accepted += 1;
    }

    /// Counts a client refused by the rules or a limit.
    pub(crate) fn handle_refused(&mut self, why: &Refusal) {
        match why {
            Refusal::Rules => self.refused.rules += 1,
            Refusal::Capacity { .. } => self.refused.max_conns += 1,
            Refusal::PerClient { .. } => self.refused.max_conns_per_ip += 1,
        }
    }

    /// Counts a connect to `dest` that failed for a client (not a health check).
    pub(crate) fn handle_connect_failed(&mut self, dest: DestId) {
        if let Some(d) = self.destinations.get_mut(&dest) {
            d.connect_failures += 1;
        }
    }

    /// Counts a connection that reached `dest`.
    pub(crate) fn handle_established(&mut self, dest: DestId) {
        if let Some(d) = self.destinations.get_mut(&dest) {
            d.open += 1;
            d.total += 1;
        }
    }

    /// Counts the end of an admitted connection that lasted `duration`: with the
    /// destination it reached and its relay outcome, or with none when every
    /// destination failed.
    pub(crate) fn handle_closed(
        &mut self,
        reached: Option<DestId>,
        outcome: Option<&RelayOutcome>,
        duration: Duration,
    ) {
        let Some(reached) = reached else {
            self.failed += 1;
            return;
        };
        // A destination a reload removed since has no counts left to take
        // the bytes; the connection still reached it (OPT-15).
        if let Some(d) = self.destinations.get_mut(&reached) {
            d.open = d.open.saturating_sub(1);
            if let Some(o) = outcome {
                d.from_client += o.from_client;
                d.from_destination += o.from_destination;
            }
        }
        self.durations.observe(duration);
    }

    /// The dump's lines at `now` with `open` connections open: one per destination,
    /// `destination ADDR:PORT healthy|unhealthy[ since SECONDS][ draining] open N
    /// total N in N out N`, then `summary open N accepted N refused N failed N`.
    pub fn report(&self, now: Instant, balancer: &Balancer, open: usize) -> Vec<String> {
        let mut lines: Vec<String> = balancer
            .destinations()
            .iter()
            .zip(balancer.ids())
            .map(|(dest, id)| {
                let d = self.of(id);
                let health = match balancer.health(id) {
                    Some(Health::Unhealthy { since }) => {
                        // Since the outage began, not the last failed retry or probe.
                        let began = balancer.down_since(id).unwrap_or(since);
                        format!(
                            "unhealthy since {}",
                            now.saturating_duration_since(began).as_secs()
                        )
                    }
                    _ => "healthy".to_string(),
                };
                let draining = if dest.attributes.drain {
                    " draining"
                } else {
                    ""
                };
                format!(
                    "destination {dest} {health}{draining} open {} total {} in {} out {}",
                    d.open, d.total, d.from_client, d.from_destination
                )
            })
            .collect();
        lines.push(format!(
            "summary open {} accepted {} refused {} failed {}",
            open,
            self.accepted,
            self.refused.total(),
            self.failed
        ));
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::addr::Destination;
    use crate::connection::relay::RelayEnd;
    use crate::forwarder::select::SelectPolicy;
    use std::time::Duration;

    use crate::test_clock::t0;

    #[test]
    fn unhealthy_since_counts_from_the_outage_not_the_last_probe_opt_6_opt_10() {
        let now = t0();
        let dests = vec![Destination::parse("10.0.0.5:80", 1, false).unwrap()];
        let mut b = Balancer::new(dests, SelectPolicy::default());
        let s = Stats::new(1);
        for k in 0..30 {
            b.handle_connect_failed(now + Duration::from_secs(k), DestId(0), "refused");
        }
        let report = s.report(now + Duration::from_secs(30), &b, 0);
        assert!(report[0].contains("unhealthy since 30 "), "{report:?}");
        b.handle_connected(now + Duration::from_secs(31), DestId(0));
        b.handle_connect_failed(now + Duration::from_secs(40), DestId(0), "refused");
        let report = s.report(now + Duration::from_secs(45), &b, 0);
        assert!(
            report[0].contains("unhealthy since 5 "),
            "a new outage: {report:?}"
        );
    }

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
        s.handle_refused(&Refusal::Rules);
        s.handle_established(DestId(0));
        s.handle_established(DestId(0));
        let out = RelayOutcome {
            from_client: 5,
            from_destination: 7,
            spliced: 0,
            end: RelayEnd::Finished,
        };
        s.handle_closed(Some(DestId(0)), Some(&out), Duration::from_millis(20));
        s.handle_closed(None, None, Duration::from_secs(1));
        assert_eq!(s.durations.count, 1, "only connections that reached one");
        assert_eq!(s.durations.buckets[2], 1, "in the 0.025 s bucket");
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

    /// OPT-15: a destination that stays keeps its counts, a new one counts
    /// from zero, a gone one's counts go; a connection that reached a
    /// destination removed meanwhile still reached one (not `failed`).
    #[test]
    fn a_reload_keeps_new_and_gone_destinations_counts_apart_opt_15() {
        let mut s = Stats::new(2);
        s.handle_established(DestId(0));
        s.handle_established(DestId(1));
        s.reconfigure([DestId(1), DestId(5)].into_iter());
        assert_eq!(s.of(DestId(1)).total, 1, "kept");
        s.handle_established(DestId(5));
        assert_eq!(s.of(DestId(5)).total, 1, "a new destination counts");
        assert_eq!(s.of(DestId(0)).total, 0, "a gone one's counts go");
        assert_eq!(s.destinations.len(), 2);
        s.handle_closed(Some(DestId(0)), None, Duration::from_millis(3));
        assert_eq!(s.failed, 0);
        assert_eq!(s.durations.count, 1);
    }
}
