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

use crate::connect::{ProxyReply, ReplyStatus};
use crate::select::DestId;

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
    Done(Result<(), String>),
}

#[derive(Debug)]
enum Phase {
    Idle,
    Connecting { address: usize },
    Sending,
    Receiving(ProxyReply),
    Done(Result<(), String>),
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
    deadline: Option<Instant>,
    timeout: Duration,
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
            phase: Phase::Idle,
        }
    }

    /// The destination probed.
    pub fn dest(&self) -> DestId {
        self.dest
    }

    /// When the probe fails for taking too long: each blocking step may wait
    /// until then, and must report [`Probe::handle_timeout`] if it does.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    fn done(&mut self, result: Result<(), String>) -> ProbeStep {
        self.phase = Phase::Done(result.clone());
        ProbeStep::Done(result)
    }

    fn connect(&mut self, address: usize) -> ProbeStep {
        match self.targets.get(address) {
            Some(&addr) => {
                self.phase = Phase::Connecting { address };
                ProbeStep::Connect {
                    addr,
                    bind: self.bind,
                }
            }
            None if address == 0 => self.done(Err("no address known".to_string())),
            None => self.done(Err("no address left to try".to_string())),
        }
    }

    /// The first step. Call once.
    pub fn start(&mut self, _now: Instant) -> ProbeStep {
        self.connect(0)
    }

    /// Reports that the connect of [`ProbeStep::Connect`] succeeded.
    pub fn handle_connected(&mut self, _now: Instant) -> ProbeStep {
        if !matches!(self.phase, Phase::Connecting { .. }) {
            return self.stale();
        }
        match self.request.clone() {
            Some(request) => {
                self.phase = Phase::Sending;
                ProbeStep::Send(request)
            }
            None => self.done(Ok(())),
        }
    }

    /// Reports that the last step failed with `error`: a failed connect moves on
    /// to the next address, anything else ends the probe.
    pub fn handle_failed(&mut self, _now: Instant, error: &str) -> ProbeStep {
        match self.phase {
            Phase::Connecting { address } if address + 1 < self.targets.len() => {
                self.connect(address + 1)
            }
            Phase::Done(_) => self.stale(),
            _ => self.done(Err(error.to_string())),
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
            ReplyStatus::Tunnel { .. } => self.done(Ok(())),
            ReplyStatus::Failed(f) => self.done(Err(f.to_string())),
        }
    }

    /// Reports that the proxy closed before its reply ended.
    pub fn handle_eof(&mut self, _now: Instant) -> ProbeStep {
        let Phase::Receiving(reply) = &mut self.phase else {
            return self.stale();
        };
        match reply.feed_eof() {
            ReplyStatus::Failed(f) => self.done(Err(f.to_string())),
            _ => self.done(Err("the proxy closed the connection".to_string())),
        }
    }

    /// Reports that [`Probe::deadline`] passed in the middle of a step.
    pub fn handle_timeout(&mut self, _now: Instant) -> ProbeStep {
        if let Phase::Done(_) = self.phase {
            return self.stale();
        }
        let t = self.timeout.as_secs_f64();
        self.done(Err(format!("health check timed out after {t}s")))
    }

    /// The answer to an input that does not fit the phase: the outcome if there
    /// is one, else a failure (a confused driver ends the probe, never loops).
    fn stale(&mut self) -> ProbeStep {
        match &self.phase {
            Phase::Done(r) => ProbeStep::Done(r.clone()),
            _ => self.done(Err("health check driven out of order".to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Destination;
    use crate::connect::connect_request;
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
            ProbeStep::Done(Err("Connection refused".into()))
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
        assert_eq!(p.handle_connected(now), ProbeStep::Done(Ok(())));
        assert_eq!(
            p.handle_eof(now),
            ProbeStep::Done(Ok(())),
            "stale inputs keep the outcome"
        );
        let mut p = Probe::new(now, DestId(1), vec![], None, None, Duration::from_secs(3));
        assert_eq!(
            p.start(now),
            ProbeStep::Done(Err("no address known".into()))
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
            ProbeStep::Done(Ok(()))
        );
        let mut p = probe(&request);
        let refused = p.handle_read(now, b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
        assert!(
            matches!(&refused, ProbeStep::Done(Err(e)) if e.contains("502")),
            "{refused:?}"
        );
        let mut p = probe(&request);
        assert!(matches!(p.handle_eof(now), ProbeStep::Done(Err(_))));
        let mut p = probe(&request);
        assert_eq!(
            p.handle_timeout(now + Duration::from_secs(5)),
            ProbeStep::Done(Err("health check timed out after 5s".into()))
        );
    }
}
