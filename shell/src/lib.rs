//! Process plumbing shared by every plug runtime (std, smol, async-std): start-up
//! order, detaching, pid file, syslog, signals, the session writer, and the glue a
//! connection driver calls to consult the core and record what happened.
//!
//! Start-up order (PROC-1/2/3): parse and validate → read the proxy credentials →
//! raise the descriptor limit → bind the listener (still on the terminal, so failures
//! print and exit 4) → check the session file → detach with a readiness pipe (while
//! single-threaded) → pid file → block signals → the adapter starts its threads or
//! runtime and calls [`Boot::ready`].

pub mod daemon;
pub mod logger;
pub mod readiness;
pub mod session_file;
pub mod sockets;
pub mod splice;
pub mod sys;
pub mod systemd;

use std::ffi::OsString;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use plug_core::accept::{AcceptBackoff, AcceptFailure};
use plug_core::admission::{Admission, Refusal};
use plug_core::bytes::Bytes;
use plug_core::cli::{self, Action, Config, EXIT_FATAL, EXIT_OK};
use plug_core::connect::ProxyCredentials;
use plug_core::dial::{DialOptions, DialStep, Dialer};
use plug_core::log::{self, CloseStatus};
use plug_core::proxy_protocol;
use plug_core::relay::{Direction, Relay, RelayOutcome};
use plug_core::select::{Balancer, DestId, SelectEvent};
use plug_core::session::SessionRecord;
use plug_core::stats::Stats;

use daemon::{ParentOutcome, PidFile, Readiness};
use logger::Logger;
use session_file::SessionWriter;

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
    dial: DialOptions,
    log: Logger,
    balancer: Mutex<Balancer>,
    sessions: Option<SessionWriter>,
    pid_file: Mutex<Option<PidFile>>,
    pid: u32,
    admission: Mutex<Admission>,
    stats: Mutex<Stats>,
    drained: Condvar,
    stopping: AtomicBool,
    backoff: Mutex<AcceptBackoff>,
    notifier: systemd::Notifier,
}

/// A started process, ready for an adapter to serve `listener`.
#[derive(Debug)]
pub struct Boot {
    /// The shared state.
    pub ctx: Arc<Context>,
    /// The bound, listening socket.
    pub listener: TcpListener,
    readiness: Readiness,
}

