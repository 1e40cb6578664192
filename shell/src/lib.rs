//! plug-shell: what every plug runtime (std, smol, async-std) shares, written once:
//! start-up order, detaching, pid file, signals, syslog, the log and session
//! writer, systemd, socket options, splice pipes, and the handle through which a
//! connection driver consults the core ([`Conn`]). With the `async` feature, the
//! connection driver over async-io that both async runtimes use.
//!
//! Start-up order (PROC-1/2/3/6/7/9), single-threaded throughout: block the
//! signals plug handles → parse and validate → close inherited descriptors →
//! make relative paths absolute → read the proxy credentials → look up `--user`
//! → raise the descriptor limit → lock the pid file → bind the listener → connect
//! to syslog (everything so far still on the terminal, so failures print and exit
//! 4) → detach with a readiness pipe → write the pid file → switch to `--user` →
//! check the session file → the writer thread → the adapter starts its threads
//! or runtime and calls [`Boot::serve`]. Failures after detaching reach the
//! waiting parent, which prints them and exits 4.

#[cfg(feature = "async")]
pub mod async_driver;
pub mod conn;
pub mod daemon;
pub mod lifecycle;
pub mod live;
pub mod log;
pub mod rounds;
pub mod scrape;
pub mod session_file;
pub mod sockets;
pub mod splice;
pub mod sys;
pub mod syslog;
pub mod systemd;
pub mod user;
pub mod writer;

use std::ffi::OsString;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use plug_core::config::cli::{self, Action, Config, EXIT_FATAL, EXIT_OK};
use plug_core::connection::connect::ProxyCredentials;
use plug_core::connection::Runtime;
use plug_core::forwarder::{AcceptNext, Forwarder};
use plug_core::process::FLUSH_GRACE;
use plug_core::reports::log::{self as core_log, LogLevel, LogRecord, LogTargets};

pub use conn::Conn;
use daemon::{ParentOutcome, PidFile, Readiness};
use lifecycle::Event;
use live::LiveSockets;
use log::Logger;
/// The core, re-exported so adapters name the same types.
pub use plug_core;
use session_file::SessionWriter;
use syslog::Syslog;
use user::Account;
use writer::Writer;

/// Prints `PROG: message` on stderr and exits with `status`.
fn die(program: &str, message: &str, status: i32) -> ! {
    let _ = writeln!(io::stderr(), "{program}: {message}");
    std::process::exit(status)
}

/// Everything a running plug shares between its connections.
#[derive(Debug)]
pub struct Context {
    program: String,
    config: Config,
    log: Arc<Logger>,
    writer: Writer,
    forwarder: Mutex<Forwarder>,
    pid_file: Mutex<Option<PidFile>>,
    pid: u32,
    /// Set once the graceful stop has begun: the accept loops end.
    stopping: AtomicBool,
    /// Set once open connections are being cut (OPT-8): each ends at its next
    /// wake-up.
    cutting: AtomicBool,
    /// The sockets of open connections, for the cut.
    live: LiveSockets,
    /// To the lifecycle thread.
    events: Sender<Event>,
    notifier: systemd::Notifier,
}

/// A started process, ready for an adapter to serve `listener`.
#[derive(Debug)]
pub struct Boot {
    /// The shared state.
    pub ctx: Arc<Context>,
    /// The bound, listening socket.
    pub listener: TcpListener,
    /// The `--metrics` listener, bound too (OPT-9).
    pub metrics: Option<TcpListener>,
    readiness: Readiness,
    events: Receiver<Event>,
}

/// The listeners an adapter serves, as its `setup` made them.
pub type Listeners<T> = (Arc<T>, Option<Arc<T>>);

