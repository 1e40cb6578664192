//! The few system calls std does not offer, wrapped once. This is the only place in
//! the adapters with `unsafe`; every block says why it is sound.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use plug_core::reports::session::WallTime;

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

/// An epoll instance of plug's own (close-on-exec).
pub fn epoll_create() -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: epoll_create1 takes a flag and returns a new descriptor or -1.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by epoll_create1 and is owned by no one else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Watches `fd` in `epoll` for errors and hang-ups only, once (EPOLLONESHOT:
/// epoll reports EPOLLERR and EPOLLHUP whatever the interest), tagged `key`:
/// added (`add`), or re-armed.
pub fn epoll_watch_errors(epoll: RawFd, fd: RawFd, key: u64, add: bool) -> io::Result<()> {
    epoll_register(epoll, fd, libc::EPOLLONESHOT as u32, key, add)
}

/// Stops watching `fd` in `epoll` (before it is closed).
pub fn epoll_forget(epoll: RawFd, fd: RawFd) {
    let mut event = libc::epoll_event { events: 0, u64: 0 };
    // SAFETY: as above; a descriptor not in the set only gives ENOENT.
    unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_DEL, fd, &mut event) };
}

/// Waits (forever, retrying EINTR) for events on `epoll`: each one's key and
/// its flags.
pub fn epoll_wait(epoll: RawFd, out: &mut Vec<(u64, u32)>) -> io::Result<()> {
    let mut events = [EPOLL_EVENT; 64];
    loop {
        // Without a timeout, none means EINTR: wait again.
        let n = epoll_wait_for(epoll, &mut events, None)?;
        if n > 0 {
            out.extend(events[..n].iter().map(|e| (e.u64, e.events)));
            return Ok(());
        }
    }
}

/// Adds (`add`) or changes `fd`'s registration in `epoll`: level-triggered,
/// for `events`, tagged `key`.
pub fn epoll_register(epoll: RawFd, fd: RawFd, events: u32, key: u64, add: bool) -> io::Result<()> {
    let mut event = libc::epoll_event { events, u64: key };
    let op = if add {
        libc::EPOLL_CTL_ADD
    } else {
        libc::EPOLL_CTL_MOD
    };
    // SAFETY: `event` is a valid epoll_event; the kernel checks the descriptors.
    let rc = unsafe { libc::epoll_ctl(epoll, op, fd, &mut event) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits for events on `epoll` at most `timeout` (`None`: forever), into
/// `events`; EINTR is no error (none is returned, and the caller loops).
pub fn epoll_wait_for(
    epoll: RawFd,
    events: &mut [libc::epoll_event],
    timeout: Option<Duration>,
) -> io::Result<usize> {
    // Rounded up: a deadline is never reported early.
    let ms = timeout.map_or(-1, |t| {
        let ms = t.as_nanos().div_ceil(1_000_000);
        libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
    });
    let len = libc::c_int::try_from(events.len()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `events` is a writable array of at least `len` epoll_event.
    let n = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), len, ms) };
    if n >= 0 {
        return Ok(usize::try_from(n).unwrap_or(0));
    }
    let err = io::Error::last_os_error();
    match err.kind() {
        io::ErrorKind::Interrupted => Ok(0),
        _ => Err(err),
    }
}

/// An empty epoll event, to fill a buffer for [`epoll_wait_for`].
pub const EPOLL_EVENT: libc::epoll_event = libc::epoll_event { events: 0, u64: 0 };

/// An event counter that wakes an epoll wait from another thread
/// (non-blocking, close-on-exec).
pub fn eventfd() -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: eventfd takes a count and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by eventfd and is owned by no one else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Adds one to the counter `fd`, making it readable.
pub fn eventfd_signal(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a valid u64; a full counter only gives EAGAIN,
    // which leaves it readable, as wanted.
    unsafe { libc::write(fd, std::ptr::from_ref(&one).cast(), 8) };
}

/// Takes the counter `fd` back to zero.
pub fn eventfd_drain(fd: RawFd) {
    let mut count: u64 = 0;
    // SAFETY: reads at most 8 bytes into a valid u64.
    unsafe { libc::read(fd, std::ptr::from_mut(&mut count).cast(), 8) };
}

/// epoll's readable flag.
pub const EPOLLIN: u32 = libc::EPOLLIN as u32;
/// epoll's writable flag.
pub const EPOLLOUT: u32 = libc::EPOLLOUT as u32;
/// epoll's peer-shut-its-writing flag.
pub const EPOLLRDHUP: u32 = libc::EPOLLRDHUP as u32;
/// epoll's error flag.
pub const EPOLLERR: u32 = libc::EPOLLERR as u32;
/// epoll's hang-up flag.
pub const EPOLLHUP: u32 = libc::EPOLLHUP as u32;
/// epoll's flag that wakes one waiter, not every epoll instance, when a
/// descriptor several watch becomes ready (a listener shared by event loops).
pub const EPOLLEXCLUSIVE: u32 = libc::EPOLLEXCLUSIVE as u32;

