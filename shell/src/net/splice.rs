//! Zero-copy relaying on Linux: a direction moves bytes socket → pipe → socket with
//! splice(2), so they never enter user space. The core decides when a direction
//! reads into or writes from its pipe (`ReadInto::Pipe`, `WriteFrom::Pipe`) and
//! counts the bytes; this module makes the pipes and the calls, shared by every
//! runtime.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::pipe::{fcntl_setpipe_size, pipe_with, splice, PipeFlags, SpliceFlags};

/// Bytes one pipe is asked to hold.
pub const PIPE_CAPACITY: usize = 1024 * 1024;

/// One direction's kernel pipe.
#[derive(Debug)]
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    /// Makes a non-blocking, close-on-exec pipe; fails with EMFILE/ENFILE when out
    /// of descriptors (the caller then falls back to copying).
    pub fn new() -> io::Result<Pipe> {
        let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        let _ = fcntl_setpipe_size(&write, PIPE_CAPACITY);
        Ok(Pipe { read, write })
    }

    /// Moves up to `max` bytes from the socket `source` into the pipe. `Ok(0)` is
    /// end of stream. WouldBlock means the socket has nothing or the pipe is full.
    pub fn fill_from(&self, source: impl AsFd, max: usize) -> io::Result<usize> {
        Ok(splice(
            source,
            None,
            &self.write,
            None,
            max,
            SpliceFlags::NONBLOCK | SpliceFlags::MOVE,
        )?)
    }

    /// Moves up to `max` bytes from the pipe to the socket `sink`.
    pub fn drain_to(&self, sink: impl AsFd, max: usize) -> io::Result<usize> {
        Ok(splice(
            &self.read,
            None,
            sink,
            None,
            max,
            SpliceFlags::NONBLOCK | SpliceFlags::MOVE,
        )?)
    }
}
