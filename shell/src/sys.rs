//! The few system calls std does not offer, wrapped once. This is the only place in
//! the adapters with `unsafe`; every block says why it is sound.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use plug_core::session::WallTime;

/// The outcome of [`fork`].
pub enum Fork {
    /// In the parent; the child's PID.
    Parent(i32),
    /// In the child.
    Child,
}

/// Forks the process. Call only while single-threaded (PROC-1).
pub fn fork() -> io::Result<Fork> {
    // SAFETY: fork has no memory-safety preconditions; the caller guarantees the
    // process is single-threaded, so the child cannot inherit a held lock.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Fork::Child),
        pid => Ok(Fork::Parent(pid)),
    }
}

/// Starts a new session, leaving the controlling terminal.
pub fn setsid() -> io::Result<()> {
    // SAFETY: no arguments, no memory involved.
    if unsafe { libc::setsid() } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Points stdin, stdout and stderr at /dev/null.
pub fn redirect_stdio_to_null() -> io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    use std::os::fd::AsRawFd;
    for fd in 0..3 {
        // SAFETY: both descriptors are open for the duration of the call; dup2 only
        // replaces descriptor `fd`, which std does not track as owned.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Raises the soft open-file limit to the hard limit; returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == -1 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    Ok(lim.rlim_cur)
}

fn signal_set(signals: &[i32]) -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set it is given; sigaddset only writes it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks `signals` in the calling thread and every thread it starts afterwards, so
/// that only [`wait_signal`] receives them.
pub fn block_signals(signals: &[i32]) -> io::Result<()> {
    let set = signal_set(signals);
    // SAFETY: `set` is initialised; the old mask is not needed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Waits for one of `signals` (which must be blocked) and returns it.
pub fn wait_signal(signals: &[i32]) -> io::Result<i32> {
    let set = signal_set(signals);
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` is initialised and `sig` is writable.
    let rc = unsafe { libc::sigwait(&set, &mut sig) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(sig)
}

/// Opens the syslog connection: facility daemon, ident = `ident`, with the PID.
pub fn openlog(ident: &str) {
    let ident = CString::new(ident.replace('\0', "")).unwrap_or_default();
    // openlog keeps the pointer for the life of the process, so the string is leaked
    // on purpose (once per process).
    let ident: &'static std::ffi::CStr = Box::leak(ident.into_boxed_c_str());
    // SAFETY: `ident` lives forever; the flags and facility are plain integers.
    unsafe {
        libc::openlog(
            ident.as_ptr(),
            libc::LOG_PID | libc::LOG_NDELAY,
            libc::LOG_DAEMON,
        )
    };
}

/// Syslog priorities plug uses.
#[derive(Debug, Clone, Copy)]
pub enum Priority {
    /// Errors.
    Err,
    /// Connection logging and notices.
    Notice,
}

/// Sends one message to syslog.
pub fn syslog(priority: Priority, message: &str) {
    let pri = match priority {
        Priority::Err => libc::LOG_ERR,
        Priority::Notice => libc::LOG_NOTICE,
    };
    let Ok(msg) = CString::new(message.replace('\0', "")) else {
        return;
    };
    // SAFETY: the format is a literal "%s" and `msg` is a valid C string, so syslog
    // reads exactly one string argument.
    unsafe { libc::syslog(pri, c"%s".as_ptr(), msg.as_ptr()) };
}

/// Breaks down `time` as local time (the session line's clock).
pub fn local_time(time: SystemTime) -> WallTime {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let t = libc::time_t::try_from(secs).unwrap_or(libc::time_t::MAX);
    // SAFETY: `tm` is plain data that localtime_r fills in; `t` is valid.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&t, &mut tm);
        tm
    };
    WallTime {
        year: tm.tm_year + 1900,
        month: u8::try_from(tm.tm_mon + 1).unwrap_or(0),
        day: u8::try_from(tm.tm_mday).unwrap_or(0),
        hour: u8::try_from(tm.tm_hour).unwrap_or(0),
        minute: u8::try_from(tm.tm_min).unwrap_or(0),
        second: u8::try_from(tm.tm_sec).unwrap_or(0),
    }
}

/// Shuts down the read side of `fd`: on Linux this wakes a thread blocked in
/// accept(2) on a listening socket, which then fails with EINVAL.
pub fn shutdown_read(fd: RawFd) {
    // SAFETY: shutdown on a descriptor has no memory effects; a stale descriptor only
    // yields EBADF.
    unsafe { libc::shutdown(fd, libc::SHUT_RD) };
}

/// One descriptor for [`poll`].
pub type PollFd = libc::pollfd;

/// Readiness bits.
pub const POLLIN: i16 = libc::POLLIN;
/// Writability.
pub const POLLOUT: i16 = libc::POLLOUT;
/// An error is pending on the socket.
pub const POLLERR: i16 = libc::POLLERR;
/// Both directions are shut (or the connection is gone).
pub const POLLHUP: i16 = libc::POLLHUP;
/// The descriptor is not open.
pub const POLLNVAL: i16 = libc::POLLNVAL;

/// Waits until one of `fds` is ready or `timeout` passes (`None`: forever).
pub fn poll(fds: &mut [PollFd], timeout: Option<Duration>) -> io::Result<usize> {
    let ms = match timeout {
        None => -1,
        // Round up so a wake-up is never early.
        Some(t) => i32::try_from(t.as_micros().div_ceil(1000)).unwrap_or(i32::MAX),
    };
    let n = libc::nfds_t::try_from(fds.len()).unwrap_or(0);
    // SAFETY: `fds` is a valid, writable slice of pollfd of length `n`.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), n, ms) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(rc).unwrap_or(0))
}

/// Signal numbers plug handles.
pub mod signal {
    /// Graceful stop.
    pub const TERM: i32 = libc::SIGTERM;
    /// Graceful stop (interactive).
    pub const INT: i32 = libc::SIGINT;
    /// State dump (OPT-6).
    pub const USR1: i32 = libc::SIGUSR1;
}

/// Takes ownership of descriptor `fd` as a listening TCP socket (socket
/// activation), after checking that it is one, and marks it close-on-exec.
pub fn adopt_listener(fd: RawFd) -> io::Result<std::net::TcpListener> {
    use std::os::fd::FromRawFd;
    let mut accepting: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `accepting` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut accepting as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    if accepting == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {fd} is not a listening socket"),
        ));
    }
    // SAFETY: fcntl on an open descriptor has no memory effects.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    // SAFETY: systemd handed this descriptor to this process (LISTEN_PID matched)
    // and nothing else in the process owns it; it is a listening socket.
    Ok(unsafe { std::net::TcpListener::from_raw_fd(fd) })
}
