//! Rendezvous (highest-random-weight) hashing for `--hash` (OPT-12): every client
//! address gives every destination a weight, and the client goes to the eligible
//! destination with the highest. The weight depends only on the two, so every plug
//! instance, and a restarted one, agrees without sharing anything; when a
//! destination leaves, only the clients for which it weighed most move, and they
//! come back when it returns.
//!
//! The hash is fixed here (FNV-1a over the bytes, then the splitmix64 finalizer
//! for avalanche), not the standard library's, whose output may change between
//! Rust releases and is seeded per process.

use std::net::IpAddr;

use crate::config::addr::{canonical_ip, Destination};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The part of every weight that depends on the destination alone: its text as
/// written (`10.0.0.5:80`, `backend.example:443`), not its place on the command
/// line, so the order of the list never matters. Computed once per destination.
pub(crate) fn destination_key(dest: &Destination) -> u64 {
    fnv1a(FNV_OFFSET, dest.to_string().as_bytes())
}

/// The weight of the destination with `key` ([`destination_key`]) for `client`:
/// the same on every machine, in every run; an IPv4-mapped client counts as its
/// IPv4 address.
pub(crate) fn weight_with(key: u64, client: IpAddr) -> u64 {
    // A separator no address text contains keeps (dest, client) pairs apart.
    let h = fnv1a(key, b"|");
    let h = match canonical_ip(client) {
        IpAddr::V4(v4) => fnv1a(fnv1a(h, b"4"), &v4.octets()),
        IpAddr::V6(v6) => fnv1a(fnv1a(h, b"6"), &v6.octets()),
    };
    splitmix64(h)
}

/// The score of a destination whose rendezvous hash for a client is `hash` and
/// whose `,weight=` is `weight` (OPT-16): `weight / -ln(u)`, `u` the hash as a
/// fraction in (0, 1). Each destination then wins a share of clients
/// proportional to its weight, and a removed destination's clients still are
/// the only ones that move. For equal weights the order is the hashes' order.
pub(crate) fn weighted_score(hash: u64, weight: u32) -> f64 {
    // The midpoint of the hash's interval: never 0, never 1.
    #[allow(clippy::cast_precision_loss)]
    let u = (hash as f64 + 0.5) / 18_446_744_073_709_551_616.0;
    let u = u.clamp(f64::MIN_POSITIVE, 1.0 - f64::EPSILON);
    f64::from(weight) / -u.ln()
}

/// The weight of `dest` for `client`.
pub fn weight(client: IpAddr, dest: &Destination) -> u64 {
    weight_with(destination_key(dest), client)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dest(i: usize) -> Destination {
        Destination::parse(&format!("10.0.{}.{}:8080", i / 250, i % 250 + 1), 1, false).unwrap()
    }

    #[test]
    fn weights_are_fixed_across_builds_opt_12() {
        // A changed hash would move every client of every running fleet.
        let d = Destination::parse("10.0.0.5:80", 1, false).unwrap();
        let c: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(
            weight(c, &d),
            weight("::ffff:192.0.2.7".parse().unwrap(), &d)
        );
        assert_eq!(weight(c, &d), 3_192_762_732_703_578_691, "pinned");
        // IPv6 clients are weighed on all 16 bytes, pinned too.
        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        let other: IpAddr = "2001:db8::8".parse().unwrap();
        assert_ne!(weight(v6, &d), weight(other, &d), "the low 64 bits count");
        assert_eq!(weight(v6, &d), PINNED_V6, "pinned");
    }

    /// The weight of 10.0.0.5:80 for 2001:db8::7, as every build must give it.
    const PINNED_V6: u64 = 17_559_296_295_336_745_568;

    #[test]
    fn clients_of_one_ipv6_subnet_spread_evenly_opt_12() {
        // Clients that differ only in their low 64 bits (one /64, as behind a
        // v6 NAT or a mobile network) spread as evenly as any.
        for n in 2..=8 {
            let base = u128::from(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 0));
            let clients: Vec<IpAddr> = (0..20_000u128)
                .map(|k| IpAddr::from(std::net::Ipv6Addr::from(base | (k * 0x9e37_79b9))))
                .collect();
            let counts = spread(n, &clients);
            let fair = 20_000.0 / n as f64;
            for &c in &counts {
                assert!((c as f64 - fair).abs() <= fair * 0.10, "{n}: {counts:?}");
            }
        }
    }

    /// The spread over `n` destinations of many clients: the share of each is
    /// within 10% of 1/n (relative) with 20,000 clients and up to 8 destinations.
    fn spread(n: usize, clients: &[IpAddr]) -> Vec<usize> {
        let dests: Vec<Destination> = (0..n).map(dest).collect();
        let mut counts = vec![0; n];
        for &c in clients {
            let best = (0..n).max_by_key(|&i| weight(c, &dests[i])).unwrap();
            counts[best] += 1;
        }
        counts
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn spread_is_even_within_ten_percent_opt_12(n in 2usize..=8, seed in any::<u64>()) {
            let mut x = seed | 1;
            let clients: Vec<IpAddr> = (0..20_000)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    IpAddr::from((x as u32).to_be_bytes())
                })
                .collect();
            let fair = 20_000.0 / n as f64;
            // Random clients, and a block of consecutive ones (one subnet).
            let base = u32::from_be_bytes([10, (seed >> 8) as u8, 0, 0]);
            let block: Vec<IpAddr> = (0..20_000u32).map(|k| IpAddr::from((base + k).to_be_bytes())).collect();
            for clients in [&clients, &block] {
                let counts = spread(n, clients);
                for &c in &counts {
                    prop_assert!((c as f64 - fair).abs() <= fair * 0.10, "{counts:?}");
                }
            }
        }
    }

    #[test]
    fn weighted_scores_are_finite_and_ordered_at_the_extremes_opt_16() {
        // The largest hashes, whose fraction rounds to 1.0, still score
        // highest and finite; the smallest score lowest, above zero.
        let top = weighted_score(u64::MAX, 1);
        assert!(top.is_finite() && top > weighted_score(u64::MAX - (1 << 20), 1));
        let bottom = weighted_score(0, 1);
        assert!(bottom.is_finite() && bottom > 0.0 && bottom < weighted_score(1 << 40, 1));
        // Hash 0 stands for the midpoint of its interval, u = 2^-65, as every
        // hash does for its own: 1 / -ln(2^-65), not the clamp's far smaller
        // score, which would all but shut it out.
        let midpoint = 1.0 / (65.0 * std::f64::consts::LN_2);
        assert!((bottom - midpoint).abs() < 1e-12, "{bottom} vs {midpoint}");
        // A weight scales the score.
        let h = 1 << 63;
        assert!((weighted_score(h, 3) - 3.0 * weighted_score(h, 1)).abs() < 1e-9);
    }
}