impl Boot {
    /// Hands over to the adapter: starts the signal thread (whose first SIGTERM or
    /// SIGINT shuts the listener so the accept loop ends), runs `setup` on the
    /// listener (register it with a reactor, start worker threads), then reports
    /// ready to a waiting parent (PROC-1). A failure here exits 4, reported to the
    /// parent when there is one.
    pub fn serve<T>(self, setup: impl FnOnce(TcpListener) -> io::Result<T>) -> (Arc<Context>, T) {
        let Boot {
            ctx,
            listener,
            mut readiness,
        } = self;
        let fd = listener.as_raw_fd();
        let prepared = ctx
            .spawn_signal_thread(move || sys::shutdown_read(fd))
            .map_err(|e| format!("cannot start the signal thread: {e}"))
            .and_then(|()| setup(listener).map_err(|e| format!("cannot start serving: {e}")));
        match prepared {
            Ok(t) => {
                readiness.ready();
                let ready = format!("READY=1\nMAINPID={}", ctx.pid);
                if let Err(e) = ctx.notifier.notify(&ready) {
                    ctx.log.error(&format!("cannot notify systemd: {e}"));
                }
                (ctx, t)
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

/// Starts the process from argv: returns only in the process that will serve.
/// `-V`, `--help`, usage errors (exit 5) and start-up failures (exit 4) end here.
pub fn boot(argv: impl IntoIterator<Item = OsString>) -> Boot {
    let mut argv = argv.into_iter();
    let argv0 = argv
        .next()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    let program = log::program_name(&argv0).to_string();
    let config = match cli::parse(argv.collect()) {
        Ok(Action::Run(config)) => *config,
        Ok(Action::Version) => {
            println!("{}", log::version(&program));
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

    let credentials = match &config.proxy_auth_file {
        None => None,
        Some(path) => {
            let contents = std::fs::read(path).unwrap_or_else(|e| {
                die(
                    &program,
                    &format!("cannot read proxy credentials {}: {e}", path.display()),
                    EXIT_FATAL,
                )
            });
            match ProxyCredentials::from_file_contents(&contents) {
                Ok(c) => Some(c),
                Err(e) => die(&program, &format!("{}: {e}", path.display()), EXIT_FATAL),
            }
        }
    };

    // Connections need descriptors; the hard limit is what the operator allowed.
    // The default --max-conns follows from the limit (OPT-3).
    let nofile = sys::raise_nofile_limit().unwrap_or(1024);

    // With systemd socket activation the passed socket is served and nothing is
    // bound; the source argument still names the listener in logs (OPT-7).
    let notifier = systemd::Notifier::from_env();
    let passed = systemd::passed_listener().unwrap_or_else(|e| {
        die(
            &program,
            &format!("cannot use the socket systemd passed: {e}"),
            EXIT_FATAL,
        )
    });
    let listener = match passed {
        Some(listener) => listener,
        None => {
            let addr = config.source.bind_addr();
            sockets::bind(addr).unwrap_or_else(|e| {
                die(
                    &program,
                    &format!("cannot listen on {addr}: {e}"),
                    EXIT_FATAL,
                )
            })
        }
    };
    sockets::prepare_listener(&listener, config.keepalive);
    let sessions = config.session.as_ref().map(|target| {
        SessionWriter::open(target.clone()).unwrap_or_else(|e| {
            die(
                &program,
                &format!("cannot open session file: {e}"),
                EXIT_FATAL,
            )
        })
    });
    let readiness = if config.foreground {
        Readiness::none()
    } else {
        match daemon::detach() {
            Ok(Ok(readiness)) => readiness,
            Ok(Err(ParentOutcome::Ready)) => std::process::exit(EXIT_OK),
            Ok(Err(ParentOutcome::Failed(msg))) => die(&program, &msg, EXIT_FATAL),
            Err(e) => die(&program, &format!("cannot detach: {e}"), EXIT_FATAL),
        }
    };
    sys::openlog(&program);
    let logger = Logger::new(
        &program,
        !config.foreground,
        config.debug,
        config.log_connections,
    );
    let pid = std::process::id();
    let dial = config.dial_options(credentials);
    let balancer = Balancer::new(config.destinations.clone(), config.select);
    let ctx = Arc::new(Context {
        program,
        dial,
        log: logger,
        balancer: Mutex::new(balancer),
        sessions,
        pid_file: Mutex::new(None),
        pid,
        admission: Mutex::new(Admission::new(
            config.rules.clone(),
            config.max_conns,
            config.max_conns_per_ip,
            nofile,
        )),
        stats: Mutex::new(Stats::new(config.destinations.len())),
        drained: Condvar::new(),
        stopping: AtomicBool::new(false),
        backoff: Mutex::new(AcceptBackoff::new()),
        notifier,
        config,
    });
    let mut boot = Boot {
        ctx,
        listener,
        readiness,
    };

    if let Some(path) = boot.ctx.config.pid_file.clone() {
        match PidFile::write(&path, pid) {
            Ok(file) => *lock(&boot.ctx.pid_file) = Some(file),
            Err(e) => {
                let message = format!("cannot write pid file {}: {e}", path.display());
                fail(&boot.ctx, &mut boot.readiness, &message)
            }
        }
    }
    // Before any thread exists, so that every thread inherits the mask and only the
    // signal thread receives them.
    if let Err(e) = sys::block_signals(&[sys::signal::TERM, sys::signal::INT, sys::signal::USR1]) {
        fail(
            &boot.ctx,
            &mut boot.readiness,
            &format!("cannot set up signals: {e}"),
        );
    }
    let ctx = &boot.ctx;
    ctx.log.connection(&log::started(&ctx.config.source));
    let local = boot
        .listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    ctx.log.debug(1, &format!("listening on {local}"));
    boot
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking connection must not take the whole daemon with it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One accepted client on its way through plug; counts as open until dropped.
#[derive(Debug)]
pub struct Connection {
    ctx: Arc<Context>,
    peer: SocketAddr,
    accepted_at: Instant,
    /// Until a destination is reached; then dropped, as nothing needs it any more
    /// (boxed so that a relaying connection does not carry its space).
    dialer: Option<Box<Dialer>>,
    reached: Option<DestId>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        let mut admission = lock(&self.ctx.admission);
        admission.release(self.peer.ip());
        if admission.open() == 0 {
            self.ctx.drained.notify_all();
        }
    }
}

impl Connection {
    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// True when `-k` asks for SO_KEEPALIVE on both sockets (CONN-7).
    pub fn keepalive(&self) -> bool {
        self.ctx.config.keepalive
    }

    /// Asks the core what to do first: the first destination to connect to.
    pub fn start(&mut self, now: Instant) -> DialStep {
        self.step(|d, b| d.start(now, b))
    }

    /// Feeds the dialer an input (connected, failed, reply bytes) with the shared
    /// balancer, logs what the core noticed, and returns the next step.
    pub fn step(&mut self, input: impl FnOnce(&mut Dialer, &mut Balancer) -> DialStep) -> DialStep {
        let step = self.with_core(DialStep::GiveUp, input);
        self.note(&step);
        step
    }

    /// Checks the dialer's timeout at `now`: `None` if it has not passed, otherwise
    /// the next step (see [`Dialer::handle_timeout`]).
    pub fn timeout(&mut self, now: Instant) -> Option<DialStep> {
        let step = self.with_core(None, |d, b| d.handle_timeout(now, b));
        if let Some(s) = &step {
            self.note(s);
        }
        step
    }

    /// Runs `input` on the dialer and the shared balancer; `otherwise` once the
    /// dialer is gone (a destination was reached: there is nothing left to dial).
    fn with_core<R>(
        &mut self,
        otherwise: R,
        input: impl FnOnce(&mut Dialer, &mut Balancer) -> R,
    ) -> R {
        let ctx = Arc::clone(&self.ctx);
        let Some(dialer) = self.dialer.as_deref_mut() else {
            return otherwise;
        };
        let result = {
            let mut balancer = lock(&ctx.balancer);
            let result = input(dialer, &mut balancer);
            while let Some(event) = balancer.poll_event() {
                match event {
                    SelectEvent::StickyTableFull { .. } => ctx.log.notice(&event.to_string()),
                    _ => ctx.log.debug(1, &event.to_string()),
                }
            }
            result
        };
        while let Some(event) = dialer.poll_event() {
            ctx.log.debug(1, &event.to_string());
        }
        result
    }

    fn note(&mut self, step: &DialStep) {
        if let DialStep::Established { dest, .. } = step {
            self.dialer = None;
            self.reached = Some(*dest);
            lock(&self.ctx.stats).handle_established(*dest);
            if let Some(d) = lock(&self.ctx.balancer).destination(*dest) {
                self.ctx.log.connection(&log::connect_from(
                    &self.ctx.config.source,
                    self.peer.ip(),
                    d,
                ));
            }
        }
    }

    /// When the current connect or CONNECT exchange times out.
    pub fn deadline(&self) -> Option<Instant> {
        self.dialer.as_ref().and_then(|d| d.poll_timeout())
    }

    /// Starts the relay once established: the leftover goes to the client first,
    /// and with `--proxy-protocol` a header naming the client and the address it
    /// connected to (`local`, asked only then) goes to the destination first
    /// (OPT-4). `None` when that address cannot be had.
    pub fn relay(
        &self,
        now: Instant,
        leftover: &[u8],
        local: impl FnOnce() -> io::Result<SocketAddr>,
    ) -> Option<Relay> {
        let preamble = match self.ctx.config.proxy_protocol {
            Some(version) => proxy_protocol::header(version, self.peer, local().ok()?),
            None => Bytes::new(),
        };
        let mut relay =
            Relay::with_preamble(now, self.ctx.config.relay_options(), leftover, &preamble);
        // Every runtime can splice; a direction falls back to copying by itself
        // when it cannot get a pipe.
        for dir in Direction::BOTH {
            relay.half_mut(dir).set_splice(Some(splice::PIPE_CAPACITY));
        }
        Some(relay)
    }

    /// Records the end of the connection: the session line for one that reached a
    /// destination (SPEC §4), and `Complete` for `-l` (PROC-5).
    pub fn finish(self, now: Instant, outcome: Option<RelayOutcome>) {
        let ctx = &self.ctx;
        lock(&ctx.stats).handle_closed(self.reached, outcome.as_ref());
        let status = CloseStatus::of(self.reached.is_some(), outcome.map(|o| o.end));
        if let (Some(dest), Some(o), Some(sessions)) = (self.reached, outcome, &ctx.sessions) {
            let destination = lock(&ctx.balancer).destination(dest).cloned();
            if let Some(destination) = destination {
                let duration = now.saturating_duration_since(self.accepted_at);
                let record = SessionRecord::new(
                    ctx.config.source,
                    self.peer.ip(),
                    destination,
                    &o,
                    duration,
                );
                let line = record.line(sys::local_time(SystemTime::now()), ctx.pid);
                if let Err(e) = sessions.write(&line) {
                    ctx.log.error(&format!("cannot write session line: {e}"));
                }
            }
        }
        if let Some(o) = outcome {
            ctx.log.debug(
                1,
                &format!(
                    "{} closed: {:?}, in {} out {}, spliced {}",
                    self.peer, o.end, o.from_client, o.from_destination, o.spliced
                ),
            );
        }
        ctx.log
            .connection(&log::complete(&ctx.config.source, status));
    }
}

impl Context {
    /// The validated command line.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The logger.
    pub fn log(&self) -> &Logger {
        &self.log
    }

    /// The program name used in messages.
    pub fn program(&self) -> &str {
        &self.program
    }

    /// Decides about a client just accepted (CONN-1, OPT-3): `None` means refused
    /// (logged; close it at once without contacting any destination).
    pub fn admit(self: &Arc<Self>, now: Instant, peer: SocketAddr) -> Option<Connection> {
        let verdict = lock(&self.admission).admit(peer.ip());
        match verdict {
            Ok(()) => lock(&self.stats).handle_accepted(),
            Err(Refusal::Rules) => {
                lock(&self.stats).handle_refused();
                self.log
                    .connection(&log::refused(&self.config.source, peer.ip()));
                return None;
            }
            Err(over) => {
                lock(&self.stats).handle_refused();
                self.log
                    .notice(&log::over_limit(&self.config.source, peer.ip(), &over));
                return None;
            }
        }
        let dialer = Dialer::new(&lock(&self.balancer), peer.ip(), self.dial.clone());
        Some(Connection {
            ctx: Arc::clone(self),
            peer,
            accepted_at: now,
            dialer: Some(Box::new(dialer)),
            reached: None,
        })
    }

    /// Decides what to do after accept failed: returns how long to pause (§5).
    pub fn accept_failed(&self, now: Instant, error: &io::Error) -> Option<Duration> {
        let failure = match error.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE) => AcceptFailure::OutOfDescriptors,
            Some(libc::ENOBUFS | libc::ENOMEM) => AcceptFailure::OutOfMemory,
            Some(libc::ECONNABORTED | libc::EPROTO | libc::EINTR | libc::EAGAIN | libc::EPERM) => {
                AcceptFailure::ClientGone
            }
            _ => AcceptFailure::Other,
        };
        let action = lock(&self.backoff).handle_failure(now, failure, &error.to_string());
        if let Some(line) = action.log {
            self.log.error(&line);
        }
        action.pause
    }

    /// True once a graceful stop has begun.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Begins the graceful stop (PROC-4): removes the pid file; the caller closes the
    /// listener. Returns false if a stop had already begun.
    pub fn begin_stop(&self) -> bool {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return false;
        }
        self.remove_pid_file();
        let _ = self.notifier.notify("STOPPING=1");
        self.log
            .debug(1, "stopping: listener closed, waiting for open connections");
        true
    }

    fn remove_pid_file(&self) {
        if let Some(file) = lock(&self.pid_file).take() {
            file.remove();
        }
    }

    /// Blocks until no connection is open, or `--drain-timeout` has passed (OPT-8).
    pub fn wait_drained(&self) {
        let deadline = self
            .config
            .drain_timeout
            .and_then(|t| Instant::now().checked_add(t));
        let mut admission = lock(&self.admission);
        while admission.open() > 0 {
            match deadline {
                None => {
                    admission = self
                        .drained
                        .wait(admission)
                        .unwrap_or_else(|p| p.into_inner())
                }
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        self.log.debug(
                            1,
                            &format!("drain timeout: exiting with {} open", admission.open()),
                        );
                        break;
                    }
                    admission = self
                        .drained
                        .wait_timeout(admission, d - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
    }

    /// Waits for open connections to finish (or `--drain-timeout`), then exits 0:
    /// the end of a graceful stop, once the accept loop has ended (PROC-4).
    pub fn drain_and_exit(&self) -> ! {
        self.wait_drained();
        self.exit(EXIT_OK)
    }

    /// Exits the process with `status`, removing the pid file first.
    pub fn exit(&self, status: i32) -> ! {
        self.remove_pid_file();
        let _ = io::stdout().flush();
        std::process::exit(status)
    }

    /// Writes the state dump of SIGUSR1 (OPT-6): a line per destination and a
    /// summary, to stderr in the foreground or syslog when detached.
    pub fn report_state(&self) {
        let lines = {
            let balancer = lock(&self.balancer);
            lock(&self.stats).report(Instant::now(), &balancer)
        };
        for line in lines {
            self.log.notice(&line);
        }
    }

    /// Starts the thread that receives SIGTERM, SIGINT and SIGUSR1: the first
    /// SIGTERM/SIGINT begins the graceful stop and calls `close_listener`, the
    /// second exits at once (PROC-4); SIGUSR1 writes the state dump (OPT-6).
    pub fn spawn_signal_thread(
        self: &Arc<Self>,
        close_listener: impl Fn() + Send + 'static,
    ) -> io::Result<()> {
        let ctx = Arc::clone(self);
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || loop {
                let signals = [sys::signal::TERM, sys::signal::INT, sys::signal::USR1];
                match sys::wait_signal(&signals) {
                    Ok(sys::signal::USR1) => ctx.report_state(),
                    Ok(_) if ctx.begin_stop() => close_listener(),
                    Ok(_) => ctx.exit(EXIT_OK),
                    Err(e) => {
                        ctx.log.error(&format!("signal wait failed: {e}"));
                        return;
                    }
                }
            })?;
        Ok(())
    }
}