impl Boot {
    /// Hands over to the adapter: runs `setup` on the listener and the metrics
    /// listener, if any (register them with a reactor, start worker threads),
    /// looks up host names and checks the destinations' health for the first
    /// time and starts the threads of the later rounds (OPT-10/11), starts the
    /// signal and lifecycle threads (the core's [`plug_core::process::Process`]
    /// decides what each signal means; the stop shuts both listeners so the
    /// accept loops end), then reports ready to a waiting parent (PROC-1) and
    /// systemd. A failure here exits 4, reported to the parent when there is one.
    ///
    /// The listeners are shared with the lifecycle thread, which holds them until
    /// it has shut them down, so their descriptors cannot be closed and reused by
    /// a client socket in between.
    pub fn serve<T>(
        self,
        setup: impl FnOnce(TcpListener, Option<TcpListener>) -> io::Result<(T, Option<T>)>,
    ) -> (Arc<Context>, Listeners<T>)
    where
        T: AsRawFd + Send + Sync + 'static,
    {
        let Boot {
            ctx,
            listener,
            metrics,
            mut readiness,
            events,
        } = self;
        let prepared = setup(listener, metrics)
            .map(|(l, m)| (Arc::new(l), m.map(Arc::new)))
            .map_err(|e| format!("cannot start serving: {e}"))
            .and_then(|(listener, metrics)| {
                rounds::resolve_now(&ctx);
                rounds::probe_now(&ctx);
                rounds::start_resolver(&ctx)
                    .and_then(|()| rounds::start_prober(&ctx))
                    .map_err(|e| format!("cannot start the lookup or health-check thread: {e}"))?;
                let mut held = Some((Arc::clone(&listener), metrics.clone()));
                lifecycle::spawn(&ctx, events, move || {
                    if let Some((l, m)) = held.take() {
                        sys::shutdown_read(l.as_raw_fd());
                        if let Some(m) = m {
                            sys::shutdown_read(m.as_raw_fd());
                        }
                    }
                })
                .and_then(|()| lifecycle::spawn_signal_thread(&ctx))
                .map_err(|e| format!("cannot start the signal thread: {e}"))
                .map(|()| (listener, metrics))
            });
        match prepared {
            Ok(listeners) => {
                readiness.ready();
                let ready = format!("READY=1\nMAINPID={}", ctx.pid);
                if let Err(e) = ctx.notifier.notify(&ready) {
                    ctx.log.error(&format!("cannot notify systemd: {e}"));
                }
                (ctx, listeners)
            }
            Err(message) => fail(&ctx, &mut readiness, &message),
        }
    }
}

/// Reports a start-up failure (to the waiting parent, else the log) and exits 4.
fn fail(ctx: &Context, readiness: &mut Readiness, message: &str) -> ! {
    if !readiness.failed(message) {
        ctx.log.error(message);
    }
    ctx.exit(EXIT_FATAL)
}

/// The most `--proxy-auth-file` may hold (FAULT-7).
const MAX_CREDENTIALS_FILE: u64 = 64 * 1024;

/// Reads `--proxy-auth-file` (OPT-5): at start-up, and again on SIGHUP (PROC-8).
/// Bounded and never blocking (FAULT-7): the file is opened non-blocking and
/// must be a regular file, so a FIFO or a device there is an error, not a hang,
/// and at most 64 KiB is read.
fn read_credentials(path: &std::path::Path) -> Result<ProxyCredentials, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |why: String| format!("cannot read proxy credentials {}: {why}", path.display());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| fail(e.to_string()))?;
    let meta = file.metadata().map_err(|e| fail(e.to_string()))?;
    if !meta.is_file() {
        return Err(fail("not a regular file".into()));
    }
    let mut contents = Vec::new();
    file.take(MAX_CREDENTIALS_FILE + 1)
        .read_to_end(&mut contents)
        .map_err(|e| fail(e.to_string()))?;
    if contents.len() as u64 > MAX_CREDENTIALS_FILE {
        return Err(fail("larger than 64 KiB".into()));
    }
    ProxyCredentials::from_file_contents(&contents).map_err(|e| format!("{}: {e}", path.display()))
}

/// The path made absolute against the directory plug started in, so it keeps
/// its meaning after detaching moves plug to `/` (PROC-7).
fn absolute(path: &mut std::path::PathBuf) {
    if let Ok(abs) = std::path::absolute(&*path) {
        *path = abs;
    }
}