/// Signal numbers plug handles.
pub mod signal {
    /// Graceful stop.
    pub const TERM: i32 = libc::SIGTERM;
    /// Graceful stop (interactive).
    pub const INT: i32 = libc::SIGINT;
    /// State dump (OPT-6).
    pub const USR1: i32 = libc::SIGUSR1;
    /// Reload (PROC-8).
    pub const HUP: i32 = libc::SIGHUP;
    /// Every signal the signal thread waits for.
    pub const HANDLED: [i32; 4] = [TERM, INT, USR1, HUP];
}

/// Ignores SIGPIPE, so a write to a closed socket or pipe fails with EPIPE instead
/// of killing plug (PROC-8). (Rust programs start so; this does not depend on it.)
pub fn ignore_sigpipe() {
    // SAFETY: setting a signal's disposition to SIG_IGN involves no handler code.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// Makes sure descriptors 0, 1 and 2 are open (on /dev/null if they were not), so
/// that no file plug opens later lands on one and receives stray output.
pub fn ensure_stdio_open() -> io::Result<()> {
    for fd in 0..3 {
        // SAFETY: F_GETFD only queries the descriptor's flags.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            // The lowest free descriptor is `fd`: open hands it out.
            let null = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")?;
            use std::os::fd::IntoRawFd;
            let got = null.into_raw_fd();
            if got != fd {
                // SAFETY: `got` is the descriptor just opened; dup2 replaces `fd`.
                unsafe {
                    libc::dup2(got, fd);
                    libc::close(got);
                }
            }
        }
    }
    Ok(())
}

/// Closes every descriptor above 2 except `keep` (a listener systemd passed),
/// so none that plug inherited stays open in the daemon (PROC-7). Call while
/// single-threaded, before plug opens anything of its own.
pub fn close_inherited_fds(keep: &[RawFd]) {
    // The passed descriptors are 3, 4, … (systemd's order): keep that run.
    let first = 3 + u32::try_from(keep.len()).unwrap_or(0);
    let ranges: &[(u32, u32)] = &[(first, u32::MAX)];
    let mut done = true;
    for &(first, last) in ranges {
        // SAFETY: close_range only closes descriptors; none of them is owned by
        // anything in this process yet (start-up, single-threaded).
        let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
        done &= rc == 0;
    }
    if done {
        return;
    }
    // Kernels before 5.9: close what /proc lists (the listing's own descriptor is
    // closed when it is dropped, before the loop).
    let open: Vec<RawFd> = match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => dir
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => return,
    };
    for fd in open {
        if fd > 2 && !keep.contains(&fd) {
            // SAFETY: as above; a descriptor already closed only yields EBADF.
            unsafe { libc::close(fd) };
        }
    }
}

/// Changes the working directory to `/`, so a detached plug keeps no directory
/// busy (PROC-7).
pub fn chdir_root() -> io::Result<()> {
    std::env::set_current_dir("/")
}

/// Takes an exclusive advisory lock on `fd` without waiting: `Ok(false)` when
/// another process holds it.
pub fn try_lock_exclusive(fd: RawFd) -> io::Result<bool> {
    // SAFETY: flock on a descriptor has no memory effects.
    if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Ok(false);
    }
    Err(e)
}

/// An account from the user database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passwd {
    /// The login name.
    pub name: String,
    /// The user ID.
    pub uid: u32,
    /// The primary group ID.
    pub gid: u32,
}

/// Grows a buffer for a `get*_r` call until it fits (ERANGE), up to 1 MiB.
fn with_buffer<T>(
    mut call: impl FnMut(&mut [libc::c_char]) -> (i32, Option<T>),
) -> io::Result<Option<T>> {
    let mut size = 1024;
    loop {
        let mut buf = vec![0 as libc::c_char; size];
        match call(&mut buf) {
            (0, found) => return Ok(found),
            (libc::ERANGE, _) if size < (1 << 20) => size *= 4,
            (rc, _) => return Err(io::Error::from_raw_os_error(rc)),
        }
    }
}

fn passwd_from(pw: &libc::passwd) -> Passwd {
    // SAFETY: getpwnam_r/getpwuid_r filled `pw_name` with a C string inside the
    // buffer, which outlives this call.
    let name = unsafe { CStr::from_ptr(pw.pw_name) }
        .to_string_lossy()
        .into_owned();
    Passwd {
        name,
        uid: pw.pw_uid,
        gid: pw.pw_gid,
    }
}

/// Looks up a user by name; `None` when there is no such user.
pub fn user_by_name(name: &str) -> io::Result<Option<Passwd>> {
    let cname = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    with_buffer(|buf| {
        // SAFETY: `pw` and `result` are writable; `buf` is a writable buffer of the
        // length given; `cname` is a valid C string.
        unsafe {
            let mut pw: libc::passwd = std::mem::zeroed();
            let mut result: *mut libc::passwd = std::ptr::null_mut();
            let rc = libc::getpwnam_r(
                cname.as_ptr(),
                &mut pw,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            );
            (rc, (!result.is_null()).then(|| passwd_from(&pw)))
        }
    })
}

