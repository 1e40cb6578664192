//! The accept loop: one thread per admitted connection.

use std::time::Instant;

use crate::conn;
use crate::process::Boot;

/// Stack for connection threads: the driver keeps its buffers on the heap.
const CONNECTION_STACK: usize = 128 * 1024;

/// Serves until a graceful stop has drained, then exits.
pub fn run(boot: Boot) -> ! {
    let (ctx, listener) = boot.serve(Ok);
    loop {
        match listener.accept() {
            Ok((client, peer)) => {
                let Some(connection) = ctx.admit(Instant::now(), peer) else {
                    continue; // refused: dropping `client` closes it at once (CONN-1)
                };
                let spawned = std::thread::Builder::new()
                    .stack_size(CONNECTION_STACK)
                    .spawn(move || conn::serve(connection, client));
                if let Err(e) = spawned {
                    ctx.log()
                        .error(&format!("cannot start a connection thread: {e}"));
                }
            }
            Err(_) if ctx.is_stopping() => break,
            Err(e) => {
                if let Some(pause) = ctx.accept_failed(Instant::now(), &e) {
                    std::thread::sleep(pause);
                }
            }
        }
    }
    // Close the listener now so a new instance can bind while connections drain.
    drop(listener);
    ctx.drain_and_exit()
}
