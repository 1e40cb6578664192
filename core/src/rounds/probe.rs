//! `--health-check SECS` (OPT-10): every SECS each destination is probed with a
//! TCP connect (through `-h`, a CONNECT exchange), bounded by
//! `--connect-timeout`, so a dead destination leaves rotation before a client
//! pays for it and a live one comes back without waiting for `-r`.
//!
//! [`crate::forwarder::Forwarder::poll_probes`] says when and what; a [`Probe`]
//! is the machine of one check, which the adapter drives with blocking or
//! non-blocking sockets as it likes, then reports with
//! [`crate::forwarder::Forwarder::handle_probe_result`]. Probes are never counted
//! as connections: no admission, no stats, no session line.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::addr::reachable_from;
use crate::connection::connect::{ProxyReply, ReplyStatus};
use crate::forwarder::select::DestId;

/// What a probe found out about its destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    /// It answered: it belongs in rotation.
    Up,
    /// It failed, for this reason: out of rotation (CONN-3).
    Down(String),
    /// plug could not run the probe for a reason of its own (out of
    /// descriptors, an address of the other family than `-p`, no thread): that
    /// says nothing about the destination, whose health stays as it was (FAULT-6).
    Inconclusive(String),
}

/// What the adapter does next for a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeStep {
    /// Connect to `addr` (bound to `bind` first when given), then report
    /// [`Probe::handle_connected`] or [`Probe::handle_failed`].
    Connect {
        /// The destination's address, or the proxy's.
        addr: SocketAddr,
        /// `-p`, port 0.
        bind: Option<SocketAddr>,
    },
    /// Write all of these bytes (the CONNECT request), then report
    /// [`Probe::handle_sent`] or [`Probe::handle_failed`].
    Send(Bytes),
    /// Read what arrives, then report [`Probe::handle_read`], [`Probe::handle_eof`]
    /// or [`Probe::handle_failed`].
    Read,
    /// The probe is over: close its socket and report the outcome.
    Done(ProbeResult),
}

#[derive(Debug)]
enum Phase {
    Idle,
    Connecting { address: usize },
    Sending,
    Receiving(ProxyReply),
    Done(ProbeResult),
}

/// One health check of one destination.
#[derive(Debug)]
pub struct Probe {
    dest: DestId,
    /// Where to connect, tried in order: the destination's addresses, or the proxy.
    targets: Vec<SocketAddr>,
    bind: Option<SocketAddr>,
    /// The CONNECT request when the destination is reached through `-h`.
    request: Option<Bytes>,
    /// When the step under way fails for taking too long: each address gets
    /// the whole `--connect-timeout`, as a client's connect does, so a
    /// blackholed first address does not fail a name whose second one works.
    deadline: Option<Instant>,
    timeout: Duration,
    /// The last failure that was the destination's (not plug's own).
    down: Option<String>,
    phase: Phase,
}

impl Probe {
    /// A probe of `dest` started at `now`: connect to `targets` in order (bound to
    /// `bind`), then send `request` and expect a 2xx reply when it is given; all
    /// within `timeout`.
    pub fn new(
        now: Instant,
        dest: DestId,
        targets: Vec<SocketAddr>,
        bind: Option<SocketAddr>,
        request: Option<Bytes>,
        timeout: Duration,
    ) -> Self {
        Probe {
            dest,
            targets,
            bind,
            request,
            deadline: now.checked_add(timeout),
            timeout,
            down: None,
            phase: Phase::Idle,
        }
    }

    /// The destination probed.
    pub fn dest(&self) -> DestId {
        self.dest
    }

