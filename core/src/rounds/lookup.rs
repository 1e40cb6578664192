//! `--resolve SECS` (OPT-11): when the host names among the destinations are
//! looked up. The adapter does the lookups, with the system resolver and off the
//! connection path, and reports each result to [`crate::forwarder::Forwarder`];
//! the balancer holds the addresses.

use crate::forwarder::select::DestId;

/// One host name to look up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// The destination it belongs to.
    pub dest: DestId,
    /// The name, as given.
    pub name: String,
    /// The destination's port (for resolvers that want a service).
    pub port: u16,
}
