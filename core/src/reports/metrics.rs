//! `--metrics ADDR:PORT` (OPT-9): Prometheus' text exposition format (0.0.4) on
//! `GET /metrics`. [`Metrics`] is a copy of the counts taken under the
//! forwarder's lock and rendered after it by a pure function; [`Scrape`] is the
//! machine of one scrape connection (the request head parsed with httparse, its
//! limits, the reply, the stall timeout), which each runtime drives the way it
//! drives connections.
//!
//! Every number is the one the SIGUSR1 dump and the session lines give: the
//! byte counts are the session lines' IN and OUT, summed when connections close.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::forwarder::select::{DestId, Health};
use crate::forwarder::stats::{Stats, DURATION_BUCKETS};

/// The largest request head accepted; a longer one is answered 400.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// How long a scrape may take, from accept to the last byte of the reply.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long, after its reply, a scrape reads what the client still sends before
/// closing: closing with unread input would send a reset, which can destroy the
/// reply before the client reads it (a 400 for an oversized head, for one).
pub const SCRAPE_LINGER: Duration = Duration::from_secs(1);

/// The most a lingering scrape reads and discards before it closes anyway.
pub const SCRAPE_LINGER_BYTES: usize = 64 * 1024;

/// Scrape connections served at once (FAULT-6); a further one is closed at once.
pub const MAX_SCRAPES: usize = 16;

/// The counts of one destination as the metrics show them.
#[derive(Debug, Clone, PartialEq)]
pub struct DestinationMetrics {
    /// `ADDR:PORT` as given.
    pub name: String,
    /// Healthy (in rotation) now.
    pub up: bool,
    /// `,drain` (OPT-16): takes no new clients.
    pub draining: bool,
    /// Connections that reached it.
    pub connections: u64,
    /// Connects that failed for a client.
    pub connect_failures: u64,
    /// Bytes from clients (IN).
    pub bytes_in: u64,
    /// Bytes from the destination (OUT).
    pub bytes_out: u64,
}

/// A copy of everything `/metrics` shows, taken at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    /// Connections open now.
    pub open: usize,
    /// The counters.
    pub stats: Stats,
    /// Per destination.
    pub destinations: Vec<DestinationMetrics>,
}

impl Metrics {
    /// Copies the counts of `stats` and `open` connections, with each
    /// destination's name, identity, health and whether it drains, in order.
    pub fn new(
        stats: &Stats,
        destinations_in_order: impl Iterator<Item = (String, DestId, Option<Health>, bool)>,
        open: usize,
    ) -> Self {
        // A destination listed twice (2.5.5's way of weighting it) is one series,
        // its counts summed: Prometheus rejects a scrape with duplicate series.
        let mut destinations: Vec<DestinationMetrics> = Vec::new();
        for (name, id, health, draining) in destinations_in_order {
            let d = stats.of(id);
            let up = matches!(health, Some(Health::Healthy));
            match destinations.iter_mut().find(|m| m.name == name) {
                Some(m) => {
                    m.up |= up;
                    m.draining &= draining;
                    m.connections += d.total;
                    m.connect_failures += d.connect_failures;
                    m.bytes_in += d.from_client;
                    m.bytes_out += d.from_destination;
                }
                None => destinations.push(DestinationMetrics {
                    name,
                    up,
                    draining,
                    connections: d.total,
                    connect_failures: d.connect_failures,
                    bytes_in: d.from_client,
                    bytes_out: d.from_destination,
                }),
            }
        }
        Metrics {
            open,
            stats: stats.clone(),
            destinations,
        }
    }

    /// The text exposition (format 0.0.4) of these metrics.
    pub fn render(&self) -> String {
        render(&[(None, self)])
    }
}

