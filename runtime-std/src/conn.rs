//! One connection on one thread: non-blocking sockets and poll(2), doing what the
//! core says. The only waiting is poll(2) on what the core's [`Wait`] names, until
//! its deadline; everything else is [`Conn::perform`].

use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::Instant;

use plug_core::connection::relay::Side;
use plug_core::connection::{Output, Ready, Wait};
use plug_shell::drive::conn::{Conn, Pipes};
use plug_shell::sys::{self, PollFd, POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT};

/// Serves one admitted client (non-blocking, from `sockets::accept`) to the end.
pub fn serve(mut conn: Conn, client: TcpStream) {
    conn.start(&client);
    let mut client = Some(client);
    let mut dest: Option<TcpStream> = None;
    let mut pipes: Pipes = [None, None];
    // The clock is read once per wake-up: the work in between takes microseconds.
    let mut now = Instant::now();
    loop {
        let out = conn.next(now);
        let (Some(c), false) = (&client, out == Output::Done) else {
            return;
        };
        if conn.perform(now, &out, c, dest.as_ref(), &mut pipes) {
            continue;
        }
        match out {
            Output::Connect { addr, bind } => dest = conn.connect(now, addr, bind),
            Output::Wait(wait) => {
                now = wait_for(&mut conn, &wait, [Some(c), dest.as_ref()]);
            }
            Output::Close { reset } => {
                conn.before_close(reset, [client.as_ref(), dest.as_ref()]);
                client = None;
                dest = None;
                pipes = [None, None];
            }
            // Yield: this thread is the connection's own. Nothing else is left.
            _ => {}
        }
    }
}

/// Polls the sockets as `wait` says until one is ready or its deadline passes,
/// and reports what poll(2) said; returns the time it woke. A socket watched for
/// nothing but errors is still polled (events 0): poll(2) always reports errors
/// and hang-ups (FAULT-1).
fn wait_for(conn: &mut Conn, wait: &Wait, socks: [Option<&TcpStream>; 2]) -> Instant {
    let mut fds = [PollFd {
        fd: -1,
        events: 0,
        revents: 0,
    }; 2];
    for (i, sock) in socks.iter().enumerate() {
        let w = wait.watch[i];
        if let Some(s) = sock.filter(|_| w.read || w.write || w.errors) {
            fds[i].fd = s.as_raw_fd();
            fds[i].events = if w.read { POLLIN } else { 0 } | if w.write { POLLOUT } else { 0 };
        }
    }
    let timeout = wait
        .deadline
        .map(|d| d.saturating_duration_since(Instant::now()));
    // EINTR and timeouts need no report: the core checks its deadlines itself.
    let polled = sys::poll(&mut fds, timeout);
    let now = Instant::now();
    match polled {
        Ok(0) => return now,
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return now,
        // poll(2) itself failing (out of memory) would fail again at once: this
        // driver cannot go on with the connection, which still ends accounted for.
        Err(_) => {
            conn.core().abandon(now);
            return now;
        }
    }
    for (side, f) in [Side::Client, Side::Destination].into_iter().zip(fds) {
        if f.fd >= 0 && f.revents != 0 {
            let ready = Ready {
                read: f.revents & POLLIN != 0,
                write: f.revents & POLLOUT != 0,
                error: f.revents & (POLLERR | POLLNVAL) != 0,
                hangup: f.revents & POLLHUP != 0,
            };
            conn.core().handle_ready(now, side, ready);
        }
    }
    now
}
