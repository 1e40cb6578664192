//! [`Context`]: everything a running plug shares between its connections, its
//! accept loops and its lifecycle thread, and the few things they ask of it.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use plug_core::config::cli::{Config, EXIT_FATAL};
use plug_core::forwarder::{AcceptNext, Forwarder};
use plug_core::process::FLUSH_GRACE;
use plug_core::reports::log::{LogLevel, LogRecord};

use crate::drive::conn::Conn;
use crate::lifecycle::Event;
use crate::net::live::LiveSockets;
use crate::net::sockets;
use crate::output::log::Logger;
use crate::output::writer::Writer;
use crate::start::credentials::read_credentials;
use crate::start::daemon::PidFile;
use crate::{sys, systemd};

/// Everything a running plug shares between its connections.
#[derive(Debug)]
pub struct Context {
    pub(crate) program: String,
    pub(crate) config: Config,
    pub(crate) log: Arc<Logger>,
    pub(crate) writer: Writer,
    pub(crate) forwarder: Mutex<Forwarder>,
    pub(crate) pid_file: Mutex<Option<PidFile>>,
    pub(crate) pid: u32,
    /// Set once the graceful stop has begun: the accept loops end.
    pub(crate) stopping: AtomicBool,
    /// Set once open connections are being cut (OPT-8): each ends at its next
    /// wake-up.
    pub(crate) cutting: AtomicBool,
    /// The sockets of open connections, for the cut.
    pub(crate) live: LiveSockets,
    /// To the lifecycle thread.
    pub(crate) events: Sender<Event>,
    pub(crate) notifier: systemd::Notifier,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking connection must not take the whole daemon with it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Context {
    /// The validated command line.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The program name used in messages.
    pub fn program(&self) -> &str {
        &self.program
    }

    /// Queues a log line for the writer thread (never blocks).
    pub fn log(&self, level: LogLevel, text: impl Into<String>) {
        self.writer.log(LogRecord::new(level, text));
    }

    /// The shared state, locked.
    pub(crate) fn forwarder(&self) -> MutexGuard<'_, Forwarder> {
        lock(&self.forwarder)
    }

    /// Decides about a client accepted at `now` (CONN-1, OPT-3): its connection,
    /// or `None` when refused (close it at once without contacting a destination).
    pub fn accept(self: &Arc<Self>, now: Instant, peer: SocketAddr) -> Option<Conn> {
        let conn = self.with_forwarder(now, |f| f.handle_accepted(now, peer));
        conn.map(|core| Conn::new(Arc::clone(self), core))
    }

    /// Decides what to do after accept failed at `now` with `error` (§5, FAULT-1).
    pub fn accept_failed(&self, now: Instant, error: &io::Error) -> AcceptNext {
        let failure = sockets::accept_failure(error);
        self.with_forwarder(now, |f| {
            f.handle_accept_failed(now, failure, &error.to_string())
        })
    }

    /// Runs `work` on the shared state under its lock, then queues the log lines
    /// it made (the writer thread writes them).
    pub fn with_forwarder<R>(&self, now: Instant, work: impl FnOnce(&mut Forwarder) -> R) -> R {
        let mut forwarder = self.forwarder();
        let result = work(&mut forwarder);
        while let Some(record) = forwarder.poll_log(now) {
            self.writer.log(record);
        }
        result
    }

    /// The text of `/metrics` now (OPT-9): the counts are copied under the lock
    /// and rendered after it, so a scrape holds up connections for a copy only.
    pub fn metrics_text(&self) -> String {
        let metrics = self.forwarder().metrics();
        metrics.render()
    }

    /// True once a graceful stop has begun.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// True once open connections are being cut (OPT-8).
    pub(crate) fn is_cutting(&self) -> bool {
        self.cutting.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub(crate) fn open(&self) -> usize {
        self.forwarder().open()
    }

    /// Tells the lifecycle thread that a connection closed, while stopping.
    pub(crate) fn report_closed(&self) {
        if self.is_stopping() {
            let _ = self.events.send(Event::Closed);
        }
    }

    /// Begins the graceful stop (PROC-4), as the core's process machine says:
    /// the accept loops end at their next failure, the pid file goes, systemd is
    /// told; the lifecycle thread then shuts the listeners.
    pub(crate) fn begin_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.remove_pid_file();
        let _ = self.notifier.notify("STOPPING=1");
    }

    /// Resets every open connection on both sides (OPT-8): each one's driver
    /// wakes, ends it, and writes its session and `Complete` lines.
    pub(crate) fn cut_connections(&self) {
        self.cutting.store(true, Ordering::SeqCst);
        let cut = self.live.reset_all();
        self.log(LogLevel::Debug(1), format!("reset {cut} open connections"));
    }

    fn remove_pid_file(&self) {
        let file = lock(&self.pid_file).take();
        if let Some(file) = file {
            file.remove();
        }
    }

    /// Reports that the accept loop has returned after the listener was shut;
    /// the lifecycle thread exits the process once connections have drained.
    /// The caller's thread may keep running tasks meanwhile.
    pub fn accept_ended(&self) {
        let _ = self.events.send(Event::AcceptEnded);
    }

    /// [`Context::accept_ended`], then waits for the lifecycle thread to end the
    /// process: for a thread with nothing else to do.
    pub fn accept_ended_wait(&self) -> ! {
        self.accept_ended();
        loop {
            std::thread::park();
        }
    }

    /// Logs `message` as an error and exits 4.
    pub fn fatal(&self, message: &str) -> ! {
        self.writer.log(LogRecord::new(LogLevel::Error, message));
        self.exit(EXIT_FATAL)
    }

    /// Exits the process with `status`, removing the pid file and giving queued
    /// lines a bounded time to be written first (FAULT-7).
    pub fn exit(&self, status: i32) -> ! {
        let now = Instant::now();
        self.exit_by(status, now.checked_add(FLUSH_GRACE).unwrap_or(now))
    }

    /// Exits with `status` once queued lines are written or `flush_until` has
    /// come, whichever is first; lines not written by then are dropped (FAULT-7).
    pub(crate) fn exit_by(&self, status: i32, flush_until: Instant) -> ! {
        self.remove_pid_file();
        self.writer.flush_until(flush_until);
        sys::exit_now(status)
    }

    /// Writes the state dump of SIGUSR1 (OPT-6): a line per destination and a
    /// summary, to stderr in the foreground or syslog when detached.
    pub fn report_state(&self) {
        let lines = self.forwarder().report(Instant::now());
        for line in lines {
            self.log(LogLevel::Notice, line);
        }
    }

    /// Handles SIGHUP (PROC-8): re-reads `--proxy-auth-file` for the next CONNECT
    /// (an unreadable file keeps the old credentials, and says why) and logs
    /// `reloaded`. Serving goes on.
    pub fn reload(&self) {
        let now = Instant::now();
        let credentials = self
            .config
            .proxy_auth_file
            .as_deref()
            .map(|path| (path.display().to_string(), read_credentials(path)));
        self.with_forwarder(now, |f| f.handle_reload(now, credentials));
    }
}
