//! systemd integration (OPT-7): readiness notification on `NOTIFY_SOCKET` and
//! socket activation through `LISTEN_FDS`/`LISTEN_PID`.

use std::ffi::OsString;
use std::io;
use std::net::TcpListener;
use std::os::fd::RawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};

use crate::sys;

/// The first descriptor systemd passes (SD_LISTEN_FDS_START).
const FIRST_PASSED_FD: i32 = 3;

/// Where to send state notifications, from `NOTIFY_SOCKET`.
#[derive(Debug, Clone)]
pub struct Notifier {
    socket: Option<OsString>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`; without it, notifications go nowhere.
    pub fn from_env() -> Self {
        Notifier {
            socket: std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty()),
        }
    }

    /// Sends `state` (e.g. `READY=1`); failures are returned for the log.
    pub fn notify(&self, state: &str) -> io::Result<()> {
        let Some(path) = &self.socket else {
            return Ok(());
        };
        let bytes = path.as_bytes();
        // A leading '@' names a socket in the abstract namespace.
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => UnixAddr::from_abstract_name(name)?,
            None => UnixAddr::from_pathname(std::path::Path::new(path))?,
        };
        UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr)?;
        Ok(())
    }
}

/// The most descriptors plug takes from `LISTEN_FDS`: far more listeners than
/// any file holds, few enough that a wild value closes nothing it should not.
const MAX_PASSED_FDS: u32 = 1024;

/// The descriptors of the listening sockets systemd passed to this process
/// (3, 4, …), if `LISTEN_PID` names it. Reads only the environment: call before
/// closing inherited descriptors, which keeps these (PROC-7).
pub fn passed_fds() -> Vec<RawFd> {
    let pid = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok());
    let fds = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(0)
        .min(MAX_PASSED_FDS);
    match pid == Some(std::process::id()) {
        true => (0..fds)
            .filter_map(|i| i32::try_from(i).ok())
            .map(|i| FIRST_PASSED_FD + i)
            .collect(),
        false => Vec::new(),
    }
}

/// Takes a descriptor [`passed_fds`] named, after checking that it is a
/// listening socket.
pub fn adopt(fd: RawFd) -> io::Result<TcpListener> {
    let listener = sys::adopt_listener(fd)?;
    // Not for anything this process might start.
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    Ok(listener)
}
