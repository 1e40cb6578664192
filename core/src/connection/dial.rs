//! Reaching a destination for one client: the attempt plan with fail-over (CONN-4),
//! health reporting (CONN-3), `-p` binding (CONN-8), the connect timeout (OPT-1) and
//! the CONNECT exchange through `-h` (CONN-9).
//!
//! The connection drives a [`Dialer`] with what happened (chosen, connected,
//! failed, reply bytes, timeout) and does what each returned [`DialStep`] says,
//! until `Established` or `GiveUp`. What the listener's forwarder must decide
//! or learn (which destination next, a failure, the one reached) goes out as
//! [`ForwarderEvent`]s.

use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::addr::{canonical_ip, reachable_from, Destination};
use crate::connection::connect::{
    connect_request, ProxyCredentials, ProxyFailure, ProxyReply, ReplyStatus,
};
use crate::forwarder::select::{AttemptPlan, DestId};
use crate::shared::{Choice, ForwarderEvent};

/// The `--connect-timeout` default (OPT-1).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How outgoing connections are made, from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialOptions {
    /// `-h`: the upstream CONNECT proxy every destination is reached through.
    pub proxy: Option<SocketAddr>,
    /// `-p`: the local address outgoing sockets are bound to (port 0).
    pub bind: Option<IpAddr>,
    /// `--connect-timeout`: how long a connect, and then a CONNECT exchange, may take.
    pub connect_timeout: Duration,
    /// `--proxy-auth-file`: credentials for the proxy.
    pub credentials: Option<ProxyCredentials>,
}

impl Default for DialOptions {
    fn default() -> Self {
        DialOptions {
            proxy: None,
            bind: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            credentials: None,
        }
    }
}

/// What the adapter should do next for this client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialStep {
    /// Ask the forwarder which destination to try next: the
    /// [`ForwarderEvent::Choose`] is `Dialer::poll_forwarder_event`'s; give
    /// the answer to `Dialer::handle_chosen`.
    Choose,
    /// A choice was asked for and has not come back: nothing to do yet.
    Wait,
    /// Open a TCP connection to `addr`, bound first to `bind` when given, and report
    /// the result with [`Dialer::handle_connected`] or `Dialer::handle_connect_failed`;
    /// give up on it at [`Dialer::poll_timeout`].
    Connect {
        /// The destination being tried.
        dest: DestId,
        /// Where to connect: the destination itself, or the proxy with `-h`.
        addr: SocketAddr,
        /// The local address to bind to first (`-p`, port 0).
        bind: Option<SocketAddr>,
    },
    /// Write all of `request` to the proxy, then read its reply and feed it to
    /// `Dialer::handle_reply_data` (or report EOF / an error).
    SendRequest {
        /// The CONNECT request.
        request: Bytes,
    },
    /// Read more of the proxy's reply and feed it to `Dialer::handle_reply_data`.
    ReadReply,
    /// Connected: start relaying, delivering `leftover` to the client first.
    Established {
        /// The destination reached.
        dest: DestId,
        /// Tunnel bytes that arrived with the proxy's reply (empty without `-h`).
        leftover: Bytes,
    },
    /// Every destination this client may try has failed: close the client.
    GiveUp,
}

/// Why one attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialFailure {
    /// The connect (or a read or write of the CONNECT exchange) failed.
    Io(String),
    /// The connect or CONNECT exchange took longer than `--connect-timeout`.
    Timeout(Duration),
    /// The proxy did not open a tunnel.
    Proxy(ProxyFailure),
    /// A host name with no address known: `--resolve` found none (OPT-11).
    NoAddress,
    /// plug itself could not make a socket (out of descriptors or memory): not the
    /// destination's fault, so its health is left alone.
    Local(String),
}

impl fmt::Display for DialFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DialFailure::Io(e) => f.write_str(e),
            DialFailure::Timeout(t) => write!(f, "timed out after {}s", t.as_secs_f64()),
            DialFailure::Proxy(p) => write!(f, "{p}"),
            DialFailure::NoAddress => f.write_str("no address known (its name did not resolve)"),
            DialFailure::Local(e) => write!(f, "cannot open an outgoing socket: {e}"),
        }
    }
}

/// What a dialer noticed, for the log; drained with `Dialer::poll_event`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialEvent {
    /// The destination that failed.
    pub dest: Destination,
    /// Its place on the command line.
    pub dest_id: DestId,
    /// The client it failed for.
    pub client: IpAddr,
    /// Why.
    pub failure: DialFailure,
}