/// Looks up a user by ID; `None` when there is no such user.
pub fn user_by_id(uid: u32) -> io::Result<Option<Passwd>> {
    with_buffer(|buf| {
        // SAFETY: as in [`user_by_name`].
        unsafe {
            let mut pw: libc::passwd = std::mem::zeroed();
            let mut result: *mut libc::passwd = std::ptr::null_mut();
            let rc = libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut result);
            (rc, (!result.is_null()).then(|| passwd_from(&pw)))
        }
    })
}

/// Looks up a group's ID by name; `None` when there is no such group.
pub fn group_by_name(name: &str) -> io::Result<Option<u32>> {
    let cname = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    with_buffer(|buf| {
        // SAFETY: `gr` and `result` are writable; `buf` is a writable buffer of the
        // length given; `cname` is a valid C string.
        unsafe {
            let mut gr: libc::group = std::mem::zeroed();
            let mut result: *mut libc::group = std::ptr::null_mut();
            let rc = libc::getgrnam_r(
                cname.as_ptr(),
                &mut gr,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            );
            (rc, (!result.is_null()).then_some(gr.gr_gid))
        }
    })
}

/// The real, effective and saved user IDs, then the same for groups.
pub fn ids() -> ([u32; 3], [u32; 3]) {
    let (mut r, mut e, mut s) = (0, 0, 0);
    let (mut rg, mut eg, mut sg) = (0, 0, 0);
    // SAFETY: each pointer is to a writable u32 (uid_t and gid_t are u32 on Linux).
    unsafe {
        libc::getresuid(&mut r, &mut e, &mut s);
        libc::getresgid(&mut rg, &mut eg, &mut sg);
    }
    ([r, e, s], [rg, eg, sg])
}

fn check(rc: libc::c_int, what: &str) -> io::Result<()> {
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    Err(io::Error::new(e.kind(), format!("{what}: {e}")))
}

/// Becomes `uid`:`gid` with the supplementary groups of `name` (or only `gid`
/// when `name` is `None`), for the whole process: initgroups or setgroups,
/// setgid, setuid, in that order (PROC-9). Needs root.
pub fn switch_ids(name: Option<&str>, uid: u32, gid: u32) -> io::Result<()> {
    match name {
        Some(name) => {
            let cname =
                CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            // SAFETY: `cname` is a valid C string; initgroups reads the group database.
            check(
                unsafe { libc::initgroups(cname.as_ptr(), gid) },
                "initgroups",
            )?;
        }
        None => {
            let groups = [gid];
            // SAFETY: `groups` is a valid array of one gid_t.
            check(unsafe { libc::setgroups(1, groups.as_ptr()) }, "setgroups")?;
        }
    }
    // SAFETY: setgid and setuid take plain integers; glibc applies them to every
    // thread of the process.
    check(unsafe { libc::setgid(gid) }, "setgid")?;
    // SAFETY: as above.
    check(unsafe { libc::setuid(uid) }, "setuid")
}

/// True when the process can become root again (setuid(0) succeeds): a switch
/// that left this possible has dropped nothing. Undoes nothing if it can; the
/// caller exits.
pub fn can_regain_root() -> bool {
    // SAFETY: setuid and setgid take plain integers.
    unsafe { libc::setuid(0) == 0 || libc::setgid(0) == 0 }
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

/// Ends the process at once with `status`: no destructors, no flush of stdout's
/// buffer (whose lock a thread stuck writing to a full pipe may hold), so that
/// exit is never held hostage by output (FAULT-7). Queued lines were given their
/// bounded chance before this is called.
pub fn exit_now(status: i32) -> ! {
    // SAFETY: _exit takes no pointers and never returns.
    unsafe { libc::_exit(status) }
}

/// Resets the TCP connection on `fd` at once, from any thread: connect(2) with
/// AF_UNSPEC disconnects the socket, which sends a reset to the peer and wakes
/// whoever waits on the socket with ECONNRESET. The descriptor stays open (its
/// owner closes it). Used to cut connections at the end of a drain (OPT-8).
pub fn disconnect(fd: RawFd) -> io::Result<()> {
    // SAFETY: a zeroed sockaddr is valid plain data; the length given is its size.
    let rc = unsafe {
        let mut addr: libc::sockaddr = std::mem::zeroed();
        addr.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
        let len = std::mem::size_of::<libc::sockaddr>() as libc::socklen_t;
        libc::connect(fd, &addr, len)
    };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits for the child `pid` to end, so that whatever it held, the pid file's
/// lock above all, is released when the caller goes on. Called only once the
/// child has said it failed, when it is already on its way out.
pub fn wait_child(pid: i32) {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `status` is writable.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc != -1 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return;
        }
    }
}