/// The text exposition (format 0.0.4) of every listener's metrics: each
/// family once, with a series per listener, labelled `listener="ADDR:PORT"`
/// when there is a label (`--config`, OPT-13).
pub fn render(listeners: &[(Option<&str>, &Metrics)]) -> String {
    let dests: usize = listeners.iter().map(|(_, m)| m.destinations.len()).sum();
    let mut out = String::with_capacity(2048 * listeners.len().max(1) + 512 * dests);
    let family = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    // The listener label, then the given ones: `{listener="…",reason="rules"}`.
    let labels = |listener: Option<&str>, rest: &str| -> String {
        let mut parts = Vec::with_capacity(2);
        if let Some(l) = listener {
            parts.push(format!("listener=\"{}\"", escape(l)));
        }
        if !rest.is_empty() {
            parts.push(rest.to_string());
        }
        match parts.is_empty() {
            true => String::new(),
            false => format!("{{{}}}", parts.join(",")),
        }
    };
    type Total = (
        &'static str,
        &'static str,
        &'static str,
        fn(&Metrics) -> u64,
    );
    let totals: [Total; 2] = [
        (
            "plug_connections_accepted_total",
            "counter",
            "Clients admitted.",
            |m| m.stats.accepted,
        ),
        (
            "plug_connections_refused_total",
            "counter",
            "Clients closed at once, by reason.",
            |_| 0,
        ),
    ];
    for (name, kind, help, value) in totals {
        family(&mut out, name, kind, help);
        for &(l, m) in listeners {
            if name == "plug_connections_refused_total" {
                let r = &m.stats.refused;
                for (reason, n) in [
                    ("rules", r.rules),
                    ("max_conns", r.max_conns),
                    ("max_conns_per_ip", r.max_conns_per_ip),
                ] {
                    let set = labels(l, &format!("reason=\"{reason}\""));
                    let _ = writeln!(out, "{name}{set} {n}");
                }
            } else {
                let _ = writeln!(out, "{name}{} {}", labels(l, ""), value(m));
            }
        }
    }
    let plain: [Total; 2] = [
        (
            "plug_connections_failed_total",
            "counter",
            "Admitted clients that reached no destination.",
            |m| m.stats.failed,
        ),
        (
            "plug_connections_open",
            "gauge",
            "Connections open now.",
            |m| u64::try_from(m.open).unwrap_or(u64::MAX),
        ),
    ];
    for (name, kind, help, value) in plain {
        family(&mut out, name, kind, help);
        for &(l, m) in listeners {
            let _ = writeln!(out, "{name}{} {}", labels(l, ""), value(m));
        }
    }
    type Family = (
        &'static str,
        &'static str,
        &'static str,
        fn(&DestinationMetrics) -> u64,
    );
    let per_dest: [Family; 4] = [
        (
            "plug_destination_up",
            "gauge",
            "1 while the destination is in rotation, 0 while it is out.",
            |d| u64::from(d.up),
        ),
        (
            "plug_destination_draining",
            "gauge",
            "1 while the destination is draining (,drain): it takes no new clients.",
            |d| u64::from(d.draining),
        ),
        (
            "plug_destination_connections_total",
            "counter",
            "Connections that reached the destination.",
            |d| d.connections,
        ),
        (
            "plug_destination_connect_failures_total",
            "counter",
            "Connects to the destination that failed for a client.",
            |d| d.connect_failures,
        ),
    ];
    for (name, kind, help, value) in per_dest {
        family(&mut out, name, kind, help);
        for &(l, m) in listeners {
            for d in &m.destinations {
                let set = labels(l, &format!("destination=\"{}\"", escape(&d.name)));
                let _ = writeln!(out, "{name}{set} {}", value(d));
            }
        }
    }
    family(
        &mut out,
        "plug_bytes_total",
        "counter",
        "Bytes relayed by closed connections: in from clients, out from destinations.",
    );
    for &(l, m) in listeners {
        for d in &m.destinations {
            let label = escape(&d.name);
            for (direction, n) in [("in", d.bytes_in), ("out", d.bytes_out)] {
                let set = labels(
                    l,
                    &format!("destination=\"{label}\",direction=\"{direction}\""),
                );
                let _ = writeln!(out, "plug_bytes_total{set} {n}");
            }
        }
    }
    family(
        &mut out,
        "plug_connection_duration_seconds",
        "histogram",
        "From accept to close, of connections that reached a destination.",
    );
    for &(l, m) in listeners {
        let h = &m.stats.durations;
        let mut cumulative = 0;
        for (bound, n) in DURATION_BUCKETS.iter().zip(h.buckets) {
            cumulative += n;
            let set = labels(l, &format!("le=\"{bound}\""));
            let _ = writeln!(
                out,
                "plug_connection_duration_seconds_bucket{set} {cumulative}"
            );
        }
        let set = labels(l, "le=\"+Inf\"");
        let _ = writeln!(
            out,
            "plug_connection_duration_seconds_bucket{set} {}",
            h.count
        );
        let secs = h.sum_micros / 1_000_000;
        let micros = h.sum_micros % 1_000_000;
        let plain = labels(l, "");
        let _ = writeln!(
            out,
            "plug_connection_duration_seconds_sum{plain} {secs}.{micros:06}"
        );
        let _ = writeln!(
            out,
            "plug_connection_duration_seconds_count{plain} {}",
            h.count
        );
    }
    out
}

