//! Carrying out the core's [`Process`] machine: a signal thread that only
//! receives signals and passes them on, and a lifecycle thread that feeds the
//! machine signals, the open count and time, and does what it says. Neither
//! decides anything; neither ever blocks on output (FAULT-7).

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Instant;

use plug_core::process::{Process, ProcessOutput, Signal};
use plug_core::reports::log::LogLevel;

use crate::{sys, Context};

/// What reaches the lifecycle thread.
#[derive(Debug)]
pub enum Event {
    /// A signal arrived.
    Signal(Signal),
    /// A connection closed while plug is stopping (the open count changed).
    Closed,
    /// The accept loop has returned after the listener was shut.
    AcceptEnded,
}

/// What a signal number means to the process machine.
fn meaning(signal: i32) -> Signal {
    match signal {
        sys::signal::USR1 => Signal::Dump,
        sys::signal::HUP => Signal::Reload,
        _ => Signal::Stop,
    }
}

/// Starts the signal thread, which hands each signal to the lifecycle thread.
pub(crate) fn spawn_signal_thread(ctx: &Arc<Context>) -> std::io::Result<()> {
    let events = ctx.events.clone();
    let ctx = Arc::clone(ctx);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            match sys::wait_signal(&sys::signal::HANDLED) {
                Ok(sig) => {
                    if events.send(Event::Signal(meaning(sig))).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    ctx.log(LogLevel::Error, format!("signal wait failed: {e}"));
                    return;
                }
            }
        })?;
    Ok(())
}

/// Starts the lifecycle thread. When the graceful stop begins it shuts every
/// listener, so the accept loops end (PROC-4).
pub(crate) fn spawn(ctx: &Arc<Context>, events: Receiver<Event>) -> std::io::Result<()> {
    let ctx = Arc::clone(ctx);
    let mut process = Process::new(ctx.config().drain_timeout);
    std::thread::Builder::new()
        .name("lifecycle".into())
        .spawn(move || loop {
            let event = match process.poll_timeout() {
                None => events.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(due) => events.recv_timeout(due.saturating_duration_since(Instant::now())),
            };
            let now = Instant::now();
            match event {
                Ok(Event::Signal(signal)) => process.handle_signal(now, signal),
                Ok(Event::Closed) => process.handle_open(now, ctx.open()),
                Ok(Event::AcceptEnded) => process.handle_accept_ended(now),
                Err(RecvTimeoutError::Timeout) => process.handle_timeout(now),
                // The context holds a sender for as long as the process runs.
                Err(RecvTimeoutError::Disconnected) => return,
            }
            while let Some(output) = process.poll_output() {
                match output {
                    ProcessOutput::StopAccepting => {
                        ctx.begin_stop();
                        ctx.shut_listeners();
                        process.handle_open(now, ctx.open());
                    }
                    ProcessOutput::Dump => ctx.report_state(),
                    ProcessOutput::Reload => {
                        for closed in ctx.reload() {
                            process.handle_listener_closed(now, closed.id());
                        }
                    }
                    ProcessOutput::CutListener(id) => ctx.cut_listener(id),
                    ProcessOutput::CutConnections(_) => ctx.cut_connections(),
                    ProcessOutput::Log(record) => ctx.writer.log(record),
                    ProcessOutput::Exit {
                        status,
                        flush_until,
                    } => ctx.exit_by(status, flush_until),
                }
            }
        })?;
    Ok(())
}
