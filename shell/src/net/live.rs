//! The sockets of open connections, so the process can cut them when its drain
//! ends (OPT-8): each is reset from here (the peer sees a reset, never a clean
//! end of a partial transfer), which also wakes the connection's driver, which
//! then ends the connection with its session and `Complete` lines.
//!
//! A driver removes its sockets before it closes them, under the same lock that
//! a cut holds while it resets, so a cut never touches a descriptor number that
//! has been closed and reused for something else.

use std::os::fd::RawFd;
use std::sync::{Mutex, MutexGuard};

use crate::sys;

/// A connection's place in [`LiveSockets`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot(usize);

/// No descriptor.
const NONE: RawFd = -1;

#[derive(Debug, Default)]
struct Table {
    /// Per slot: the client's and the destination's descriptors.
    fds: Vec<[RawFd; 2]>,
    /// Per slot: the listener that accepted the connection.
    owners: Vec<u64>,
    free: Vec<usize>,
}

/// The sockets of every open connection.
#[derive(Debug, Default)]
pub struct LiveSockets {
    table: Mutex<Table>,
}

impl LiveSockets {
    fn table(&self) -> MutexGuard<'_, Table> {
        crate::shared::lock(&self.table)
    }

    /// Records the client socket of a connection `listener` accepted; its
    /// slot comes back.
    pub fn insert(&self, client: RawFd, listener: u64) -> Slot {
        let mut t = self.table();
        match t.free.pop() {
            Some(i) => {
                if let Some(fds) = t.fds.get_mut(i) {
                    *fds = [client, NONE];
                }
                if let Some(owner) = t.owners.get_mut(i) {
                    *owner = listener;
                }
                Slot(i)
            }
            None => {
                t.fds.push([client, NONE]);
                t.owners.push(listener);
                Slot(t.fds.len() - 1)
            }
        }
    }

    /// Records the destination socket of `slot` (`None` before the old one is
    /// closed, when a connect to another address replaces it).
    pub fn set_destination(&self, slot: Slot, dest: Option<RawFd>) {
        if let Some(fds) = self.table().fds.get_mut(slot.0) {
            fds[1] = dest.unwrap_or(NONE);
        }
    }

    /// Forgets `slot`'s sockets: call before closing them.
    pub fn remove(&self, slot: Slot) {
        let mut t = self.table();
        if let Some(fds) = t.fds.get_mut(slot.0) {
            if fds[0] != NONE {
                *fds = [NONE, NONE];
                t.free.push(slot.0);
            }
        }
    }

    /// Resets every recorded socket (SO_LINGER 0 is then moot: the connection is
    /// gone already); returns how many connections were cut.
    pub fn reset_all(&self) -> usize {
        self.reset_where(|_| true)
    }

    /// Resets the sockets of the connections `listener` accepted.
    pub fn reset_listener(&self, listener: u64) -> usize {
        self.reset_where(|owner| owner == listener)
    }

    fn reset_where(&self, cut_it: impl Fn(u64) -> bool) -> usize {
        let t = self.table();
        let mut cut = 0;
        for (fds, &owner) in t.fds.iter().zip(&t.owners) {
            if fds[0] == NONE || !cut_it(owner) {
                continue;
            }
            cut += 1;
            for &fd in fds.iter().filter(|&&fd| fd != NONE) {
                // A socket still connecting, or already reset, may refuse: the
                // driver is woken either way, and its own close resets it.
                let _ = sys::disconnect(fd);
            }
        }
        cut
    }
}
