//! What every connection of one listener shares: admission (CONN-1, OPT-3), the
//! balancer (CONN-2..5), the counts behind SIGUSR1 (OPT-6), what to do when accept
//! fails (SPEC §5) and the rate limits of client-caused log lines (FAULT-4).
//!
//! The adapter keeps one `Forwarder` behind a lock. The accept loop feeds it
//! [`Forwarder::handle_accepted`]; each [`Connection`] talks to it by events
//! ([`crate::shared`]), handed over by [`Forwarder::exchange`]. There is one
//! count of open connections, the admission's:
//! it goes up when a client is admitted and down when its connection is accounted
//! for, whatever ended it (FAULT-5).

pub mod accept;
pub mod admission;
pub mod rendezvous;
pub mod select;
pub mod stats;

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::addr::Host;
use crate::config::cli::Config;
use crate::connection::connect::connect_request;
use crate::connection::connect::ProxyCredentials;
use crate::connection::dial::DialOptions;
use crate::connection::dial::Dialer;
use crate::connection::relay::RelayOutcome;
use crate::connection::{Connection, Runtime, Settings};
use crate::forwarder::accept::{AcceptBackoff, AcceptFailure};
use crate::forwarder::admission::{Admission, ProcessBudget, Refusal};
use crate::forwarder::select::{Balancer, DestId};
use crate::forwarder::stats::Stats;
use crate::reports::log::{self, LogKind, LogLevel, LogRecord, LogSettings};
use crate::reports::metrics::Metrics;
use crate::rounds::lookup::Lookup;
use crate::rounds::probe::{Probe, ProbeResult};
use crate::rounds::Rounds;
use crate::shared::{ConnectionEvent, ForwarderEvent};

/// What the accept loop does after accept failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptNext {
    /// Accept again at once (the client left before it was accepted).
    Retry,
    /// Wait until the listener is readable (a non-blocking listener had nobody).
    WaitReadable,
    /// Pause this long, then accept again (out of descriptors or memory).
    Pause(Duration),
}

/// What a failed accept means (SPEC §5, FAULT-1) for a listener with
/// `backoff`: what to do next, and the line to log, if any.
pub(crate) fn accept_next(
    backoff: &mut AcceptBackoff,
    now: Instant,
    failure: AcceptFailure,
    detail: &str,
) -> (AcceptNext, Option<LogRecord>) {
    let action = backoff.handle_failure(now, failure, detail);
    let log = action.log.map(|line| LogRecord::new(LogLevel::Error, line));
    let next = match (failure, action.pause) {
        (AcceptFailure::WouldBlock, _) => AcceptNext::WaitReadable,
        (_, Some(pause)) => AcceptNext::Pause(pause),
        (_, None) => AcceptNext::Retry,
    };
    (next, log)
}

/// The shared state of one listener.
#[derive(Debug)]
pub struct Forwarder {
    settings: Arc<Settings>,
    balancer: Balancer,
    admission: Admission,
    stats: Stats,
    backoff: AcceptBackoff,
    /// How new connections dial; the credentials change on SIGHUP (PROC-8).
    /// Shared by every connection that dials with them (one copy, not one
    /// per connection).
    dial: Arc<DialOptions>,
    /// `--resolve`: when the host names are looked up next (OPT-11).
    resolve: Option<Rounds>,
    /// `--health-check`: when the destinations are probed next (OPT-10), and
    /// which have a probe under way (one at a time each).
    health: Option<Rounds>,
    probing: BTreeSet<DestId>,
    /// What every listener shares: `--max-conns`, the pipes.
    budget: Arc<ProcessBudget>,
    logs: VecDeque<LogRecord>,
}

impl Forwarder {
    /// Sets up the shared state of a plug's only listener from the command
    /// line, the proxy credentials, the open-file limit `nofile` (for the
    /// default `--max-conns` and the pipe budget, FAULT-3) and what the runtime
    /// offers.
    pub fn new(
        config: &Config,
        credentials: Option<ProxyCredentials>,
        nofile: u64,
        runtime: Runtime,
    ) -> Self {
        let splicing = runtime.pipe_capacity.is_some();
        let budget = Arc::new(ProcessBudget::new(config.max_conns, nofile, splicing));
        Self::with_budget(config, credentials, budget, runtime, None)
    }

    /// Sets up the shared state of one of several listeners (`--config`,
    /// OPT-13): `budget` is every listener's, `label` names this one in
    /// metrics and the dump.
    pub fn with_budget(
        config: &Config,
        credentials: Option<ProxyCredentials>,
        budget: Arc<ProcessBudget>,
        runtime: Runtime,
        label: Option<String>,
    ) -> Self {
        let admission = Admission::new(
            config.rules.clone(),
            config.max_conns_per_ip,
            Arc::clone(&budget),
        );
        Forwarder {
            settings: Arc::new(Self::settings_for(config, runtime, &budget, label)),
            balancer: Balancer::new(config.destinations.clone(), config.select),
            admission,
            budget,
            stats: Stats::new(config.destinations.len()),
            backoff: AcceptBackoff::new(),
            dial: Arc::new(config.dial_options(credentials)),
            resolve: config.resolve.map(Rounds::new),
            health: config.health_check.map(Rounds::new),
            probing: BTreeSet::new(),
            logs: VecDeque::new(),
        }
    }

