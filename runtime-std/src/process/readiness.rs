//! What a connection driver has learned about whether its two sockets can be read
//! or written, so it spends no syscall that would only say EAGAIN. Shared by the
//! std driver (poll) and the async one (async-io); both pollers are
//! level-triggered, so a socket wrongly thought drained or full costs one wait
//! that returns at once, never a lost byte.

use plug_core::relay::Side;

/// Per side: may it be read, may it be written.
#[derive(Debug)]
pub struct Readiness {
    readable: [bool; 2],
    writable: [bool; 2],
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness {
            // The client has usually sent its first bytes by now; a destination just
            // connected rarely has, so ask the poller before spending a read on it.
            readable: [true, false],
            writable: [true; 2],
        }
    }
}

impl Readiness {
    /// True unless `side` was last found drained.
    pub fn can_read(&self, side: Side) -> bool {
        self.readable[side.index()]
    }

    /// True unless `side` was last found full.
    pub fn can_write(&self, side: Side) -> bool {
        self.writable[side.index()]
    }

    /// After a read of `n` bytes into room for `asked`: a short read almost always
    /// means the socket is drained.
    pub fn handle_read(&mut self, side: Side, n: usize, asked: usize) {
        if n > 0 && n < asked {
            self.readable[side.index()] = false;
        }
    }

    /// After a write of `n` of `offered` bytes: a short write means the socket
    /// buffer is full.
    pub fn handle_written(&mut self, side: Side, n: usize, offered: usize) {
        if n < offered {
            self.writable[side.index()] = false;
        }
    }

    /// A read found nothing (EAGAIN).
    pub fn handle_drained(&mut self, side: Side) {
        self.readable[side.index()] = false;
    }

    /// A write found no room (EAGAIN).
    pub fn handle_full(&mut self, side: Side) {
        self.writable[side.index()] = false;
    }

    /// The poller says `side` can be read.
    pub fn handle_readable(&mut self, side: Side) {
        self.readable[side.index()] = true;
    }

    /// The poller says `side` can be written.
    pub fn handle_writable(&mut self, side: Side) {
        self.writable[side.index()] = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_destination_is_asked_first_and_short_transfers_mean_drained_or_full() {
        let mut r = Readiness::default();
        assert!(r.can_read(Side::Client) && !r.can_read(Side::Destination));
        assert!(r.can_write(Side::Client) && r.can_write(Side::Destination));
        r.handle_read(Side::Client, 4096, 4096); // a full read: maybe more
        assert!(r.can_read(Side::Client));
        r.handle_read(Side::Client, 0, 4096); // end of stream: not "drained"
        assert!(r.can_read(Side::Client));
        r.handle_read(Side::Client, 10, 4096);
        assert!(!r.can_read(Side::Client));
        r.handle_readable(Side::Client);
        assert!(r.can_read(Side::Client));
        r.handle_written(Side::Destination, 5, 5);
        assert!(r.can_write(Side::Destination));
        r.handle_written(Side::Destination, 4, 5);
        assert!(!r.can_write(Side::Destination));
        r.handle_writable(Side::Destination);
        r.handle_full(Side::Destination);
        r.handle_drained(Side::Client);
        assert!(!r.can_write(Side::Destination) && !r.can_read(Side::Client));
    }
}
