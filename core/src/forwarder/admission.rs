//! Who gets in: the accept rules (CONN-1) and the connection limits of
//! `--max-conns` and `--max-conns-per-ip` (OPT-3), with the count of open
//! connections they need.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::forwarder::accept::{AcceptBackoff, AcceptFailure};
use crate::forwarder::{accept_next, AcceptNext};
use crate::reports::log::LogRecord;

use crate::config::addr::canonical_ip;
use crate::config::rules::AcceptRules;
use crate::reports::metrics::MAX_SCRAPES;

/// Descriptors kept back from connections for plug itself (stdio, listener, log,
/// reactor, session file) when deriving the default `--max-conns`.
pub const RESERVED_DESCRIPTORS: u64 = 16;

/// The most splice pipes plug holds at once: bulk flows need one per direction
/// only while bytes are in flight, so a few hundred serve many connections.
pub const MAX_PIPES: usize = 128;

/// Pipes the default budget sets aside for `usable` descriptors: one pipe (two
/// descriptors) per sixteen, at most [`MAX_PIPES`].
fn default_pipes(usable: u64) -> u64 {
    (usable / 16).min(MAX_PIPES as u64)
}

/// The default `--max-conns` for an open-file limit of `nofile` (FAULT-3): every
/// connection holds two sockets, and splice pipes have descriptors of their own
/// set aside, so an admitted client is never dropped for lack of descriptors.
pub(crate) fn default_max_conns(nofile: u64) -> usize {
    let usable = nofile.saturating_sub(RESERVED_DESCRIPTORS);
    let for_connections = usable.saturating_sub(2 * default_pipes(usable)) / 2;
    usize::try_from(for_connections)
        .unwrap_or(usize::MAX)
        .max(1)
}

/// How many splice pipes may be open at once when `max_conns` connections (each
/// two sockets) share an open-file limit of `nofile` (FAULT-3): what is left after
/// the connections, at most [`MAX_PIPES`]. Zero means every direction copies.
pub(crate) fn pipe_budget(nofile: u64, max_conns: usize) -> usize {
    let usable = nofile.saturating_sub(RESERVED_DESCRIPTORS);
    let conns = u64::try_from(max_conns).unwrap_or(u64::MAX);
    let left = usable.saturating_sub(conns.saturating_mul(2)) / 2;
    usize::try_from(left.min(MAX_PIPES as u64)).unwrap_or(0)
}

/// The splice pipes that may still be opened, shared by every connection of a
/// listener (FAULT-3): a direction takes one before it asks for a pipe and gives
/// it back when the pipe is closed; with none left it copies instead.
#[derive(Debug)]
pub struct PipeBudget {
    free: AtomicUsize,
}

impl PipeBudget {
    /// A budget of `pipes` pipes.
    pub fn new(pipes: usize) -> Self {
        PipeBudget {
            free: AtomicUsize::new(pipes),
        }
    }

    /// Takes one pipe from the budget; false when none is left.
    pub(crate) fn try_take(&self) -> bool {
        self.free
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Gives back a pipe taken with [`PipeBudget::try_take`].
    pub(crate) fn give_back(&self) {
        self.free.fetch_add(1, Ordering::AcqRel);
    }

    /// Pipes that may still be opened.
    pub fn free(&self) -> usize {
        self.free.load(Ordering::Acquire)
    }
}

/// What every listener of a process shares (OPT-3, FAULT-3): `--max-conns`
/// bounds all listeners together, and the descriptors left for splice pipes are
/// one budget. Atomic, so a listener's admission takes from it under its own
/// lock only.
#[derive(Debug)]
pub struct ProcessBudget {
    open: AtomicUsize,
    max_conns: usize,
    pipes: Arc<PipeBudget>,
    /// Scrape connections being served (FAULT-6: at most [`MAX_SCRAPES`]).
    scrapes: AtomicUsize,
    /// The `--metrics` listener's own accept backoff (§5, FAULT-1).
    scrape_backoff: Mutex<AcceptBackoff>,
}

impl ProcessBudget {
    /// The budget for `--max-conns` (`None`: `default_max_conns` of the
    /// open-file limit `nofile`), with pipes when the runtime splices.
    pub fn new(max_conns: Option<u32>, nofile: u64, splicing: bool) -> Self {
        let max_conns = max_conns.map_or_else(
            || default_max_conns(nofile),
            |n| usize::try_from(n).unwrap_or(usize::MAX),
        );
        let pipes = match splicing {
            true => pipe_budget(nofile, max_conns),
            false => 0,
        };
        ProcessBudget {
            open: AtomicUsize::new(0),
            max_conns,
            pipes: Arc::new(PipeBudget::new(pipes)),
            scrapes: AtomicUsize::new(0),
            scrape_backoff: Mutex::new(AcceptBackoff::new()),
        }
    }