    fn settings_for(
        config: &Config,
        runtime: Runtime,
        budget: &ProcessBudget,
        label: Option<String>,
    ) -> Settings {
        Settings {
            source: config.source,
            relay: config.relay_options(),
            proxy_protocol: config.proxy_protocol,
            log: LogSettings {
                debug: config.debug,
                connections: config.log_connections,
            },
            sessions: config.session.is_some(),
            runtime,
            pipes: budget.pipes(),
            keepalive: config.keepalive,
            label,
        }
    }

    /// Takes a listener's new line after a reload (OPT-15). New connections
    /// follow it from now on; open ones keep the settings they started with.
    /// Destinations that stay keep their health, sticky clients and counts;
    /// the open counts stay. `credentials`: the line's `--proxy-auth-file`,
    /// read anew.
    pub fn handle_reconfigure(
        &mut self,
        _now: Instant,
        config: &Config,
        credentials: Option<ProxyCredentials>,
    ) {
        let runtime = self.settings.runtime;
        let label = self.settings.label.clone();
        self.settings = Arc::new(Self::settings_for(config, runtime, &self.budget, label));
        self.admission
            .reconfigure(config.rules.clone(), config.max_conns_per_ip);
        self.balancer
            .reconfigure(config.destinations.clone(), config.select);
        self.stats.reconfigure(self.balancer.ids());
        self.dial = Arc::new(config.dial_options(credentials));
        // A schedule that stays keeps its rhythm; a new one starts at once.
        if self.resolve.as_ref().map(Rounds::period) != config.resolve {
            self.resolve = config.resolve.map(Rounds::new);
        }
        if self.health.as_ref().map(Rounds::period) != config.health_check {
            self.health = config.health_check.map(Rounds::new);
        }
        let ids: Vec<DestId> = self.balancer.ids().collect();
        self.probing.retain(|id| ids.contains(id));
    }

    /// The settings every connection shares.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The settings, as a connection holds them (for tests that make one).
    #[cfg(test)]
    pub(crate) fn shared_settings(&self) -> Arc<Settings> {
        Arc::clone(&self.settings)
    }

    /// Connections admitted and not yet accounted for: the one open count.
    pub fn open(&self) -> usize {
        self.admission.open()
    }

    /// The `--max-conns` in force.
    pub fn max_conns(&self) -> usize {
        self.admission.max_conns()
    }

    /// Decides about a client accepted at `now` (CONN-1, OPT-3). `Some`: its
    /// connection, its first destination already chosen (under the lock the
    /// caller holds for admission); `None`: refused
    /// (close it at once, contacting no destination; the log line, of a kind
    /// that is rate-limited, comes from [`Forwarder::poll_log`]).
    pub fn handle_accepted(&mut self, now: Instant, peer: SocketAddr) -> Option<Connection> {
        match self.admission.admit(peer.ip()) {
            Ok(()) => {
                self.stats.handle_accepted();
                if self.settings.log.wants(LogLevel::Debug(2)) {
                    self.push_log(LogRecord::new(
                        LogLevel::Debug(2),
                        format!("accepted {peer}"),
                    ));
                }
                let dialer = Dialer::new(peer.ip(), Arc::clone(&self.dial));
                let mut conn = Connection::new(Arc::clone(&self.settings), peer, now, dialer);
                self.exchange(now, &mut conn);
                Some(conn)
            }
            Err(refusal) => {
                self.stats.handle_refused(&refusal);
                let source = self.settings.source;
                let record = match refusal {
                    Refusal::Rules => LogRecord::limited(
                        LogKind::Refused,
                        LogLevel::Connection,
                        log::refused(&source, peer.ip()),
                    ),
                    over => LogRecord::limited(
                        LogKind::OverLimit,
                        LogLevel::Notice,
                        log::over_limit(&source, peer.ip(), &over),
                    ),
                };
                self.push_log(record);
                None
            }
        }
    }

    /// Hands every event `conn` has for this forwarder over, and the answers
    /// back ([`Output::Forwarder`](crate::connection::Output::Forwarder)).
    pub fn exchange(&mut self, now: Instant, conn: &mut Connection) {
        while let Some(event) = conn.poll_forwarder_event() {
            if let Some(answer) = self.handle_event(now, event) {
                conn.handle_event(now, answer);
            }
        }
    }