    /// When the step under way fails for taking too long: a blocking step may
    /// wait until then, and must report [`Probe::handle_timeout`] if it does.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    fn done(&mut self, result: ProbeResult) -> ProbeStep {
        self.phase = Phase::Done(result.clone());
        ProbeStep::Done(result)
    }

    fn down(&mut self, reason: String) -> ProbeStep {
        self.done(ProbeResult::Down(reason))
    }

    /// Connects to the first address from number `from` whose family fits `-p`
    /// (another family cannot be reached from it: skipped, FAULT-6); when none
    /// is left, the outcome is the last failure that was the destination's, or
    /// inconclusive if every one was plug's own.
    fn connect(&mut self, now: Instant, from: usize, local: Option<String>) -> ProbeStep {
        let bind = self.bind;
        let next = self
            .targets
            .iter()
            .enumerate()
            .skip(from)
            .find(|(_, a)| reachable_from(bind.map(|b| b.ip()), a))
            .map(|(i, a)| (i, *a));
        match next {
            Some((address, addr)) => {
                self.phase = Phase::Connecting { address };
                self.deadline = now.checked_add(self.timeout);
                ProbeStep::Connect { addr, bind }
            }
            // Past the first address a reason is always known: the failure
            // of the one before.
            None => match (self.down.take(), local) {
                (Some(reason), _) => self.down(reason),
                (None, Some(reason)) => self.done(ProbeResult::Inconclusive(reason)),
                (None, None) if self.targets.is_empty() => self.down("no address known".into()),
                (None, None) => self.done(ProbeResult::Inconclusive(
                    "no address of the family of -p".into(),
                )),
            },
        }
    }

    /// The first step. Call once.
    pub fn start(&mut self, now: Instant) -> ProbeStep {
        self.connect(now, 0, None)
    }

    /// Reports that the connect of [`ProbeStep::Connect`] succeeded.
    pub fn handle_connected(&mut self, now: Instant) -> ProbeStep {
        if !matches!(self.phase, Phase::Connecting { .. }) {
            return self.stale();
        }
        match self.request.clone() {
            Some(request) => {
                // The CONNECT exchange gets a timeout of its own, as a client's does.
                self.deadline = now.checked_add(self.timeout);
                self.phase = Phase::Sending;
                ProbeStep::Send(request)
            }
            None => self.done(ProbeResult::Up),
        }
    }

    /// Reports that the last step failed with `error`: a failed connect moves on
    /// to the next address, anything else ends the probe.
    pub fn handle_failed(&mut self, now: Instant, error: &str) -> ProbeStep {
        match self.phase {
            Phase::Connecting { address } => {
                self.down = Some(error.to_string());
                self.connect(now, address + 1, None)
            }
            Phase::Done(_) => self.stale(),
            _ => self.down(error.to_string()),
        }
    }

    /// Reports that plug could not make or bind the socket for the connect (out
    /// of descriptors, an address of the wrong family): not the destination's
    /// fault (FAULT-6). The next address is tried; with none left, the probe is
    /// inconclusive unless another address failed for the destination's reasons.
    pub fn handle_local_failure(&mut self, now: Instant, error: &str) -> ProbeStep {
        match self.phase {
            Phase::Connecting { address } => self.connect(now, address + 1, Some(error.into())),
            Phase::Done(_) => self.stale(),
            _ => self.done(ProbeResult::Inconclusive(error.to_string())),
        }
    }

    /// Reports that the request was written.
    pub fn handle_sent(&mut self, _now: Instant) -> ProbeStep {
        if !matches!(self.phase, Phase::Sending) {
            return self.stale();
        }
        self.phase = Phase::Receiving(ProxyReply::new());
        ProbeStep::Read
    }

    /// Feeds bytes of the proxy's reply.
    pub fn handle_read(&mut self, _now: Instant, data: &[u8]) -> ProbeStep {
        let Phase::Receiving(reply) = &mut self.phase else {
            return self.stale();
        };
        match reply.feed(data) {
            ReplyStatus::NeedMore => ProbeStep::Read,
            ReplyStatus::Tunnel { .. } => self.done(ProbeResult::Up),
            ReplyStatus::Failed(f) => self.down(f.to_string()),
        }
    }

    /// Reports that the proxy closed before its reply ended.
    pub fn handle_eof(&mut self, _now: Instant) -> ProbeStep {
        let Phase::Receiving(reply) = &mut self.phase else {
            return self.stale();
        };
        match reply.feed_eof() {
            ReplyStatus::Failed(f) => self.down(f.to_string()),
            _ => self.down("the proxy closed the connection".to_string()),
        }
    }

    /// Reports that [`Probe::deadline`] passed in the middle of a step: a
    /// connect that timed out moves on to the next address.
    pub fn handle_timeout(&mut self, now: Instant) -> ProbeStep {
        let t = self.timeout.as_secs_f64();
        let reason = format!("health check timed out after {t}s");
        match self.phase {
            Phase::Done(_) => self.stale(),
            Phase::Connecting { address } => {
                self.down = Some(reason);
                self.connect(now, address + 1, None)
            }
            _ => self.down(reason),
        }
    }

    /// The answer to an input that does not fit the phase: the outcome if there
    /// is one, else a failure (a confused driver ends the probe, never loops).
    fn stale(&mut self) -> ProbeStep {
        match &self.phase {
            Phase::Done(r) => ProbeStep::Done(r.clone()),
            _ => self.done(ProbeResult::Inconclusive(
                "health check driven out of order".to_string(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::addr::Destination;
    use crate::connection::connect::connect_request;
    use crate::test_clock::t0;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_direct_probe_is_a_connect_opt_10() {
        let now = t0();
        let targets = vec![addr("10.0.0.5:80"), addr("10.0.0.6:80")];
        let mut p = Probe::new(now, DestId(0), targets, None, None, Duration::from_secs(3));
        assert_eq!(p.deadline(), Some(now + Duration::from_secs(3)));
        assert_eq!(
            p.start(now),
            ProbeStep::Connect {
                addr: addr("10.0.0.5:80"),
                bind: None
            }
        );
        // The next address of a name before the probe fails (OPT-11).
        assert_eq!(
            p.handle_failed(now, "refused"),
            ProbeStep::Connect {
                addr: addr("10.0.0.6:80"),
                bind: None
            }
        );
        assert_eq!(
            p.handle_failed(now, "Connection refused"),
            ProbeStep::Done(ProbeResult::Down("Connection refused".into()))
        );
        let mut p = Probe::new(
            now,
            DestId(1),
            vec![addr("10.0.0.5:80")],
            None,
            None,
            Duration::from_secs(3),
        );
        p.start(now);
        assert_eq!(p.handle_connected(now), ProbeStep::Done(ProbeResult::Up));
        // Inputs after the outcome (a confused or late driver) keep it.
        let up = ProbeStep::Done(ProbeResult::Up);
        assert_eq!(p.handle_eof(now), up, "stale inputs keep the outcome");
        assert_eq!(p.handle_failed(now, "late"), up);
        assert_eq!(p.handle_local_failure(now, "late"), up);
        assert_eq!(p.handle_timeout(now + Duration::from_secs(9)), up);
        assert_eq!(p.handle_read(now, b"x"), up);
        assert_eq!(p.handle_sent(now), up);
        let mut p = Probe::new(now, DestId(1), vec![], None, None, Duration::from_secs(3));
        assert_eq!(
            p.start(now),
            ProbeStep::Done(ProbeResult::Down("no address known".into()))
        );
    }

    #[test]
    fn through_a_proxy_a_probe_is_a_connect_exchange_opt_10_conn_9() {
        let now = t0();
        let dest = Destination::parse("backend.example:22", 22, true).unwrap();
        let request = connect_request(&dest, None);
        let proxy = vec![addr("127.0.0.1:3128")];
        let probe = |request: &Bytes| {
            let mut p = Probe::new(
                now,
                DestId(0),
                proxy.clone(),
                None,
                Some(request.clone()),
                Duration::from_secs(5),
            );
            p.start(now);
            assert_eq!(p.handle_connected(now), ProbeStep::Send(request.clone()));
            assert_eq!(p.handle_sent(now), ProbeStep::Read);
            p
        };
        let mut p = probe(&request);
        assert_eq!(p.handle_read(now, b"HTTP/1.1 200 Conn"), ProbeStep::Read);
        assert_eq!(
            p.handle_read(now, b"ection established\r\n\r\n"),
            ProbeStep::Done(ProbeResult::Up)
        );
        let mut p = probe(&request);
        let refused = p.handle_read(now, b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
        assert!(
            matches!(&refused, ProbeStep::Done(ProbeResult::Down(e)) if e.contains("502")),
            "{refused:?}"
        );
        let mut p = probe(&request);
        p.handle_read(now, b"HTTP/1.1 200 OK\r\n");
        assert_eq!(
            p.handle_eof(now),
            ProbeStep::Done(ProbeResult::Down(
                "proxy closed the connection before its reply ended".into()
            )),
            "the reply's own reason"
        );
        let mut p = probe(&request);
        assert_eq!(
            p.handle_timeout(now + Duration::from_secs(5)),
            ProbeStep::Done(ProbeResult::Down("health check timed out after 5s".into()))
        );
    }

    #[test]
    fn each_address_gets_the_whole_timeout_opt_10_opt_11() {
        // A blackholed first address times out; the second is tried with a
        // deadline of its own and answers: the name is up.
        let now = t0();
        let t = Duration::from_secs(3);
        let targets = vec![addr("10.0.0.5:80"), addr("10.0.0.6:80")];
        let mut p = Probe::new(now, DestId(0), targets, None, None, t);
        p.start(now);
        assert_eq!(p.deadline(), Some(now + t));
        let later = now + t;
        assert_eq!(
            p.handle_timeout(later),
            ProbeStep::Connect {
                addr: addr("10.0.0.6:80"),
                bind: None
            }
        );
        assert_eq!(p.deadline(), Some(later + t));
        assert_eq!(p.handle_connected(later), ProbeStep::Done(ProbeResult::Up));
        // Both blackholed: down, for the timeout.
        let targets = vec![addr("10.0.0.5:80"), addr("10.0.0.6:80")];
        let mut p = Probe::new(now, DestId(0), targets, None, None, t);
        p.start(now);
        p.handle_timeout(later);
        assert_eq!(
            p.handle_timeout(later + t),
            ProbeStep::Done(ProbeResult::Down("health check timed out after 3s".into()))
        );
    }

    #[test]
    fn a_local_failure_says_nothing_about_the_destination_fault_6() {
        let now = t0();
        let t = Duration::from_secs(3);
        let one = vec![addr("10.0.0.5:80")];
        let mut p = Probe::new(now, DestId(0), one.clone(), None, None, t);
        p.start(now);
        assert_eq!(
            p.handle_local_failure(now, "Too many open files"),
            ProbeStep::Done(ProbeResult::Inconclusive("Too many open files".into()))
        );
        // One address refused, the other could not be tried: the refusal is
        // the destination's, so it is down.
        let two = vec![addr("10.0.0.5:80"), addr("10.0.0.6:80")];
        let mut p = Probe::new(now, DestId(0), two, None, None, t);
        p.start(now);
        p.handle_failed(now, "Connection refused");
        assert_eq!(
            p.handle_local_failure(now, "Too many open files"),
            ProbeStep::Done(ProbeResult::Down("Connection refused".into()))
        );
        // -p 127.0.0.1 and a name whose first address is ::1: the IPv4 one is
        // probed; with no IPv4 address at all, the probe says nothing.
        let bind = Some(addr("127.0.0.1:0"));
        let mixed = vec![addr("[::1]:80"), addr("127.0.0.1:80")];
        let mut p = Probe::new(now, DestId(0), mixed, bind, None, t);
        assert_eq!(
            p.start(now),
            ProbeStep::Connect {
                addr: addr("127.0.0.1:80"),
                bind
            }
        );
        let mut p = Probe::new(now, DestId(0), vec![addr("[::1]:80")], bind, None, t);
        assert!(matches!(
            p.start(now),
            ProbeStep::Done(ProbeResult::Inconclusive(_))
        ));
    }
}
