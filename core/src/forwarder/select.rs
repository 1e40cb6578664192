//! Destination selection: round robin or first-healthy (CONN-2), health with `-r`
//! (CONN-3), the per-client attempt plan that fails over (CONN-4), and the sticky
//! client table of `-f`/`-t` (CONN-5).
//!
//! One [`Balancer`] is shared by every connection of a listener (adapters keep it
//! behind a lock); each connection holds its own [`AttemptPlan`]. Expiry is lazy:
//! retry times and sticky ages are compared with `now` when the next call arrives.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::addr::{canonical_ip, Destination};
use crate::forwarder::rendezvous;
use crate::reports::log::{LogKind, LogLevel, LogRecord};
use crate::shared::Choice;

/// The bound on the sticky table when none is configured (2.5.5 used 16384).
pub const DEFAULT_STICKY_CAPACITY: usize = 16384;

/// The sticky timeout when `-t` is not given: one hour, as 2.5.5.
pub const DEFAULT_STICKY_TIMEOUT: Duration = Duration::from_secs(3600);

/// A destination's position on the command line, counting from zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DestId(pub usize);

impl DestId {
    /// The zero-based command-line position.
    pub fn index(self) -> usize {
        self.0
    }
}

/// How a new client's destination is chosen (CONN-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Rotate through the destinations in command-line order (the default).
    RoundRobin,
    /// Always the first healthy destination in command-line order (`-o`).
    FirstHealthy,
}

/// The sticky-client settings of `-f` (CONN-5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StickyPolicy {
    /// How long a client keeps its destination after its previous connection (`-t`).
    pub timeout: Duration,
    /// The most clients remembered at once.
    pub capacity: usize,
}

/// Every selection setting, from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelectPolicy {
    /// Rotation or first-healthy.
    pub order: Order,
    /// `-r`: how long a failed destination stays out; `None` means until all failed.
    pub retry: Option<Duration>,
    /// `-f`: keep clients on their destination.
    pub sticky: Option<StickyPolicy>,
    /// `--hash` (with `-f`, OPT-12): the sticky choice by rendezvous hashing of
    /// the client address instead of the table; `sticky`'s timeout is unused.
    pub hash: bool,
}

impl Default for SelectPolicy {
    fn default() -> Self {
        SelectPolicy {
            order: Order::RoundRobin,
            retry: None,
            sticky: None,
            hash: false,
        }
    }
}

/// What the balancer noticed, for the log; drained with `Balancer::poll_event`.
/// Destinations are named by address, as the operator wrote them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectEvent {
    /// A destination that was up failed a connect (or a CONNECT exchange, or a
    /// health check) and is out of rotation (CONN-3). Reported once per outage,
    /// not for every client that finds it still down.
    Down {
        /// The destination.
        dest: Destination,
        /// Why, as the failed attempt said.
        reason: String,
    },
    /// A destination reported down was reached again.
    Up {
        /// The destination.
        dest: Destination,
    },
    /// A failed destination's `-r` time passed; it is being tried again.
    Retrying {
        /// The destination.
        dest: Destination,
    },
    /// Every destination was unhealthy, so all were marked healthy again (CONN-2).
    AllReset,
    /// Every destination is draining (OPT-16): a new client was closed at once.
    AllDraining,
    /// A host name resolved to addresses other than before (OPT-11).
    Resolved {
        /// The destination.
        dest: Destination,
        /// The addresses, space-separated, in the order they are tried.
        addresses: String,
    },
    /// The sticky table is full: new clients are balanced normally until it has room
    /// (reported once each time it fills, not once per client).
    StickyTableFull {
        /// The table's bound.
        capacity: usize,
    },
}

/// A destination's health as seen at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// In rotation.
    Healthy,
    /// Out of rotation since a failed connect at `since`.
    Unhealthy {
        /// When the failure that took it out happened.
        since: Instant,
    },
}

/// One client's way through the destinations (CONN-4): each destination is tried at
/// most once; when none is left the client is closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptPlan {
    client: IpAddr,
    /// The destinations given so far, by identity: a reload between two attempts
    /// neither forgets nor repeats one.
    tried: Vec<DestId>,
}

impl AttemptPlan {
    /// A plan for `client` with nothing tried yet.
    pub fn new(client: IpAddr) -> Self {
        AttemptPlan {
            client: canonical_ip(client),
            tried: Vec::new(),
        }
    }

    /// The client address this plan is for (canonical: IPv4-mapped counts as IPv4).
    pub fn client(&self) -> IpAddr {
        self.client
    }

    /// How many destinations this client has been given so far.
    pub(crate) fn attempts(&self) -> usize {
        self.tried.len()
    }

    /// True when this client has already been given `dest`.
    pub(crate) fn has_tried(&self, dest: DestId) -> bool {
        self.tried.contains(&dest)
    }
}

#[derive(Debug, Default)]
struct StickyTable {
    entries: BTreeMap<IpAddr, (DestId, Instant)>,
    by_age: BTreeSet<(Instant, IpAddr)>,
    full_reported: bool,
}

impl StickyTable {
    fn purge(&mut self, now: Instant, timeout: Duration) {
        while let Some(&(seen, client)) = self.by_age.first() {
            if now.saturating_duration_since(seen) <= timeout {
                break;
            }
            self.by_age.pop_first();
            self.entries.remove(&client);
        }
    }

    fn lookup(&self, client: IpAddr) -> Option<DestId> {
        self.entries.get(&client).map(|&(dest, _)| dest)
    }

    /// Records `client → dest` as of `now`; false when the table is full.
    fn record(&mut self, client: IpAddr, dest: DestId, now: Instant, capacity: usize) -> bool {
        if let Some(&(_, seen)) = self.entries.get(&client) {
            self.by_age.remove(&(seen, client));
        } else if self.entries.len() >= capacity {
            return false;
        }
        self.entries.insert(client, (dest, now));
        self.by_age.insert((now, client));
        true
    }

    /// Forgets every client of a destination that is gone (OPT-15).
    fn retain(&mut self, keep: impl Fn(DestId) -> bool) {
        let gone: Vec<(IpAddr, Instant)> = self
            .entries
            .iter()
            .filter(|(_, &(dest, _))| !keep(dest))
            .map(|(&client, &(_, seen))| (client, seen))
            .collect();
        for (client, seen) in gone {
            self.entries.remove(&client);
            self.by_age.remove(&(seen, client));
        }
    }
}

/// One destination and what the balancer knows of it.
#[derive(Debug, Clone)]
struct Entry {
    id: DestId,
    dest: Destination,
    health: Health,
    /// What the log last said of it: up (true) or down. Health flips back and
    /// forth with `-r` and the all-down reset without anything proven; this
    /// changes only when a connect succeeds or fails.
    reported_up: bool,
    /// When its current outage began: the start of the outage, which failed
    /// retries and health checks do not move (the `-r` clock in
    /// [`Health::Unhealthy`] they do move).
    down_since: Option<Instant>,
    /// Its part of its rendezvous weights (`--hash`).
    key: u64,
    /// Where it is reached: its address, or for a host name under `--resolve`
    /// the addresses the last lookup returned, in its order (OPT-11). Empty for
    /// a name not (yet) resolved, and for names given to a `-h` proxy.
    addresses: Arc<[SocketAddr]>,
    /// Its running score in smooth weighted round robin (OPT-16).
    current: i64,
}

impl Entry {
    fn new(id: DestId, dest: Destination) -> Self {
        Entry {
            id,
            key: rendezvous::destination_key(&dest),
            addresses: dest.socket_addr().into_iter().collect::<Vec<_>>().into(),
            dest,
            health: Health::Healthy,
            reported_up: true,
            down_since: None,
            current: 0,
        }
    }

    fn weight(&self) -> i64 {
        i64::from(self.dest.attributes.weight)
    }

    fn draining(&self) -> bool {
        self.dest.attributes.drain
    }
}