    /// Takes one event from a connection: chooses its next destination, or
    /// learns a failure, a destination reached, or the end and its counts.
    /// Health changes it causes are logged through [`Forwarder::poll_log`].
    pub fn handle_event(&mut self, now: Instant, event: ForwarderEvent) -> Option<ConnectionEvent> {
        let answer = match event {
            ForwarderEvent::Choose(mut plan) => {
                let choice = self
                    .balancer
                    .next_attempt(now, &mut plan)
                    .and_then(|id| self.balancer.choice(id));
                Some(ConnectionEvent::Chosen { plan, choice })
            }
            ForwarderEvent::Failed { dest, reason } => {
                self.balancer.handle_connect_failed(now, dest, &reason);
                self.stats.handle_connect_failed(dest);
                None
            }
            ForwarderEvent::Reached { dest } => {
                self.balancer.handle_connected(now, dest);
                self.stats.handle_established(dest);
                None
            }
            ForwarderEvent::Closed {
                peer,
                dest,
                outcome,
                duration,
            } => {
                self.handle_closed(peer, dest, outcome.as_ref(), duration);
                None
            }
        };
        while let Some(event) = self.balancer.poll_event() {
            self.push_log(event.log_record());
        }
        answer
    }

    fn push_log(&mut self, record: LogRecord) {
        if self.settings.log.wants(record.level) {
            self.logs.push_back(record);
        }
    }

    /// Takes new proxy credentials after SIGHUP re-read `--proxy-auth-file`
    /// (PROC-8): `Ok` replaces them for every CONNECT from now on; `Err` (the file
    /// could not be read or is malformed, said how) keeps the old ones. Either
    /// way the reload is logged.
    pub fn handle_reload(
        &mut self,
        _now: Instant,
        credentials: Option<(String, Result<ProxyCredentials, String>)>,
    ) {
        let line = match credentials {
            Some((file, Ok(c))) => {
                // Connections dialing now keep the ones they started with.
                Arc::make_mut(&mut self.dial).credentials = Some(c);
                LogRecord::new(LogLevel::Notice, log::reloaded(Some(&file)))
            }
            Some((_, Err(why))) => LogRecord::new(
                LogLevel::Error,
                format!("{why}; keeping the previous proxy credentials"),
            ),
            None => LogRecord::new(LogLevel::Notice, log::reloaded(None)),
        };
        self.push_log(line);
    }

    /// Decides what to do after accept failed at `now` with `failure` (`detail`: the
    /// OS error, for the log). The loop never spins: a non-blocking listener with
    /// nobody waiting is waited on, exhaustion pauses (SPEC §5, FAULT-1).
    pub fn handle_accept_failed(
        &mut self,
        now: Instant,
        failure: AcceptFailure,
        detail: &str,
    ) -> AcceptNext {
        let (next, log) = accept_next(&mut self.backoff, now, failure, detail);
        if let Some(record) = log {
            self.push_log(record);
        }
        next
    }

    /// Records that a connection ended ([`ForwarderEvent::Closed`]): the open count
    /// goes down, and the destination's counts take its bytes.
    pub(crate) fn handle_closed(
        &mut self,
        peer: SocketAddr,
        reached: Option<DestId>,
        outcome: Option<&RelayOutcome>,
        duration: Duration,
    ) {
        self.admission.release(peer.ip());
        self.stats.handle_closed(reached, outcome, duration);
    }

    /// The next log line of the shared state, oldest first.
    #[must_use]
    pub fn poll_log(&mut self, _now: Instant) -> Option<LogRecord> {
        self.logs.pop_front()
    }

    /// The host names to look up at `now` (OPT-11): every name among the
    /// destinations once a round is due (at once, then every `--resolve`
    /// seconds), else none. Report each with [`Forwarder::handle_resolved`].
    pub fn poll_lookups(&mut self, now: Instant) -> Vec<Lookup> {
        let Some(schedule) = self.resolve.as_mut() else {
            return Vec::new();
        };
        if !schedule.poll(now) {
            return Vec::new();
        }
        self.balancer
            .destinations()
            .iter()
            .zip(self.balancer.ids())
            .filter_map(|(d, id)| match &d.host {
                Host::Name(name) => Some(Lookup {
                    dest: id,
                    name: name.clone(),
                    port: d.port,
                }),
                Host::Ip(_) => None,
            })
            .collect()
    }

    /// When the next round of lookups is due; `None` without `--resolve` or when
    /// one is due at once.
    #[must_use]
    pub fn poll_lookup_timeout(&self) -> Option<Instant> {
        self.resolve.as_ref().and_then(Rounds::poll_timeout)
    }

    /// Takes the result of a [`Lookup`]: the addresses in the order the resolver
    /// gave them, or why there are none (the destination is then down, not the
    /// process: OPT-11).
    pub fn handle_resolved(
        &mut self,
        now: Instant,
        dest: DestId,
        result: Result<Vec<std::net::IpAddr>, String>,
    ) {
        self.balancer.handle_resolved(now, dest, result);
        self.drain_balancer_events();
    }

