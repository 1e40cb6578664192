//! One connection in an event loop: its sockets, what epoll watches of them,
//! and the core's outputs carried out until it waits again. The only waiting
//! is the loop's epoll_wait on what the core's [`Wait`] names; everything else
//! is [`Conn::perform`].

use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use plug_core::connection::relay::Side;
use plug_core::connection::{Output, Ready, Wait};
use plug_shell::drive::conn::{Conn, Pipes};
use plug_shell::sys::{self, EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLOUT};

/// What a connection does after it has run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// It waits for its sockets, or until the deadline if there is one.
    Wait(Option<Instant>),
    /// It has more to do, after the other connections have had their turn.
    Yield,
    /// It is over and accounted for: drop it.
    Done,
}

/// How a socket is registered with the loop's epoll set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Registration {
    /// Its key there (see [`key`]): a socket that replaces another (a new
    /// connect attempt) gets a new one, so an event already taken for the old
    /// socket is never reported as the new one's.
    key: u64,
    /// The events it is watched for; `None` while it is not in the set.
    events: Option<u32>,
}

/// An epoll key for side `side` of the connection in slot `index`, made
/// unique by `id` (the loop's count of sockets registered).
pub fn key(id: u32, index: usize, side: Side) -> u64 {
    (u64::from(id) << 32) | ((index as u64) << 1) | side.index() as u64
}

/// One admitted client and what the loop keeps of it.
#[derive(Debug)]
pub struct Entry {
    conn: Conn,
    client: Option<TcpStream>,
    dest: Option<TcpStream>,
    pipes: Pipes,
    /// Per side (by [`Side::index`]).
    registered: [Registration; 2],
    /// The deadline the loop holds for it, if any.
    pub deadline: Option<Instant>,
    /// Whether its loop counts it as splicing (see [`Entry::splicing`]).
    pub counted_splicing: bool,
}

impl Entry {
    /// Takes an admitted client (non-blocking, from `sockets::accept`); its
    /// epoll key is `client_key`.
    pub fn new(mut conn: Conn, client: TcpStream, client_key: u64) -> Entry {
        conn.start(&client);
        let unregistered = Registration {
            key: client_key,
            events: None,
        };
        Entry {
            conn,
            client: Some(client),
            dest: None,
            pipes: [None, None],
            registered: [unregistered; 2],
            deadline: None,
            counted_splicing: false,
        }
    }

    /// True while it holds a splice pipe: it moves bulk data, and a loop
    /// serving several such connections is busy enough to share them.
    pub fn splicing(&self) -> bool {
        self.pipes.iter().any(Option::is_some)
    }

    /// Takes its sockets out of `epoll`, to move it to another loop.
    pub fn leave(&mut self, epoll: RawFd) {
        for (socket, reg) in [self.client.as_ref(), self.dest.as_ref()]
            .into_iter()
            .zip(&mut self.registered)
        {
            if let (Some(socket), Some(_)) = (socket, reg.events) {
                sys::epoll_forget(epoll, socket.as_raw_fd());
            }
            reg.events = None;
        }
    }

    /// Gives its sockets new keys, in the loop it moved to; they are
    /// registered there when it next waits.
    pub fn rekey(&mut self, keys: [u64; 2]) {
        for (reg, key) in self.registered.iter_mut().zip(keys) {
            reg.key = key;
        }
    }

    /// The key `side`'s socket is registered under.
    pub fn key(&self, side: Side) -> u64 {
        self.registered[side.index()].key
    }

    /// Reports what epoll said of `side`'s socket.
    pub fn handle_event(&mut self, now: Instant, side: Side, flags: u32) {
        let ready = Ready {
            read: flags & EPOLLIN != 0,
            write: flags & EPOLLOUT != 0,
            error: flags & EPOLLERR != 0,
            hangup: flags & EPOLLHUP != 0,
        };
        self.conn.core().handle_ready(now, side, ready);
    }

