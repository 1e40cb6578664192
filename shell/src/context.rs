//! [`Context`]: everything a running plug shares between its connections, its
//! accept loops and its lifecycle thread, and the few things they ask of it.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use plug_core::config::cli::{Config, FileStart, EXIT_FATAL};
use plug_core::config::file::listener_label;
use plug_core::connection::connect::ProxyCredentials;
use plug_core::connection::Runtime;
use plug_core::forwarder::admission::ProcessBudget;
use plug_core::forwarder::{AcceptNext, Forwarder};
use plug_core::process::FLUSH_GRACE;
use plug_core::reports::log::{LogLevel, LogRecord};
use plug_core::reports::metrics;

use crate::drive::conn::Conn;
use crate::lifecycle::Event;
use crate::listeners::{self, Acceptor, Listener};
use crate::net::live::LiveSockets;
use crate::net::sockets;
use crate::output::log::Logger;
use crate::output::session_file::SessionWriter;
use crate::output::writer::Writer;
use crate::shared::lock;
use crate::start::credentials::read_credentials;
use crate::start::daemon::PidFile;
use crate::{sys, systemd};

/// Everything a running plug shares between its connections.
#[derive(Debug)]
pub struct Context {
    pub(crate) program: String,
    /// The process-wide options (and, without `--config`, the one listener's).
    pub(crate) config: Config,
    /// `--config`: how the file's lines are read again on SIGHUP (OPT-15).
    pub(crate) file_start: Option<FileStart>,
    pub(crate) log: Arc<Logger>,
    pub(crate) writer: Writer,
    /// The listeners serving now, in the file's order.
    pub(crate) listeners: Mutex<Vec<Arc<Listener>>>,
    /// How many reloads have been applied, for threads that wait for one.
    pub(crate) reloaded: (Mutex<u64>, std::sync::Condvar),
    /// Listeners a reload closed, while connections may still hold them.
    pub(crate) retired: Mutex<Vec<Arc<Listener>>>,
    /// What every listener shares: `--max-conns`, pipes, scrapes.
    pub(crate) budget: Arc<ProcessBudget>,
    pub(crate) runtime: Runtime,
    /// The identity the next listener gets.
    pub(crate) next_listener: std::sync::atomic::AtomicU64,
    /// Connections admitted and not yet finished ([`Context::open`]).
    pub(crate) unfinished: AtomicUsize,
    /// Accept loops running (the lifecycle learns when the last has ended).
    pub(crate) accepting: AtomicUsize,
    pub(crate) acceptor: std::sync::OnceLock<Arc<dyn Acceptor>>,
    /// The `--metrics` listening socket, kept so shutting it at a stop never
    /// touches a reused descriptor (the accept loop serves a duplicate).
    pub(crate) metrics_socket: Mutex<Option<std::net::TcpListener>>,
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

    /// The listeners serving now.
    pub(crate) fn listeners(&self) -> Vec<Arc<Listener>> {
        lock(&self.listeners).clone()
    }

    pub(crate) fn set_listeners(&self, listeners: Vec<Arc<Listener>>) {
        *lock(&self.listeners) = listeners;
    }

    /// How a `--config` line is read (the command line's defaults).
    pub(crate) fn file_start(&self) -> FileStart {
        self.file_start.clone().unwrap_or_else(|| FileStart {
            file: std::path::PathBuf::new(),
            check: false,
            defaults: plug_core::config::cli::Defaults::default(),
        })
    }

    /// The shared state of a listener for `config`: labelled when there may
    /// be several (`--config`).
    pub(crate) fn listener_for(
        &self,
        config: &Config,
        credentials: Option<ProxyCredentials>,
        session: Option<Arc<SessionWriter>>,
    ) -> Listener {
        let label = self.file_start.as_ref().map(|_| listener_label(config));
        let forwarder = Forwarder::with_budget(
            config,
            credentials,
            Arc::clone(&self.budget),
            self.runtime,
            label,
        );
        let id = self.next_listener.fetch_add(1, Ordering::Relaxed);
        Listener::new(id, forwarder, config.clone(), session)
    }