impl fmt::Display for DialEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "destination {} failed for {}: {}",
            self.dest, self.client, self.failure
        )
    }
}

#[derive(Debug)]
enum Phase {
    Idle,
    /// Waiting for the forwarder's [`ConnectionEvent::Chosen`].
    Choosing,
    Connecting {
        dest: DestId,
        /// Which of the destination's addresses is being tried (OPT-11).
        address: usize,
        deadline: Option<Instant>,
    },
    Handshaking {
        dest: DestId,
        reply: ProxyReply,
        deadline: Option<Instant>,
    },
    Established {
        dest: DestId,
    },
    GaveUp,
}

/// The connection-establishment machine of one accepted client. It never
/// touches the balancer: it asks for each destination with
/// [`DialStep::Choose`] and reports what became of it as [`ForwarderEvent`]s.
#[derive(Debug)]
pub struct Dialer {
    client: IpAddr,
    /// `None` while the forwarder holds it (between `Choose` and `Chosen`).
    plan: Option<AttemptPlan>,
    /// The destination being tried or reached.
    current: Option<Choice>,
    options: Arc<DialOptions>,
    phase: Phase,
    events: VecDeque<DialEvent>,
    shared: VecDeque<ForwarderEvent>,
}

impl Dialer {
    /// Creates the dialer for a client just accepted (and allowed by the rules).
    pub fn new(client: IpAddr, options: Arc<DialOptions>) -> Self {
        Dialer {
            client: canonical_ip(client),
            plan: Some(AttemptPlan::new(client)),
            current: None,
            options,
            phase: Phase::Idle,
            events: VecDeque::new(),
            shared: VecDeque::new(),
        }
    }

    /// The client this dialer works for.
    pub fn client(&self) -> IpAddr {
        self.client
    }

    /// The destination being tried or reached, if any.
    pub(crate) fn current(&self) -> Option<DestId> {
        match self.phase {
            Phase::Connecting { dest, .. }
            | Phase::Handshaking { dest, .. }
            | Phase::Established { dest } => Some(dest),
            Phase::Idle | Phase::Choosing | Phase::GaveUp => None,
        }
    }

    /// The destination being tried or reached, as written.
    pub fn destination(&self) -> Option<&Destination> {
        self.current()
            .and(self.current.as_ref())
            .map(|c| &c.destination)
    }

    /// Asks for the first destination. Call once, right after creating the dialer.
    pub fn start(&mut self, _now: Instant) -> DialStep {
        match self.phase {
            Phase::Idle => self.choose(),
            _ => self.stale(),
        }
    }

    fn choose(&mut self) -> DialStep {
        match self.plan {
            Some(_) => {
                self.phase = Phase::Choosing;
                DialStep::Choose
            }
            None => self.stale(),
        }
    }

    /// Takes the forwarder's answer to [`DialStep::Choose`]: the plan back, and
    /// the destination to try (`None`: every one this client may try has failed).
    pub(crate) fn handle_chosen(
        &mut self,
        now: Instant,
        plan: AttemptPlan,
        choice: Option<Choice>,
    ) -> DialStep {
        if !matches!(self.phase, Phase::Choosing) {
            return self.stale();
        }
        self.plan = Some(plan);
        let Some(choice) = choice else {
            self.phase = Phase::GaveUp;
            self.current = None;
            return DialStep::GiveUp;
        };
        let dest = choice.dest;
        self.current = Some(choice);
        match self.connect_to(now, dest, 0) {
            Some(step) => step,
            None => {
                self.record_failure(dest, DialFailure::NoAddress);
                self.choose()
            }
        }
    }

    /// The connect to the current destination's address number `address` (or
    /// to the proxy), or `None` when it has no such address.
    fn connect_to(&mut self, now: Instant, dest: DestId, address: usize) -> Option<DialStep> {
        let (address, addr) = match self.options.proxy {
            Some(proxy) if address == 0 => (0, proxy),
            Some(_) => return None,
            None => self
                .current
                .as_ref()?
                .addresses
                .iter()
                .enumerate()
                .skip(address)
                .find(|(_, a)| reachable_from(self.options.bind, a))
                .map(|(i, a)| (i, *a))?,
        };
        self.phase = Phase::Connecting {
            dest,
            address,
            deadline: now.checked_add(self.options.connect_timeout),
        };
        let bind = self.options.bind.map(|ip| SocketAddr::new(ip, 0));
        Some(DialStep::Connect { dest, addr, bind })
    }

