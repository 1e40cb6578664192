//! What the shell's threads and every runtime's loops share state through.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, even one a panicking thread left poisoned: a panicking
/// connection must not take the whole daemon with it.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
