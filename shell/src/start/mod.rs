//! Start-up (PROC-1/2/3/6/7/9): from argv to a bound, detached, ready process
//! that an adapter serves, in the order the crate's documentation gives.

pub mod credentials;
pub mod daemon;
pub mod user;

use std::ffi::OsString;
use std::io::{self, Write};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};

use plug_core::config::cli::{self, Action, EXIT_FATAL, EXIT_OK};
use plug_core::connection::Runtime;
use plug_core::forwarder::Forwarder;
use plug_core::reports::log::{self as core_log, LogLevel, LogTargets};

use crate::context::Context;
use crate::drive::rounds;
use crate::lifecycle::{self, Event};
use crate::net::live::LiveSockets;
use crate::net::sockets;
use crate::output::log::Logger;
use crate::output::session_file::SessionWriter;
use crate::output::syslog::{self, Syslog};
use crate::output::writer::Writer;
use crate::{sys, systemd};
use credentials::read_credentials;
use daemon::{ParentOutcome, PidFile, Readiness};
use user::Account;

/// Prints `PROG: message` on stderr and exits with `status`.
fn die(program: &str, message: &str, status: i32) -> ! {
    let _ = writeln!(io::stderr(), "{program}: {message}");
    std::process::exit(status)
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
        Ok(action @ (Action::Version | Action::LongVersion)) => {
            let long = action == Action::LongVersion;
            println!("{}", core_log::version(&program, runtime.name, long));
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
    // --check: everything a start reads has been read and found good; nothing
    // has been bound, written or detached (OPT-14).
    if config.check {
        println!("{}", core_log::configuration_ok(&program, 1));
        std::process::exit(EXIT_OK)
    }

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
                pid_file_fatal(&mut pid_file, &core_log::cannot_listen(addr, &e))
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
    // Still on the terminal: the last chance to say the log goes nowhere.
    if let Some(warning) = core_log::unlogged_warning(!config.foreground, syslog_socket.is_some()) {
        let _ = writeln!(io::stderr(), "{program}: {warning}");
    }

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
