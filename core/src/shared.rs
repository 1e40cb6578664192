//! What a [`Connection`](crate::connection::Connection) and its listener's
//! [`Forwarder`](crate::forwarder::Forwarder) say to each other, as quinn-proto's
//! `EndpointEvent` and `ConnectionEvent`: the connection never reaches into the
//! forwarder's state (the balancer, the counts); it sends a [`ForwarderEvent`]
//! and, when one is asked for, gets a [`ConnectionEvent`] back.
//!
//! After [`Output::Forwarder`](crate::connection::Output::Forwarder) the adapter
//! takes the listener's lock once and calls
//! [`Forwarder::exchange`](crate::forwarder::Forwarder::exchange), which hands
//! every waiting event over and the answers back.

use std::net::{SocketAddr, SocketAddr as Peer};
use std::sync::Arc;
use std::time::Duration;

use crate::config::addr::Destination;
use crate::connection::relay::RelayOutcome;
use crate::forwarder::select::{AttemptPlan, DestId};

/// From a connection to its forwarder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwarderEvent {
    /// Which destination should this client try next (CONN-2..5)? Answered
    /// with [`ConnectionEvent::Chosen`], which gives the plan back.
    Choose(AttemptPlan),
    /// An attempt at `dest` failed for a reason that is the destination's
    /// (refused, timed out, the proxy said no): its health and failure count
    /// learn it (CONN-3). A failure of plug's own (FAULT-6) is never sent.
    Failed {
        /// The destination tried.
        dest: DestId,
        /// Why, for the log's `down` line.
        reason: String,
    },
    /// `dest` was reached: connected, and with `-h` the tunnel is open. It is
    /// healthy, and its connection count goes up.
    Reached {
        /// The destination reached.
        dest: DestId,
    },
    /// The connection is over: the open count goes down and the destination
    /// reached, if any, takes its bytes (dump, metrics).
    Closed {
        /// The client.
        peer: Peer,
        /// The destination reached, if any.
        dest: Option<DestId>,
        /// The relay's outcome, when one ran.
        outcome: Option<RelayOutcome>,
        /// From accept to close.
        duration: Duration,
    },
}

/// From a forwarder to one of its connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionEvent {
    /// The answer to [`ForwarderEvent::Choose`]: the plan, with the attempt
    /// recorded, and the destination to try, or `None` when none is left.
    Chosen {
        /// The client's plan, given back.
        plan: AttemptPlan,
        /// What to try.
        choice: Option<Choice>,
    },
}

/// A destination chosen for one attempt, with what dialing it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// Its identity, for the events that report on it.
    pub dest: DestId,
    /// What the logs, the session line and a CONNECT request name.
    pub destination: Destination,
    /// Where it is reached, in the order to try them (OPT-11): shared, so a
    /// choice costs no copy of a name's addresses.
    pub addresses: Arc<[SocketAddr]>,
}

#[cfg(test)]
mod tests {
    //! The protocol alone: a connection driven by a test that plays its
    //! forwarder from the scenario (what a client would see), never by a
    //! `Forwarder`.
    use super::*;
    use crate::config::cli::{self, Action};
    use crate::connection::dial::Dialer;
    use crate::connection::relay::Side;
    use crate::connection::{ConnectFailure, Connection, Output, Ready, Runtime};
    use crate::forwarder::Forwarder;
    use crate::test_clock::t0;
    use std::ffi::OsString;
    use std::time::Instant;

    const CLIENT: &str = "10.0.0.7:40000";

    fn connection(words: &[&str], now: Instant) -> Connection {
        let argv = words.iter().map(OsString::from).collect();
        let Ok(Action::Run(config)) = cli::parse(argv) else {
            panic!("bad command line");
        };
        let runtime = Runtime {
            name: "test",
            pipe_capacity: None,
            buffer_release_after: Duration::ZERO,
            reuse_buffers: false,
            readiness_tells_errors: false,
        };
        // Only its settings: the forwarder itself plays no part here.
        let f = Forwarder::new(&config, None, 1024, runtime);
        let peer: SocketAddr = CLIENT.parse().unwrap();
        let dialer = Dialer::new(peer.ip(), Arc::new(config.dial_options(None)));
        Connection::new(f.shared_settings(), peer, now, dialer)
    }

    fn choice(id: usize, addr: &str) -> Choice {
        let addr: SocketAddr = addr.parse().unwrap();
        Choice {
            dest: DestId(id),
            destination: Destination::parse(&addr.to_string(), 80, false).unwrap(),
            addresses: vec![addr].into(),
        }
    }

    /// Polls until the connection asks for something other than a log line;
    /// returns it and the events it had for the forwarder by then.
    fn next(conn: &mut Connection, now: Instant) -> (Output, Vec<ForwarderEvent>) {
        let mut events = Vec::new();
        for _ in 0..50 {
            match conn.poll_output(now) {
                Output::Log(_) | Output::Session(_) => {}
                Output::Forwarder => {
                    while let Some(e) = conn.poll_forwarder_event() {
                        events.push(e);
                    }
                    // The caller answers; hand it over.
                    return (Output::Forwarder, events);
                }
                other => return (other, events),
            }
        }
        panic!("no output")
    }

