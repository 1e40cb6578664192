//! The listeners of a running plug (OPT-13): each with its line, the core's
//! [`Forwarder`] for it, its session file and its listening socket. They are
//! started at boot and, on a reload, added, changed or closed exactly as the
//! core's [`ReloadPlan`] says (OPT-15); the adapter only runs accept loops
//! ([`Acceptor`]).

use std::io;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use plug_core::config::cli::{Config, SessionTarget};
use plug_core::config::file::{self, listener_label};
use plug_core::config::reload::{self, Added, ReloadPlan};
use plug_core::connection::connect::ProxyCredentials;
use plug_core::forwarder::Forwarder;
use plug_core::reports::log::{LogLevel, LogRecord};

use crate::net::sockets;
use crate::output::session_file::SessionWriter;
use crate::shared::lock;
use crate::start::config_file::read_config_file;
use crate::start::credentials::read_credentials;
use crate::{sys, Context};

/// How an adapter serves listening sockets: each runs in the background until
/// its listener is closed or plug stops, then reports
/// [`Context::accept_loop_ended`].
pub trait Acceptor: Send + Sync + std::fmt::Debug + 'static {
    /// Runs `listener`'s accept loop on `socket`.
    fn serve(
        &self,
        ctx: &Arc<Context>,
        listener: Arc<Listener>,
        socket: TcpListener,
    ) -> io::Result<()>;

    /// Runs the `--metrics` accept loop on `socket` (OPT-9).
    fn serve_metrics(&self, ctx: &Arc<Context>, socket: TcpListener) -> io::Result<()>;
}

/// One listener: its line and its shared state.
#[derive(Debug)]
pub struct Listener {
    /// Unique in the process, never reused.
    id: u64,
    /// Shared with the listener that takes its place when a failed reload
    /// makes it listen again ([`Listener::reopened`]).
    forwarder: Arc<Mutex<Forwarder>>,
    line: Mutex<Config>,
    session: Mutex<Option<Arc<SessionWriter>>>,
    /// The listening socket, kept here until the listener is closed, so that
    /// shutting it never touches a descriptor number closed and reused (the
    /// accept loop serves a duplicate).
    socket: Mutex<Option<TcpListener>>,
    closed: AtomicBool,
    /// Set when its connections are cut: a reload closed it and
    /// `--drain-timeout` has passed (OPT-15).
    cutting: AtomicBool,
}

impl Listener {
    pub(crate) fn new(
        id: u64,
        forwarder: Forwarder,
        line: Config,
        session: Option<Arc<SessionWriter>>,
    ) -> Self {
        Listener {
            id,
            cutting: AtomicBool::new(false),
            forwarder: Arc::new(Mutex::new(forwarder)),
            line: Mutex::new(line),
            session: Mutex::new(session),
            socket: Mutex::new(None),
            closed: AtomicBool::new(false),
        }
    }

    /// The same listener, to listen again after a failed reload released its
    /// socket: its identity, state and line carry on; this one stays closed
    /// for the accept loop that served it.
    fn reopened(&self) -> Listener {
        Listener {
            id: self.id,
            forwarder: Arc::clone(&self.forwarder),
            line: Mutex::new(self.line()),
            session: Mutex::new(self.session()),
            socket: Mutex::new(None),
            closed: AtomicBool::new(false),
            cutting: AtomicBool::new(false),
        }
    }

    /// The shared state, locked.
    pub(crate) fn forwarder(&self) -> MutexGuard<'_, Forwarder> {
        lock(&self.forwarder)
    }

    /// The line this listener runs now.
    pub(crate) fn line(&self) -> Config {
        lock(&self.line).clone()
    }

    /// Where its session lines go now (a connection keeps the one it started with).
    pub(crate) fn session(&self) -> Option<Arc<SessionWriter>> {
        lock(&self.session).clone()
    }

    /// Its identity in the process.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// True once its connections are being cut (OPT-15).
    pub(crate) fn is_cutting(&self) -> bool {
        self.cutting.load(Ordering::Relaxed)
    }

    /// Cuts its open connections (OPT-15, as OPT-8 cuts all).
    pub(crate) fn cut(&self, ctx: &Context) -> usize {
        self.cutting.store(true, Ordering::SeqCst);
        ctx.live.reset_listener(self.id)
    }

    /// True once a reload has closed it: its accept loop ends.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Shuts the listening socket so its accept loop wakes and ends (a stop,
    /// PROC-4, or a reload that removed it).
    pub(crate) fn shut(&self) {
        if let Some(s) = lock(&self.socket).as_ref() {
            sys::shutdown_read(s.as_raw_fd());
        }
    }

    /// Closes it for good (OPT-15): no more clients; the port is free once the
    /// accept loop has let go of its duplicate, at once.
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.shut();
        drop(lock(&self.socket).take());
    }
}

