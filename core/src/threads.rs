//! How many threads a runtime runs connections on, how many of them accept
//! clients, and which thread a bulk connection moves to: pure functions of
//! what the operator set (`PLUG_THREADS`, `SMOL_THREADS`,
//! `ASYNC_STD_THREAD_COUNT`), the machine's cores and the threads' loads. The
//! adapters read those and start the threads.

/// Threads for connections: `configured` (the value of the runtime's
/// environment variable, if set) when it is a positive integer, else one per
/// `cores_per_thread` of `cores` (at least one).
pub fn count(configured: Option<&str>, cores: usize, cores_per_thread: usize) -> usize {
    configured
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| cores.max(1).div_ceil(cores_per_thread.max(1)))
}

/// Event loops of the std runtime: as [`count`] says, one per core by default.
///
/// Why not more: more loops means more accepting loops ([`accepting_loops`]),
/// which spread short connections thinner (one plug-bench run with two per
/// core, all accepting: crr 90 against 80 CPU-µs, redis 17.2 against 15.0),
/// while bulk already moves to where the cores are free ([`spread_to`]).
pub fn event_loops(configured: Option<&str>, cores: usize) -> usize {
    count(configured, cores, 1)
}

/// Executor threads of the async runtimes: as [`count`] says, one per two
/// cores by default.
///
/// Why not one per core: the threads share the cores with the peers they serve,
/// and a connection accepted on one thread and run on another costs a wake-up.
/// With async-io (one reactor for the process) readiness also crosses threads:
/// plug-bench on 2 cores, one thread cut CPU per round trip from 66-72 to
/// 37-46 µs. With plug's own reactor (one per thread) a second thread raised
/// throughput by 8-13% but also CPU per redis request by 9% (16.9 to 18.5 µs).
pub fn executors(configured: Option<&str>, cores: usize) -> usize {
    count(configured, cores, 2)
}

/// How many of `loops` event loops accept clients: one in two (at least one).
/// The others serve the bulk connections an accepting loop moves to them
/// ([`spread_to`]), so bulk still runs on every core, while short connections
/// and small messages share fewer loops, where one wait serves more sockets
/// and fewer threads contend with the peers for the cores. With every loop
/// accepting, the kernel hands clients to whichever loop is asleep, which on a
/// 2-core box spreads them over both. One plug-bench run there, one accepting
/// loop of two against both: per short connection 43.2 against 45.7 CPU-µs
/// (pen 39.6), 12,589 against 11,815 a second, p99 2.7 against 4.5 ms; per
/// redis request 8.0 against 8.3 µs (pen 7.5); bulk over four streams 2.55
/// against 2.53 GB/s.
pub fn accepting_loops(loops: usize) -> usize {
    loops.div_ceil(2).max(1)
}

/// Where a connection that has just started splicing goes, given how many
/// connections splice on its loop (`mine`, itself included) and on each loop
/// (`loads`, its own among them): the least busy loop, if that one splices
/// for more than one fewer; else nowhere. The margin keeps a connection from
/// moving to a loop that would then be the busier one.
pub fn spread_to(mine: usize, loads: &[usize]) -> Option<usize> {
    let (index, least) = loads.iter().enumerate().min_by_key(|(_, l)| **l)?;
    (least + 1 < mine).then_some(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_positive_number_set_wins_else_the_cores_decide() {
        assert_eq!(count(Some("3"), 8, 1), 3);
        assert_eq!(count(Some(" 5\n"), 8, 2), 5);
        // Not a positive integer: as if unset.
        for bad in ["0", "-2", "two", ""] {
            assert_eq!(count(Some(bad), 8, 2), 4, "{bad:?}");
        }
        assert_eq!(count(None, 8, 1), 8);
        assert_eq!(count(None, 3, 2), 2);
        // Never none, whatever the machine says.
        assert_eq!(count(None, 0, 2), 1);
        assert_eq!(count(None, 1, 0), 1);
        assert_eq!(event_loops(None, 4), 4);
        assert_eq!(executors(None, 4), 2);
    }

    #[test]
    fn one_loop_in_two_accepts_and_there_is_always_one() {
        assert_eq!(accepting_loops(1), 1);
        assert_eq!(accepting_loops(2), 1);
        assert_eq!(accepting_loops(3), 2);
        assert_eq!(accepting_loops(8), 4);
        // With more than one loop, one is left for bulk to move to.
        assert!((2..64).all(|n| accepting_loops(n) < n));
    }

    /// Streams that start splicing one after another on the loop that
    /// accepted them all (on two loops, the one that accepts); each goes where
    /// `spread_to` says. Returns how many splice on each loop.
    fn start_streams(streams: usize, loops: usize) -> Vec<usize> {
        let mut loads = vec![0; loops];
        for _ in 0..streams {
            loads[0] += 1;
            if let Some(to) = spread_to(loads[0], &loads) {
                loads[0] -= 1;
                loads[to] += 1;
            }
        }
        loads
    }

    #[test]
    fn bulk_streams_accepted_on_one_loop_end_spread_over_every_loop() {
        assert_eq!(start_streams(4, 2), [2, 2]);
        assert_eq!(start_streams(4, 4), [1, 1, 1, 1]);
        assert_eq!(start_streams(8, 2), [4, 4]);
        // One loop: nowhere to go.
        assert_eq!(start_streams(3, 1), [3]);
        // Fewer streams than loops: each still gets a loop of its own but one.
        assert_eq!(start_streams(2, 4).iter().filter(|&&l| l == 1).count(), 2);
    }

    #[test]
    fn a_connection_never_moves_to_a_loop_that_would_be_the_busier() {
        // Within one of the least busy loop: staying is as good as moving.
        assert_eq!(spread_to(1, &[1, 0]), None);
        assert_eq!(spread_to(3, &[3, 2, 2]), None);
        // Two or more ahead: it moves to the least busy.
        assert_eq!(spread_to(2, &[2, 0]), Some(1));
        assert_eq!(spread_to(5, &[5, 3, 1, 2]), Some(2));
        assert_eq!(spread_to(1, &[]), None);
    }
}
