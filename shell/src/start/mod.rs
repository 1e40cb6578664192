//! Start-up (PROC-1/2/3/6/7/9): from argv to a bound, detached, ready process
//! that an adapter serves, in the order the crate's documentation gives.

pub mod config_file;
pub mod credentials;
pub mod daemon;
pub mod user;

use std::ffi::OsString;
use std::io::{self, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};

use plug_core::config::cli::{self, Action, Config, FileStart, EXIT_FATAL, EXIT_OK};
use plug_core::config::file;
use plug_core::connection::Runtime;
use plug_core::forwarder::admission::ProcessBudget;
use plug_core::reports::log::{self as core_log, LogTargets};

use crate::context::Context;
use crate::drive::rounds;
use crate::lifecycle::{self, Event};
use crate::listeners::{self, Acceptor, Listener};
use crate::net::live::LiveSockets;
use crate::net::sockets;
use crate::output::log::Logger;
use crate::output::syslog::{self, Syslog};
use crate::output::writer::Writer;
use crate::{sys, systemd};
use config_file::read_config_file;
use daemon::{ParentOutcome, PidFile, Readiness};
use user::Account;

/// Prints `PROG: message` on stderr and exits with `status`.
fn die(program: &str, message: &str, status: i32) -> ! {
    let _ = writeln!(io::stderr(), "{program}: {message}");
    std::process::exit(status)
}

/// A started process, ready for an adapter to serve its listeners.
#[derive(Debug)]
pub struct Boot {
    /// The shared state.
    pub ctx: Arc<Context>,
    /// Each listener with its bound, listening socket.
    sockets: Vec<(Arc<Listener>, TcpListener)>,
    /// The `--metrics` listener, bound too (OPT-9).
    metrics: Option<TcpListener>,
    readiness: Readiness,
    events: Receiver<Event>,
}

