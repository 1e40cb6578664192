//! The listening socket (PROC-2): SO_REUSEADDR, a large backlog, dual-stack on `::`,
//! bound before detaching so a failure reaches the terminal.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Binds and listens on `addr`.
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