    fn drain_balancer_events(&mut self) {
        while let Some(event) = self.balancer.poll_event() {
            let record = event.log_record();
            self.push_log(record);
        }
    }

    /// The health checks to start at `now` (OPT-10): one per destination that has
    /// none under way, once a round is due (at once, then every
    /// `--health-check` seconds), else none. Drive each [`Probe`] and report it
    /// with [`Forwarder::handle_probe_result`].
    pub fn poll_probes(&mut self, now: Instant) -> Vec<Probe> {
        let Some(rounds) = self.health.as_mut() else {
            return Vec::new();
        };
        if !rounds.poll(now) {
            return Vec::new();
        }
        let bind = self.dial.bind.map(|ip| SocketAddr::new(ip, 0));
        let mut probes = Vec::new();
        for (dest, id) in self.balancer.destinations().iter().zip(self.balancer.ids()) {
            if !self.probing.insert(id) {
                continue;
            }
            let (targets, request) = match self.dial.proxy {
                Some(proxy) => (
                    vec![proxy],
                    Some(connect_request(dest, self.dial.credentials.as_ref())),
                ),
                None => (self.balancer.addresses(id).to_vec(), None),
            };
            let timeout = self.dial.connect_timeout;
            probes.push(Probe::new(now, id, targets, bind, request, timeout));
        }
        probes
    }

    /// When the next round of health checks is due; `None` without
    /// `--health-check` or when one is due at once.
    #[must_use]
    pub fn poll_probe_timeout(&self) -> Option<Instant> {
        self.health.as_ref().and_then(Rounds::poll_timeout)
    }

    /// Takes the outcome of a probe of `dest` (OPT-10): a failure takes it out of
    /// rotation (CONN-3) before any client pays for it; a success brings an
    /// unhealthy one back at once, without waiting for `-r`. Changes are logged
    /// (`destination ADDR:PORT down: REASON` / `up`).
    ///
    /// A probe plug could not run for a reason of its own changes nothing about
    /// the destination (FAULT-6); it is logged, and the next round tries again.
    pub fn handle_probe_result(&mut self, now: Instant, dest: DestId, result: ProbeResult) {
        self.probing.remove(&dest);
        match result {
            ProbeResult::Up => self.balancer.handle_connected(now, dest),
            ProbeResult::Down(reason) => self.balancer.handle_connect_failed(now, dest, &reason),
            ProbeResult::Inconclusive(reason) => {
                if let Some(d) = self.balancer.destination(dest) {
                    let text = format!("health check of {d} could not run: {reason}");
                    self.logs.push_back(LogRecord::new(LogLevel::Error, text));
                }
            }
        }
        self.drain_balancer_events();
    }

    /// What every listener shares: `--max-conns`, the pipes, the scrapes.
    pub fn budget(&self) -> &Arc<ProcessBudget> {
        &self.budget
    }

    /// A copy of the counts `/metrics` shows (OPT-9), to render after letting go
    /// of the lock.
    pub fn metrics(&self) -> Metrics {
        let b = &self.balancer;
        let each = b
            .destinations()
            .iter()
            .zip(b.ids())
            .map(|(d, id)| (d.to_string(), id, b.health(id), d.attributes.drain));
        Metrics::new(&self.stats, each, self.open())
    }

    /// The SIGUSR1 state dump at `now` (OPT-6); with several listeners each
    /// line starts with this one's TAG (OPT-13).
    pub fn report(&self, now: Instant) -> Vec<String> {
        let lines = self.stats.report(now, &self.balancer, self.open());
        match self.settings.label {
            None => lines,
            Some(_) => {
                let tag = self.settings.source.log_tag();
                lines.into_iter().map(|l| format!("{tag}: {l}")).collect()
            }
        }
    }

    /// The label of this listener's metrics (`--config`, OPT-13).
    pub fn label(&self) -> Option<&str> {
        self.settings.label.as_deref()
    }