    /// Decides about a client of `listener` accepted at `now` (CONN-1, OPT-3):
    /// its connection, or `None` when refused (close it at once without
    /// contacting a destination).
    pub fn accept(
        self: &Arc<Self>,
        listener: &Arc<Listener>,
        now: Instant,
        peer: SocketAddr,
    ) -> Option<Conn> {
        let conn = self.with(listener, now, |f| f.handle_accepted(now, peer));
        conn.map(|core| Conn::new(Arc::clone(self), Arc::clone(listener), core))
    }

    /// Decides what to do after accept on `listener` failed at `now` with
    /// `error` (§5, FAULT-1).
    pub fn accept_failed(
        &self,
        listener: &Listener,
        now: Instant,
        error: &io::Error,
    ) -> AcceptNext {
        let failure = sockets::accept_failure(error);
        self.with(listener, now, |f| {
            f.handle_accept_failed(now, failure, &error.to_string())
        })
    }

    /// Decides what to do after accept on the `--metrics` listener failed: the
    /// core's, with a backoff of its own (§5, FAULT-1).
    pub fn scrape_accept_failed(&self, error: &io::Error) -> AcceptNext {
        let failure = sockets::accept_failure(error);
        let (next, log) =
            self.budget
                .handle_scrape_accept_failed(Instant::now(), failure, &error.to_string());
        if let Some(record) = log {
            self.writer.log(record);
        }
        next
    }

    /// True when `listener`'s accept loop should end: plug stops, or a reload
    /// closed it.
    pub fn accept_should_end(&self, listener: &Listener) -> bool {
        self.is_stopping() || listener.is_closed()
    }

    /// Runs `work` on a listener's shared state under its lock, then queues the
    /// log lines it made (the writer thread writes them).
    pub(crate) fn with<R>(
        &self,
        listener: &Listener,
        now: Instant,
        work: impl FnOnce(&mut Forwarder) -> R,
    ) -> R {
        let mut forwarder = listener.forwarder();
        let result = work(&mut forwarder);
        while let Some(record) = forwarder.poll_log(now) {
            self.writer.log(record);
        }
        result
    }

    /// The text of `/metrics` now (OPT-9): the counts are copied under each
    /// listener's lock and rendered after it, so a scrape holds up connections
    /// for a copy only.
    pub fn metrics_text(&self) -> String {
        let copies: Vec<_> = self
            .listeners()
            .iter()
            .map(|l| {
                let f = l.forwarder();
                (f.label().map(str::to_string), f.metrics())
            })
            .collect();
        let each: Vec<(Option<&str>, &metrics::Metrics)> =
            copies.iter().map(|(l, m)| (l.as_deref(), m)).collect();
        metrics::render(&each)
    }

    /// The scrape budget (FAULT-6).
    pub(crate) fn budget(&self) -> &ProcessBudget {
        &self.budget
    }

    /// An accept loop has started.
    pub(crate) fn accept_loop_started(&self) {
        self.accepting.fetch_add(1, Ordering::SeqCst);
    }

    /// Reports that an accept loop has returned (its listener shut by a stop,
    /// or closed by a reload). Once plug is stopping and the last has ended,
    /// the lifecycle thread learns that no client can still be admitted and
    /// exits the process once connections have drained. The caller's thread
    /// may keep running tasks meanwhile.
    pub fn accept_loop_ended(&self) {
        let left = self
            .accepting
            .fetch_sub(1, Ordering::SeqCst)
            .saturating_sub(1);
        if left == 0 && self.is_stopping() {
            let _ = self.events.send(Event::AcceptEnded);
        }
    }

    /// True once a graceful stop has begun.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// True once open connections are being cut (OPT-8).
    pub(crate) fn is_cutting(&self) -> bool {
        self.cutting.load(Ordering::Relaxed)
    }

    /// Connections not finished yet, on every listener: admitted, and not
    /// yet past their last session and log lines. Exit waits for these, so no
    /// line of a connection that ended is lost (FAULT-5).
    pub(crate) fn open(&self) -> usize {
        self.unfinished.load(Ordering::SeqCst)
    }

