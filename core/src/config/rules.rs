//! Accept rules (`-a net[/bits]`, CONN-1): which clients may connect.

use std::fmt;
use std::net::IpAddr;

use crate::config::addr::{canonical_ip, parse_ip};

/// Why an accept rule is not valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleError {
    /// The network part is not a numeric address.
    BadNetwork(String),
    /// The prefix length is not a number within the address family's size.
    BadPrefix(String),
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleError::BadNetwork(w) => {
                write!(
                    f,
                    "bad accept rule '{w}': expected a numeric address, e.g. 192.168.2.0/24"
                )
            }
            RuleError::BadPrefix(w) => {
                write!(
                    f,
                    "bad accept rule '{w}': prefix must be 0-32 for IPv4, 0-128 for IPv6"
                )
            }
        }
    }
}

impl std::error::Error for RuleError {}

/// One accept rule: a network, already masked to its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcceptRule {
    network: IpAddr,
    prefix: u8,
}

fn mask_v4(prefix: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0)
}

fn mask_v6(prefix: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix.min(128)))
        .unwrap_or(0)
}

impl AcceptRule {
    /// Parses `net` or `net/bits` (IPv4 or IPv6). The address is masked, so
    /// `192.168.2.5/24` means 192.168.2.0/24 (2.5.5 never matched it), and `/0`
    /// matches the whole family.
    pub fn parse(word: &str) -> Result<Self, RuleError> {
        let (net, bits) = match word.split_once('/') {
            Some((net, bits)) => (net, Some(bits)),
            None => (word, None),
        };
        let ip = parse_ip(net).map_err(|_| RuleError::BadNetwork(word.to_string()))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match bits {
            None => max,
            Some(b) if !b.is_empty() && b.len() <= 3 && b.bytes().all(|c| c.is_ascii_digit()) => {
                match b.parse::<u8>() {
                    Ok(p) if p <= max => p,
                    _ => return Err(RuleError::BadPrefix(word.to_string())),
                }
            }
            Some(_) => return Err(RuleError::BadPrefix(word.to_string())),
        };
        // Clients are compared as canonical addresses, so an IPv4-mapped rule
        // (`::ffff:10.0.0.0/104`) becomes the IPv4 rule it means (10.0.0.0/8).
        let (ip, prefix) = match canonical_ip(ip) {
            IpAddr::V4(v4) if ip.is_ipv6() => match prefix.checked_sub(96) {
                Some(p) => (IpAddr::V4(v4), p),
                None => return Err(RuleError::BadPrefix(word.to_string())),
            },
            other => (other, prefix),
        };
        let network = match ip {
            IpAddr::V4(v4) => IpAddr::V4((u32::from(v4) & mask_v4(prefix)).into()),
            IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & mask_v6(prefix)).into()),
        };
        Ok(AcceptRule { network, prefix })
    }

    /// True when `client` (canonicalised: IPv4-mapped counts as IPv4) lies in this
    /// network. An IPv4 rule never matches a real IPv6 client, nor the reverse.
    pub fn contains(&self, client: IpAddr) -> bool {
        match (self.network, canonical_ip(client)) {
            (IpAddr::V4(net), IpAddr::V4(c)) => {
                u32::from(c) & mask_v4(self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(c)) => {
                u128::from(c) & mask_v6(self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

impl fmt::Display for AcceptRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The whole set of accept rules (CONN-1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AcceptRules {
    rules: Vec<AcceptRule>,
}

impl AcceptRules {
    /// Builds the set from parsed rules; an empty set accepts everyone.
    pub fn new(rules: Vec<AcceptRule>) -> Self {
        AcceptRules { rules }
    }

    /// The rules in the order given.
    pub fn rules(&self) -> &[AcceptRule] {
        &self.rules
    }

    /// Decides whether a client may connect: always with no rules, otherwise iff
    /// its address lies in at least one rule's network (CONN-1).
    pub(crate) fn allows(&self, client: IpAddr) -> bool {
        self.rules.is_empty() || self.rules.iter().any(|r| r.contains(client))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn rule(w: &str) -> AcceptRule {
        AcceptRule::parse(w).unwrap()
    }

    /// CONN-1's `bits` is a decimal number of at most three digits: what
    /// Rust's integer parser would also take (`+8`, `0008`) is refused.
    #[test]
    fn a_prefix_is_one_to_three_decimal_digits_conn_1() {
        for bad in [
            "10.0.0.0/+8",
            "10.0.0.0/0008",
            "10.0.0.0/",
            "10.0.0.0/ 8",
            "::1/+64",
        ] {
            assert!(
                matches!(AcceptRule::parse(bad), Err(RuleError::BadPrefix(_))),
                "{bad}"
            );
        }
        assert_eq!(rule("10.1.2.3/008").to_string(), "10.0.0.0/8");
        assert_eq!(rule("::1/128").to_string(), "::1/128");
    }

    #[test]
    fn rule_address_is_masked_conn_1() {
        let r = rule("192.168.2.5/24");
        assert_eq!(r.to_string(), "192.168.2.0/24");
        assert!(r.contains("192.168.2.200".parse().unwrap()));
        assert!(!r.contains("192.168.3.1".parse().unwrap()));
    }

    #[test]
    fn slash_zero_matches_the_family_conn_1() {
        assert!(rule("0.0.0.0/0").contains("203.0.113.9".parse().unwrap()));
        assert!(!rule("0.0.0.0/0").contains("2001:db8::1".parse().unwrap()));
        assert!(rule("::/0").contains("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn no_rules_accept_everyone_conn_1() {
        assert!(AcceptRules::default().allows("198.51.100.1".parse().unwrap()));
        let rules = AcceptRules::new(vec![rule("127.0.0.2")]);
        assert!(rules.allows("127.0.0.2".parse().unwrap()));
        assert!(!rules.allows("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn mapped_clients_match_ipv4_rules_cli_8() {
        let rules = AcceptRules::new(vec![rule("10.0.0.0/8")]);
        assert!(rules.allows("::ffff:10.1.2.3".parse().unwrap()));
        let rules = AcceptRules::new(vec![rule("::ffff:10.0.0.0/104")]);
        assert_eq!(rules.rules()[0].to_string(), "10.0.0.0/8");
        assert!(AcceptRule::parse("::ffff:10.0.0.0/64").is_err());
    }

    #[test]
    fn bad_rules_are_refused_cli_7() {
        for bad in [
            "300.1.2.3/40",
            "1.2.3.4/33",
            "::/129",
            "1.2.3.4/",
            "1.2.3.4/x",
            "net/8",
            "",
            "1.2.3/8",
            "1.2.3.4/-1",
        ] {
            assert!(AcceptRule::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(AcceptRule::parse("2001:db8::/32").is_ok());
    }

    /// The naive model: compare the first `prefix` bits one at a time.
    fn naive_match(net: &[u8], prefix: u8, client: &[u8]) -> bool {
        if net.len() != client.len() {
            return false;
        }
        (0..usize::from(prefix)).all(|bit| {
            let byte = bit / 8;
            let shift = 7 - (bit % 8);
            (net[byte] >> shift) & 1 == (client[byte] >> shift) & 1
        })
    }

    fn octets(ip: IpAddr) -> Vec<u8> {
        match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// CONN-1: masked CIDR match agrees with a bit-by-bit comparison, IPv4.
        #[test]
        fn v4_rules_match_naive_model(net: u32, prefix in 0u8..=32, client: u32, near in any::<bool>()) {
            // Half the time put the client near the network so matches are common.
            let client = if near { net ^ (client >> prefix.min(31)) } else { client };
            let r = rule(&format!("{}/{prefix}", Ipv4Addr::from(net)));
            let c = IpAddr::V4(client.into());
            prop_assert_eq!(r.contains(c), naive_match(&net.to_be_bytes(), prefix, &octets(c)));
        }

        /// CONN-1: masked CIDR match agrees with a bit-by-bit comparison, IPv6.
        #[test]
        fn v6_rules_match_naive_model(net: u128, prefix in 0u8..=128, client: u128, near in any::<bool>()) {
            let client = if near { net ^ (client >> prefix.min(127)) } else { client };
            let net_ip = Ipv6Addr::from(net);
            prop_assume!(net_ip.to_ipv4_mapped().is_none());
            let c = IpAddr::V6(client.into());
            prop_assume!(Ipv6Addr::from(client).to_ipv4_mapped().is_none());
            let r = rule(&format!("{net_ip}/{prefix}"));
            prop_assert_eq!(r.contains(c), naive_match(&net.to_be_bytes(), prefix, &octets(c)));
        }

        /// A rule never matches the other address family.
        #[test]
        fn families_never_cross(v4: u32, v6: u128, p4 in 0u8..=32, p6 in 0u8..=128) {
            let c6 = Ipv6Addr::from(v6);
            prop_assume!(c6.to_ipv4_mapped().is_none());
            let r4 = rule(&format!("{}/{p4}", Ipv4Addr::from(v4)));
            let r6 = rule(&format!("{c6}/{p6}"));
            prop_assert!(!r4.contains(IpAddr::V6(c6)));
            prop_assert!(!r6.contains(IpAddr::V4(v4.into())));
        }
    }
}