    /// The balancer (destinations and their health).
    pub fn balancer(&self) -> &Balancer {
        &self.balancer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::cli::Action;
    use crate::connection::Output;
    use crate::reports::metrics::MAX_SCRAPES;
    use crate::test_clock::t0;
    use std::ffi::OsString;

    fn config(words: &[&str]) -> Config {
        let argv = words.iter().map(OsString::from).collect();
        let Ok(Action::Run(config)) = cli::parse(argv) else {
            panic!("bad command line");
        };
        *config
    }

    fn forwarder(words: &[&str]) -> Forwarder {
        let config = config(words);
        let runtime = Runtime {
            name: "test",
            pipe_capacity: Some(1 << 20),
            buffer_release_after: Duration::ZERO,
            reuse_buffers: true,
            readiness_tells_errors: false,
        };
        Forwarder::new(&config, None, 1024, runtime)
    }

    use crate::config::cli;

    fn client(last: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], 40_000))
    }

    #[test]
    fn refusals_are_limited_per_kind_fault_4() {
        let now = t0();
        let mut f = forwarder(&[
            "-l",
            "--max-conns-per-ip",
            "1",
            "-a",
            "10.0.0.0/31",
            "8080",
            "127.0.0.1:9000",
        ]);
        let _held = f.handle_accepted(now, client(1)).unwrap();
        let mut limiter = crate::reports::log::Limiter::new();
        let mut written = Vec::new();
        for k in 0..25 {
            assert!(
                f.handle_accepted(now, client(1)).is_none(),
                "over the limit"
            );
            assert!(
                f.handle_accepted(now, client(2 + k % 2)).is_none(),
                "by the rules"
            );
            while let Some(r) = f.poll_log(now) {
                written.extend(limiter.handle_record(now, r));
            }
        }
        let refused = written
            .iter()
            .filter(|r| r.text.ends_with("Refused."))
            .count();
        let over = written
            .iter()
            .filter(|r| r.text.contains("--max-conns-per-ip"))
            .count();
        assert_eq!((refused, over, written.len()), (10, 10, 20), "{written:?}");
        assert_eq!(limiter.poll_timeout(), Some(now + Duration::from_secs(1)));
        let later = now + Duration::from_secs(1);
        let summaries: Vec<_> = std::iter::from_fn(|| limiter.poll_record(later)).collect();
        assert_eq!(summaries.len(), 2, "one per kind");
        assert!(summaries
            .iter()
            .all(|r| r.text == "15 similar messages suppressed"));
        assert_eq!(
            f.report(later).last().unwrap(),
            "summary open 1 accepted 1 refused 50 failed 0"
        );
    }

    #[test]
    fn sighup_replaces_credentials_or_keeps_them_proc_8() {
        let now = t0();
        let mut f = forwarder(&["-h", "127.0.0.1:3128", "8080", "example.org:22"]);
        let first = ProxyCredentials::from_file_contents(b"a:b\n").unwrap();
        f.handle_reload(now, Some(("/etc/plug/auth".into(), Ok(first))));
        assert_eq!(
            f.poll_log(now).unwrap().text,
            "reloaded: proxy credentials from /etc/plug/auth"
        );
        let header = |f: &Forwarder| f.dial.credentials.as_ref().map(|c| c.header_value());
        assert_eq!(header(&f).as_deref(), Some("Basic YTpi"));
        f.handle_reload(now, Some(("/x".into(), Err("cannot read /x: gone".into()))));
        let lines: Vec<_> = std::iter::from_fn(|| f.poll_log(now))
            .map(|r| r.text)
            .collect();
        // Nothing was re-read, so nothing says 'reloaded' (OPT-15).
        assert_eq!(
            lines,
            ["cannot read /x: gone; keeping the previous proxy credentials"]
        );
        assert_eq!(header(&f).as_deref(), Some("Basic YTpi"), "kept");
        // Without a credentials file SIGHUP says what it did not do.
        let mut g = forwarder(&["8080", "127.0.0.1:22"]);
        g.handle_reload(now, None);
        assert_eq!(
            g.poll_log(now).unwrap().text,
            "reloaded: nothing to reload; destinations change only with --config"
        );
    }

    #[test]
    fn one_open_count_back_to_zero_whatever_ended_it_fault_5() {
        let now = t0();
        let mut f = forwarder(&["--max-conns", "2", "8080", "127.0.0.1:9000"]);
        let mut a = f.handle_accepted(now, client(1)).unwrap();
        let mut b = f.handle_accepted(now, client(2)).unwrap();
        assert!(
            f.handle_accepted(now, client(3)).is_none(),
            "over --max-conns"
        );
        assert_eq!(f.open(), 2);
        // One gives up while connecting, the other is abandoned by its driver.
        assert!(matches!(a.poll_output(now), Output::Connect { .. }));
        a.handle_connect_started(
            now,
            Err(crate::connection::ConnectFailure::Remote("refused".into())),
        );
        b.abandon(now);
        for conn in [&mut a, &mut b] {
            for _ in 0..20 {
                match conn.poll_output(now) {
                    Output::Forwarder => f.exchange(now, conn),
                    Output::Done => break,
                    _ => {}
                }
            }
            assert!(conn.is_done());
        }
        assert_eq!(f.open(), 0);
        assert_eq!(
            f.report(now).last().unwrap(),
            "summary open 0 accepted 2 refused 1 failed 2"
        );
    }

    #[test]
    fn a_cut_connection_is_reset_and_recorded_once_opt_8() {
        use crate::connection::relay::Side;
        use crate::connection::Ready;
        let now = t0();
        let mut f = forwarder(&["-S", "-", "-l", "8080", "127.0.0.1:9000"]);
        let mut c = f.handle_accepted(now, client(1)).unwrap();
        // Reach the destination.
        for _ in 0..20 {
            match c.poll_output(now) {
                Output::Forwarder => f.exchange(now, &mut c),
                Output::Connect { .. } => c.handle_connect_started(now, Ok(())),
                Output::FinishConnect => c.handle_connect_result(now, Ok(())),
                Output::Wait(_) if c.reached().is_some() => break,
                Output::Wait(_) => {
                    let writable = Ready {
                        write: true,
                        ..Ready::default()
                    };
                    c.handle_ready(now, Side::Destination, writable);
                }
                _ => {}
            }
        }
        assert!(c.reached().is_some(), "relaying");
        // The cut, reported again at every wake-up as a driver does.
        let (mut closes, mut sessions, mut completes) = (vec![], 0, vec![]);
        for _ in 0..50 {
            c.handle_cut(now);
            match c.poll_output(now) {
                Output::Forwarder => f.exchange(now, &mut c),
                Output::Close { reset, .. } => closes.push(reset),
                Output::Session(_) => {
                    // Whoever reads the session line finds the counts agree.
                    assert_eq!(f.open(), 0, "counts before the session line");
                    sessions += 1;
                }
                Output::Log(r) if r.text.contains("Complete") => completes.push(r.text),
                Output::Done => break,
                _ => {}
            }
        }
        assert!(c.is_done());
        assert_eq!(
            closes,
            [true],
            "one close, a reset (no peer takes it for complete)"
        );
        assert_eq!(sessions, 1);
        // OPT-8: a Complete line whose status is not 0.
        assert_eq!(completes.len(), 1, "{completes:?}");
        assert!(
            completes[0].starts_with("(8080): Complete, status=") && !completes[0].ends_with("=0."),
            "{completes:?}"
        );
        assert_eq!(f.open(), 0, "its count is handed over");
    }

    #[test]
    fn a_non_blocking_listener_is_waited_on_not_retried_fault_1() {
        let now = t0();
        let mut f = forwarder(&["8080", "127.0.0.1:9000"]);
        let next = f.handle_accept_failed(now, AcceptFailure::WouldBlock, "EAGAIN");
        assert_eq!(next, AcceptNext::WaitReadable);
        let next = f.handle_accept_failed(now, AcceptFailure::ClientGone, "ECONNABORTED");
        assert_eq!(next, AcceptNext::Retry);
        let next = f.handle_accept_failed(now, AcceptFailure::OutOfDescriptors, "EMFILE");
        assert!(matches!(next, AcceptNext::Pause(_)));
        assert!(f.poll_log(now).is_some(), "exhaustion is logged");
    }

    fn lines(f: &mut Forwarder, now: Instant) -> Vec<String> {
        std::iter::from_fn(|| f.poll_log(now))
            .map(|r| r.text)
            .collect()
    }

    /// OPT-15 with OPT-10/11: a reload that keeps a line's `--resolve` or
    /// `--health-check` period keeps its rhythm (no burst of lookups or probes
    /// on every SIGHUP); a changed period starts a new schedule at once.
    #[test]
    fn a_reload_keeps_the_rhythm_of_rounds_that_stay_opt_10_opt_11_opt_15() {
        // The rounds due at `now`, each finished at once.
        fn round(f: &mut Forwarder, kind: &str, now: Instant) -> usize {
            if kind == "--resolve" {
                return f.poll_lookups(now).len();
            }
            let probes = f.poll_probes(now);
            for p in &probes {
                f.handle_probe_result(now, p.dest(), ProbeResult::Up);
            }
            probes.len()
        }
        for (kind, dest) in [
            ("--resolve", "web.example:80"),
            ("--health-check", "127.0.0.1:9000"),
        ] {
            let now = t0();
            let words = [kind, "30", "8080", dest];
            let mut f = forwarder(&words);
            assert_eq!(round(&mut f, kind, now), 1, "{kind}");
            let later = now + Duration::from_secs(5);
            f.handle_reconfigure(later, &config(&words), None);
            assert_eq!(
                round(&mut f, kind, later),
                0,
                "{kind}: due again at 30 s only"
            );
            let faster = [kind, "10", "8080", dest];
            f.handle_reconfigure(later, &config(&faster), None);
            assert_eq!(
                round(&mut f, kind, later),
                1,
                "{kind}: a new schedule starts at once"
            );
        }
    }

    /// OPT-13/OPT-15: a listener of a `--config` file is labelled in metrics by
    /// its address, through reloads; a plug of one listener has no label.
    #[test]
    fn a_listener_keeps_its_metrics_label_through_a_reload_opt_13_opt_15() {
        let words = ["--idle-timeout", "30", "8080", "127.0.0.1:9000"];
        assert_eq!(forwarder(&words).label(), None);
        let budget = Arc::new(ProcessBudget::new(None, 1024, true));
        let runtime = forwarder(&words).settings().runtime;
        let label = Some("0.0.0.0:8080".to_string());
        let mut f = Forwarder::with_budget(&config(&words), None, budget, runtime, label);
        assert_eq!(f.label(), Some("0.0.0.0:8080"));
        let changed = ["--idle-timeout", "60", "8080", "127.0.0.1:9001"];
        f.handle_reconfigure(t0(), &config(&changed), None);
        assert_eq!(f.label(), Some("0.0.0.0:8080"));
    }

    #[test]
    fn host_names_are_looked_up_in_rounds_and_tried_in_order_opt_11() {
        let now = t0();
        let mut f = forwarder(&["--resolve", "30", "8080", "web.example:80", "10.0.0.9:80"]);
        let lookups = f.poll_lookups(now);
        assert_eq!(
            lookups,
            [Lookup {
                dest: DestId(0),
                name: "web.example".into(),
                port: 80
            }],
            "numeric destinations need no lookup"
        );
        assert!(f.poll_lookups(now).is_empty());
        assert_eq!(f.poll_lookup_timeout(), Some(now + Duration::from_secs(30)));
        // Unresolvable: that destination is down, plug goes on with the other.
        f.handle_resolved(now, DestId(0), Err("Name or service not known".into()));
        assert_eq!(
            lines(&mut f, now),
            ["destination web.example:80 down: cannot resolve web.example: Name or service not known"]
        );
        let mut c = f.handle_accepted(now, client(1)).unwrap();
        match c.poll_output(now) {
            Output::Connect(to) => assert_eq!(to.addr, "10.0.0.9:80".parse().unwrap()),
            other => panic!("{other:?}"),
        }
        // Resolved: eligible again, its addresses tried in the order given.
        let later = now + Duration::from_secs(30);
        assert_eq!(f.poll_lookups(later).len(), 1);
        let ips = vec!["10.0.0.7".parse().unwrap(), "10.0.0.8".parse().unwrap()];
        f.handle_resolved(later, DestId(0), Ok(ips));
        assert_eq!(
            lines(&mut f, later),
            ["destination web.example:80 resolves to 10.0.0.7 10.0.0.8"]
        );
        let mut c = f.handle_accepted(later, client(2)).unwrap();
        let Output::Connect(to) = c.poll_output(later) else {
            panic!()
        };
        assert_eq!(to.addr, "10.0.0.7:80".parse().unwrap());
        c.handle_connect_started(
            later,
            Err(crate::connection::ConnectFailure::Remote("refused".into())),
        );
        loop {
            match c.poll_output(later) {
                Output::Forwarder => f.exchange(later, &mut c),
                Output::Connect(to) => {
                    assert_eq!(
                        to.addr,
                        "10.0.0.8:80".parse().unwrap(),
                        "next address, same destination"
                    );
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        // The same answer again is no news.
        let ips = vec!["10.0.0.7".parse().unwrap(), "10.0.0.8".parse().unwrap()];
        f.handle_resolved(later, DestId(0), Ok(ips));
        assert!(lines(&mut f, later).is_empty());
    }

    #[test]
    fn a_lookup_in_another_order_leaves_a_dead_destination_dead_opt_11() {
        use crate::forwarder::select::Health;
        use std::net::IpAddr;
        let now = t0();
        let mut f = forwarder(&[
            "--resolve",
            "30",
            "--health-check",
            "5",
            "8080",
            "web.example:80",
            "10.0.0.9:80",
        ]);
        let _ = f.poll_lookups(now);
        let a: IpAddr = "10.0.0.7".parse().unwrap();
        let b: IpAddr = "10.0.0.8".parse().unwrap();
        f.handle_resolved(now, DestId(0), Ok(vec![a, b]));
        let _ = lines(&mut f, now);
        let _ = f.poll_probes(now);
        f.handle_probe_result(
            now,
            DestId(0),
            ProbeResult::Down("Connection refused".into()),
        );
        assert_eq!(
            lines(&mut f, now),
            ["destination web.example:80 down: Connection refused"]
        );
        // DNS round robin: the same two addresses, the other way round.
        let later = now + Duration::from_secs(30);
        let _ = f.poll_lookups(later);
        f.handle_resolved(later, DestId(0), Ok(vec![b, a]));
        assert!(lines(&mut f, later).is_empty(), "no news, no 'up'");
        assert!(matches!(
            f.balancer().health(DestId(0)),
            Some(Health::Unhealthy { .. })
        ));
        // Clients go to the other destination, and the new order is the one tried
        // once the destination is back.
        let mut c = f.handle_accepted(later, client(3)).unwrap();
        let Output::Connect(to) = c.poll_output(later) else {
            panic!()
        };
        assert_eq!(to.addr, "10.0.0.9:80".parse().unwrap());
        assert_eq!(
            f.balancer().addresses(DestId(0)),
            [SocketAddr::new(b, 80), SocketAddr::new(a, 80)]
        );
        // A set that really changed is news, and earns a fresh chance.
        let c_ip: IpAddr = "10.0.0.6".parse().unwrap();
        f.handle_resolved(later, DestId(0), Ok(vec![c_ip]));
        assert_eq!(
            lines(&mut f, later),
            ["destination web.example:80 resolves to 10.0.0.6"]
        );
        assert_eq!(f.balancer().health(DestId(0)), Some(Health::Healthy));
    }

    #[test]
    fn scrapes_have_a_budget_of_their_own_fault_6() {
        let now = t0();
        let mut f = forwarder(&["--max-conns", "2", "8080", "127.0.0.1:9000"]);
        let b = Arc::clone(f.budget());
        for _ in 0..MAX_SCRAPES {
            assert!(b.handle_scrape_accepted());
        }
        assert!(!b.handle_scrape_accepted(), "the 17th is closed at once");
        // Clients are admitted all the while: the budgets are apart.
        assert!(f.handle_accepted(now, client(1)).is_some());
        b.handle_scrape_closed();
        assert!(b.handle_scrape_accepted(), "a freed slot is used again");
        assert!(!b.handle_scrape_accepted());
    }

    #[test]
    fn health_checks_come_in_rounds_and_move_health_opt_10() {
        let now = t0();
        let mut f = forwarder(&[
            "--health-check",
            "5",
            "-p",
            "127.0.0.3",
            "8080",
            "127.0.0.1:9000",
            "127.0.0.1:9001",
        ]);
        let probes = f.poll_probes(now);
        assert_eq!(probes.len(), 2);
        assert!(f.poll_probes(now).is_empty());
        assert_eq!(f.poll_probe_timeout(), Some(now + Duration::from_secs(5)));
        let mut first = probes.into_iter().next().unwrap();
        assert_eq!(
            first.start(now),
            crate::rounds::probe::ProbeStep::Connect {
                addr: "127.0.0.1:9000".parse().unwrap(),
                bind: Some("127.0.0.3:0".parse().unwrap())
            }
        );
        f.handle_probe_result(
            now,
            DestId(0),
            ProbeResult::Down("Connection refused".into()),
        );
        assert_eq!(
            lines(&mut f, now),
            ["destination 127.0.0.1:9000 down: Connection refused"]
        );
        // A round while the other probe is still under way skips it.
        let next = now + Duration::from_secs(5);
        let probes = f.poll_probes(next);
        assert_eq!(
            probes.iter().map(Probe::dest).collect::<Vec<_>>(),
            [DestId(0)]
        );
        // Back at once, no -r needed; not counted anywhere.
        f.handle_probe_result(next, DestId(0), ProbeResult::Up);
        // A probe plug could not run changes nothing, and says so (FAULT-6).
        f.handle_probe_result(
            next,
            DestId(1),
            ProbeResult::Inconclusive("Too many open files".into()),
        );
        assert_eq!(
            lines(&mut f, next),
            [
                "destination 127.0.0.1:9000 up",
                "health check of 127.0.0.1:9001 could not run: Too many open files"
            ]
        );
        assert_eq!(
            f.balancer().health(DestId(1)),
            Some(crate::forwarder::select::Health::Healthy)
        );
        assert_eq!(
            f.report(next).last().unwrap(),
            "summary open 0 accepted 0 refused 0 failed 0"
        );
        assert!(f.report(next)[0].ends_with("healthy open 0 total 0 in 0 out 0"));
    }

    #[test]
    fn through_a_proxy_a_probe_sends_connect_with_credentials_opt_10() {
        let now = t0();
        let mut f = forwarder(&[
            "--health-check",
            "5",
            "-h",
            "127.0.0.1:3128",
            "8080",
            "backend.example:22",
        ]);
        f.handle_reload(
            now,
            Some((
                "auth".into(),
                Ok(ProxyCredentials::from_file_contents(b"u:p").unwrap()),
            )),
        );
        let mut probe = f.poll_probes(now).pop().unwrap();
        let crate::rounds::probe::ProbeStep::Connect { addr, .. } = probe.start(now) else {
            panic!()
        };
        assert_eq!(addr, "127.0.0.1:3128".parse().unwrap());
        let crate::rounds::probe::ProbeStep::Send(request) = probe.handle_connected(now) else {
            panic!()
        };
        let text = String::from_utf8_lossy(&request);
        assert!(
            text.starts_with("CONNECT backend.example:22 HTTP/1.1\r\n"),
            "{text}"
        );
        assert!(
            text.contains("Proxy-Authorization: Basic dTpw\r\n"),
            "{text}"
        );
    }
}