/// The shared selection state of one listener: destinations, their health, the
/// rotation cursor and the sticky table.
#[derive(Debug)]
pub struct Balancer {
    entries: Vec<Entry>,
    /// The destinations in order, as [`Balancer::destinations`] lends them.
    destinations: Vec<Destination>,
    cursor: usize,
    /// The identity the next new destination gets; never reused.
    next_id: usize,
    policy: SelectPolicy,
    sticky: StickyTable,
    events: VecDeque<SelectEvent>,
}

impl Balancer {
    /// Creates a balancer over `destinations` in command-line order, all healthy,
    /// rotation starting with the first; their identities are their positions.
    pub fn new(destinations: Vec<Destination>, policy: SelectPolicy) -> Self {
        let entries: Vec<Entry> = destinations
            .iter()
            .enumerate()
            .map(|(i, d)| Entry::new(DestId(i), d.clone()))
            .collect();
        Balancer {
            next_id: entries.len(),
            entries,
            destinations,
            cursor: 0,
            policy,
            sticky: StickyTable::default(),
            events: VecDeque::new(),
        }
    }

    /// Takes a new list of destinations and policy (a reload, OPT-15). A
    /// destination whose text is in the old list too (attributes aside) keeps
    /// its identity, health, addresses and sticky clients; a new one starts
    /// healthy with a new identity; sticky clients of one that is gone are
    /// forgotten.
    pub(crate) fn reconfigure(&mut self, destinations: Vec<Destination>, policy: SelectPolicy) {
        let mut old: Vec<Option<Entry>> = self.entries.drain(..).map(Some).collect();
        let mut entries = Vec::with_capacity(destinations.len());
        for dest in &destinations {
            let text = dest.to_string();
            let kept = old
                .iter_mut()
                .find(|e| e.as_ref().is_some_and(|e| e.dest.to_string() == text))
                .and_then(Option::take);
            let entry = match kept {
                Some(mut e) => {
                    e.dest = dest.clone();
                    e.current = 0;
                    e
                }
                None => {
                    let id = DestId(self.next_id);
                    self.next_id += 1;
                    Entry::new(id, dest.clone())
                }
            };
            entries.push(entry);
        }
        self.entries = entries;
        self.destinations = destinations;
        self.cursor = 0;
        self.policy = policy;
        let ids: Vec<DestId> = self.entries.iter().map(|e| e.id).collect();
        self.sticky.retain(|id| ids.contains(&id));
    }

    /// The destinations in command-line order.
    pub fn destinations(&self) -> &[Destination] {
        &self.destinations
    }