    /// Decides what to do after accept on the `--metrics` listener failed at
    /// `now` with `failure` (`detail`: the OS error, for the log), as for a
    /// listener of clients (§5, FAULT-1): what next, and the line to log.
    pub fn handle_scrape_accept_failed(
        &self,
        now: Instant,
        failure: AcceptFailure,
        detail: &str,
    ) -> (AcceptNext, Option<LogRecord>) {
        let mut backoff = self
            .scrape_backoff
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        accept_next(&mut backoff, now, failure, detail)
    }

    /// Decides about a connection to the `--metrics` listener (FAULT-6): true
    /// to serve it (report its end with [`ProcessBudget::handle_scrape_closed`]),
    /// false to close it at once because [`MAX_SCRAPES`] are being served, so a
    /// flood of scrapes never takes descriptors or threads from clients.
    pub fn handle_scrape_accepted(&self) -> bool {
        self.scrapes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_SCRAPES).then_some(n + 1)
            })
            .is_ok()
    }

    /// Reports that a scrape admitted by
    /// [`ProcessBudget::handle_scrape_accepted`] has ended.
    pub fn handle_scrape_closed(&self) {
        let _ = self
            .scrapes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// The `--max-conns` in force.
    pub fn max_conns(&self) -> usize {
        self.max_conns
    }

    /// Connections open on every listener together.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// The splice pipes every connection shares.
    pub fn pipes(&self) -> Arc<PipeBudget> {
        Arc::clone(&self.pipes)
    }

    fn try_take(&self) -> bool {
        let max = self.max_conns;
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    fn give_back(&self) {
        let _ = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
}

/// Why a client was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No accept rule matches (CONN-1).
    Rules,
    /// `--max-conns` connections are open.
    Capacity {
        /// The limit.
        limit: usize,
    },
    /// This client already has `--max-conns-per-ip` connections open.
    PerClient {
        /// The limit.
        limit: usize,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Rules => f.write_str("no accept rule matches"),
            Refusal::Capacity { limit } => write!(f, "{limit} connections open (--max-conns)"),
            Refusal::PerClient { limit } => {
                write!(
                    f,
                    "{limit} connections open from this address (--max-conns-per-ip)"
                )
            }
        }
    }
}

/// The admission state of one listener.
#[derive(Debug)]
pub struct Admission {
    rules: AcceptRules,
    budget: Arc<ProcessBudget>,
    max_per_client: Option<usize>,
    open: usize,
    per_client: BTreeMap<IpAddr, usize>,
}

impl Admission {
    /// Creates it from the accept rules, the per-client limit and the budget
    /// every listener shares.
    pub fn new(
        rules: AcceptRules,
        max_per_client: Option<u32>,
        budget: Arc<ProcessBudget>,
    ) -> Self {
        let to_usize = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
        Admission {
            rules,
            budget,
            max_per_client: max_per_client.map(to_usize),
            open: 0,
            per_client: BTreeMap::new(),
        }
    }

    /// The connection limit in force (of all listeners together).
    pub fn max_conns(&self) -> usize {
        self.budget.max_conns()
    }

    /// Takes new accept rules and per-client limit (a reload, OPT-15); the
    /// connections open stay counted.
    pub(crate) fn reconfigure(&mut self, rules: AcceptRules, max_per_client: Option<u32>) {
        self.rules = rules;
        self.max_per_client = max_per_client.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    }