/// A label value as the exposition format wants it: `\`, `"` and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// What a scrape's request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    Metrics,
    NotFound,
    NotAllowed,
    Bad,
}

/// What the adapter does next for a scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum ScrapeOutput {
    /// Read into [`Scrape::read_space`] and report [`Scrape::handle_read`].
    Read,
    /// Render the metrics (a [`Metrics`] taken now) and give the text to
    /// [`Scrape::handle_metrics`].
    Render,
    /// Write [`Scrape::write_data`] and report [`Scrape::handle_written`].
    Write,
    /// The reply is sent: shut the socket's write half (the client sees the end
    /// of the reply) and report [`Scrape::handle_shutdown`].
    ShutdownWrite,
    /// Wait until the socket is readable (`read`) or writable, or `deadline`.
    Wait {
        /// Wake when readable; otherwise when writable.
        read: bool,
        /// When the scrape is given up.
        deadline: Instant,
    },
    /// Close the socket: done, stalled past the deadline, or the client left.
    Close,
}

#[derive(Debug)]
enum ScrapePhase {
    Reading {
        head: Vec<u8>,
        readable: bool,
    },
    Rendering,
    Writing {
        reply: Bytes,
        sent: usize,
        writable: bool,
    },
    ShuttingDown,
    /// Reading and discarding what the client still sends, until its end of
    /// stream or `until`, so that the close is not a reset.
    Lingering {
        readable: bool,
        until: Instant,
        discarded: usize,
    },
    Closed,
}

/// One connection to the metrics listener: read a request head, answer it,
/// close. Never longer than [`SCRAPE_TIMEOUT`].
#[derive(Debug)]
pub struct Scrape {
    deadline: Instant,
    phase: ScrapePhase,
    /// Room for one read; the head gathered so far lives in the phase.
    chunk: Vec<u8>,
}

impl Scrape {
    /// A scrape connection accepted at `now`.
    pub fn new(now: Instant) -> Self {
        Scrape {
            deadline: now.checked_add(SCRAPE_TIMEOUT).unwrap_or(now),
            phase: ScrapePhase::Reading {
                head: Vec::new(),
                readable: true,
            },
            chunk: Vec::new(),
        }
    }

    /// The next thing to do at `now`.
    pub fn poll_output(&mut self, now: Instant) -> ScrapeOutput {
        if now >= self.deadline {
            self.phase = ScrapePhase::Closed;
        }
        match &self.phase {
            ScrapePhase::Reading { readable: true, .. } => ScrapeOutput::Read,
            ScrapePhase::Reading { .. } => ScrapeOutput::Wait {
                read: true,
                deadline: self.deadline,
            },
            ScrapePhase::Rendering => ScrapeOutput::Render,
            ScrapePhase::Writing { writable: true, .. } => ScrapeOutput::Write,
            ScrapePhase::Writing { .. } => ScrapeOutput::Wait {
                read: false,
                deadline: self.deadline,
            },
            ScrapePhase::ShuttingDown => ScrapeOutput::ShutdownWrite,
            ScrapePhase::Lingering { until, .. } if now >= *until => {
                self.phase = ScrapePhase::Closed;
                ScrapeOutput::Close
            }
            ScrapePhase::Lingering { readable: true, .. } => ScrapeOutput::Read,
            ScrapePhase::Lingering { until, .. } => ScrapeOutput::Wait {
                read: true,
                deadline: *until,
            },
            ScrapePhase::Closed => ScrapeOutput::Close,
        }
    }

    /// The buffer for [`ScrapeOutput::Read`]: never more than the head may
    /// still grow, plus one byte to notice it is too long.
    pub fn read_space(&mut self) -> &mut [u8] {
        let room = match &self.phase {
            ScrapePhase::Reading { head, .. } => {
                MAX_REQUEST_HEAD + 1 - head.len().min(MAX_REQUEST_HEAD)
            }
            ScrapePhase::Lingering { .. } => 4096,
            _ => 0,
        };
        self.chunk.resize(room.min(4096), 0);
        &mut self.chunk
    }