    /// Logs why `dest` failed this client and, unless the failure is plug's
    /// own (FAULT-6), tells the forwarder (CONN-3).
    fn record_failure(&mut self, dest: DestId, failure: DialFailure) {
        if !matches!(failure, DialFailure::Local(_)) {
            self.shared.push_back(ForwarderEvent::Failed {
                dest,
                reason: failure.to_string(),
            });
        }
        if let Some(c) = &self.current {
            self.events.push_back(DialEvent {
                dest: c.destination.clone(),
                dest_id: dest,
                client: self.client,
                failure,
            });
        }
    }

    fn fail(&mut self, now: Instant, failure: DialFailure) -> DialStep {
        let Some(dest) = self.current() else {
            return self.stale();
        };
        if matches!(self.phase, Phase::Established { .. }) {
            return self.stale();
        }
        // A name with several addresses: the next address of the same destination
        // first (OPT-11); the destination fails when the last one has.
        if let Phase::Connecting { address, .. } = self.phase {
            if let Some(step) = self.connect_to(now, dest, address + 1) {
                return step;
            }
        }
        self.record_failure(dest, failure);
        self.choose()
    }

    /// The answer to an input that does not fit the current phase: repeat what the
    /// phase already asked for, so a confused driver cannot corrupt the plan.
    fn stale(&self) -> DialStep {
        match self.phase {
            Phase::Established { dest } => DialStep::Established {
                dest,
                leftover: Bytes::new(),
            },
            Phase::Handshaking { .. } => DialStep::ReadReply,
            Phase::Choosing => DialStep::Wait,
            Phase::Idle | Phase::Connecting { .. } | Phase::GaveUp => DialStep::GiveUp,
        }
    }

    fn reached(&mut self, dest: DestId, leftover: Bytes) -> DialStep {
        self.phase = Phase::Established { dest };
        DialStep::Established { dest, leftover }
    }

    /// Reports that the TCP connect of the last [`DialStep::Connect`] succeeded.
    pub fn handle_connected(&mut self, now: Instant) -> DialStep {
        let Phase::Connecting { dest, .. } = self.phase else {
            return self.stale();
        };
        match (&self.options.proxy, &self.current) {
            (Some(_), Some(c)) => {
                let request = connect_request(&c.destination, self.options.credentials.as_ref());
                let deadline = now.checked_add(self.options.connect_timeout);
                self.phase = Phase::Handshaking {
                    dest,
                    reply: ProxyReply::new(),
                    deadline,
                };
                DialStep::SendRequest { request }
            }
            _ => self.reached(dest, Bytes::new()),
        }
    }

    /// Reports that the connect failed, or that writing the request or reading the
    /// reply failed: the destination is marked unhealthy and the next one is tried.
    pub(crate) fn handle_connect_failed(
        &mut self,
        now: Instant,
        error: &dyn fmt::Display,
    ) -> DialStep {
        self.fail(now, DialFailure::Io(error.to_string()))
    }

    /// Reports that plug could not even make the outgoing socket (socket(2) or the
    /// `-p` bind failed, e.g. out of descriptors, or an address of the other
    /// family): the destination keeps its health because it was never tried, and
    /// the next address, else the next destination, is tried (FAULT-6).
    pub fn handle_local_failure(&mut self, now: Instant, error: &dyn fmt::Display) -> DialStep {
        self.fail(now, DialFailure::Local(error.to_string()))
    }

    /// Feeds bytes read from the proxy after [`DialStep::SendRequest`] or
    /// [`DialStep::ReadReply`].
    pub(crate) fn handle_reply_data(&mut self, now: Instant, data: &[u8]) -> DialStep {
        let Phase::Handshaking { dest, reply, .. } = &mut self.phase else {
            return self.stale();
        };
        let dest = *dest;
        match reply.feed(data) {
            ReplyStatus::NeedMore => DialStep::ReadReply,
            ReplyStatus::Tunnel { leftover } => self.reached(dest, leftover),
            ReplyStatus::Failed(f) => self.fail(now, DialFailure::Proxy(f)),
        }
    }

    /// Reports that the proxy closed the connection while its reply was awaited.
    pub(crate) fn handle_reply_eof(&mut self, now: Instant) -> DialStep {
        if !matches!(self.phase, Phase::Handshaking { .. }) {
            return self.stale();
        }
        // A reply still being read ended before its head did.
        self.fail(now, DialFailure::Proxy(ProxyFailure::Truncated))
    }