/// Opens the session file of a line, as the account plug runs as.
pub(crate) fn open_session(config: &Config) -> Result<Option<Arc<SessionWriter>>, String> {
    match config.session.clone() {
        None => Ok(None),
        Some(target) => SessionWriter::open(target.clone())
            .map(|w| Some(Arc::new(w)))
            .map_err(|e| match target {
                SessionTarget::Stdout => format!("cannot write session lines to stdout: {e}"),
                SessionTarget::File(_) => format!("cannot open session file {e}"),
            }),
    }
}

/// Reads a line's `--proxy-auth-file`, if it names one.
pub(crate) fn credentials_of(config: &Config) -> Result<Option<ProxyCredentials>, String> {
    config
        .proxy_auth_file
        .as_deref()
        .map(read_credentials)
        .transpose()
}

/// Says a listener started, at boot or by a reload: `Plugdaemon started.`,
/// its settings (`-dd`) and its address (`-d`).
pub(crate) fn announce(ctx: &Context, line: &Config, local: Option<std::net::SocketAddr>) {
    ctx.log(
        LogLevel::Connection,
        plug_core::reports::log::started(&line.source),
    );
    for text in line.describe(ctx.budget().max_conns()) {
        ctx.log(LogLevel::Debug(2), text);
    }
    if let Some(local) = local {
        ctx.log(LogLevel::Debug(1), format!("listening on {local}"));
    }
}

/// Starts serving `listener` on `socket`: the socket is kept with the
/// listener, the adapter's loop gets a duplicate.
pub(crate) fn start(
    ctx: &Arc<Context>,
    acceptor: &dyn Acceptor,
    listener: &Arc<Listener>,
    socket: TcpListener,
) -> io::Result<()> {
    let dup = socket.try_clone()?;
    *lock(&listener.socket) = Some(socket);
    ctx.accept_loop_started();
    acceptor
        .serve(ctx, Arc::clone(listener), dup)
        .inspect_err(|_| {
            ctx.accept_loop_ended();
        })
}

/// What a new listener needs before the reload can commit.
struct Prepared {
    config: Config,
    socket: TcpListener,
    credentials: Option<ProxyCredentials>,
    session: Option<Arc<SessionWriter>>,
}

