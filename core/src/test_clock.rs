//! The one real instant the core's tests count from: the core never reads the
//! clock, so tests take a single `Instant` and move forward from it by adding
//! durations.

use std::time::Instant;

/// A real instant to count from.
#[allow(clippy::disallowed_methods)] // tests need one real Instant to count from
pub fn t0() -> Instant {
    Instant::now()
}