    /// The instant the current connect or CONNECT exchange times out, if any.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Connecting { deadline, .. } | Phase::Handshaking { deadline, .. } => deadline,
            _ => None,
        }
    }

    /// Checks the timeout at `now`: `None` if it has not passed (nothing to do),
    /// otherwise the attempt fails and the next step is returned. Idempotent.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<DialStep> {
        match self.poll_timeout() {
            Some(deadline) if now >= deadline => {
                Some(self.fail(now, DialFailure::Timeout(self.options.connect_timeout)))
            }
            _ => None,
        }
    }

    /// Returns the next thing worth logging, oldest first.
    #[must_use]
    pub(crate) fn poll_event(&mut self) -> Option<DialEvent> {
        self.events.pop_front()
    }

    /// Returns the next thing for the forwarder, oldest first: failures
    /// ([`ForwarderEvent::Failed`]), then the choice [`DialStep::Choose`]
    /// asked for (health first, so the choice knows it). The destination
    /// reached is the connection's to tell.
    #[must_use]
    pub(crate) fn poll_forwarder_event(&mut self) -> Option<ForwarderEvent> {
        if let Some(failed) = self.shared.pop_front() {
            return Some(failed);
        }
        match self.phase {
            Phase::Choosing => self.plan.take().map(ForwarderEvent::Choose),
            _ => None,
        }
    }

    /// True when `Dialer::poll_forwarder_event` has one.
    pub(crate) fn has_forwarder_event(&self) -> bool {
        !self.shared.is_empty() || (matches!(self.phase, Phase::Choosing) && self.plan.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forwarder::select::{Balancer, Health, SelectPolicy};

    use crate::test_clock::t0;

    fn balancer(words: &[&str], names: bool) -> Balancer {
        let dests = words
            .iter()
            .map(|w| Destination::parse(w, 80, names).unwrap())
            .collect();
        Balancer::new(dests, SelectPolicy::default())
    }

    /// Plays the forwarder's part: learns the dialer's reports and answers
    /// its `Choose` with the balancer, until a step for the sockets comes.
    fn run(mut step: DialStep, b: &mut Balancer, now: Instant, d: &mut Dialer) -> DialStep {
        for _ in 0..100 {
            let mut chosen = None;
            while let Some(event) = d.poll_forwarder_event() {
                match event {
                    ForwarderEvent::Failed { dest, reason } => {
                        b.handle_connect_failed(now, dest, &reason)
                    }
                    ForwarderEvent::Choose(mut plan) => {
                        assert_eq!(step, DialStep::Choose, "a choice only when asked");
                        let choice = b.next_attempt(now, &mut plan).and_then(|id| b.choice(id));
                        chosen = Some(d.handle_chosen(now, plan, choice));
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            match chosen {
                Some(next) => step = next,
                None => {
                    assert_ne!(step, DialStep::Choose, "Choose without its event");
                    // The connection tells the forwarder what was reached.
                    if let DialStep::Established { dest, .. } = &step {
                        b.handle_connected(now, *dest);
                    }
                    return step;
                }
            }
        }
        panic!("no end to the choosing")
    }

    fn timeout(at: Instant, b: &mut Balancer, d: &mut Dialer) -> Option<DialStep> {
        let step = d.handle_timeout(at)?;
        Some(run(step, b, at, d))
    }

    fn client() -> IpAddr {
        "127.0.0.2".parse().unwrap()
    }

    fn connect_addr(step: &DialStep) -> SocketAddr {
        match step {
            DialStep::Connect { addr, .. } => *addr,
            other => panic!("expected Connect, got {other:?}"),
        }
    }

    #[test]
    fn direct_connect_binds_with_p_conn_8() {
        let mut b = balancer(&["127.0.0.1:9000"], false);
        let opts = DialOptions {
            bind: Some("127.0.0.3".parse().unwrap()),
            ..DialOptions::default()
        };
        let now = t0();
        let mut d = Dialer::new(client(), Arc::new(opts));
        let step = run(d.start(now), &mut b, now, &mut d);
        assert_eq!(
            step,
            DialStep::Connect {
                dest: DestId(0),
                addr: "127.0.0.1:9000".parse().unwrap(),
                bind: Some("127.0.0.3:0".parse().unwrap()),
            }
        );
        assert_eq!(d.poll_timeout(), Some(now + DEFAULT_CONNECT_TIMEOUT));
        assert_eq!(
            run(d.handle_connected(now), &mut b, now, &mut d),
            DialStep::Established {
                dest: DestId(0),
                leftover: Bytes::new()
            }
        );
        assert_eq!(d.poll_timeout(), None);
    }

    #[test]
    fn a_failed_connect_moves_on_to_the_next_destination_conn_4() {
        let mut b = balancer(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"], false);
        let now = t0();
        let mut d = Dialer::new(client(), Arc::default());
        assert_eq!(
            connect_addr(&run(d.start(now), &mut b, now, &mut d)).port(),
            1
        );
        let step = run(
            d.handle_connect_failed(now, &"Connection refused"),
            &mut b,
            now,
            &mut d,
        );
        assert_eq!(connect_addr(&step).port(), 2);
        let ev = d.poll_event().unwrap();
        assert_eq!(
            ev.to_string(),
            "destination 127.0.0.1:1 failed for 127.0.0.2: Connection refused"
        );
        assert_eq!(b.health(DestId(0)), Some(Health::Unhealthy { since: now }));
        let step = run(
            d.handle_connect_failed(now, &"refused"),
            &mut b,
            now,
            &mut d,
        );
        assert_eq!(connect_addr(&step).port(), 3);
        assert_eq!(
            run(
                d.handle_connect_failed(now, &"refused"),
                &mut b,
                now,
                &mut d
            ),
            DialStep::GiveUp
        );
        assert_eq!(d.current(), None);
    }

    #[test]
    fn connect_timeout_fails_the_destination_opt_1() {
        let mut b = balancer(&["127.0.0.1:1", "127.0.0.1:2"], false);
        let now = t0();
        let opts = DialOptions {
            connect_timeout: Duration::from_secs(3),
            ..DialOptions::default()
        };
        let mut d = Dialer::new(client(), Arc::new(opts));
        run(d.start(now), &mut b, now, &mut d);
        assert_eq!(timeout(now + Duration::from_secs(2), &mut b, &mut d), None);
        let step = timeout(now + Duration::from_secs(3), &mut b, &mut d).unwrap();
        assert_eq!(connect_addr(&step).port(), 2);
        assert!(matches!(
            d.poll_event().unwrap().failure,
            DialFailure::Timeout(_)
        ));
        assert_eq!(
            b.health(DestId(0)),
            Some(Health::Unhealthy {
                since: now + Duration::from_secs(3)
            })
        );
    }

    #[test]
    fn connect_through_a_proxy_conn_9() {
        let mut b = balancer(&["customer.example.com:22"], true);
        let proxy: SocketAddr = "127.0.0.1:8008".parse().unwrap();
        let opts = DialOptions {
            proxy: Some(proxy),
            ..DialOptions::default()
        };
        let now = t0();
        let mut d = Dialer::new(client(), Arc::new(opts));
        assert_eq!(connect_addr(&run(d.start(now), &mut b, now, &mut d)), proxy);
        let DialStep::SendRequest { request } = run(d.handle_connected(now), &mut b, now, &mut d)
        else {
            panic!()
        };
        assert!(request.starts_with(
            b"CONNECT customer.example.com:22 HTTP/1.1\r\nHost: customer.example.com:22\r\n"
        ));
        assert_eq!(
            run(
                d.handle_reply_data(now, b"HTTP/1.0 200 OK\r"),
                &mut b,
                now,
                &mut d
            ),
            DialStep::ReadReply
        );
        assert_eq!(
            run(
                d.handle_reply_data(now, b"\n\r\nSSH-2.0"),
                &mut b,
                now,
                &mut d
            ),
            DialStep::Established {
                dest: DestId(0),
                leftover: Bytes::from_static(b"SSH-2.0")
            }
        );
    }

    #[test]
    fn a_refused_connect_marks_the_destination_unhealthy_conn_3() {
        let mut b = balancer(&["10.0.0.5:22", "10.0.0.6:22"], false);
        let opts = DialOptions {
            proxy: Some("127.0.0.1:8008".parse().unwrap()),
            ..DialOptions::default()
        };
        let now = t0();
        let mut d = Dialer::new(client(), Arc::new(opts));
        run(d.start(now), &mut b, now, &mut d);
        run(d.handle_connected(now), &mut b, now, &mut d);
        let step = d.handle_reply_data(now, b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n");
        let step = run(step, &mut b, now, &mut d);
        assert_eq!(connect_addr(&step).port(), 8008);
        assert_eq!(b.health(DestId(0)), Some(Health::Unhealthy { since: now }));
        let ev = d.poll_event().unwrap().to_string();
        assert!(ev.contains("407") && ev.contains("authentication"), "{ev}");
        // The second destination's exchange is bounded by the timeout too.
        run(d.handle_connected(now), &mut b, now, &mut d);
        assert_eq!(d.poll_timeout(), Some(now + DEFAULT_CONNECT_TIMEOUT));
        assert_eq!(
            run(d.handle_reply_eof(now), &mut b, now, &mut d),
            DialStep::GiveUp
        );
    }

    #[test]
    fn running_out_of_sockets_is_not_the_destinations_fault_spec_5() {
        let mut b = balancer(&["127.0.0.1:1", "127.0.0.1:2"], false);
        let now = t0();
        let mut d = Dialer::new(client(), Arc::default());
        run(d.start(now), &mut b, now, &mut d);
        // Not the destination's fault (FAULT-6): the next one is tried, and only
        // when every one has been tried is the client closed.
        let next = run(
            d.handle_local_failure(now, &"Too many open files"),
            &mut b,
            now,
            &mut d,
        );
        assert_eq!(connect_addr(&next), "127.0.0.1:2".parse().unwrap());
        assert_eq!(
            run(
                d.handle_local_failure(now, &"Too many open files"),
                &mut b,
                now,
                &mut d
            ),
            DialStep::GiveUp
        );
        assert_eq!(b.health(DestId(0)), Some(Health::Healthy));
        assert_eq!(b.health(DestId(1)), Some(Health::Healthy));
        let ev = d.poll_event().unwrap().to_string();
        assert!(
            ev.ends_with("cannot open an outgoing socket: Too many open files"),
            "{ev}"
        );
        assert_eq!(b.poll_event(), None, "nothing marked");
    }

    #[test]
    fn an_address_of_the_other_family_than_p_is_skipped_opt_11() {
        // `-p 127.0.0.1` and a name whose first address is ::1: the IPv4 address
        // is tried, and nothing is marked down for the IPv6 one.
        let mut b = balancer(&["web.example:80", "10.0.0.9:80"], true);
        b.handle_resolved(
            t0(),
            DestId(0),
            Ok(vec!["::1".parse().unwrap(), "127.0.0.1".parse().unwrap()]),
        );
        while b.poll_event().is_some() {}
        let opts = DialOptions {
            bind: Some("127.0.0.1".parse().unwrap()),
            ..DialOptions::default()
        };
        let now = t0();
        let mut d = Dialer::new(client(), Arc::new(opts.clone()));
        assert_eq!(
            connect_addr(&run(d.start(now), &mut b, now, &mut d)),
            "127.0.0.1:80".parse().unwrap()
        );
        // A bind that fails anyway (the kernel's word) moves on the same way.
        let next = run(
            d.handle_local_failure(now, &"Invalid argument"),
            &mut b,
            now,
            &mut d,
        );
        assert_eq!(connect_addr(&next), "10.0.0.9:80".parse().unwrap());
        assert_eq!(b.health(DestId(0)), Some(Health::Healthy));
        // Only IPv6 addresses and -p IPv4: that destination has nothing to try.
        let mut b = balancer(&["web.example:80", "10.0.0.9:80"], true);
        b.handle_resolved(t0(), DestId(0), Ok(vec!["::1".parse().unwrap()]));
        let mut d = Dialer::new(client(), Arc::new(opts));
        let first = run(d.start(now), &mut b, now, &mut d);
        assert_eq!(connect_addr(&first), "10.0.0.9:80".parse().unwrap());
    }

    #[test]
    fn inputs_out_of_phase_do_not_corrupt_the_plan() {
        let mut b = balancer(&["127.0.0.1:1"], false);
        let now = t0();
        let mut d = Dialer::new(client(), Arc::default());
        assert_eq!(
            run(d.handle_reply_data(now, b"x"), &mut b, now, &mut d),
            DialStep::GiveUp
        );
        run(d.start(now), &mut b, now, &mut d);
        run(d.handle_connected(now), &mut b, now, &mut d);
        assert!(matches!(
            run(d.handle_connect_failed(now, &"late"), &mut b, now, &mut d),
            DialStep::Established { .. }
        ));
        assert_eq!(b.health(DestId(0)), Some(Health::Healthy));
    }
}