    /// A connection was admitted.
    pub(crate) fn report_opened(&self) {
        self.unfinished.fetch_add(1, Ordering::SeqCst);
    }

    /// A connection has queued its last line; while stopping, the lifecycle
    /// thread is told.
    pub(crate) fn report_finished(&self) {
        self.unfinished.fetch_sub(1, Ordering::SeqCst);
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

    /// Shuts every listening socket, `--metrics`'s too, so the accept loops
    /// end (PROC-4).
    pub(crate) fn shut_listeners(&self) {
        for listener in self.listeners() {
            listener.shut();
        }
        if let Some(m) = lock(&self.metrics_socket).as_ref() {
            use std::os::fd::AsRawFd;
            sys::shutdown_read(m.as_raw_fd());
        }
    }

    fn remove_pid_file(&self) {
        let file = lock(&self.pid_file).take();
        if let Some(file) = file {
            file.remove();
        }
    }

    /// Waits for the lifecycle thread to end the process: for a thread with
    /// nothing else to do.
    pub fn wait_for_exit(&self) -> ! {
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
        let lost = self.writer.flush_until(flush_until);
        if let Some(text) = plug_core::reports::log::lost_at_exit(lost) {
            crate::output::log::last_word(text);
        }
        sys::exit_now(status)
    }

    /// Writes the state dump of SIGUSR1 (OPT-6): a line per destination and a
    /// summary per listener, to stderr in the foreground or syslog when detached.
    pub fn report_state(&self) {
        let now = Instant::now();
        for listener in self.listeners() {
            let lines = listener.forwarder().report(now);
            for line in lines {
                self.log(LogLevel::Notice, line);
            }
        }
    }

    /// Handles SIGHUP. With `--config`, reloads the file, all or nothing
    /// (OPT-15). Without, re-reads `--proxy-auth-file` for the next CONNECT (an
    /// unreadable file keeps the old credentials, and says why) and logs what
    /// was re-read (PROC-8). Serving goes on.
    /// Returns the listeners a reload closed.
    pub(crate) fn reload(self: &Arc<Self>) -> Vec<Arc<Listener>> {
        if let (Some(start), Some(acceptor)) = (&self.file_start, self.acceptor.get()) {
            let closed = listeners::reload(self, acceptor.as_ref(), &start.file);
            self.note_reload();
            let mut retired = lock(&self.retired);
            retired.retain(|l| Arc::strong_count(l) > 1);
            retired.extend(closed.iter().cloned());
            return closed;
        }
        let now = Instant::now();
        let credentials = self
            .config
            .proxy_auth_file
            .as_deref()
            .map(|path| (path.display().to_string(), read_credentials(path)));
        if let Some(listener) = self.listeners().first() {
            self.with(listener, now, |f| f.handle_reload(now, credentials));
        }
        Vec::new()
    }

    /// How many reloads have been applied so far.
    pub(crate) fn reloads(&self) -> u64 {
        *lock(&self.reloaded.0)
    }

    /// Waits until a reload after the `seen`th, or `until` (`None`: no limit).
    pub(crate) fn wait_for_reload(&self, seen: u64, until: Option<Instant>) {
        let (count, changed) = &self.reloaded;
        let mut n = lock(count);
        while *n == seen {
            let left = match until {
                None => None,
                Some(at) => match at.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return,
                },
            };
            n = match left {
                None => changed.wait(n).unwrap_or_else(|p| p.into_inner()),
                Some(left) => {
                    changed
                        .wait_timeout(n, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }

    fn note_reload(&self) {
        *lock(&self.reloaded.0) += 1;
        self.reloaded.1.notify_all();
    }

    /// Cuts the open connections of the listener a reload closed, `id`, once
    /// its `--drain-timeout` has passed (OPT-15).
    pub(crate) fn cut_listener(&self, id: u64) {
        let retired = lock(&self.retired).clone();
        if let Some(listener) = retired.iter().find(|l| l.id() == id) {
            let cut = listener.cut(self);
            self.log(
                LogLevel::Debug(1),
                format!("reset {cut} open connections of a closed listener"),
            );
        }
    }
}