/// Reloads the `--config` file (OPT-15), all or nothing, in the order the
/// core's [`ReloadPlan`] gives: the file is read and checked, new listeners
/// are bound and every file they name is opened before anything changes
/// (a removed listener that holds a new one's port is released just before
/// that bind, and listens again if it fails); then kept listeners take their
/// new lines, gone ones close and new ones start. A failure logs
/// `reload failed: REASON` and changes nothing. Returns the listeners closed (their connections go on, for the
/// process machine to bound).
pub(crate) fn reload(
    ctx: &Arc<Context>,
    acceptor: &dyn Acceptor,
    path: &std::path::Path,
) -> Vec<Arc<Listener>> {
    let now = Instant::now();
    let failed = |why: &str| {
        ctx.writer.log(LogRecord::new(
            LogLevel::Error,
            format!("reload failed: {why}"),
        ));
    };
    let shown = path.display().to_string();
    let text = match read_config_file(path) {
        Ok(text) => text,
        Err(e) => {
            failed(&e);
            return Vec::new();
        }
    };
    let new = match file::parse(&ctx.file_start(), &shown, &text) {
        Ok(new) => new,
        Err(errors) => {
            for e in errors.lines() {
                failed(e);
            }
            return Vec::new();
        }
    };
    let running: Vec<Arc<Listener>> = ctx.listeners();
    let old: Vec<Config> = running.iter().map(|l| l.line()).collect();
    let plan: ReloadPlan = reload::plan(&old, new);
    // Everything that can fail, first.
    let mut kept = Vec::with_capacity(plan.kept.len());
    for k in &plan.kept {
        if !k.changed {
            continue;
        }
        let prepared =
            credentials_of(&k.config).and_then(|c| open_session(&k.config).map(|s| (c, s)));
        match prepared {
            Ok((credentials, session)) => kept.push((k, credentials, session)),
            Err(e) => {
                failed(&e);
                return Vec::new();
            }
        }
    }
    let prepare = |config: &Config| {
        listen_on(config)
            .map_err(|e| plug_core::reports::log::cannot_listen(config.source.bind_addr(), &e))
            .and_then(|socket| {
                let credentials = credentials_of(config)?;
                let session = open_session(config)?;
                Ok(Prepared {
                    config: config.clone(),
                    socket,
                    credentials,
                    session,
                })
            })
    };
    let mut added = Vec::with_capacity(plan.added.len());
    let (free, held): (Vec<&Added>, Vec<&Added>) = plan
        .added
        .iter()
        .partition(|a| a.after_releasing.is_empty());
    for a in free {
        match prepare(&a.config) {
            Ok(p) => added.push(p),
            // Sockets bound so far close as `added` is dropped.
            Err(e) => {
                failed(&e);
                return Vec::new();
            }
        }
    }
    let mut released: Vec<usize> = Vec::new();
    for a in held {
        for &i in &a.after_releasing {
            if !released.contains(&i) {
                running[i].close();
                released.push(i);
            }
        }
        if let Err(e) = prepare(&a.config).map(|p| added.push(p)) {
            drop(added);
            // Listening again before saying so: once the failure is logged,
            // the previous configuration serves.
            let lost = listen_again(ctx, acceptor, &running, &released);
            failed(&e);
            return lost;
        }
    }
    // Commit. A line that did not change still re-reads its proxy
    // credentials, as SIGHUP always has (PROC-8).
    for k in plan.credentials_to_reread() {
        if let Some(path) = &k.config.proxy_auth_file {
            let read = (path.display().to_string(), read_credentials(path));
            ctx.with(&running[k.old], now, |f| f.handle_reload(now, Some(read)));
        }
    }
    for (k, credentials, session) in kept {
        let listener = &running[k.old];
        ctx.with(listener, now, |f| {
            f.handle_reconfigure(now, &k.config, credentials);
        });
        *lock(&listener.line) = k.config.clone();
        *lock(&listener.session) = session;
    }
    let closed: Vec<Arc<Listener>> = plan
        .removed
        .iter()
        .map(|&i| Arc::clone(&running[i]))
        .collect();
    for listener in &closed {
        // Released ones are closed already.
        listener.close();
    }
    let mut next: Vec<Arc<Listener>> = plan
        .kept
        .iter()
        .map(|k| Arc::clone(&running[k.old]))
        .collect();
    for p in added {
        let listener = Arc::new(ctx.listener_for(&p.config, p.credentials, p.session));
        let local = p.socket.local_addr().ok();
        if let Err(e) = start(ctx, acceptor, &listener, p.socket) {
            let text = format!("cannot serve {}: {e}", listener_label(&p.config));
            ctx.writer.log(LogRecord::new(LogLevel::Error, text));
            continue;
        }
        announce(ctx, &p.config, local);
        next.push(listener);
    }
    ctx.set_listeners(next);
    ctx.writer
        .log(LogRecord::new(LogLevel::Notice, plan.summary(&shown)));
    closed
}

/// Binds and listens on `config`'s address, with a listener's options: for a
/// listener a reload adds, and for one that listens again.
fn listen_on(config: &Config) -> io::Result<TcpListener> {
    let socket = sockets::bind(config.source.bind_addr())?;
    sockets::prepare_listener(&socket, config.keepalive);
    Ok(socket)
}

/// After a failed reload released `released` (positions in `running`), makes
/// each listen again on its own address, so the reload changes nothing. One
/// whose address was taken meanwhile is lost: it is logged, and returned so
/// its connections drain as a removed listener's do.
fn listen_again(
    ctx: &Arc<Context>,
    acceptor: &dyn Acceptor,
    running: &[Arc<Listener>],
    released: &[usize],
) -> Vec<Arc<Listener>> {
    let mut lost = Vec::new();
    let mut listeners = running.to_vec();
    for &i in released {
        let old = &running[i];
        let config = old.line();
        let again = Arc::new(old.reopened());
        let result = listen_on(&config).and_then(|socket| start(ctx, acceptor, &again, socket));
        match result {
            Ok(()) => listeners[i] = again,
            Err(e) => {
                let text = format!(
                    "cannot listen again on {}: {e}; its connections finish",
                    listener_label(&config)
                );
                ctx.writer.log(LogRecord::new(LogLevel::Error, text));
                lost.push(Arc::clone(old));
            }
        }
    }
    listeners.retain(|l| !lost.iter().any(|g| Arc::ptr_eq(g, l)));
    ctx.set_listeners(listeners);
    lost
}