    fn chosen(conn: &mut Connection, now: Instant, event: ForwarderEvent, c: Option<Choice>) {
        let ForwarderEvent::Choose(plan) = event else {
            panic!("expected Choose, got {event:?}");
        };
        conn.handle_event(now, ConnectionEvent::Chosen { plan, choice: c });
    }

    /// A connection whose first choice, 127.0.0.1:1, was given, and whose
    /// connect to it was asked for.
    fn connecting(words: &[&str], now: Instant) -> Connection {
        let mut conn = connection(words, now);
        let (_, mut events) = next(&mut conn, now);
        chosen(
            &mut conn,
            now,
            events.remove(0),
            Some(choice(0, "127.0.0.1:1")),
        );
        let (out, _) = next(&mut conn, now);
        assert!(
            matches!(&out, Output::Connect(to) if to.addr.port() == 1),
            "{out:?}"
        );
        conn
    }

    #[test]
    fn a_new_connection_asks_which_destination_before_anything_else_conn_2() {
        let now = t0();
        let mut conn = connection(&["8080", "127.0.0.1:1"], now);
        let (out, events) = next(&mut conn, now);
        assert_eq!(out, Output::Forwarder);
        assert!(
            matches!(&events[..], [ForwarderEvent::Choose(p)] if p.client() == "10.0.0.7".parse::<std::net::IpAddr>().unwrap() && p.attempts() == 0),
            "{events:?}"
        );
    }

    #[test]
    fn no_destination_left_closes_the_client_without_a_connect_conn_4() {
        let now = t0();
        let mut conn = connection(&["8080", "127.0.0.1:1"], now);
        let (_, mut events) = next(&mut conn, now);
        chosen(&mut conn, now, events.remove(0), None);
        let (out, events) = next(&mut conn, now);
        assert!(matches!(out, Output::Close { reset: false, .. }), "{out:?}");
        assert!(events.is_empty());
        // Then its end, with nothing reached and no failure blamed on anyone.
        let (out, events) = next(&mut conn, now);
        assert_eq!(out, Output::Forwarder);
        assert!(
            matches!(&events[..], [ForwarderEvent::Closed { dest: None, .. }]),
            "{events:?}"
        );
        assert_eq!(next(&mut conn, now).0, Output::Done);
    }

    #[test]
    fn a_refused_connect_is_reported_before_the_next_choice_conn_3_conn_4() {
        let now = t0();
        let mut conn = connecting(&["8080", "127.0.0.1:1", "127.0.0.1:2"], now);
        conn.handle_connect_started(now, Err(ConnectFailure::Remote("refused".into())));
        let (out, events) = next(&mut conn, now);
        assert_eq!(out, Output::Forwarder);
        // Health first, so the choice that follows already knows it.
        match &events[..] {
            [ForwarderEvent::Failed { dest, reason }, ForwarderEvent::Choose(plan)] => {
                assert_eq!(*dest, DestId(0));
                assert!(reason.contains("refused"), "{reason}");
                // The plan the forwarder gave back, for the same client.
                assert_eq!(plan.client(), CLIENT.parse::<SocketAddr>().unwrap().ip());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn plugs_own_failure_blames_no_destination_fault_6() {
        let now = t0();
        let mut conn = connecting(&["8080", "127.0.0.1:1", "127.0.0.1:2"], now);
        conn.handle_connect_started(
            now,
            Err(ConnectFailure::Local("Too many open files".into())),
        );
        let (_, events) = next(&mut conn, now);
        assert!(
            matches!(&events[..], [ForwarderEvent::Choose(_)]),
            "{events:?}"
        );
    }

    #[test]
    fn the_destination_reached_is_reported_once_and_its_end_after_the_close_conn_5() {
        let now = t0();
        let mut conn = connecting(&["8080", "127.0.0.1:1"], now);
        conn.handle_connect_started(now, Ok(()));
        let ready = Ready {
            read: false,
            write: true,
            error: false,
            hangup: false,
        };
        conn.handle_ready(now, Side::Destination, ready);
        let (out, _) = next(&mut conn, now);
        assert_eq!(out, Output::FinishConnect);
        conn.handle_connect_result(now, Ok(()));
        let (out, events) = next(&mut conn, now);
        assert_eq!(out, Output::Forwarder);
        assert_eq!(events, [ForwarderEvent::Reached { dest: DestId(0) }]);
        assert_eq!(
            conn.reached().map(|d| d.to_string()),
            Some("127.0.0.1:1".into())
        );
        // The client hangs up at once: one Closed, naming the destination.
        conn.abandon(now);
        let mut closed = Vec::new();
        for _ in 0..10 {
            match next(&mut conn, now) {
                (Output::Done, _) => break,
                (_, events) => closed.extend(events),
            }
        }
        assert!(
            matches!(
                &closed[..],
                [ForwarderEvent::Closed {
                    dest: Some(DestId(0)),
                    ..
                }]
            ),
            "{closed:?}"
        );
    }

    #[test]
    fn a_choice_asked_for_by_an_abandoned_connection_is_not_made() {
        let now = t0();
        let mut conn = connection(&["8080", "127.0.0.1:1"], now);
        conn.abandon(now);
        let mut events = Vec::new();
        for _ in 0..10 {
            match next(&mut conn, now) {
                (Output::Done, _) => break,
                (_, e) => events.extend(e),
            }
        }
        assert!(
            matches!(&events[..], [ForwarderEvent::Closed { dest: None, .. }]),
            "{events:?}"
        );
    }
}