    /// Connections of this listener admitted and not yet released.
    pub fn open(&self) -> usize {
        self.open
    }

    /// Decides about a client just accepted. On `Ok` it counts as open until
    /// [`Admission::release`]; on `Err` close it at once, contacting no destination.
    pub fn admit(&mut self, client: IpAddr) -> Result<(), Refusal> {
        let client = canonical_ip(client);
        if !self.rules.allows(client) {
            return Err(Refusal::Rules);
        }
        let mine = self.per_client.get(&client).copied().unwrap_or(0);
        let over_own = self.max_per_client.filter(|&limit| mine >= limit);
        if !self.budget.try_take() {
            return Err(Refusal::Capacity {
                limit: self.budget.max_conns(),
            });
        }
        if let Some(limit) = over_own {
            self.budget.give_back();
            return Err(Refusal::PerClient { limit });
        }
        self.open += 1;
        self.per_client.insert(client, mine + 1);
        Ok(())
    }

    /// Records that an admitted client's connection has ended.
    pub fn release(&mut self, client: IpAddr) {
        let client = canonical_ip(client);
        if self.open > 0 {
            self.budget.give_back();
        }
        self.open = self.open.saturating_sub(1);
        if let Some(n) = self.per_client.get_mut(&client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_client.remove(&client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::rules::AcceptRule;
    use proptest::prelude::*;

    fn budget(max_conns: Option<u32>) -> Arc<ProcessBudget> {
        Arc::new(ProcessBudget::new(max_conns, 1024, true))
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn default_limit_follows_the_descriptor_limit_opt_3() {
        assert_eq!(default_max_conns(20_000), 9_864);
        assert_eq!(default_max_conns(1024), 441);
        assert_eq!(default_max_conns(8), 1);
        let a = Admission::new(AcceptRules::default(), None, budget(None));
        assert_eq!(a.max_conns(), 441);
    }

    #[test]
    fn connections_and_pipes_fit_the_descriptor_limit_fault_3() {
        for nofile in [20u64, 64, 100, 1024, 4096, 20_000, 1 << 20] {
            let conns = default_max_conns(nofile);
            let pipes = pipe_budget(nofile, conns);
            let usable = nofile.saturating_sub(RESERVED_DESCRIPTORS);
            if usable >= 2 {
                assert!(
                    2 * conns as u64 + 2 * pipes as u64 <= usable,
                    "nofile {nofile}"
                );
            }
        }
        assert_eq!(pipe_budget(20_000, 9_864), MAX_PIPES);
        assert_eq!(
            pipe_budget(1024, 10_000),
            0,
            "an explicit huge limit leaves none"
        );
        let b = PipeBudget::new(2);
        assert!(b.try_take() && b.try_take());
        assert!(!b.try_take());
        b.give_back();
        assert_eq!(b.free(), 1);
    }

    #[test]
    fn rules_come_first_conn_1() {
        let rules = AcceptRules::new(vec![AcceptRule::parse("10.0.0.0/30").unwrap()]);
        let mut a = Admission::new(rules, None, budget(Some(1)));
        assert_eq!(a.admit(ip(9)), Err(Refusal::Rules));
        assert_eq!(a.admit(ip(1)), Ok(()));
        assert_eq!(
            a.admit(ip(9)),
            Err(Refusal::Rules),
            "refused by rules even when full"
        );
        assert_eq!(a.open(), 1);
    }

    #[test]
    fn limits_refuse_the_excess_and_capacity_returns_opt_3() {
        let mut a = Admission::new(AcceptRules::default(), Some(2), budget(Some(3)));
        assert_eq!(a.admit(ip(1)), Ok(()));
        assert_eq!(a.admit(ip(1)), Ok(()));
        assert_eq!(a.admit(ip(1)), Err(Refusal::PerClient { limit: 2 }));
        assert_eq!(a.admit(ip(2)), Ok(()));
        assert_eq!(a.admit(ip(3)), Err(Refusal::Capacity { limit: 3 }));
        a.release(ip(1));
        assert_eq!(a.admit(ip(3)), Ok(()));
        // The mapped form of a client is the same client: 10.0.0.1 has one open,
        // so one more is allowed and then no more.
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        a.release(ip(3));
        assert_eq!(a.admit(mapped), Ok(()));
        a.release(ip(2));
        assert_eq!(a.admit(mapped), Err(Refusal::PerClient { limit: 2 }));
        assert!(Refusal::Capacity { limit: 3 }
            .to_string()
            .contains("--max-conns"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// OPT-3: over any sequence of admits and releases, the open count and the
        /// per-client counts never exceed their limits and match a plain model.
        #[test]
        fn counts_match_a_model(
            max in 1u32..6,
            per in proptest::option::of(1u32..4),
            ops in proptest::collection::vec((any::<bool>(), 0u8..4), 0..120),
        ) {
            let mut a = Admission::new(AcceptRules::default(), per, budget(Some(max)));
            let mut model: Vec<u8> = vec![];
            for (admit, c) in ops {
                if admit {
                    let mine = model.iter().filter(|&&m| m == c).count();
                    let want = model.len() < max as usize && per.is_none_or(|p| mine < p as usize);
                    prop_assert_eq!(a.admit(ip(c)).is_ok(), want);
                    if want {
                        model.push(c);
                    }
                } else if let Some(at) = model.iter().position(|&m| m == c) {
                    model.remove(at);
                    a.release(ip(c));
                }
                prop_assert_eq!(a.open(), model.len());
            }
        }
    }

    #[test]
    fn max_conns_bounds_every_listener_together_opt_3_opt_13() {
        let shared = budget(Some(2));
        let mut a = Admission::new(AcceptRules::default(), None, Arc::clone(&shared));
        let mut b = Admission::new(AcceptRules::default(), None, Arc::clone(&shared));
        assert_eq!(a.admit(ip(1)), Ok(()));
        assert_eq!(b.admit(ip(2)), Ok(()));
        assert_eq!(shared.open(), 2);
        assert_eq!(a.admit(ip(3)), Err(Refusal::Capacity { limit: 2 }));
        assert_eq!((a.open(), b.open()), (1, 1), "each listener counts its own");
        b.release(ip(2));
        assert_eq!(shared.open(), 1);
        assert_eq!(
            a.admit(ip(3)),
            Ok(()),
            "a slot freed on one is taken on the other"
        );
        // A release with nothing open gives nothing back that was not taken.
        b.release(ip(9));
        assert_eq!(shared.open(), 2);
    }

    #[test]
    fn a_reload_changes_the_rules_and_keeps_the_counts_opt_15() {
        let rules = AcceptRules::new(vec![AcceptRule::parse("10.0.0.1").unwrap()]);
        let mut a = Admission::new(rules, None, budget(None));
        assert_eq!(a.admit(ip(1)), Ok(()));
        assert_eq!(a.admit(ip(2)), Err(Refusal::Rules));
        let wider = AcceptRules::new(vec![AcceptRule::parse("10.0.0.0/24").unwrap()]);
        a.reconfigure(wider, Some(1));
        assert_eq!(a.open(), 1, "the open connection stays counted");
        assert_eq!(a.admit(ip(2)), Ok(()), "the new rules admit it");
        assert_eq!(
            a.admit(ip(1)),
            Err(Refusal::PerClient { limit: 1 }),
            "the new per-client limit counts the connection opened before"
        );
    }

    #[test]
    fn a_failed_metrics_accept_has_a_backoff_of_its_own_fault_1() {
        let b = budget(None);
        let now = crate::test_clock::t0();
        let (next, log) = b.handle_scrape_accept_failed(now, AcceptFailure::WouldBlock, "EAGAIN");
        assert_eq!((next, log), (AcceptNext::WaitReadable, None));
        let (next, log) =
            b.handle_scrape_accept_failed(now, AcceptFailure::OutOfDescriptors, "EMFILE");
        assert!(matches!(next, AcceptNext::Pause(_)), "{next:?}");
        assert!(log.is_some(), "exhaustion is logged");
    }
}
