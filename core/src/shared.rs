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
