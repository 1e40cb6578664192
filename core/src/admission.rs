//! Who gets in: the accept rules (CONN-1) and the connection limits of
//! `--max-conns` and `--max-conns-per-ip` (OPT-3), with the count of open
//! connections they need.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use crate::addr::canonical_ip;
use crate::rules::AcceptRules;

/// Descriptors kept back from connections for plug itself (stdio, listener, log,
/// reactor, session file, pipes) when deriving the default `--max-conns`.
pub const RESERVED_DESCRIPTORS: u64 = 16;

/// The default `--max-conns` for an open-file limit of `nofile`: every relayed
/// connection holds two descriptors (client and destination), so plug never runs
/// itself out of descriptors under its own limit.
pub fn default_max_conns(nofile: u64) -> usize {
    let usable = nofile.saturating_sub(RESERVED_DESCRIPTORS) / 2;
    usize::try_from(usable).unwrap_or(usize::MAX).max(1)
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
    max_conns: usize,
    max_per_client: Option<usize>,
    open: usize,
    per_client: BTreeMap<IpAddr, usize>,
}

impl Admission {
    /// Creates it from the accept rules and the limits; `max_conns` defaults to
    /// [`default_max_conns`] of the open-file limit `nofile`.
    pub fn new(
        rules: AcceptRules,
        max_conns: Option<u32>,
        max_per_client: Option<u32>,
        nofile: u64,
    ) -> Self {
        let to_usize = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
        Admission {
            rules,
            max_conns: max_conns.map_or_else(|| default_max_conns(nofile), to_usize),
            max_per_client: max_per_client.map(to_usize),
            open: 0,
            per_client: BTreeMap::new(),
        }
    }

    /// The connection limit in force.
    pub fn max_conns(&self) -> usize {
        self.max_conns
    }

    /// Connections admitted and not yet released.
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
        if self.open >= self.max_conns {
            return Err(Refusal::Capacity {
                limit: self.max_conns,
            });
        }
        let mine = self.per_client.get(&client).copied().unwrap_or(0);
        if let Some(limit) = self.max_per_client {
            if mine >= limit {
                return Err(Refusal::PerClient { limit });
            }
        }
        self.open += 1;
        self.per_client.insert(client, mine + 1);
        Ok(())
    }

    /// Records that an admitted client's connection has ended.
    pub fn release(&mut self, client: IpAddr) {
        let client = canonical_ip(client);
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
    use crate::rules::AcceptRule;
    use proptest::prelude::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn default_limit_follows_the_descriptor_limit_opt_3() {
        assert_eq!(default_max_conns(20_000), 9_992);
        assert_eq!(default_max_conns(1024), 504);
        assert_eq!(default_max_conns(8), 1);
        let a = Admission::new(AcceptRules::default(), None, None, 1024);
        assert_eq!(a.max_conns(), 504);
    }

    #[test]
    fn rules_come_first_conn_1() {
        let rules = AcceptRules::new(vec![AcceptRule::parse("10.0.0.0/30").unwrap()]);
        let mut a = Admission::new(rules, Some(1), None, 1024);
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
        let mut a = Admission::new(AcceptRules::default(), Some(3), Some(2), 1024);
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
            let mut a = Admission::new(AcceptRules::default(), Some(max), per, 1024);
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
}
