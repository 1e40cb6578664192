//! One thread writes every log and session line (FAULT-4): connections and the
//! accept loop only put lines on a bounded queue, so a slow disk or syslog never
//! stalls relaying or accepting. When the queue is full a line is dropped and
//! counted, and the count is written as soon as there is room.
//!
//! The thread also carries out the core's rate limits of client-caused lines
//! ([`Limiter`]): it passes ten a second of each kind and wakes when a second
//! ends to write `N similar messages suppressed`, even if nothing else comes.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use plug_core::reports::log::{Limiter, LogKind, LogLevel, LogRecord};
use plug_core::reports::session::SessionRecord;

use crate::output::log::Logger;
use crate::output::session_file::SessionWriter;
use crate::sys;

/// Lines that may wait for the writer: enough for bursts of thousands of closing
/// connections, bounded so a stuck disk cannot grow plug without limit.
pub const QUEUE: usize = 16 * 1024;

enum Line {
    Log(LogRecord),
    Session(Arc<SessionWriter>, Box<SessionRecord>, SystemTime),
    Flush(SyncSender<()>),
}

/// The sending end, shared by every connection.
#[derive(Debug)]
pub struct Writer {
    queue: SyncSender<Line>,
    dropped: Arc<AtomicU64>,
    /// Lines queued and not yet written (FAULT-7 counts them at exit).
    pending: Arc<AtomicU64>,
}

impl Writer {
    /// Starts the writer thread: log records go to `logger`, session lines
    /// (stamped `plug[pid]`) where each says.
    pub fn start(logger: Arc<Logger>, pid: u32) -> io::Result<Writer> {
        let (queue, lines) = mpsc::sync_channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let pending = Arc::new(AtomicU64::new(0));
        let counts = (Arc::clone(&dropped), Arc::clone(&pending));
        std::thread::Builder::new()
            .name("writer".into())
            .spawn(move || write_lines(&lines, &logger, pid, &counts.0, &counts.1))?;
        Ok(Writer {
            queue,
            dropped,
            pending,
        })
    }

    fn send(&self, line: Line) {
        // Counted before it can be written, so the count never goes below zero.
        self.pending.fetch_add(1, Ordering::Relaxed);
        match self.queue.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.pending.fetch_sub(1, Ordering::Relaxed);
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Queues a log record; never blocks.
    pub fn log(&self, record: LogRecord) {
        self.send(Line::Log(record));
    }

    /// Queues a session record closed now, for `to`; never blocks.
    pub fn session(&self, to: Arc<SessionWriter>, record: Box<SessionRecord>) {
        self.send(Line::Session(to, record, SystemTime::now()));
    }

    /// Waits until every line queued so far is written, or `deadline`, whichever
    /// comes first: before exit. Never blocks past `deadline`, even when the queue
    /// is full or the writer is stuck on output nobody reads (FAULT-7). Returns
    /// how many lines were not written: dropped, or still queued.
    pub fn flush_until(&self, deadline: Instant) -> u64 {
        let (done, written) = mpsc::sync_channel(1);
        if self.queue.try_send(Line::Flush(done)).is_ok() {
            let _ = written.recv_timeout(deadline.saturating_duration_since(Instant::now()));
        }
        self.pending.load(Ordering::Relaxed) + self.dropped.load(Ordering::Relaxed)
    }
}

fn write_lines(
    lines: &Receiver<Line>,
    logger: &Logger,
    pid: u32,
    dropped: &AtomicU64,
    pending: &AtomicU64,
) {
    let mut limiter = Limiter::new();
    loop {
        let next = match limiter.poll_timeout() {
            None => lines.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(due) => lines.recv_timeout(due.saturating_duration_since(Instant::now())),
        };
        let now = Instant::now();
        while let Some(summary) = limiter.poll_record(now) {
            logger.write(&summary);
        }
        let line = match next {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            logger.write(&LogRecord::new(
                LogLevel::Error,
                format!("{lost} log or session lines dropped: the writer could not keep up"),
            ));
        }
        match line {
            Line::Log(record) => {
                if let Some(record) = limiter.handle_record(now, record) {
                    logger.write(&record);
                }
            }
            Line::Session(sessions, record, closed) => {
                let text = record.line(sys::local_time(closed), pid);
                if let Err(e) = sessions.write(&text) {
                    let record = LogRecord::limited(
                        LogKind::SessionFile,
                        LogLevel::Error,
                        format!("cannot write session line: {e}"),
                    );
                    if let Some(record) = limiter.handle_record(now, record) {
                        logger.write(&record);
                    }
                }
            }
            Line::Flush(done) => {
                let _ = done.try_send(());
                continue;
            }
        }
        pending.fetch_sub(1, Ordering::Relaxed);
    }
}