    /// Reports the read: `Ok(0)` is the end of stream, `Err` a WouldBlock
    /// (`true`) or any failure (`false`).
    pub fn handle_read(&mut self, _now: Instant, result: Result<usize, bool>) {
        if let ScrapePhase::Lingering {
            readable,
            discarded,
            ..
        } = &mut self.phase
        {
            match result {
                Ok(0) | Err(false) => self.phase = ScrapePhase::Closed,
                Err(true) => *readable = false,
                Ok(n) => {
                    *discarded += n;
                    if *discarded > SCRAPE_LINGER_BYTES {
                        self.phase = ScrapePhase::Closed;
                    }
                }
            }
            return;
        }
        let ScrapePhase::Reading { head, readable } = &mut self.phase else {
            return;
        };
        let n = match result {
            Ok(0) | Err(false) => {
                self.phase = ScrapePhase::Closed;
                return;
            }
            Err(true) => {
                *readable = false;
                return;
            }
            Ok(n) => n,
        };
        head.extend_from_slice(self.chunk.get(..n).unwrap_or(&[]));
        let request = match parse(head) {
            None => return,
            Some(r) => r,
        };
        self.phase = match request {
            Request::Metrics => ScrapePhase::Rendering,
            other => ScrapePhase::Writing {
                reply: error_reply(other),
                sent: 0,
                writable: true,
            },
        };
    }

    /// Gives the rendered metrics after [`ScrapeOutput::Render`].
    pub fn handle_metrics(&mut self, _now: Instant, text: String) {
        if matches!(self.phase, ScrapePhase::Rendering) {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                text.len()
            );
            let mut reply = head.into_bytes();
            reply.extend_from_slice(text.as_bytes());
            self.phase = ScrapePhase::Writing {
                reply: Bytes::from(reply),
                sent: 0,
                writable: true,
            };
        }
    }

    /// The bytes to write after [`ScrapeOutput::Write`].
    pub fn write_data(&self) -> &[u8] {
        match &self.phase {
            ScrapePhase::Writing { reply, sent, .. } => reply.get(*sent..).unwrap_or(&[]),
            _ => &[],
        }
    }

    /// Reports the write: bytes taken, or a WouldBlock (`Err(true)`) or failure.
    pub fn handle_written(&mut self, _now: Instant, result: Result<usize, bool>) {
        let ScrapePhase::Writing {
            reply,
            sent,
            writable,
        } = &mut self.phase
        else {
            return;
        };
        match result {
            Ok(0) | Err(false) => self.phase = ScrapePhase::Closed,
            Err(true) => *writable = false,
            Ok(n) => {
                *sent = (*sent + n).min(reply.len());
                if *sent == reply.len() {
                    self.phase = ScrapePhase::ShuttingDown;
                }
            }
        }
    }

    /// Reports the shutdown of [`ScrapeOutput::ShutdownWrite`] (`false`: it
    /// failed, and the scrape closes at once).
    pub fn handle_shutdown(&mut self, now: Instant, ok: bool) {
        if !matches!(self.phase, ScrapePhase::ShuttingDown) {
            return;
        }
        self.phase = match ok {
            true => ScrapePhase::Lingering {
                readable: true,
                until: now
                    .checked_add(SCRAPE_LINGER)
                    .unwrap_or(now)
                    .min(self.deadline),
                discarded: 0,
            },
            false => ScrapePhase::Closed,
        };
    }

    /// Reports that the poller found the socket ready.
    pub fn handle_ready(&mut self, _now: Instant) {
        match &mut self.phase {
            ScrapePhase::Reading { readable, .. } | ScrapePhase::Lingering { readable, .. } => {
                *readable = true
            }
            ScrapePhase::Writing { writable, .. } => *writable = true,
            _ => {}
        }
    }
}

/// What a request head asks for, or `None` while it is incomplete.
fn parse(head: &[u8]) -> Option<Request> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(n)) if n <= MAX_REQUEST_HEAD => {}
        Ok(httparse::Status::Complete(_)) => return Some(Request::Bad),
        Ok(httparse::Status::Partial) if head.len() <= MAX_REQUEST_HEAD => return None,
        Ok(httparse::Status::Partial) | Err(_) => return Some(Request::Bad),
    }
    let path = req.path.unwrap_or("");
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    Some(match (req.method, path) {
        (Some("GET"), "/metrics") => Request::Metrics,
        (Some("GET"), _) => Request::NotFound,
        _ => Request::NotAllowed,
    })
}