/// Starts the process from argv: returns only in the process that will serve.
/// `-V`, `--help`, usage errors (exit 5) and start-up failures (exit 4) end here.
/// `runtime` says what the adapter offers the core (splicing, buffer release).
pub fn boot(argv: impl IntoIterator<Item = OsString>, runtime: Runtime) -> Boot {
    // Before anything else, so a signal that arrives during start-up waits for
    // the signal thread instead of killing plug half-started (PROC-8), and every
    // thread started later inherits the mask.
    sys::ignore_sigpipe();
    let blocked = sys::block_signals(&sys::signal::HANDLED);
    let mut argv = argv.into_iter();
    let argv0 = argv
        .next()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    let program = core_log::program_name(&argv0).to_string();
    let mut config = match cli::parse(argv.collect()) {
        Ok(Action::Run(config)) => *config,
        Ok(Action::Version) => {
            println!("{}", core_log::version(&program));
            std::process::exit(EXIT_OK)
        }
        Ok(Action::Help) => {
            print!("{}", cli::help(&program));
            std::process::exit(EXIT_OK)
        }
        Err(e) => {
            let _ = write!(io::stderr(), "{program}: {e}\n{}", cli::usage(&program));
            std::process::exit(e.status())
        }
    };
    let fatal = |message: &str| -> ! { die(&program, message, EXIT_FATAL) };
    if let Err(e) = blocked {
        fatal(&format!("cannot set up signals: {e}"))
    }

    // Nothing inherited stays open but stdio and a listener systemd passed
    // (PROC-7), so `x=$(plug ...)` returns and no descriptor leaks into the daemon.
    let passed_fd = systemd::passed_fd();
    if let Err(e) = sys::ensure_stdio_open() {
        fatal(&format!("cannot open /dev/null: {e}"))
    }
    sys::close_inherited_fds(passed_fd);
    if let Some(path) = config.pid_file.as_mut() {
        absolute(path);
    }
    if let Some(cli::SessionTarget::File(path)) = config.session.as_mut() {
        absolute(path);
    }
    if let Some(path) = config.proxy_auth_file.as_mut() {
        absolute(path);
    }

    let credentials = config
        .proxy_auth_file
        .as_deref()
        .map(|path| read_credentials(path).unwrap_or_else(|e| fatal(&e)));
    let account = config
        .user
        .as_ref()
        .map(|spec| Account::look_up(spec).unwrap_or_else(|e| fatal(&e)));

    // Connections need descriptors; the hard limit is what the operator allowed.
    // The default --max-conns and the pipe budget follow from it (OPT-3, FAULT-3).
    let nofile = sys::raise_nofile_limit().unwrap_or(1024);

    // Locked before binding: a second plug on the same pid file says the first
    // is running, even when it would also find the port taken (PROC-6).
    let mut pid_file = config
        .pid_file
        .as_deref()
        .map(|path| PidFile::lock(path).unwrap_or_else(|e| fatal(&e.to_string())));
    // From here a fatal error removes the pid file plug has locked (PROC-3).
    let pid_file_fatal = |pid_file: &mut Option<PidFile>, message: &str| -> ! {
        if let Some(file) = pid_file.take() {
            file.discard();
        }
        fatal(message)
    };

    // With systemd socket activation the passed socket is served and nothing is
    // bound; the source argument still names the listener in logs (OPT-7).
    let notifier = systemd::Notifier::from_env();
    let listener = match passed_fd {
        Some(fd) => systemd::adopt(fd).unwrap_or_else(|e| {
            let text = format!("cannot use the socket systemd passed: {e}");
            pid_file_fatal(&mut pid_file, &text)
        }),
        None => {
            let addr = config.source.bind_addr();
            sockets::bind(addr).unwrap_or_else(|e| {
                pid_file_fatal(&mut pid_file, &format!("cannot listen on {addr}: {e}"))
            })
        }
    };
    sockets::prepare_listener(&listener, config.keepalive);
    let metrics = match config.metrics {
        None => None,
        Some(addr) => match sockets::bind(addr) {
            Ok(l) => Some(l),
            Err(e) => pid_file_fatal(
                &mut pid_file,
                &format!("cannot serve --metrics on {addr}: {e}"),
            ),
        },
    };
    // Opened while plug may still be root (PROC-9); a missing /dev/log is not an
    // error: each line tries again, and a foreground plug falls back to stderr.
    let syslog_socket = syslog::connect().ok();

    let mut readiness = if config.foreground {
        Readiness::none()
    } else {
        match daemon::detach() {
            Ok(Ok(readiness)) => readiness,
            Ok(Err(ParentOutcome::Ready)) => std::process::exit(EXIT_OK),
            // The child has exited and removed the pid file itself.
            Ok(Err(ParentOutcome::Failed(msg))) => fatal(&msg),
            Err(e) => pid_file_fatal(&mut pid_file, &format!("cannot detach: {e}")),
        }
    };
    let pid = std::process::id();
    let targets = LogTargets {
        detached: !config.foreground,
        syslog: config.log_connections,
        debug: config.debug,
    };
    let logger = Arc::new(Logger::new(
        &program,
        targets,
        Syslog::new(&program, pid, syslog_socket),
    ));
    // Until the writer thread runs: to the waiting parent, else the log; the
    // pid file goes (PROC-3), and the parent learns of the failure only then.
    let mut early_failure = |pid_file: &mut Option<PidFile>, message: &str| -> ! {
        if let Some(file) = pid_file.take() {
            file.discard();
        }
        if !readiness.failed(message) {
            logger.error(message);
        }
        std::process::exit(EXIT_FATAL)
    };
    if let Some(Err(e)) = pid_file.as_mut().map(|file| file.write(pid)) {
        early_failure(&mut pid_file, &e.to_string())
    }
    if let Some(account) = &account {
        if let Err(e) = account.switch() {
            early_failure(&mut pid_file, &e)
        }
    }
    // As the account plug now runs as: it must be able to write the file.
    let sessions = match config.session.clone() {
        None => None,
        Some(target) => match SessionWriter::open(target) {
            Ok(w) => Some(w),
            Err(e) => early_failure(&mut pid_file, &format!("cannot open session file {e}")),
        },
    };
    let writer = match Writer::start(Arc::clone(&logger), sessions, pid) {
        Ok(writer) => writer,
        Err(e) => early_failure(&mut pid_file, &format!("cannot start the log writer: {e}")),
    };
    let forwarder = Forwarder::new(&config, credentials, nofile, runtime);
    let described = config.describe(forwarder.max_conns());
    let (events, received) = mpsc::channel();
    let ctx = Arc::new(Context {
        program,
        log: logger,
        writer,
        forwarder: Mutex::new(forwarder),
        pid_file: Mutex::new(pid_file),
        pid,
        stopping: AtomicBool::new(false),
        cutting: AtomicBool::new(false),
        live: LiveSockets::default(),
        events,
        notifier,
        config,
    });
    ctx.log(LogLevel::Connection, core_log::started(&ctx.config.source));
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    for line in described {
        ctx.log(LogLevel::Debug(2), line);
    }
    ctx.log(LogLevel::Debug(1), format!("listening on {local}"));
    Boot {
        ctx,
        listener,
        metrics,
        readiness,
        events: received,
    }
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
    fn forwarder(&self) -> MutexGuard<'_, Forwarder> {
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
    fn begin_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.remove_pid_file();
        let _ = self.notifier.notify("STOPPING=1");
    }

    /// Resets every open connection on both sides (OPT-8): each one's driver
    /// wakes, ends it, and writes its session and `Complete` lines.
    fn cut_connections(&self) {
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
    fn exit_by(&self, status: i32, flush_until: Instant) -> ! {
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
        let credentials = self.config.proxy_auth_file.as_deref().map(read_credentials);
        self.with_forwarder(now, |f| f.handle_reload(now, credentials));
    }
}
