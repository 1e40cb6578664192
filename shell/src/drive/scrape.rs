//! Carrying out a [`Scrape`] (OPT-9) on a non-blocking socket: the poll(2)
//! driver for thread runtimes; the async runtimes' is in `async_driver`. Both
//! only do what the core's machine says.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

use plug_core::reports::metrics::{Scrape, ScrapeOutput};

use crate::sys::{self, PollFd, POLLIN, POLLOUT};
use crate::Context;

/// A read or write result as [`Scrape`] takes it: bytes, or whether the socket
/// only had nothing to do now (`Err(true)`) rather than failed.
pub fn transfer(result: io::Result<usize>) -> Result<usize, bool> {
    match result {
        Ok(n) => Ok(n),
        Err(e) => Err(matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
        )),
    }
}

/// A scrape connection's place in the budget of scrapes served at once
/// (FAULT-6), given back when it is dropped.
#[derive(Debug)]
pub struct ScrapeTicket(Arc<Context>);

impl Drop for ScrapeTicket {
    fn drop(&mut self) {
        self.0.budget().handle_scrape_closed();
    }
}

/// Decides about a connection to the metrics listener: a ticket to serve it,
/// or `None` to close it at once (the core's budget is spent).
pub fn admit(ctx: &Arc<Context>) -> Option<ScrapeTicket> {
    ctx.budget()
        .handle_scrape_accepted()
        .then(|| ScrapeTicket(Arc::clone(ctx)))
}

/// Carries out an output of `scrape` that needs no waiting (read, render,
/// write, shut down) on the non-blocking `stream` and reports its result;
/// false for the ones a driver does its own way (wait, close). Every scrape
/// driver, poll(2) or async, does I/O through this.
pub fn perform(
    ctx: &Context,
    scrape: &mut Scrape,
    now: Instant,
    out: &ScrapeOutput,
    mut stream: &TcpStream,
) -> bool {
    match out {
        ScrapeOutput::Read => {
            let result = stream.read(scrape.read_space());
            scrape.handle_read(now, transfer(result));
        }
        ScrapeOutput::Render => scrape.handle_metrics(now, ctx.metrics_text()),
        ScrapeOutput::Write => {
            let result = stream.write(scrape.write_data());
            scrape.handle_written(now, transfer(result));
        }
        ScrapeOutput::ShutdownWrite => {
            let ok = stream.shutdown(Shutdown::Write).is_ok();
            scrape.handle_shutdown(now, ok);
        }
        ScrapeOutput::Wait { .. } | ScrapeOutput::Close => return false,
    }
    true
}

/// Serves one scrape connection to its end on this thread.
pub fn serve(ctx: &Context, stream: TcpStream) {
    let mut scrape = Scrape::new(Instant::now());
    loop {
        let now = Instant::now();
        let out = scrape.poll_output(now);
        if perform(ctx, &mut scrape, now, &out, &stream) {
            continue;
        }
        match out {
            ScrapeOutput::Wait { read, deadline } => {
                let events = if read { POLLIN } else { POLLOUT };
                let mut fds = [PollFd {
                    fd: stream.as_raw_fd(),
                    events,
                    revents: 0,
                }];
                let wait = deadline.saturating_duration_since(now);
                match sys::poll(&mut fds, Some(wait)) {
                    // Ready, hung up or failed: the next read or write says which.
                    Ok(n) if n > 0 => scrape.handle_ready(Instant::now()),
                    // The deadline: the next poll_output closes.
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
            _ => return,
        }
    }
}