    /// The identity of each destination, in command-line order.
    pub fn ids(&self) -> impl Iterator<Item = DestId> + '_ {
        self.entries.iter().map(|e| e.id)
    }

    /// Where `id` is in command-line order now (`None`: it is gone).
    pub fn position(&self, id: DestId) -> Option<usize> {
        // Identities are positions until a reload; lists are short after one.
        match self.entries.get(id.0) {
            Some(e) if e.id == id => Some(id.0),
            _ => self.entries.iter().position(|e| e.id == id),
        }
    }

    fn entry(&self, id: DestId) -> Option<&Entry> {
        self.position(id).map(|i| &self.entries[i])
    }

    fn entry_mut(&mut self, id: DestId) -> Option<&mut Entry> {
        self.position(id).map(|i| &mut self.entries[i])
    }

    /// The destination `id` names, or `None` if it is gone.
    pub fn destination(&self, id: DestId) -> Option<&Destination> {
        self.entry(id).map(|e| &e.dest)
    }

    /// The addresses `id` is reached at, in the order to try them: its own, or
    /// what the last lookup of its name returned (empty: none known).
    pub fn addresses(&self, id: DestId) -> &[SocketAddr] {
        self.entry(id).map_or(&[], |e| &e.addresses[..])
    }

    /// `id` as a [`Choice`] for one attempt: its destination and addresses.
    pub(crate) fn choice(&self, id: DestId) -> Option<Choice> {
        self.entry(id).map(|e| Choice {
            dest: id,
            destination: e.dest.clone(),
            addresses: Arc::clone(&e.addresses),
        })
    }

    /// Takes the result of looking up `id`'s host name at `now` (OPT-11): new
    /// addresses make it eligible again if they differ from the old ones (the
    /// failed address may be gone), as does the first success after a failed
    /// lookup; a failed lookup (`Err`, or no address) takes it out of rotation as a
    /// failed connect would, keeping the addresses it had.
    pub fn handle_resolved(
        &mut self,
        now: Instant,
        id: DestId,
        result: Result<Vec<IpAddr>, String>,
    ) {
        let Some(entry) = self.entry_mut(id) else {
            return;
        };
        let dest = entry.dest.clone();
        let found: Result<Vec<SocketAddr>, String> = result.and_then(|ips| {
            let mut addrs: Vec<SocketAddr> = Vec::with_capacity(ips.len());
            for ip in ips {
                let a = SocketAddr::new(canonical_ip(ip), dest.port);
                if !addrs.contains(&a) {
                    addrs.push(a);
                }
            }
            match addrs.is_empty() {
                true => Err("no address".to_string()),
                false => Ok(addrs),
            }
        });
        match found {
            Ok(addrs) => {
                // Health belongs to the destination as written (OPT-11): the same
                // addresses in another order (DNS round robin) change nothing but
                // the order they are tried in. Only a new set of addresses, or the
                // first one found, earns a fresh chance.
                let known = &entry.addresses;
                let same_set =
                    addrs.len() == known.len() && addrs.iter().all(|a| known.contains(a));
                if !same_set {
                    let list: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
                    entry.health = Health::Healthy;
                    self.events.push_back(SelectEvent::Resolved {
                        dest,
                        addresses: list.join(" "),
                    });
                }
                if let Some(entry) = self.entry_mut(id) {
                    entry.addresses = addrs.into();
                }
            }
            Err(e) => {
                self.handle_connect_failed(now, id, &format!("cannot resolve {}: {e}", dest.host));
            }
        }
    }

    /// When `id`'s current outage began (`None`: it is not reported down): for the
    /// state dump, which says how long a destination has been out.
    pub(crate) fn down_since(&self, id: DestId) -> Option<Instant> {
        self.entry(id).and_then(|e| e.down_since)
    }

    /// The recorded health of `id` (an unhealthy one whose `-r` time has passed is
    /// still reported unhealthy until a client tries it).
    pub fn health(&self, id: DestId) -> Option<Health> {
        self.entry(id).map(|e| e.health)
    }

    /// The number of clients in the sticky table right now (expired entries that no
    /// call has purged yet included).
    #[cfg(test)]
    pub(crate) fn sticky_len(&self) -> usize {
        self.sticky.entries.len()
    }

    /// Starts the attempt plan for a newly accepted client; nothing is chosen yet.
    pub fn plan(&self, client: IpAddr) -> AttemptPlan {
        AttemptPlan::new(client)
    }

    /// True when position `i` may take a new client at `now`: not draining
    /// (OPT-16), and healthy or past its `-r` time (CONN-3).
    fn eligible(&self, i: usize, now: Instant) -> bool {
        let e = &self.entries[i];
        !e.draining()
            && match e.health {
                Health::Healthy => true,
                Health::Unhealthy { since } => match self.policy.retry {
                    Some(retry) => now.saturating_duration_since(since) >= retry,
                    None => false,
                },
            }
    }

    /// True when position `i` may be given to `plan`'s client now.
    fn open_to(&self, i: usize, plan: &AttemptPlan, now: Instant) -> bool {
        !plan.has_tried(self.entries[i].id) && self.eligible(i, now)
    }

    /// When no destination is eligible at all (every one that takes clients is
    /// unhealthy), all are marked healthy again (CONN-2) and the first untried
    /// one that takes clients is returned; `None` when none takes clients or
    /// the client has tried them all.
    fn reset_all(&mut self, plan: &AttemptPlan) -> Option<usize> {
        let untried = |e: &Entry| !plan.has_tried(e.id) && !e.draining();
        let i = self.entries.iter().position(untried)?;
        self.entries
            .iter_mut()
            .for_each(|e| e.health = Health::Healthy);
        self.events.push_back(SelectEvent::AllReset);
        Some(i)
    }

    /// Chooses the destination this client should try next, or `None` when it has
    /// tried every one it may (close the client then).
    ///
    /// Call once after [`Balancer::plan`], and again after each
    /// [`Balancer::handle_connect_failed`] for that plan. The first attempt of a
    /// known sticky client goes to its destination if that is still eligible;
    /// otherwise destinations rotate (or `-o` takes the first), skipping unhealthy
    /// ones, draining ones and ones this client tried. With weights (OPT-16) the
    /// rotation is smooth weighted round robin. When no destination at all is
    /// eligible, every one is marked healthy again and the first untried one is
    /// used, with rotation continuing after it (CONN-2). When every destination
    /// is draining, none is chosen.
    pub(crate) fn next_attempt(&mut self, now: Instant, plan: &mut AttemptPlan) -> Option<DestId> {
        let n = self.entries.len();
        if n == 0 || plan.attempts() >= n {
            return None;
        }
        if self.entries.iter().all(Entry::draining) {
            if plan.attempts() == 0 {
                self.events.push_back(SelectEvent::AllDraining);
            }
            return None;
        }
        if self.policy.hash {
            return self.next_by_weight(now, plan);
        }
        let sticky = self.policy.sticky;
        if let Some(policy) = sticky {
            self.sticky.purge(now, policy.timeout);
        }
        let remembered = match sticky {
            Some(_) if plan.attempts() == 0 => self.sticky.lookup(plan.client),
            _ => None,
        };
        let chosen = match remembered.and_then(|id| self.position(id)) {
            Some(i) if self.eligible(i, now) => i,
            _ => {
                let weighted = self.entries.iter().any(|e| e.weight() != 1);
                let found = match self.policy.order {
                    Order::RoundRobin if weighted => self.smooth_pick(now, plan),
                    Order::RoundRobin => {
                        let start = self.cursor % n;
                        (0..n)
                            .map(|k| (start + k) % n)
                            .find(|&i| self.open_to(i, plan, now))
                    }
                    Order::FirstHealthy => (0..n).find(|&i| self.open_to(i, plan, now)),
                };
                let i = match found {
                    Some(i) => i,
                    None if (0..n).any(|i| self.eligible(i, now)) => return None,
                    None => self.reset_all(plan)?,
                };
                if self.policy.order == Order::RoundRobin {
                    self.cursor = (i + 1) % n;
                }
                i
            }
        };
        let id = self.take(chosen, plan);
        if let Some(policy) = sticky {
            if self.sticky.record(plan.client, id, now, policy.capacity) {
                if self.sticky.entries.len() < policy.capacity {
                    self.sticky.full_reported = false;
                }
            } else if !self.sticky.full_reported {
                self.sticky.full_reported = true;
                self.events.push_back(SelectEvent::StickyTableFull {
                    capacity: policy.capacity,
                });
            }
        }
        Some(id)
    }

    /// Smooth weighted round robin (OPT-16, as nginx does it): every candidate's
    /// score grows by its weight, the highest is chosen (the first on a tie) and
    /// drops by the candidates' total weight. Over any W choices with the same
    /// candidates (W their total weight) each is chosen its weight times, spread.
    fn smooth_pick(&mut self, now: Instant, plan: &AttemptPlan) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.entries.len())
            .filter(|&i| self.open_to(i, plan, now))
            .collect();
        let total: i64 = candidates.iter().map(|&i| self.entries[i].weight()).sum();
        let mut best: Option<usize> = None;
        for &i in &candidates {
            let e = &mut self.entries[i];
            e.current += e.weight();
            if best.is_none_or(|b| self.entries[i].current > self.entries[b].current) {
                best = Some(i);
            }
        }
        if let Some(b) = best {
            self.entries[b].current -= total;
        }
        best
    }

    /// Gives position `i` to `plan`'s client: a destination out of rotation whose
    /// `-r` time has passed is being retried.
    fn take(&mut self, i: usize, plan: &mut AttemptPlan) -> DestId {
        let e = &mut self.entries[i];
        if let Health::Unhealthy { .. } = e.health {
            e.health = Health::Healthy;
            let dest = e.dest.clone();
            self.events.push_back(SelectEvent::Retrying { dest });
        }
        let id = self.entries[i].id;
        plan.tried.push(id);
        id
    }

    /// `--hash` (OPT-12): the untried eligible destination with the highest
    /// rendezvous score for this client, weighted (OPT-16); when none at all is
    /// eligible, every one is marked healthy again first (CONN-2), as in rotation.
    fn next_by_weight(&mut self, now: Instant, plan: &mut AttemptPlan) -> Option<DestId> {
        let n = self.entries.len();
        let best = |b: &Self, eligible_only: bool| {
            (0..n)
                .filter(|&i| {
                    let e = &b.entries[i];
                    !plan.has_tried(e.id) && !e.draining() && (!eligible_only || b.eligible(i, now))
                })
                // Ties (never seen) go by the text, so the list order never matters.
                .max_by(|&x, &y| {
                    let score = |i: usize| {
                        let e = &b.entries[i];
                        let hash = rendezvous::weight_with(e.key, plan.client);
                        (
                            rendezvous::weighted_score(hash, e.dest.attributes.weight),
                            hash,
                        )
                    };
                    let ((sx, hx), (sy, hy)) = (score(x), score(y));
                    sx.total_cmp(&sy)
                        .then(hx.cmp(&hy))
                        .then_with(|| b.entries[x].dest.cmp(&b.entries[y].dest))
                })
        };
        let chosen = match best(self, true) {
            Some(i) => i,
            None if (0..n).any(|i| self.eligible(i, now)) => return None,
            None => {
                self.reset_all(plan)?;
                best(self, false)?
            }
        };
        Some(self.take(chosen, plan))
    }

    /// Records that a connect to `dest` (or its CONNECT exchange) failed at `now`
    /// because of `reason`: it leaves rotation until `-r` passes or every
    /// destination has failed (CONN-3). The first failure of an outage is
    /// reported as [`SelectEvent::Down`].
    pub(crate) fn handle_connect_failed(&mut self, now: Instant, dest: DestId, reason: &str) {
        let Some(e) = self.entry_mut(dest) else {
            return;
        };
        e.health = Health::Unhealthy { since: now };
        if e.reported_up {
            e.reported_up = false;
            e.down_since = Some(now);
            let dest = e.dest.clone();
            self.events.push_back(SelectEvent::Down {
                dest,
                reason: reason.to_string(),
            });
        }
    }

    /// Records that a connection to `dest` was established: it is healthy, and
    /// if it was reported down, [`SelectEvent::Up`] says it is back.
    pub fn handle_connected(&mut self, _now: Instant, dest: DestId) {
        let Some(e) = self.entry_mut(dest) else {
            return;
        };
        e.health = Health::Healthy;
        if !e.reported_up {
            e.reported_up = true;
            e.down_since = None;
            let dest = e.dest.clone();
            self.events.push_back(SelectEvent::Up { dest });
        }
    }

    /// Returns the next thing worth logging, oldest first; drain after each call.
    #[must_use]
    pub(crate) fn poll_event(&mut self) -> Option<SelectEvent> {
        self.events.pop_front()
    }
}

impl SelectEvent {
    /// The log line of this event: health changes at the normal level, limited
    /// as clients can cause them (FAULT-4); retries as debug detail.
    pub(crate) fn log_record(&self) -> LogRecord {
        let text = self.to_string();
        match self {
            SelectEvent::Down { .. }
            | SelectEvent::Up { .. }
            | SelectEvent::AllReset
            | SelectEvent::AllDraining => {
                LogRecord::limited(LogKind::Health, LogLevel::Notice, text)
            }
            SelectEvent::StickyTableFull { .. } | SelectEvent::Resolved { .. } => {
                LogRecord::new(LogLevel::Notice, text)
            }
            SelectEvent::Retrying { .. } => LogRecord::new(LogLevel::Debug(1), text),
        }
    }
}

