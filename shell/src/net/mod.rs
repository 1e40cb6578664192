//! Sockets: options set once for every runtime, splice pipes, and the sockets
//! of open connections a cut resets (OPT-8).

pub mod live;
pub mod sockets;
pub mod splice;