    /// Carries out the core's outputs at `now` until it waits, yields or is
    /// done. A new destination socket is registered under `dest_key()`.
    pub fn run(&mut self, now: Instant, epoll: RawFd, mut dest_key: impl FnMut() -> u64) -> Next {
        loop {
            let out = self.conn.next(now);
            let (Some(c), false) = (&self.client, out == Output::Done) else {
                return Next::Done;
            };
            if self
                .conn
                .perform(now, &out, c, self.dest.as_ref(), &mut self.pipes)
            {
                continue;
            }
            match out {
                Output::Connect(to) => {
                    // The earlier attempt's socket leaves the epoll set as it
                    // is closed (nothing else holds it).
                    self.dest = self.conn.connect(now, to.addr, to.bind);
                    self.registered[Side::Destination.index()] = Registration {
                        key: dest_key(),
                        events: None,
                    };
                }
                Output::Wait(wait) => {
                    if self.watch(epoll, &wait).is_err() {
                        // epoll cannot hold the socket (out of memory or of
                        // its watch limit): this connection cannot go on, and
                        // still ends accounted for.
                        self.conn.core().abandon(now);
                        continue;
                    }
                    return Next::Wait(self.conn.core().poll_timeout());
                }
                Output::Yield => return Next::Yield,
                Output::Close { reset, .. } => {
                    self.conn
                        .before_close(reset, [self.client.as_ref(), self.dest.as_ref()]);
                    self.client = None;
                    self.dest = None;
                    self.pipes = [None, None];
                }
                _ => {}
            }
        }
    }

    /// Makes the epoll set watch each socket as `wait` says: level-triggered,
    /// so a socket that stays ready is reported again, as poll(2) would. A
    /// socket watched for errors alone is registered for no event: epoll
    /// reports errors and hang-ups whatever the interest (FAULT-1). One watched
    /// for nothing leaves the set. Nothing changes, and no system call is made,
    /// while a connection keeps waiting for the same things.
    fn watch(&mut self, epoll: RawFd, wait: &Wait) -> std::io::Result<()> {
        for side in [Side::Client, Side::Destination] {
            let i = side.index();
            let socket = match side {
                Side::Client => self.client.as_ref(),
                Side::Destination => self.dest.as_ref(),
            };
            let Some(socket) = socket else { continue };
            let w = wait.watch[i];
            let wanted = (w.read || w.write || w.errors)
                .then_some(if w.read { EPOLLIN } else { 0 } | if w.write { EPOLLOUT } else { 0 });
            let reg = &mut self.registered[i];
            if wanted == reg.events {
                continue;
            }
            let fd = socket.as_raw_fd();
            match wanted {
                Some(events) => {
                    sys::epoll_register(epoll, fd, events, reg.key, reg.events.is_none())?
                }
                None => sys::epoll_forget(epoll, fd),
            }
            reg.events = wanted;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_tell_sockets_apart_and_never_look_like_a_listener() {
        // The loop reads the slot from bits 1..31 and the side from bit 0;
        // bit 31 of the low half marks a listener.
        let listener_bit = 1u64 << 31;
        let biggest = (1usize << 30) - 1;
        for (id, index) in [(0, 0), (1, 5), (u32::MAX, biggest)] {
            for side in [Side::Client, Side::Destination] {
                let k = key(id, index, side);
                assert_eq!(k & listener_bit, 0);
                assert_eq!(((k & 0xffff_ffff) >> 1) as usize, index);
                assert_eq!((k & 1) as usize, side.index());
                assert_eq!((k >> 32) as u32, id);
            }
        }
        // A socket that replaces another in the same slot (a new connect) has
        // a new key, so an event already taken for the old one is not its.
        assert_ne!(key(7, 3, Side::Destination), key(8, 3, Side::Destination));
        assert_ne!(key(7, 3, Side::Client), key(7, 3, Side::Destination));
    }
}