fn error_reply(request: Request) -> Bytes {
    let (status, extra, body) = match request {
        Request::NotFound => ("404 Not Found", "", "plug serves only /metrics\n"),
        Request::NotAllowed => ("405 Method Not Allowed", "Allow: GET\r\n", "only GET\n"),
        _ => ("400 Bad Request", "", "bad request\n"),
    };
    Bytes::from(format!(
        "HTTP/1.1 {status}\r\n{extra}Content-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::relay::{RelayEnd, RelayOutcome};
    use crate::forwarder::admission::Refusal;
    use crate::forwarder::select::DestId;
    use crate::test_clock::t0;
    use proptest::prelude::*;

    /// Runs a scrape with `request` arriving in `splits`, answering Render with
    /// `body`; returns everything written.
    fn scrape(request: &[u8], splits: &[usize], body: &str) -> String {
        let now = t0();
        let mut s = Scrape::new(now);
        let mut pieces: Vec<&[u8]> = vec![];
        let mut rest = request;
        for &k in splits {
            let k = k.min(rest.len());
            let (a, b) = rest.split_at(k);
            pieces.push(a);
            rest = b;
        }
        pieces.push(rest);
        let mut pieces: std::collections::VecDeque<&[u8]> =
            pieces.into_iter().filter(|p| !p.is_empty()).collect();
        let mut out = Vec::new();
        for _ in 0..10_000 {
            match s.poll_output(now) {
                ScrapeOutput::Read => {
                    let space = s.read_space();
                    match pieces.pop_front() {
                        Some(p) => {
                            let n = p.len().min(space.len());
                            space[..n].copy_from_slice(&p[..n]);
                            if n < p.len() {
                                pieces.push_front(&p[n..]);
                            }
                            s.handle_read(now, Ok(n));
                        }
                        None => s.handle_read(now, Ok(0)),
                    }
                }
                ScrapeOutput::Render => s.handle_metrics(now, body.to_string()),
                ScrapeOutput::Write => {
                    // A short write each time.
                    let data = s.write_data();
                    let n = data.len().min(100);
                    out.extend_from_slice(&data[..n]);
                    s.handle_written(now, Ok(n));
                }
                ScrapeOutput::ShutdownWrite => s.handle_shutdown(now, true),
                ScrapeOutput::Wait { .. } => s.handle_ready(now),
                ScrapeOutput::Close => {
                    // Whatever the client sent was read before the close (a
                    // close with unread input is a reset that can eat the reply).
                    assert!(pieces.is_empty(), "closed with {pieces:?} unread");
                    return String::from_utf8(out).unwrap();
                }
            }
        }
        panic!("the scrape never ended")
    }

    #[test]
    fn an_oversized_head_is_answered_400_and_read_to_its_end_opt_9() {
        // Over 8 KiB of head, then more: the 400 goes out, the write half is shut,
        // and everything the client sent is read before the close, so the client
        // reads the 400 instead of a reset.
        let long = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(30_000));
        let reply = scrape(long.as_bytes(), &[100, 5000], "");
        assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    }

    #[test]
    fn a_scrape_that_would_block_waits_and_readiness_resumes_it() {
        // Each phase: WouldBlock means wait for that readiness; the poller's
        // word that it came means try again, and nothing else does.
        let now = t0();
        let mut s = Scrape::new(now);
        let deadline = now + SCRAPE_TIMEOUT;
        s.handle_read(now, Err(true));
        let wait_read = ScrapeOutput::Wait {
            read: true,
            deadline,
        };
        assert_eq!(s.poll_output(now), wait_read);
        assert_eq!(s.poll_output(now), wait_read, "no readiness, no retry");
        s.handle_ready(now);
        assert_eq!(s.poll_output(now), ScrapeOutput::Read);
        let req = b"GET /nowhere HTTP/1.1\r\n\r\n";
        s.read_space()[..req.len()].copy_from_slice(req);
        s.handle_read(now, Ok(req.len()));
        assert_eq!(s.poll_output(now), ScrapeOutput::Write);
        s.handle_written(now, Err(true));
        let wait_write = ScrapeOutput::Wait {
            read: false,
            deadline,
        };
        assert_eq!(s.poll_output(now), wait_write);
        s.handle_ready(now);
        assert_eq!(s.poll_output(now), ScrapeOutput::Write);
        let n = s.write_data().len();
        s.handle_written(now, Ok(n));
        s.handle_shutdown(now, true);
        s.handle_read(now, Err(true));
        assert!(matches!(
            s.poll_output(now),
            ScrapeOutput::Wait { read: true, .. }
        ));
        s.handle_ready(now);
        assert_eq!(s.poll_output(now), ScrapeOutput::Read, "lingering resumes");
    }

    #[test]
    fn a_head_is_never_read_past_its_limit_opt_9() {
        // The head buffer is bounded: each read asks for no more than the head
        // may still grow, plus one byte to notice it is too long.
        let now = t0();
        let mut s = Scrape::new(now);
        let part = vec![b'a'; 8000];
        let mut fed = 0;
        while fed < part.len() {
            let space = s.read_space();
            let n = space.len().min(part.len() - fed);
            // Bounded: a read with no room would never end the loop.
            assert!(n > 0, "no room to read after {fed} of 8000 bytes");
            space[..n].copy_from_slice(&part[fed..fed + n]);
            s.handle_read(now, Ok(n));
            fed += n;
        }
        assert_eq!(s.read_space().len(), MAX_REQUEST_HEAD + 1 - 8000);
    }

    #[test]
    fn lingering_ends_by_its_deadline_and_its_byte_budget() {
        let now = t0();
        let mut s = Scrape::new(now);
        let req = b"GET / HTTP/1.1\r\n\r\n";
        s.read_space()[..req.len()].copy_from_slice(req);
        s.handle_read(now, Ok(req.len()));
        assert_eq!(s.poll_output(now), ScrapeOutput::Write);
        let n = s.write_data().len();
        s.handle_written(now, Ok(n));
        assert_eq!(s.poll_output(now), ScrapeOutput::ShutdownWrite);
        s.handle_shutdown(now, true);
        assert_eq!(s.poll_output(now), ScrapeOutput::Read);
        s.handle_read(now, Err(true));
        let wait = s.poll_output(now);
        assert_eq!(
            wait,
            ScrapeOutput::Wait {
                read: true,
                deadline: now + SCRAPE_LINGER
            }
        );
        // A client that keeps quiet is closed by the linger deadline.
        assert_eq!(s.poll_output(now + SCRAPE_LINGER), ScrapeOutput::Close);
        // One that keeps sending is closed once the budget is read.
        let mut s = Scrape::new(now);
        s.read_space()[..req.len()].copy_from_slice(req);
        s.handle_read(now, Ok(req.len()));
        let n = s.write_data().len();
        s.handle_written(now, Ok(n));
        s.handle_shutdown(now, true);
        let mut reads = 0;
        while s.poll_output(now) == ScrapeOutput::Read {
            let n = s.read_space().len();
            s.handle_read(now, Ok(n));
            reads += 1;
            assert!(reads < 1000);
        }
        assert_eq!(s.poll_output(now), ScrapeOutput::Close);
        assert!(reads * 4096 > SCRAPE_LINGER_BYTES);
        // A failed shutdown closes at once.
        let mut s = Scrape::new(now);
        s.read_space()[..req.len()].copy_from_slice(req);
        s.handle_read(now, Ok(req.len()));
        let n = s.write_data().len();
        s.handle_written(now, Ok(n));
        s.handle_shutdown(now, false);
        assert_eq!(s.poll_output(now), ScrapeOutput::Close);
    }

    #[test]
    fn a_destination_listed_twice_is_one_series_with_its_counts_summed_opt_9() {
        let mut stats = Stats::new(3);
        stats.handle_established(DestId(0));
        stats.handle_established(DestId(2));
        stats.handle_established(DestId(2));
        stats.handle_connect_failed(DestId(1));
        let names = ["127.0.0.1:80", "127.0.0.1:81", "127.0.0.1:80"].map(String::from);
        let health = |i: usize| {
            Some(match i {
                2 => Health::Healthy,
                _ => Health::Unhealthy { since: t0() },
            })
        };
        let each = names
            .into_iter()
            .enumerate()
            .map(|(i, n)| (n, DestId(i), health(i), false));
        let text = Metrics::new(&stats, each, 0).render();
        let series: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.rsplit_once(' ').map_or(l, |(k, _)| k))
            .collect();
        let mut unique = series.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), series.len(), "duplicate series in\n{text}");
        for line in [
            "plug_destination_connections_total{destination=\"127.0.0.1:80\"} 3",
            "plug_destination_up{destination=\"127.0.0.1:80\"} 1",
            "plug_destination_up{destination=\"127.0.0.1:81\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }

    #[test]
    fn answers_get_metrics_and_refuses_the_rest_opt_9() {
        let ok = scrape(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &[], "a 1\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("Content-Type: text/plain; version=0.0.4"),
            "{ok}"
        );
        assert!(ok.ends_with("\r\n\r\na 1\n"), "{ok}");
        let q = scrape(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", &[], "b\n");
        assert!(q.starts_with("HTTP/1.1 200"), "{q}");
        assert!(scrape(b"GET / HTTP/1.1\r\n\r\n", &[], "").starts_with("HTTP/1.1 404"));
        let post = scrape(b"POST /metrics HTTP/1.1\r\n\r\n", &[], "");
        assert!(
            post.starts_with("HTTP/1.1 405") && post.contains("Allow: GET"),
            "{post}"
        );
        assert!(scrape(b"\x16\x03\x01garbage\r\n\r\n", &[], "").starts_with("HTTP/1.1 400"));
        let long = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
        assert!(scrape(long.as_bytes(), &[], "").starts_with("HTTP/1.1 400"));
        // A long but legal head (under 8 KiB, as a browser's with many cookies)
        // is served.
        let head = format!(
            "GET /metrics HTTP/1.1\r\nCookie: {}\r\n\r\n",
            "c".repeat(7000)
        );
        assert!(head.len() < MAX_REQUEST_HEAD);
        assert!(scrape(head.as_bytes(), &[300], "m 1\n").starts_with("HTTP/1.1 200"));
        // The boundary: a complete head of exactly 8 KiB is served, one byte
        // more is refused.
        for (len, status) in [
            (MAX_REQUEST_HEAD, "HTTP/1.1 200"),
            (MAX_REQUEST_HEAD + 1, "HTTP/1.1 400"),
        ] {
            let start = "GET /metrics HTTP/1.1\r\nX: ";
            let pad = "p".repeat(len - start.len() - 4);
            let head = format!("{start}{pad}\r\n\r\n");
            assert_eq!(head.len(), len);
            let reply = scrape(head.as_bytes(), &[], "m 1\n");
            assert!(reply.starts_with(status), "{len}: {reply}");
        }
        // A client that leaves before its head ends gets nothing.
        assert_eq!(scrape(b"GET /metr", &[], ""), "");
    }

    #[test]
    fn a_stalled_scrape_is_closed_after_ten_seconds_opt_9() {
        let now = t0();
        let mut s = Scrape::new(now);
        assert_eq!(s.poll_output(now), ScrapeOutput::Read);
        s.handle_read(now, Err(true));
        let out = s.poll_output(now);
        assert_eq!(
            out,
            ScrapeOutput::Wait {
                read: true,
                deadline: now + SCRAPE_TIMEOUT
            }
        );
        assert_eq!(s.poll_output(now + SCRAPE_TIMEOUT), ScrapeOutput::Close);
        // Also a reader that never takes the reply.
        let mut s = Scrape::new(now);
        let req = b"GET /metrics HTTP/1.1\r\n\r\n";
        let _ = s.poll_output(now);
        s.read_space()[..req.len()].copy_from_slice(req);
        s.handle_read(now, Ok(req.len()));
        assert_eq!(s.poll_output(now), ScrapeOutput::Render);
        s.handle_metrics(now, "x".repeat(100_000));
        assert_eq!(s.poll_output(now), ScrapeOutput::Write);
        s.handle_written(now, Err(true));
        assert!(matches!(
            s.poll_output(now),
            ScrapeOutput::Wait { read: false, .. }
        ));
        assert_eq!(s.poll_output(now + SCRAPE_TIMEOUT), ScrapeOutput::Close);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Whatever the split points, the answer is the same; garbage never panics.
        #[test]
        fn the_same_answer_for_every_split_opt_9(
            splits in proptest::collection::vec(0usize..40, 0..6),
            garbage in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let req = b"GET /metrics HTTP/1.1\r\nHost: plug\r\nAccept: */*\r\n\r\n";
            prop_assert_eq!(scrape(req, &splits, "m 1\n"), scrape(req, &[], "m 1\n"));
            // Garbage is never answered with the metrics: an error, or
            // nothing when it never ends a head.
            let answer = scrape(&garbage, &splits, "m 1\n");
            prop_assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 4"), "{}", answer);
        }

        /// OPT-9: each kind of request gets its status, however it arrives.
        #[test]
        fn each_status_for_every_split_opt_9(
            splits in proptest::collection::vec(0usize..40, 0..6),
            case in 0usize..6,
        ) {
            let long = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_REQUEST_HEAD));
            let cases: [(&[u8], &str); 6] = [
                (b"GET /metrics HTTP/1.1\r\nHost: plug\r\n\r\n", "HTTP/1.1 200 "),
                (b"GET /metrics?name[]=x HTTP/1.0\r\n\r\n", "HTTP/1.1 200 "),
                (b"GET /other HTTP/1.1\r\n\r\n", "HTTP/1.1 404 "),
                (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", "HTTP/1.1 405 "),
                (b"\x16\x03\x01\x02\x00\x01\x00\xfc\x03\x03\r\n\r\n", "HTTP/1.1 400 "),
                (long.as_bytes(), "HTTP/1.1 400 "),
            ];
            let (request, status) = cases[case];
            let answer = scrape(request, &splits, "m 1\n");
            prop_assert!(answer.starts_with(status), "{:?}: {}", String::from_utf8_lossy(&request[..request.len().min(40)]), answer);
            // The metrics only with a 200.
            prop_assert_eq!(answer.ends_with("\r\n\r\nm 1\n"), status == "HTTP/1.1 200 ");
        }
    }

    #[test]
    fn renders_the_families_spec_names_opt_9() {
        let mut stats = Stats::new(2);
        stats.handle_accepted();
        stats.handle_accepted();
        stats.handle_refused(&Refusal::Rules);
        stats.handle_refused(&Refusal::PerClient { limit: 1 });
        stats.handle_established(DestId(0));
        stats.handle_connect_failed(DestId(1));
        let out = RelayOutcome {
            from_client: 5,
            from_destination: 7,
            spliced: 0,
            end: RelayEnd::Finished,
        };
        stats.handle_closed(
            Some(DestId(0)),
            Some(&out),
            Duration::from_micros(1_500_001),
        );
        stats.handle_closed(None, None, Duration::ZERO);
        let names = ["10.0.0.5:80".to_string(), "[::1]:81".to_string()];
        let health = |i: usize| {
            Some(match i {
                0 => Health::Healthy,
                _ => Health::Unhealthy { since: t0() },
            })
        };
        let each = names
            .into_iter()
            .enumerate()
            .map(|(i, n)| (n, DestId(i), health(i), false));
        let text = Metrics::new(&stats, each, 0).render();
        for line in [
            "# TYPE plug_connections_accepted_total counter",
            "plug_connections_accepted_total 2",
            "plug_connections_refused_total{reason=\"rules\"} 1",
            "plug_connections_refused_total{reason=\"max_conns\"} 0",
            "plug_connections_refused_total{reason=\"max_conns_per_ip\"} 1",
            "plug_connections_failed_total 1",
            "plug_connections_open 0",
            "plug_destination_up{destination=\"10.0.0.5:80\"} 1",
            "plug_destination_up{destination=\"[::1]:81\"} 0",
            "plug_destination_connections_total{destination=\"10.0.0.5:80\"} 1",
            "plug_destination_connect_failures_total{destination=\"[::1]:81\"} 1",
            "plug_bytes_total{destination=\"10.0.0.5:80\",direction=\"in\"} 5",
            "plug_bytes_total{destination=\"10.0.0.5:80\",direction=\"out\"} 7",
            "# TYPE plug_connection_duration_seconds histogram",
            "plug_connection_duration_seconds_bucket{le=\"1\"} 0",
            "plug_connection_duration_seconds_bucket{le=\"2.5\"} 1",
            "plug_connection_duration_seconds_bucket{le=\"+Inf\"} 1",
            "plug_connection_duration_seconds_sum 1.500001",
            "plug_connection_duration_seconds_count 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(text.ends_with('\n'));
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
