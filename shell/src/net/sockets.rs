//! Socket set-up shared by every runtime: the listening socket (PROC-2) and the
//! start of an outgoing connection (CONN-8).

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};

use plug_core::forwarder::accept::AcceptFailure;
use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// Binds and listens on `addr`: SO_REUSEADDR, a large backlog, dual-stack on `::`.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if let SocketAddr::V6(v6) = addr {
        // `-i ::` serves IPv4 clients too (CLI-8); a specific IPv6 address cannot.
        socket.set_only_v6(!v6.ip().is_unspecified())?;
    }
    socket.bind(&addr.into())?;
    // The kernel caps this at net.core.somaxconn.
    socket.listen(libc::SOMAXCONN)?;
    Ok(socket.into())
}

/// Accepts a client (PROC-2), already non-blocking and close-on-exec: one
/// accept4(2) instead of accept and a separate call to make it non-blocking.
pub fn accept(listener: &TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
    let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    let (socket, peer) = socket2::SockRef::from(listener).accept4(flags)?;
    let peer = peer
        .as_socket()
        .ok_or_else(|| io::Error::other("a client with no IP address"))?;
    Ok((socket.into(), peer))
}

/// Why an outgoing connection could not be started.
#[derive(Debug)]
pub enum ConnectError {
    /// plug could not make or bind the socket (out of descriptors, bad `-p`):
    /// not the destination's fault.
    Local(io::Error),
    /// The connect itself failed at once (e.g. refused, unreachable).
    Remote(io::Error),
}

/// Starts a non-blocking connect to `addr`, bound first to `bind` (CONN-8), on
/// a socket [`prepare`]d for relaying; the caller waits for writability and
/// then checks `take_error` (unless the poller's flags said). The socket is
/// non-blocking (so `Async::new_nonblocking` may take it as it is).
pub fn begin_connect(
    addr: SocketAddr,
    bind: Option<SocketAddr>,
    keepalive: bool,
) -> Result<TcpStream, ConnectError> {
    // Non-blocking from birth: saves the two fcntl calls of setting it afterwards.
    let kind = Type::STREAM.nonblocking();
    let socket = Socket::new(Domain::for_address(addr), kind, Some(Protocol::TCP))
        .map_err(ConnectError::Local)?;
    // Set before the connect, where they hold as well (keepalive starts once
    // connected): the connect's end then needs no system call but a look at
    // its error, and none at all where the poller tells it.
    prepare(SockRef::from(&socket), keepalive);
    if let Some(local) = bind {
        socket.bind(&local.into()).map_err(ConnectError::Local)?;
    }
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(ConnectError::Remote(e)),
    }
    Ok(socket.into())
}

/// Sets on the listener what [`prepare`] would set on each client: Linux copies
/// TCP_NODELAY and SO_KEEPALIVE to accepted sockets, so a client then needs no
/// setsockopt of its own (see [`prepare_client`]).
pub fn prepare_listener(listener: &TcpListener, keepalive: bool) {
    prepare(SockRef::from(listener), keepalive);
}

/// [`prepare`] for an accepted client: nothing to do where it inherited the
/// listener's options (Linux, after [`prepare_listener`]).
pub fn prepare_client(client: &TcpStream, keepalive: bool) {
    if !cfg!(target_os = "linux") {
        prepare(SockRef::from(client), keepalive);
    }
}

/// Sets what plug wants on both relayed sockets, in every runtime: TCP_NODELAY (a
/// forwarder must not add Nagle delays to what it relays) and, with `-k`,
/// SO_KEEPALIVE (CONN-7). Failures are ignored: the connection still works.
fn prepare(socket: SockRef<'_>, keepalive: bool) {
    let _ = socket.set_tcp_nodelay(true);
    if keepalive {
        let _ = socket.set_keepalive(true);
    }
}

/// Reads what `socket` has into `buf`: recv(2) made directly, where std's
/// read makes it through glibc, whose cancellation-point wrappers (with
/// send's) took about 250 instructions per relayed redis request, 6% of
/// plug's own (callgrind).
pub fn recv(socket: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    rustix::net::recv(socket, buf, rustix::net::RecvFlags::empty())
        .map(|(n, _)| n)
        .map_err(io::Error::from)
}

/// Writes what it can of `data` to `socket`: send(2) made directly, with
/// MSG_NOSIGNAL as std's write makes it, so a peer gone is an EPIPE error
/// and not a signal.
pub fn send(socket: &TcpStream, data: &[u8]) -> io::Result<usize> {
    rustix::net::send(socket, data, rustix::net::SendFlags::NOSIGNAL).map_err(io::Error::from)
}

/// Before a connection's sockets are dropped for [`Output::Close`]: with `reset`
/// (an abortive end, CONN-6) closing them resets the connections (SO_LINGER 0), so
/// a stream cut short never looks complete to the surviving peer.
///
/// [`Output::Close`]: plug_core::connection::Output::Close
pub fn before_close(reset: bool, sockets: [Option<&TcpStream>; 2]) {
    if reset {
        for socket in sockets.into_iter().flatten() {
            let _ = socket2::SockRef::from(socket).set_linger(Some(std::time::Duration::ZERO));
        }
    }
}

/// What an accept error means, for the core to decide what follows (SPEC §5).
pub fn accept_failure(error: &io::Error) -> AcceptFailure {
    match error.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE) => AcceptFailure::OutOfDescriptors,
        Some(libc::ENOBUFS | libc::ENOMEM) => AcceptFailure::OutOfMemory,
        Some(libc::EAGAIN) => AcceptFailure::WouldBlock,
        Some(libc::ECONNABORTED | libc::EPROTO | libc::EINTR | libc::EPERM) => {
            AcceptFailure::ClientGone
        }
        _ => AcceptFailure::Other,
    }
}