impl fmt::Display for SelectEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SelectEvent::Down { dest, reason } => write!(f, "destination {dest} down: {reason}"),
            SelectEvent::Up { dest } => write!(f, "destination {dest} up"),
            SelectEvent::Retrying { dest } => write!(f, "retrying destination {dest}"),
            SelectEvent::Resolved { dest, addresses } => {
                write!(f, "destination {dest} resolves to {addresses}")
            }
            SelectEvent::AllReset => {
                f.write_str("all destinations are down; trying every one again")
            }
            SelectEvent::AllDraining => {
                f.write_str("all destinations are draining; closing new clients")
            }
            SelectEvent::StickyTableFull { capacity } => {
                write!(
                    f,
                    "sticky table full ({capacity} clients); new clients are balanced normally"
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::addr::Host;
    use proptest::prelude::*;

    use crate::test_clock::t0;

    fn dests(n: usize) -> Vec<Destination> {
        (0..n)
            .map(|i| {
                Destination::new(
                    Host::Ip(format!("127.0.0.{}", i + 10).parse().unwrap()),
                    9000,
                )
            })
            .collect()
    }

    fn client(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    /// Picks the first destination for a new client.
    fn pick(b: &mut Balancer, now: Instant, c: IpAddr) -> Option<usize> {
        let mut plan = b.plan(c);
        b.next_attempt(now, &mut plan).map(DestId::index)
    }

    #[test]
    fn round_robin_in_command_line_order_conn_2() {
        let now = t0();
        let mut b = Balancer::new(dests(3), SelectPolicy::default());
        let picks: Vec<_> = (0..7)
            .map(|k| pick(&mut b, now, client(k)).unwrap())
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn unhealthy_destinations_are_skipped_conn_2_conn_3() {
        let now = t0();
        let mut b = Balancer::new(dests(3), SelectPolicy::default());
        b.handle_connect_failed(now, DestId(1), "refused");
        let picks: Vec<_> = (0..4)
            .map(|k| pick(&mut b, now, client(k)).unwrap())
            .collect();
        assert_eq!(picks, [0, 2, 0, 2]);
        assert_eq!(
            b.poll_event().map(|e| e.to_string()).as_deref(),
            Some("destination 127.0.0.11:9000 down: refused")
        );
        assert_eq!(b.poll_event(), None);
    }

    #[test]
    fn health_changes_are_reported_once_per_outage_by_address_conn_3() {
        let now = t0();
        let policy = SelectPolicy {
            retry: Some(Duration::from_secs(5)),
            order: Order::FirstHealthy,
            ..SelectPolicy::default()
        };
        let mut b = Balancer::new(dests(2), policy);
        let events = |b: &mut Balancer| {
            std::iter::from_fn(|| b.poll_event())
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
        };
        b.handle_connect_failed(now, DestId(0), "Connection refused");
        // Still down when retried and failing again: nothing new to say.
        let later = now + Duration::from_secs(6);
        assert_eq!(pick(&mut b, later, client(1)), Some(0));
        b.handle_connect_failed(later, DestId(0), "Connection refused");
        // A success while up is no news either.
        b.handle_connected(later, DestId(1));
        assert_eq!(
            events(&mut b),
            [
                "destination 127.0.0.10:9000 down: Connection refused",
                "retrying destination 127.0.0.10:9000",
            ]
        );
        let back = later + Duration::from_secs(6);
        assert_eq!(pick(&mut b, back, client(2)), Some(0));
        b.handle_connected(back, DestId(0));
        assert_eq!(
            events(&mut b),
            [
                "retrying destination 127.0.0.10:9000",
                "destination 127.0.0.10:9000 up"
            ]
        );
        b.handle_connect_failed(back, DestId(0), "timed out after 10s");
        assert_eq!(
            events(&mut b),
            ["destination 127.0.0.10:9000 down: timed out after 10s"]
        );
    }

    #[test]
    fn first_healthy_with_o_conn_2() {
        let now = t0();
        let policy = SelectPolicy {
            order: Order::FirstHealthy,
            ..SelectPolicy::default()
        };
        let mut b = Balancer::new(dests(3), policy);
        assert_eq!(pick(&mut b, now, client(1)), Some(0));
        assert_eq!(pick(&mut b, now, client(2)), Some(0));
        b.handle_connect_failed(now, DestId(0), "refused");
        assert_eq!(pick(&mut b, now, client(3)), Some(1));
        assert_eq!(pick(&mut b, now, client(4)), Some(1));
    }

    #[test]
    fn all_unhealthy_resets_and_continues_with_second_conn_2() {
        let now = t0();
        let mut b = Balancer::new(dests(3), SelectPolicy::default());
        for i in 0..3 {
            b.handle_connect_failed(now, DestId(i), "refused");
        }
        while b.poll_event().is_some() {}
        // The reset happens only now, when a client needs a destination.
        assert_eq!(b.health(DestId(0)), Some(Health::Unhealthy { since: now }));
        assert_eq!(pick(&mut b, now, client(1)), Some(0));
        assert_eq!(b.poll_event(), Some(SelectEvent::AllReset));
        assert_eq!(pick(&mut b, now, client(2)), Some(1));
        assert_eq!(pick(&mut b, now, client(3)), Some(2));
    }

    #[test]
    fn retry_time_brings_a_destination_back_conn_3() {
        let now = t0();
        let policy = SelectPolicy {
            retry: Some(Duration::from_secs(5)),
            ..SelectPolicy::default()
        };
        let mut b = Balancer::new(dests(2), policy);
        b.handle_connect_failed(now, DestId(0), "refused");
        assert_eq!(
            pick(&mut b, now + Duration::from_secs(4), client(1)),
            Some(1)
        );
        assert_eq!(
            pick(&mut b, now + Duration::from_secs(4), client(2)),
            Some(1)
        );
        while b.poll_event().is_some() {}
        assert_eq!(
            pick(&mut b, now + Duration::from_secs(5), client(3)),
            Some(0)
        );
        assert_eq!(
            b.poll_event(),
            Some(SelectEvent::Retrying {
                dest: dests(2)[0].clone()
            })
        );
    }

    #[test]
    fn without_retry_a_dead_destination_stays_out_conn_3() {
        let now = t0();
        let mut b = Balancer::new(dests(2), SelectPolicy::default());
        b.handle_connect_failed(now, DestId(0), "refused");
        let later = now + Duration::from_secs(100_000);
        assert!((0..5).all(|k| pick(&mut b, later, client(k)) == Some(1)));
    }

    #[test]
    fn a_failed_client_tries_each_destination_once_conn_4() {
        let now = t0();
        let mut b = Balancer::new(dests(3), SelectPolicy::default());
        let mut plan = b.plan(client(1));
        let mut tried = vec![];
        while let Some(d) = b.next_attempt(now, &mut plan) {
            tried.push(d.index());
            b.handle_connect_failed(now, d, "refused");
        }
        assert_eq!(tried, [0, 1, 2]);
        assert_eq!(plan.attempts(), 3);
        // Every destination is now unhealthy; the next client triggers the reset.
        assert_eq!(pick(&mut b, now, client(2)), Some(0));
    }

    #[test]
    fn fail_over_skips_unhealthy_and_resets_when_needed_conn_4() {
        let now = t0();
        let mut b = Balancer::new(dests(3), SelectPolicy::default());
        b.handle_connect_failed(now, DestId(1), "refused");
        b.handle_connect_failed(now, DestId(2), "refused");
        let mut plan = b.plan(client(1));
        assert_eq!(b.next_attempt(now, &mut plan), Some(DestId(0)));
        b.handle_connect_failed(now, DestId(0), "refused");
        // Nothing is eligible: reset, and the first destination this client has not
        // tried is used.
        assert_eq!(b.next_attempt(now, &mut plan), Some(DestId(1)));
        b.handle_connect_failed(now, DestId(1), "refused");
        assert_eq!(b.next_attempt(now, &mut plan), Some(DestId(2)));
        b.handle_connect_failed(now, DestId(2), "refused");
        assert_eq!(b.next_attempt(now, &mut plan), None);
    }

    #[test]
    fn sticky_clients_keep_their_destination_conn_5() {
        let now = t0();
        let sticky = StickyPolicy {
            timeout: Duration::from_secs(10),
            capacity: 100,
        };
        let mut b = Balancer::new(
            dests(3),
            SelectPolicy {
                sticky: Some(sticky),
                ..SelectPolicy::default()
            },
        );
        assert_eq!(pick(&mut b, now, client(1)), Some(0));
        assert_eq!(pick(&mut b, now, client(2)), Some(1));
        // Comes back within the timeout of its previous connection, repeatedly.
        assert_eq!(
            pick(&mut b, now + Duration::from_secs(10), client(1)),
            Some(0)
        );
        assert_eq!(
            pick(&mut b, now + Duration::from_secs(20), client(1)),
            Some(0)
        );
        // Mapped form of the same client is the same client.
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(pick(&mut b, now + Duration::from_secs(21), mapped), Some(0));
        // After the timeout it is balanced anew (the rotation is at 2 now).
        assert_eq!(
            pick(&mut b, now + Duration::from_secs(32), client(1)),
            Some(2)
        );
    }

    #[test]
    fn sticky_client_is_reassigned_when_its_destination_dies_conn_5() {
        let now = t0();
        let sticky = StickyPolicy {
            timeout: Duration::from_secs(10),
            capacity: 100,
        };
        let mut b = Balancer::new(
            dests(2),
            SelectPolicy {
                sticky: Some(sticky),
                ..SelectPolicy::default()
            },
        );
        assert_eq!(pick(&mut b, now, client(1)), Some(0));
        b.handle_connect_failed(now, DestId(0), "refused");
        assert_eq!(pick(&mut b, now, client(1)), Some(1));
        assert_eq!(pick(&mut b, now, client(1)), Some(1));
    }

    #[test]
    fn sticky_table_is_bounded_and_purged_conn_5() {
        let now = t0();
        let sticky = StickyPolicy {
            timeout: Duration::from_secs(10),
            capacity: 2,
        };
        let mut b = Balancer::new(
            dests(2),
            SelectPolicy {
                sticky: Some(sticky),
                ..SelectPolicy::default()
            },
        );
        assert_eq!(pick(&mut b, now, client(1)), Some(0));
        assert_eq!(pick(&mut b, now, client(2)), Some(1));
        assert_eq!(pick(&mut b, now, client(3)), Some(0));
        assert_eq!(
            b.poll_event(),
            Some(SelectEvent::StickyTableFull { capacity: 2 })
        );
        assert_eq!(pick(&mut b, now, client(4)), Some(1));
        assert_eq!(
            b.poll_event(),
            None,
            "full is reported once, not per client"
        );
        assert_eq!(b.sticky_len(), 2);
        // Client 3 was not remembered: it is balanced again.
        assert_eq!(pick(&mut b, now, client(3)), Some(0));
        // Expired entries make room.
        assert_eq!(
            pick(&mut b, now + Duration::from_secs(11), client(5)),
            Some(1)
        );
        assert_eq!(b.sticky_len(), 1);
    }

    /// CONN-5: the operator hears of each time the table fills, once: a
    /// remembered client coming back to a full table is no news, a table that
    /// made room and filled again is.
    #[test]
    fn each_time_the_sticky_table_fills_is_reported_once_conn_5() {
        let now = t0();
        let policy = SelectPolicy {
            sticky: Some(StickyPolicy {
                timeout: Duration::from_secs(10),
                capacity: 2,
            }),
            ..SelectPolicy::default()
        };
        let mut b = Balancer::new(dests(2), policy);
        let full = |b: &mut Balancer| {
            std::iter::from_fn(|| b.poll_event())
                .filter(|e| matches!(e, SelectEvent::StickyTableFull { .. }))
                .count()
        };
        pick(&mut b, now, client(1));
        pick(&mut b, now, client(2));
        assert_eq!(full(&mut b), 0, "two clients fit");
        pick(&mut b, now, client(3));
        assert_eq!(full(&mut b), 1);
        // A remembered client returns to the full table: still the same episode.
        pick(&mut b, now, client(1));
        pick(&mut b, now, client(4));
        assert_eq!(full(&mut b), 0, "the same full table, said once");
        // Both expire; the table fills again: a new episode.
        let later = now + Duration::from_secs(11);
        pick(&mut b, later, client(5));
        pick(&mut b, later, client(6));
        assert_eq!(full(&mut b), 0);
        pick(&mut b, later, client(7));
        assert_eq!(full(&mut b), 1, "full again, said again");
    }

    #[test]
    fn no_destinations_never_panics() {
        let mut b = Balancer::new(vec![], SelectPolicy::default());
        assert_eq!(pick(&mut b, t0(), client(1)), None);
        b.handle_connect_failed(t0(), DestId(3), "refused");
        assert_eq!(b.poll_event(), None);
    }

    /// The reference model: the selection rules of CONN-2..5 written as plainly as
    /// possible, with linear scans and no indexes.
    struct Model {
        up: Vec<bool>,
        down_at: Vec<u64>,
        cursor: usize,
        first: bool,
        retry: Option<u64>,
        sticky: Option<(u64, usize)>,
        table: Vec<(u8, usize, u64)>,
    }

    impl Model {
        fn eligible(&self, i: usize, now: u64) -> bool {
            self.up[i] || self.retry.is_some_and(|r| now >= self.down_at[i] + r)
        }

        fn next(
            &mut self,
            now: u64,
            c: u8,
            tried: &mut [bool],
            first_attempt: bool,
        ) -> Option<usize> {
            let n = self.up.len();
            if tried.iter().all(|&t| t) {
                return None;
            }
            if let Some((timeout, _)) = self.sticky {
                self.table.retain(|&(_, _, seen)| now - seen <= timeout);
            }
            let mut pick = None;
            if first_attempt {
                if let Some(&(_, d, _)) = self.table.iter().find(|e| e.0 == c) {
                    if self.eligible(d, now) {
                        pick = Some(d);
                    }
                }
            }
            if pick.is_none() {
                let start = if self.first { 0 } else { self.cursor };
                let mut i = None;
                for k in 0..n {
                    let j = (start + k) % n;
                    if !tried[j] && self.eligible(j, now) {
                        i = Some(j);
                        break;
                    }
                }
                if i.is_none() {
                    if (0..n).any(|j| self.eligible(j, now)) {
                        return None;
                    }
                    self.up = vec![true; n];
                    i = (0..n).find(|&j| !tried[j]);
                }
                let i = i?;
                if !self.first {
                    self.cursor = (i + 1) % n;
                }
                pick = Some(i);
            }
            let i = pick?;
            self.up[i] = true;
            if let Some((_, cap)) = self.sticky {
                if let Some(e) = self.table.iter_mut().find(|e| e.0 == c) {
                    *e = (c, i, now);
                } else if self.table.len() < cap {
                    self.table.push((c, i, now));
                }
            }
            tried[i] = true;
            Some(i)
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Accept(u8),
        Fail(usize),
        Connect(usize),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..6).prop_map(Op::Accept),
            3 => any::<usize>().prop_map(Op::Fail),
            2 => any::<usize>().prop_map(Op::Connect),
            2 => (0u64..8).prop_map(Op::Advance),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// CONN-2/3/4/5: over random interleavings of accepts, failed and successful
        /// connects and time passing, with concurrent clients in flight, the balancer
        /// chooses exactly what the reference model chooses.
        #[test]
        fn balancer_matches_reference_model(
            n in 1usize..5,
            first in any::<bool>(),
            retry in proptest::option::of(1u64..6),
            sticky in proptest::option::of((0u64..6, 1usize..4)),
            ops in proptest::collection::vec(op(), 1..80),
        ) {
            let base = t0();
            let policy = SelectPolicy {
                order: if first { Order::FirstHealthy } else { Order::RoundRobin },
                retry: retry.map(Duration::from_secs),
                sticky: sticky.map(|(t, cap)| StickyPolicy { timeout: Duration::from_secs(t), capacity: cap }),
                hash: false,
            };
            let mut real = Balancer::new(dests(n), policy);
            let mut model = Model {
                up: vec![true; n], down_at: vec![0; n], cursor: 0, first, retry, sticky, table: vec![],
            };
            let mut now = 0u64;
            // In-flight connections: (real plan, model tried-set, client, current destination).
            let mut flying: Vec<(AttemptPlan, Vec<bool>, u8, usize)> = vec![];
            for op in ops {
                let at = base + Duration::from_secs(now);
                match op {
                    Op::Accept(c) => {
                        let mut plan = real.plan(client(c));
                        let mut tried = vec![false; n];
                        let got = real.next_attempt(at, &mut plan).map(DestId::index);
                        let want = model.next(now, c, &mut tried, true);
                        prop_assert_eq!(got, want);
                        if let Some(d) = got {
                            flying.push((plan, tried, c, d));
                        }
                    }
                    Op::Fail(k) if !flying.is_empty() => {
                        let k = k % flying.len();
                        let (mut plan, mut tried, c, d) = flying.swap_remove(k);
                        real.handle_connect_failed(at, DestId(d), "refused");
                        model.up[d] = false;
                        model.down_at[d] = now;
                        let got = real.next_attempt(at, &mut plan).map(DestId::index);
                        let want = model.next(now, c, &mut tried, false);
                        prop_assert_eq!(got, want);
                        prop_assert!(plan.attempts() <= n, "a destination was tried twice");
                        if let Some(d) = got {
                            flying.push((plan, tried, c, d));
                        }
                    }
                    Op::Connect(k) if !flying.is_empty() => {
                        let (_, _, _, d) = flying.swap_remove(k % flying.len());
                        real.handle_connected(at, DestId(d));
                        model.up[d] = true;
                    }
                    Op::Advance(s) => now += s,
                    _ => {}
                }
                while real.poll_event().is_some() {}
            }
        }
    }

    /// What the scenario itself knows of each destination, from the SPEC's
    /// rules and its own record of failures, connects and time (CONN-2..5,
    /// OPT-16): never from what the balancer chose to remember.
    struct Record {
        retry: Option<u64>,
        drain: Vec<bool>,
        /// When each destination last failed and has not been reached or
        /// retried since.
        failed_at: Vec<Option<u64>>,
        /// client → (destination, when), as the bounded sticky table holds it.
        sticky: Vec<(u8, usize, u64)>,
    }

    impl Record {
        fn eligible(&self, d: usize, now: u64) -> bool {
            !self.drain[d]
                && match (self.failed_at[d], self.retry) {
                    (None, _) => true,
                    (Some(at), Some(r)) => now >= at + r,
                    (Some(_), None) => false,
                }
        }

        fn takes_clients(&self) -> Vec<usize> {
            (0..self.drain.len()).filter(|&d| !self.drain[d]).collect()
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// CONN-2/3/4/5, OPT-16, as invariants of the SPEC checked on every
        /// choice, whatever the interleaving of clients, failures, successes and
        /// time: a client never gets a destination twice nor a draining one; it
        /// gets an unhealthy one only when none that takes clients is healthy
        /// (the reset); it is closed only when every healthy one has been tried
        /// (or every one, after a reset); `-o` gives the first healthy one; a
        /// remembered client returns to its healthy destination.
        #[test]
        fn every_choice_keeps_the_selection_rules_conn_2_5_opt_16(
            attrs in proptest::collection::vec((1u32..4, proptest::bool::weighted(0.2)), 1..5),
            first in any::<bool>(),
            retry in proptest::option::of(1u64..6),
            sticky in proptest::option::of((0u64..6, 1usize..4)),
            ops in proptest::collection::vec(op(), 1..80),
        ) {
            let base = t0();
            let n = attrs.len();
            let list: Vec<Destination> = attrs
                .iter()
                .enumerate()
                .map(|(i, (w, drain))| {
                    let word = format!("10.0.0.{}:80,weight={w}{}", i + 1, if *drain { ",drain" } else { "" });
                    Destination::parse(&word, 80, false).unwrap()
                })
                .collect();
            let policy = SelectPolicy {
                order: if first { Order::FirstHealthy } else { Order::RoundRobin },
                retry: retry.map(Duration::from_secs),
                sticky: sticky.map(|(t, cap)| StickyPolicy { timeout: Duration::from_secs(t), capacity: cap }),
                hash: false,
            };
            let mut b = Balancer::new(list, policy);
            let mut rec = Record {
                retry,
                drain: attrs.iter().map(|a| a.1).collect(),
                failed_at: vec![None; n],
                sticky: vec![],
            };
            let mut now = 0u64;
            // In flight: (plan, tried, client, current destination).
            let mut flying: Vec<(AttemptPlan, Vec<usize>, u8, usize)> = vec![];
            for op in ops {
                let at = base + Duration::from_secs(now);
                let (mut plan, mut tried, c) = match op {
                    Op::Accept(c) => (b.plan(client(c)), vec![], c),
                    Op::Fail(k) if !flying.is_empty() => {
                        let (plan, tried, c, d) = flying.swap_remove(k % flying.len());
                        b.handle_connect_failed(at, DestId(d), "refused");
                        rec.failed_at[d] = Some(now);
                        (plan, tried, c)
                    }
                    Op::Connect(k) if !flying.is_empty() => {
                        let (_, _, _, d) = flying.swap_remove(k % flying.len());
                        b.handle_connected(at, DestId(d));
                        rec.failed_at[d] = None;
                        continue;
                    }
                    Op::Advance(s) => {
                        now += s;
                        continue;
                    }
                    _ => continue,
                };
                // What the record says before the choice.
                if let Some((timeout, _)) = sticky {
                    rec.sticky.retain(|&(_, _, seen)| now - seen <= timeout);
                }
                let open: Vec<usize> = rec.takes_clients();
                let healthy: Vec<usize> = open.iter().copied().filter(|&d| rec.eligible(d, now)).collect();
                let untried_healthy: Vec<usize> = healthy.iter().copied().filter(|d| !tried.contains(d)).collect();
                let remembered = match (sticky, tried.is_empty()) {
                    (Some(_), true) => rec.sticky.iter().find(|e| e.0 == c).map(|e| e.1),
                    _ => None,
                };
                let got = b.next_attempt(at, &mut plan).map(DestId::index);
                while b.poll_event().is_some() {}
                match got {
                    Some(d) => {
                        prop_assert!(!tried.contains(&d), "{d} given twice to {c}");
                        prop_assert!(!rec.drain[d], "{d} drains");
                        if healthy.is_empty() {
                            // The reset: every one is healthy again (CONN-2).
                            rec.failed_at = vec![None; n];
                        } else {
                            prop_assert!(rec.eligible(d, now), "{d} is down and {healthy:?} are not");
                        }
                        match remembered.filter(|&r| rec.eligible(r, now) || healthy.is_empty()) {
                            Some(r) if !healthy.is_empty() => prop_assert_eq!(d, r, "a remembered client moved"),
                            _ if first && sticky.is_none() && !healthy.is_empty() => {
                                prop_assert_eq!(Some(d), untried_healthy.first().copied(), "-o");
                            }
                            _ => {}
                        }
                        // Given now: retried if it was down, and remembered.
                        rec.failed_at[d] = None;
                        if let Some((_, cap)) = sticky {
                            let len = rec.sticky.len();
                            match rec.sticky.iter_mut().find(|e| e.0 == c) {
                                Some(e) => *e = (c, d, now),
                                None if len < cap => rec.sticky.push((c, d, now)),
                                None => {}
                            }
                        }
                        tried.push(d);
                        flying.push((plan, tried, c, d));
                    }
                    None => {
                        let all_tried = open.iter().all(|d| tried.contains(d));
                        prop_assert!(
                            all_tried || (!healthy.is_empty() && untried_healthy.is_empty()),
                            "{c} closed with {untried_healthy:?} healthy and untried (open {open:?}, tried {tried:?})"
                        );
                    }
                }
            }
        }
    }

    fn hashing() -> SelectPolicy {
        SelectPolicy {
            sticky: Some(StickyPolicy {
                timeout: DEFAULT_STICKY_TIMEOUT,
                capacity: DEFAULT_STICKY_CAPACITY,
            }),
            hash: true,
            ..SelectPolicy::default()
        }
    }

    /// The destination text each client is sent to first.
    fn assign(b: &mut Balancer, now: Instant, clients: &[IpAddr]) -> Vec<String> {
        clients
            .iter()
            .map(|&c| {
                let id = pick(b, now, c).unwrap();
                b.destination(DestId(id)).unwrap().to_string()
            })
            .collect()
    }

    fn clients_from(seeds: &[u32]) -> Vec<IpAddr> {
        seeds
            .iter()
            .map(|&s| IpAddr::from(s.to_be_bytes()))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// OPT-12: a client maps to the same destination for the same healthy set,
        /// whatever other clients came between, in any instance (a new balancer).
        #[test]
        fn hash_same_client_same_destination_opt_12(
            n in 1usize..8,
            seeds in proptest::collection::vec(any::<u32>(), 1..60),
        ) {
            let now = t0();
            let clients = clients_from(&seeds);
            let mut a = Balancer::new(dests(n), hashing());
            let first = assign(&mut a, now, &clients);
            let mut reversed: Vec<IpAddr> = clients.clone();
            reversed.reverse();
            let mut again = assign(&mut a, now, &reversed);
            again.reverse();
            prop_assert_eq!(&first, &again);
            let mut other = Balancer::new(dests(n), hashing());
            prop_assert_eq!(&first, &assign(&mut other, now + Duration::from_secs(99_999), &clients));
        }

        /// OPT-12: when a destination goes down only its own clients move, and they
        /// move back when it returns.
        #[test]
        fn hash_removing_a_destination_moves_only_its_clients_opt_12(
            n in 2usize..8,
            down in 0usize..8,
            seeds in proptest::collection::vec(any::<u32>(), 1..80),
        ) {
            let now = t0();
            let down = down % n;
            let clients = clients_from(&seeds);
            let mut b = Balancer::new(dests(n), hashing());
            let before = assign(&mut b, now, &clients);
            let gone = b.destination(DestId(down)).unwrap().to_string();
            b.handle_connect_failed(now, DestId(down), "refused");
            let during = assign(&mut b, now, &clients);
            for (x, y) in before.iter().zip(&during) {
                if *x == gone {
                    prop_assert_ne!(y, &gone);
                } else {
                    prop_assert_eq!(x, y);
                }
            }
            b.handle_connected(now, DestId(down));
            prop_assert_eq!(&before, &assign(&mut b, now, &clients));
        }

        /// OPT-12: the order destinations are given in never matters.
        #[test]
        fn hash_order_of_the_list_never_matters_opt_12(
            n in 1usize..8,
            rotation in 0usize..8,
            reverse in any::<bool>(),
            seeds in proptest::collection::vec(any::<u32>(), 1..60),
        ) {
            let now = t0();
            let clients = clients_from(&seeds);
            let mut list = dests(n);
            let mut b = Balancer::new(list.clone(), hashing());
            let first = assign(&mut b, now, &clients);
            list.rotate_left(rotation % n);
            if reverse {
                list.reverse();
            }
            let mut shuffled = Balancer::new(list, hashing());
            prop_assert_eq!(&first, &assign(&mut shuffled, now, &clients));
        }
    }

    #[test]
    fn hash_fails_over_in_weight_order_and_resets_when_all_are_down_conn_4_opt_12() {
        let now = t0();
        let mut b = Balancer::new(dests(3), hashing());
        let c = client(7);
        let mut plan = b.plan(c);
        let tried: Vec<usize> =
            std::iter::from_fn(|| b.next_attempt(now, &mut plan).map(DestId::index)).collect();
        let mut by_weight: Vec<usize> = (0..3).collect();
        by_weight.sort_by_key(|&i| std::cmp::Reverse(rendezvous::weight(c, &dests(3)[i])));
        assert_eq!(tried, by_weight, "each once, heaviest first");
        for i in 0..3 {
            b.handle_connect_failed(now, DestId(i), "refused");
        }
        while b.poll_event().is_some() {}
        assert_eq!(pick(&mut b, now, c), Some(by_weight[0]));
        assert_eq!(b.poll_event(), Some(SelectEvent::AllReset));
        assert_eq!(b.sticky_len(), 0, "no table with --hash");
    }

    /// `-f -t 60`, at most 100 clients.
    fn sticky_for_a_minute() -> SelectPolicy {
        SelectPolicy {
            sticky: Some(StickyPolicy {
                timeout: Duration::from_secs(60),
                capacity: 100,
            }),
            ..SelectPolicy::default()
        }
    }

    fn words(list: &[&str]) -> Vec<Destination> {
        list.iter()
            .map(|w| Destination::parse(w, 9000, false).unwrap())
            .collect()
    }

    #[test]
    fn a_weight_of_two_gives_a_b_a_not_a_a_b_opt_16() {
        let now = t0();
        let mut b = Balancer::new(
            words(&["10.0.0.1,weight=2", "10.0.0.2"]),
            SelectPolicy::default(),
        );
        let picks: Vec<_> = (0..9)
            .map(|k| pick(&mut b, now, client(k)).unwrap())
            .collect();
        assert_eq!(picks, [0, 1, 0, 0, 1, 0, 0, 1, 0]);
    }

    /// OPT-16 with CONN-2: equal weights rotate in command-line order,
    /// starting with the first, as plain round robin does.
    #[test]
    fn equal_weights_rotate_in_command_line_order_conn_2_opt_16() {
        let now = t0();
        let mut b = Balancer::new(
            words(&[
                "10.0.0.1,weight=2",
                "10.0.0.2,weight=2",
                "10.0.0.3,weight=2",
            ]),
            SelectPolicy::default(),
        );
        let picks: Vec<_> = (0..6)
            .map(|k| pick(&mut b, now, client(k)).unwrap())
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    /// CONN-2/4 with OPT-12: the all-down reset is for when every destination
    /// is down. A client that has tried every healthy one is closed, and the
    /// dead one stays out for everyone.
    #[test]
    fn hashing_resets_nothing_while_one_is_healthy_conn_4_opt_12() {
        let now = t0();
        let mut b = Balancer::new(dests(3), hashing());
        b.handle_connect_failed(now, DestId(2), "refused");
        while b.poll_event().is_some() {}
        let mut plan = b.plan(client(9));
        let tried: Vec<usize> =
            std::iter::from_fn(|| b.next_attempt(now, &mut plan).map(DestId::index)).collect();
        let mut sorted = tried.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [0, 1], "the healthy ones, once each");
        assert_eq!(b.health(DestId(2)), Some(Health::Unhealthy { since: now }));
        assert_eq!(b.poll_event(), None, "no reset");
    }

    /// OPT-11: a name whose addresses changed (one fewer, or another in the
    /// place of one) earns its dead destination a fresh chance.
    #[test]
    fn a_changed_set_of_addresses_brings_a_name_back_opt_11() {
        let now = t0();
        for new in [vec!["10.0.0.7"], vec!["10.0.0.7", "10.0.0.9"]] {
            let mut b = Balancer::new(
                vec![Destination::parse("web.example:80", 80, true).unwrap()],
                SelectPolicy::default(),
            );
            let ips = |list: &[&str]| Ok(list.iter().map(|a| a.parse().unwrap()).collect());
            b.handle_resolved(now, DestId(0), ips(&["10.0.0.7", "10.0.0.8"]));
            b.handle_connect_failed(now, DestId(0), "refused");
            while b.poll_event().is_some() {}
            b.handle_resolved(now, DestId(0), ips(&new));
            assert_eq!(b.health(DestId(0)), Some(Health::Healthy), "{new:?}");
            assert!(
                matches!(b.poll_event(), Some(SelectEvent::Resolved { .. })),
                "{new:?}"
            );
        }
    }

    proptest! {
        /// OPT-16: with no change of health, every run of W consecutive choices
        /// (W the total weight) gives each destination exactly its weight.
        #[test]
        fn every_run_of_w_choices_follows_the_weights_opt_16(
            weights in proptest::collection::vec(1u32..8, 1..5),
            skip in 0usize..20,
        ) {
            let now = t0();
            let list: Vec<String> = weights
                .iter()
                .enumerate()
                .map(|(i, w)| format!("10.0.0.{}:80,weight={w}", i + 1))
                .collect();
            let refs: Vec<&str> = list.iter().map(String::as_str).collect();
            let mut b = Balancer::new(words(&refs), SelectPolicy::default());
            let total: u32 = weights.iter().sum();
            let picks: Vec<usize> = (0..skip + 3 * total as usize)
                .map(|k| pick(&mut b, now, client((k % 250) as u8)).unwrap())
                .collect();
            for run in picks[skip..].windows(total as usize) {
                for (i, &w) in weights.iter().enumerate() {
                    let times = run.iter().filter(|&&p| p == i).count();
                    prop_assert_eq!(times, w as usize, "destination {} in {:?}", i, run);
                }
            }
        }
    }

    #[test]
    fn a_draining_destination_takes_no_new_client_opt_16() {
        let now = t0();
        let policy = sticky_for_a_minute();
        let mut b = Balancer::new(words(&["10.0.0.1", "10.0.0.2", "10.0.0.3"]), policy);
        // Client 1 sticks to the first destination.
        assert_eq!(pick(&mut b, now, client(1)), Some(0));
        b.reconfigure(words(&["10.0.0.1,drain", "10.0.0.2", "10.0.0.3"]), policy);
        let picks: Vec<_> = (2..8)
            .map(|k| pick(&mut b, now, client(k)).unwrap())
            .collect();
        assert!(!picks.contains(&0), "{picks:?}");
        assert_ne!(
            pick(&mut b, now, client(1)),
            Some(0),
            "its sticky client is re-assigned"
        );
        // Every one draining: nobody is chosen, and the log says why, once per client.
        b.reconfigure(words(&["10.0.0.1,drain", "10.0.0.2,drain"]), policy);
        while b.poll_event().is_some() {}
        assert_eq!(pick(&mut b, now, client(9)), None);
        assert_eq!(b.poll_event(), Some(SelectEvent::AllDraining));
        assert_eq!(b.poll_event(), None);
    }

    #[test]
    fn draining_ones_are_not_brought_back_by_the_all_down_reset_conn_2_opt_16() {
        let now = t0();
        let mut b = Balancer::new(
            words(&["10.0.0.1,drain", "10.0.0.2", "10.0.0.3"]),
            SelectPolicy::default(),
        );
        b.handle_connect_failed(now, DestId(1), "refused");
        b.handle_connect_failed(now, DestId(2), "refused");
        let mut plan = b.plan(client(1));
        let mut given = vec![];
        while let Some(id) = b.next_attempt(now, &mut plan) {
            given.push(id.index());
            b.handle_connect_failed(now, id, "refused");
        }
        given.sort_unstable();
        assert_eq!(given, [1, 2], "each one that takes clients, once");
    }

    #[test]
    fn weighted_hash_shares_follow_the_weights_and_only_a_removed_ones_clients_move_opt_16() {
        let now = t0();
        let policy = SelectPolicy {
            hash: true,
            ..sticky_for_a_minute()
        };
        let all = words(&[
            "10.0.0.1,weight=1",
            "10.0.0.2,weight=3",
            "10.0.0.3,weight=4",
        ]);
        let mut b = Balancer::new(all.clone(), policy);
        let clients: Vec<IpAddr> = (0..4000u32)
            .map(|k| IpAddr::from([172, 16, (k >> 8) as u8, k as u8]))
            .collect();
        let first: Vec<usize> = clients
            .iter()
            .map(|&c| pick(&mut b, now, c).unwrap())
            .collect();
        for (i, w) in [1.0, 3.0, 4.0].into_iter().enumerate() {
            let share = first.iter().filter(|&&p| p == i).count() as f64 / 4000.0;
            let expected = w / 8.0;
            assert!(
                (share - expected).abs() < 0.03,
                "{i}: {share} vs {expected}"
            );
        }
        // The second destination leaves: only its clients move.
        let mut c = Balancer::new(vec![all[0].clone(), all[2].clone()], policy);
        for (k, &cl) in clients.iter().enumerate() {
            let now_at = pick(&mut c, now, cl).unwrap();
            let was = first[k];
            if was != 1 {
                assert_eq!([0, 2][now_at], was, "client {cl} moved");
            }
        }
    }

    #[test]
    fn a_reload_keeps_what_is_known_of_a_destination_that_stays_opt_15() {
        let now = t0();
        let policy = sticky_for_a_minute();
        let mut b = Balancer::new(words(&["10.0.0.1", "10.0.0.2", "10.0.0.3"]), policy);
        assert_eq!(pick(&mut b, now, client(1)), Some(0));
        assert_eq!(pick(&mut b, now, client(2)), Some(1));
        assert_eq!(pick(&mut b, now, client(3)), Some(2));
        b.handle_connect_failed(now, DestId(2), "refused");
        while b.poll_event().is_some() {}
        // Reordered, one gone, one new, one with a weight now.
        b.reconfigure(
            words(&["10.0.0.3,weight=2", "10.0.0.4", "10.0.0.1"]),
            policy,
        );
        let ids: Vec<DestId> = b.ids().collect();
        assert_eq!(ids[0], DestId(2), "the same destination, the same identity");
        assert_eq!(ids[2], DestId(0));
        assert!(
            !ids.contains(&DestId(1)),
            "a gone destination's identity is not reused"
        );
        assert!(
            !matches!(b.health(DestId(2)), Some(Health::Healthy)),
            "still down"
        );
        assert_eq!(b.down_since(DestId(2)), Some(now));
        assert_eq!(
            b.health(ids[1]),
            Some(Health::Healthy),
            "a new one starts healthy"
        );
        assert_eq!(b.destination(DestId(1)), None);
        assert_eq!(
            b.sticky_len(),
            2,
            "the gone destination's client is forgotten"
        );
        // Client 1 is still sent to 10.0.0.1, wherever it is listed now.
        let mut plan = b.plan(client(1));
        assert_eq!(b.next_attempt(now, &mut plan), Some(DestId(0)));
        assert_eq!(b.poll_event(), None);

        // New destinations, in one reload or in several, each get an
        // identity of their own, never one seen before.
        b.reconfigure(words(&["10.0.0.5", "10.0.0.6", "10.0.0.1"]), policy);
        b.reconfigure(words(&["10.0.0.7", "10.0.0.5", "10.0.0.6"]), policy);
        let mut seen: Vec<DestId> = ids;
        seen.extend(b.ids());
        seen.push(DestId(1));
        let all = seen.len();
        seen.sort_by_key(|id| id.index());
        seen.dedup();
        assert_eq!(seen.len(), all, "an identity given twice: {seen:?}");
    }
}
