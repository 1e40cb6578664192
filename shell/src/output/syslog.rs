//! plug's own syslog client (PROC-5): datagrams to /dev/log in the form syslog(3)
//! sends, facility daemon, ident = program name, with the daemon's PID. Unlike
//! syslog(3) it says whether a line was taken, so a foreground plug can write
//! the line on stderr instead when nobody listens (no /dev/log in a container),
//! and a stalled syslog daemon cannot hold the writer thread for long.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use plug_core::reports::log::{syslog_datagram, Severity};

use crate::sys;

/// Where the system logger listens.
pub const DEV_LOG: &str = "/dev/log";

/// The longest a line may wait for a busy syslog daemon before it is given up.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Connects a datagram socket to /dev/log. Done at start-up, before detaching
/// and before `--user` (PROC-9), so that a socket only root may reach still works.
pub fn connect() -> io::Result<UnixDatagram> {
    let socket = UnixDatagram::unbound()?;
    socket.connect(Path::new(DEV_LOG))?;
    socket.set_write_timeout(Some(SEND_TIMEOUT))?;
    Ok(socket)
}

/// The syslog connection of a running plug.
#[derive(Debug)]
pub struct Syslog {
    ident: String,
    pid: u32,
    socket: Mutex<Option<UnixDatagram>>,
}

impl Syslog {
    /// A client sending as `ident[pid]` over `socket` (from [`connect`]; `None`
    /// when /dev/log could not be reached at start: each line tries again).
    pub fn new(ident: &str, pid: u32, socket: Option<UnixDatagram>) -> Self {
        Syslog {
            ident: ident.to_string(),
            pid,
            socket: Mutex::new(socket),
        }
    }

    /// Sends one line at `severity`; false when syslog did not take it (no
    /// /dev/log, nobody reading it, or busy for longer than a second).
    pub fn send(&self, severity: Severity, text: &str) -> bool {
        let time = sys::local_time(SystemTime::now());
        let datagram = syslog_datagram(severity, &time, &self.ident, self.pid, text);
        let mut socket = crate::shared::lock(&self.socket);
        if let Some(s) = socket.as_ref() {
            match s.send(datagram.as_bytes()) {
                Ok(_) => return true,
                // Busy: trying again now would only wait again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                // The daemon restarted (its socket is new) or went away.
                Err(_) => *socket = None,
            }
        }
        match connect() {
            Ok(s) => {
                let sent = s.send(datagram.as_bytes()).is_ok();
                *socket = Some(s);
                sent
            }
            Err(_) => false,
        }
    }
}