impl Boot {
    /// Hands over to the adapter: looks up host names and checks the
    /// destinations' health for the first time and starts the threads of the
    /// later rounds (OPT-10/11), has `acceptor` serve every listener and the
    /// metrics listener, starts the signal and lifecycle threads (the core's
    /// [`plug_core::process::Process`] decides what each signal means), then
    /// reports ready to a waiting parent (PROC-1) and systemd. A failure here
    /// exits 4, reported to the parent when there is one. The adapter's
    /// thread then runs its tasks or waits; the lifecycle thread exits.
    pub fn serve(self, acceptor: Arc<dyn Acceptor>) -> Arc<Context> {
        let Boot {
            ctx,
            sockets,
            metrics,
            mut readiness,
            events,
        } = self;
        let _ = ctx.acceptor.set(Arc::clone(&acceptor));
        let started = (|| {
            rounds::resolve_now(&ctx);
            rounds::probe_now(&ctx);
            rounds::start_resolver(&ctx)
                .and_then(|()| rounds::start_prober(&ctx))
                .map_err(|e| format!("cannot start the lookup or health-check thread: {e}"))?;
            for (listener, socket) in sockets {
                listeners::start(&ctx, acceptor.as_ref(), &listener, socket)
                    .map_err(|e| format!("cannot start serving: {e}"))?;
            }
            if let Some(socket) = metrics {
                let dup = socket
                    .try_clone()
                    .map_err(|e| format!("cannot serve --metrics: {e}"))?;
                *crate::shared::lock(&ctx.metrics_socket) = Some(socket);
                acceptor
                    .serve_metrics(&ctx, dup)
                    .map_err(|e| format!("cannot serve --metrics: {e}"))?;
            }
            lifecycle::spawn(&ctx, events)
                .and_then(|()| lifecycle::spawn_signal_thread(&ctx))
                .map_err(|e| format!("cannot start the signal thread: {e}"))
        })();
        match started {
            Ok(()) => {
                readiness.ready();
                let ready = format!("READY=1\nMAINPID={}", ctx.pid);
                if let Err(e) = ctx.notifier.notify(&ready) {
                    ctx.log.error(&format!("cannot notify systemd: {e}"));
                }
                ctx
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

/// The listeners' lines from argv: the command line's one, or the
/// `--config` file's (read here, bounded). `-V`, `--help`, usage errors and
/// errors in the file (exit 5), and a file that cannot be read (exit 4) end
/// here.
fn lines_from(
    program: &str,
    argv: Vec<OsString>,
    runtime: Runtime,
) -> (Vec<Config>, Option<FileStart>) {
    match cli::parse(argv) {
        Ok(Action::Run(config)) => (vec![*config], None),
        Ok(Action::RunFile(start)) => {
            let mut start = *start;
            let shown = start.file.display().to_string();
            let text =
                read_config_file(&start.file).unwrap_or_else(|e| die(program, &e, EXIT_FATAL));
            match file::parse(&start, &shown, &text) {
                Ok(lines) => {
                    // Re-read on SIGHUP after detaching moved plug to `/`.
                    absolute(&mut start.file);
                    (lines, Some(start))
                }
                Err(errors) => {
                    let mut err = io::stderr().lock();
                    for line in errors.lines() {
                        let _ = writeln!(err, "{program}: {line}");
                    }
                    std::process::exit(cli::EXIT_SYNTAX)
                }
            }
        }
        Ok(action @ (Action::Version | Action::LongVersion)) => {
            let long = action == Action::LongVersion;
            println!("{}", core_log::version(program, runtime.name, long));
            std::process::exit(EXIT_OK)
        }
        Ok(Action::Help) => {
            print!("{}", cli::help(program));
            std::process::exit(EXIT_OK)
        }
        Err(e) => {
            let _ = write!(io::stderr(), "{program}: {e}\n{}", cli::usage(program));
            std::process::exit(e.status())
        }
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
    let (mut lines, file_start) = lines_from(&program, argv.collect(), runtime);
    let fatal = |message: &str| -> ! { die(&program, message, EXIT_FATAL) };
    if let Err(e) = blocked {
        fatal(&format!("cannot set up signals: {e}"))
    }

    // Nothing inherited stays open but stdio and the listeners systemd passed
    // (PROC-7), so `x=$(plug ...)` returns and no descriptor leaks into the daemon.
    let passed = systemd::passed_fds();
    if let Err(e) = sys::ensure_stdio_open() {
        fatal(&format!("cannot open /dev/null: {e}"))
    }
    sys::close_inherited_fds(&passed);
    for config in &mut lines {
        if let Some(path) = config.pid_file.as_mut() {
            absolute(path);
        }
        if let Some(cli::SessionTarget::File(path)) = config.session.as_mut() {
            absolute(path);
        }
        if let Some(path) = config.proxy_auth_file.as_mut() {
            absolute(path);
        }
    }
    // The process-wide options are the same on every line.
    let Some(config) = lines.first().cloned() else {
        fatal("no listener")
    };

    let credentials: Vec<_> = lines
        .iter()
        .map(|line| listeners::credentials_of(line).unwrap_or_else(|e| fatal(&e)))
        .collect();
    let account = config
        .user
        .as_ref()
        .map(|spec| Account::look_up(spec).unwrap_or_else(|e| fatal(&e)));
    // --check: everything a start reads has been read and found good; nothing
    // has been bound, written or detached (OPT-14).
    if config.check {
        println!("{}", core_log::configuration_ok(&program, lines.len()));
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

    // With systemd socket activation the passed sockets are served: without
    // --config the first, whatever its address (the source argument still
    // names the listener in logs); with --config each line gets the passed
    // socket on its address, and a line no passed socket matches is bound
    // (OPT-7, OPT-13).
    let notifier = systemd::Notifier::from_env();
    let mut adopted: Vec<TcpListener> = Vec::with_capacity(passed.len());
    for &fd in &passed {
        match systemd::adopt(fd) {
            Ok(l) => adopted.push(l),
            Err(e) => {
                let text = format!("cannot use the socket systemd passed: {e}");
                pid_file_fatal(&mut pid_file, &text)
            }
        }
    }
    let mut sockets: Vec<TcpListener> = Vec::with_capacity(lines.len());
    for line in &lines {
        let addr = line.source.bind_addr();
        let passed_here = match file_start {
            None if !adopted.is_empty() => Some(adopted.remove(0)),
            None => None,
            Some(_) => adopted
                .iter()
                .position(|l| l.local_addr().is_ok_and(|a| a == addr))
                .map(|i| adopted.remove(i)),
        };
        let socket = match passed_here {
            Some(l) => l,
            None => sockets::bind(addr).unwrap_or_else(|e| {
                pid_file_fatal(&mut pid_file, &core_log::cannot_listen(addr, &e))
            }),
        };
        sockets::prepare_listener(&socket, line.keepalive);
        sockets.push(socket);
    }
    drop(adopted);
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
    // As the account plug now runs as: it must be able to write the files.
    let mut sessions = Vec::with_capacity(lines.len());
    for line in &lines {
        match listeners::open_session(line) {
            Ok(w) => sessions.push(w),
            Err(e) => early_failure(&mut pid_file, &e),
        }
    }
    let writer = match Writer::start(Arc::clone(&logger), pid) {
        Ok(writer) => writer,
        Err(e) => early_failure(&mut pid_file, &format!("cannot start the log writer: {e}")),
    };
    let splicing = runtime.pipe_capacity.is_some();
    let budget = Arc::new(ProcessBudget::new(config.max_conns, nofile, splicing));
    let (events, received) = mpsc::channel();
    let ctx = Arc::new(Context {
        program,
        log: logger,
        writer,
        listeners: Mutex::new(Vec::new()),
        retired: Mutex::new(Vec::new()),
        reloaded: (Mutex::new(0), std::sync::Condvar::new()),
        next_listener: std::sync::atomic::AtomicU64::new(0),
        budget,
        runtime,
        accepting: AtomicUsize::new(0),
        unfinished: AtomicUsize::new(0),
        acceptor: std::sync::OnceLock::new(),
        metrics_socket: Mutex::new(None),
        file_start,
        pid_file: Mutex::new(pid_file),
        pid,
        stopping: AtomicBool::new(false),
        cutting: AtomicBool::new(false),
        live: LiveSockets::default(),
        events,
        notifier,
        config,
    });
    let mut serving = Vec::with_capacity(lines.len());
    for ((line, credentials), (session, socket)) in lines
        .iter()
        .zip(credentials)
        .zip(sessions.into_iter().zip(sockets))
    {
        let listener = Arc::new(ctx.listener_for(line, credentials, session));
        crate::listeners::announce(&ctx, line, socket.local_addr().ok());
        serving.push((listener, socket));
    }
    ctx.set_listeners(serving.iter().map(|(l, _)| Arc::clone(l)).collect());
    Boot {
        ctx,
        sockets: serving,
        metrics,
        readiness,
        events: received,
    }
}
