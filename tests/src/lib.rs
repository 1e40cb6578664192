//! The conformance suite's harness: the binaries under test, a running plug with
//! its output captured line by line, loopback backends, and client helpers.
//!
//! Every wait is bounded by [`DEADLINE`]; readiness is a log line or a socket state,
//! never a blind sleep.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The longest any single wait in the suite may take.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The workspace's binaries every test runs against. Adding a runtime is one line
/// here.
pub const BINARIES: &[&str] = &["plug-std", "plug", "plug-smol", "plug-async-std"];

/// The source trees each workspace binary is built from, for the staleness check.
fn sources_of(name: &str) -> &'static [&'static str] {
    match name {
        "plug-std" => &["core/src", "shell/src", "runtime-std/src"],
        "plug" => &["core/src", "shell/src", "runtime-std/src", "src"],
        "plug-smol" => &["core/src", "shell/src", "runtime-smol/src"],
        _ => &["core/src", "shell/src", "runtime-async-std/src"],
    }
}

/// `plug` (std by default) is also built with each other runtime feature and
/// tested as well; these builds go to their own target directories
/// (`target/variants/FEATURE`).
pub const PLUG_FEATURES: &[&str] = &["smol", "async-std"];

/// One binary under test.
#[derive(Debug, Clone)]
pub struct Binary {
    /// Its file name, which is also the program name in its messages.
    pub name: &'static str,
    /// How failures name it (`plug --features smol` for a feature build).
    pub label: String,
    /// Where cargo built it.
    pub path: PathBuf,
}

/// The directory cargo put the binaries in: the test executable lives in its
/// `deps/` subdirectory.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test binary has a directory");
    deps.parent().unwrap_or(deps).to_path_buf()
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The newest modification time of any file below `dir`.
fn newest_source(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_source(&path)
        } else {
            entry.metadata().ok()?.modified().ok()
        };
        newest = newest.max(t);
    }
    newest
}

/// Builds `plug` with one runtime feature (once per test process; cargo makes a
/// repeat build a no-op) and returns its path.
fn feature_build(feature: &str) -> PathBuf {
    static BUILT: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, path)) = built.iter().find(|(f, _)| f == feature) {
        return path.clone();
    }
    let target = bin_dir()
        .parent()
        .expect("target dir")
        .join("variants")
        .join(feature);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // The same profile as the binaries beside this test (debug or release).
    let release = bin_dir().file_name().is_some_and(|p| p == "release");
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace_root())
        .args(["build", "--quiet"]);
    if release {
        command.arg("--release");
    }
    let out = command
        .args([
            "-p",
            "plug",
            "--bin",
            "plug",
            "--no-default-features",
            "--features",
            feature,
        ])
        .arg("--target-dir")
        .arg(&target)
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "building plug --features {feature} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = target
        .join(if release { "release" } else { "debug" })
        .join("plug");
    built.push((feature.to_string(), path.clone()));
    path
}

/// The binaries under test, failing loudly if one was not built (never skipped) or
/// is older than the sources it is built from: `cargo test -p plug-tests` alone does
/// not rebuild the workspace's binaries, `cargo test --workspace` does.
pub fn binaries() -> Vec<Binary> {
    let root = workspace_root();
    let mut all: Vec<Binary> = BINARIES
        .iter()
        .map(|name| {
            let path = bin_dir().join(name);
            let built = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .unwrap_or_else(|_| {
                    panic!(
                        "{} is missing: run `cargo test --workspace`, which builds every binary",
                        path.display()
                    )
                });
            let sources = sources_of(name)
                .iter()
                .filter_map(|d| newest_source(&root.join(d)))
                .max();
            assert!(
                sources.is_none_or(|s| s <= built),
                "{} is older than its sources: run `cargo test --workspace`, which rebuilds it",
                path.display()
            );
            Binary {
                name,
                label: name.to_string(),
                path,
            }
        })
        .collect();
    for feature in PLUG_FEATURES {
        all.push(Binary {
            name: "plug",
            label: format!("plug --features {feature}"),
            path: feature_build(feature),
        });
    }
    all
}

/// A copy of `bin`, under its own name, in a directory anyone can read, for a
/// plug run as an unprivileged user: the checkout may sit in a directory only
/// root can enter (`mktemp -d`). Keep the directory while the copy runs.
///
/// The copy is written by install(1), not by this process: a file this
/// process had open for writing could still be open in a child another test
/// thread forks at that moment, and executing it would fail with ETXTBSY.
pub fn reachable_copy(bin: &Binary) -> (TempDir, Binary) {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("reachable-bin");
    let copy = dir.path(bin.name);
    let installed = Command::new("install")
        .args(["-m", "0755"])
        .arg(&bin.path)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(installed.success(), "install {}", bin.path.display());
    let open = std::fs::Permissions::from_mode(0o755);
    std::fs::set_permissions(&dir.0, open).unwrap();
    let copied = Binary {
        path: copy,
        ..bin.clone()
    };
    (dir, copied)
}

/// Runs `test` once per binary, saying which binary failed.
pub fn each_binary(test: impl Fn(&Binary)) {
    for bin in binaries() {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| test(&bin)));
        if let Err(panic) = result {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("[{}] {msg}", bin.label);
        }
    }
}

/// Lines read from a child's output, in arrival order, with waiting.
#[derive(Debug, Default)]
pub struct Lines {
    lines: Mutex<(Vec<String>, bool)>,
    changed: Condvar,
}

impl Lines {
    fn capture(source: impl Read + Send + 'static) -> Arc<Lines> {
        let lines = Arc::new(Lines::default());
        let sink = Arc::clone(&lines);
        thread::spawn(move || {
            for line in BufReader::new(source).lines() {
                let Ok(line) = line else { break };
                sink.lines.lock().unwrap().0.push(line);
                sink.changed.notify_all();
            }
            sink.lines.lock().unwrap().1 = true;
            sink.changed.notify_all();
        });
        lines
    }

    /// Everything read so far.
    pub fn all(&self) -> Vec<String> {
        self.lines.lock().unwrap().0.clone()
    }

    /// Waits until some line satisfies `pred`; returns it, or `None` at the
    /// deadline or when the stream closed without one.
    pub fn wait_for(&self, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + DEADLINE;
        let mut guard = self.lines.lock().unwrap();
        loop {
            if let Some(l) = guard.0.iter().find(|l| pred(l)) {
                return Some(l.clone());
            }
            let now = Instant::now();
            if guard.1 || now >= deadline {
                return None;
            }
            guard = self.changed.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    /// [`Lines::wait_for`], failing the test with everything read so far when no
    /// line satisfies `pred` in time.
    pub fn expect(&self, pred: impl Fn(&str) -> bool) -> String {
        self.wait_for(pred)
            .unwrap_or_else(|| panic!("no such line; read so far: {:?}", self.all()))
    }

    /// Waits until at least `n` lines satisfy `pred`; returns them all.
    pub fn wait_for_count(&self, n: usize, pred: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + DEADLINE;
        let mut guard = self.lines.lock().unwrap();
        loop {
            let found: Vec<String> = guard.0.iter().filter(|l| pred(l)).cloned().collect();
            let now = Instant::now();
            if found.len() >= n || guard.1 || now >= deadline {
                return found;
            }
            guard = self.changed.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    /// Waits until the stream closes (the child exited); false at the deadline.
    pub fn wait_closed(&self) -> bool {
        let deadline = Instant::now() + DEADLINE;
        let mut guard = self.lines.lock().unwrap();
        while !guard.1 {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            guard = self.changed.wait_timeout(guard, deadline - now).unwrap().0;
        }
        true
    }
}

/// A free TCP port for plug to listen on (checked by binding 0.0.0.0 and :: and
/// releasing them). Ports come from below the kernel's ephemeral range, each once per
/// process, so no backend's or client's ephemeral port can later land on a plug's
/// port, and no two tests pick the same one.
pub fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let base = 20_000 + (std::process::id() as usize % 40) * 300;
    for _ in 0..300 {
        let port = (base + NEXT.fetch_add(1, Ordering::SeqCst) % 300) as u16;
        if TcpListener::bind(("0.0.0.0", port)).is_ok() && TcpListener::bind(("::", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {base}..{}", base + 300)
}

/// An address nothing listens on, so connecting is refused at once: a fresh address
/// in 127.254.0.0/16, which only the test that got it may bind, on a port below the
/// range `free_port` hands out (so no plug on 0.0.0.0 can cover it).
pub fn dead_addr() -> SocketAddr {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    SocketAddr::from(([127, 254, (n / 250) as u8, (n % 250 + 1) as u8], 19_999))
}

/// A loopback address whose SYNs go unanswered, as a blackholed one's: a
/// listener with backlog 0 that never accepts, its queue filled. A connect to it
/// hangs until its timeout. Held for as long as the value lives.
pub struct Blackhole {
    /// Where it is.
    pub addr: SocketAddr,
    _listener: socket2::Socket,
    _fillers: Vec<socket2::Socket>,
}

impl Blackhole {
    /// A blackhole on `addr` (port 0: one the kernel picks), checked to really
    /// hold a connect back here.
    pub fn on(addr: &str) -> Blackhole {
        let addr: SocketAddr = addr.parse().unwrap();
        let domain = socket2::Domain::for_address(addr);
        let listener = socket2::Socket::new(domain, socket2::Type::STREAM, None).unwrap();
        listener.set_reuse_address(true).unwrap();
        listener
            .bind(&addr.into())
            .unwrap_or_else(|e| panic!("blackhole on {addr}: {e}"));
        listener.listen(0).unwrap();
        let addr = listener.local_addr().unwrap().as_socket().unwrap();
        // A backlog of 0 holds one connection; a few more fill what the kernel adds.
        let fillers = (0..4)
            .map(|_| {
                let s = socket2::Socket::new(domain, socket2::Type::STREAM, None).unwrap();
                s.set_nonblocking(true).unwrap();
                let _ = s.connect(&addr.into());
                s
            })
            .collect();
        let probe = TcpStream::connect_timeout(&addr, Duration::from_millis(300));
        assert!(
            probe
                .as_ref()
                .is_err_and(|e| e.kind() == io::ErrorKind::TimedOut),
            "this kernel does not blackhole a full listener: {probe:?}"
        );
        Blackhole {
            addr,
            _listener: listener,
            _fillers: fillers,
        }
    }
}

/// Where `program` is: on the PATH, or in /usr/sbin or /sbin (where nginx and
/// other daemons live, outside a normal user's PATH). When it is not installed,
/// the test that needs it says so loudly and passes, so that
/// `cargo test --workspace` works on a machine with only Rust and python3,
/// unless `PLUG_TEST_REQUIRE_ALL=1` (set by `.ci/run`, which installs every
/// program): then a missing one fails the test.
pub fn optional_program(program: &str, package: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file());
    if found.is_none() {
        skip_or_fail(&format!(
            "{program} is not installed (apt-get install {package})"
        ));
    }
    found
}

/// Says loudly that a test is skipped for `why`; fails it instead when
/// `PLUG_TEST_REQUIRE_ALL=1`.
pub fn skip_or_fail(why: &str) {
    if std::env::var("PLUG_TEST_REQUIRE_ALL").is_ok_and(|v| v == "1") {
        panic!("{why}, and PLUG_TEST_REQUIRE_ALL=1 requires it");
    }
    // Straight to stderr: libtest captures eprintln! of a passing test, and this
    // line must be seen.
    let line = format!("\n!!! SKIPPED: {why}: this test checks nothing here !!!\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// True when the tests run as root (needed to test `--user` and to give plug a
/// private /dev/log in a mount namespace); says loudly when not, as for a
/// missing program.
pub fn running_as_root(what: &str) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        == Some("0");
    if !root {
        skip_or_fail(&format!("{what} needs root"));
    }
    root
}

/// The lines of `/proc/PID/status`, such as `Uid:` and `Groups:`, by name.
pub fn proc_status(pid: u32, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
}

/// How to launch plug beyond its arguments.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// A program to run instead, with its leading arguments; plug's path and
    /// arguments follow them (the wrapper is expected to exec plug).
    pub via: Option<(String, Vec<String>)>,
}

/// What systemd does for a socket unit: bind and listen, pass the socket as
/// descriptor 3, name the process in LISTEN_PID, exec the service. `NONBLOCK` is
/// replaced by `True` for `NonBlocking=yes`.
const ACTIVATE: &str = r#"
import os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(os.environ["ACTIVATE_PORT"])))
s.listen(128)
if NONBLOCK:
    s.setblocking(False)
fd = s.detach()
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.set_inheritable(3, True)
AS_UID = int(os.environ.get("ACTIVATE_UID", "-1"))
if AS_UID >= 0:
    # systemd's DynamicUser=yes with no capabilities: an unprivileged account.
    os.setgroups([])
    os.setgid(AS_UID)
    os.setuid(AS_UID)
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = "1"
os.execv(sys.argv[1], sys.argv[1:])
"#;

/// A launch as systemd's socket activation (OPT-7) on 127.0.0.1:`port`, with a
/// non-blocking listener when `nonblocking` (`NonBlocking=yes`); python3 stands in
/// for systemd.
pub fn socket_activation(port: u16, nonblocking: bool) -> Launch {
    socket_activation_as(port, nonblocking, None)
}

/// [`socket_activation`], with plug then run as user and group `uid` (needs
/// root), as systemd runs a `DynamicUser=yes` service.
pub fn socket_activation_as(port: u16, nonblocking: bool, uid: Option<u32>) -> Launch {
    let script = ACTIVATE.replace("NONBLOCK", if nonblocking { "True" } else { "False" });
    let mut env = vec![("ACTIVATE_PORT".to_string(), port.to_string())];
    if let Some(uid) = uid {
        env.push(("ACTIVATE_UID".to_string(), uid.to_string()));
    }
    Launch {
        env,
        via: Some(("python3".into(), vec!["-c".into(), script])),
    }
}

/// A `/dev` of plug's own, seen only by plug: a private mount namespace
/// (`unshare -m`) in which `dir` holds the `null` device (bound from the real one)
/// and, when the test bound one there, the `log` socket plug's syslog lines go to.
/// The test then reads the very datagrams a syslog daemon would. This needs root
/// (mounting), which `.ci/run` has; [`private_dev`] says loudly when it is not
/// available. Why a namespace: plug's syslog path is fixed (/dev/log, as every
/// syslog(3) client's), so the real path must be the test's socket, without
/// touching the machine's /dev and without a test-only switch in plug.
pub fn private_dev_launch(dir: &Path) -> Launch {
    let d = dir.to_string_lossy();
    in_private_mount_namespace(&format!(
        "touch '{d}/null' && mount --bind /dev/null '{d}/null' && mount --rbind '{d}' /dev"
    ))
}

/// A launch with `hosts` bound over /etc/hosts in a private mount namespace, so
/// the system resolver answers plug from a file the test edits (needs root).
pub fn private_hosts_launch(hosts: &Path) -> Launch {
    let h = hosts.to_string_lossy();
    in_private_mount_namespace(&format!("mount --bind '{h}' /etc/hosts"))
}

/// A launch whose system resolver answers from `hosts`, written to `dir`, or
/// `None`, said loudly, where that cannot be had (not root, no unshare). The
/// test may rewrite `dir/hosts` later: the bind mount shows the same file.
pub fn hosts_launch(dir: &TempDir, hosts: &str) -> Option<Launch> {
    if !running_as_root("giving plug its own /etc/hosts") {
        return None;
    }
    optional_program("unshare", "util-linux")?;
    let path = dir.path("hosts");
    std::fs::write(&path, hosts).unwrap();
    Some(private_hosts_launch(&path))
}

/// Waits for `child` to exit, up to the deadline; `None` if it is still running
/// then (it is left running: the caller says what that means).
pub fn wait_exit_within_deadline(child: &mut Child) -> Option<ExitStatus> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// A launch that runs the shell commands `mounts` in a private mount namespace
/// (`unshare --mount`), then execs plug there.
fn in_private_mount_namespace(mounts: &str) -> Launch {
    let script = format!("{mounts} && exec \"$0\" \"$@\"");
    let words = ["--mount", "--propagation", "private", "/bin/sh", "-c"];
    let mut leading: Vec<String> = words.iter().map(|w| w.to_string()).collect();
    leading.push(script);
    Launch {
        env: vec![],
        via: Some(("unshare".into(), leading)),
    }
}

/// A socket standing in for the system logger at `dir/log`, with every datagram
/// it received.
pub struct SyslogReceiver {
    socket: std::os::unix::net::UnixDatagram,
    /// Every datagram received so far, in order.
    pub seen: Vec<String>,
}

impl SyslogReceiver {
    /// Binds the socket as `log` in `dir` (see [`private_dev_launch`]), writable by
    /// anyone, as /dev/log is.
    pub fn bind(dir: &TempDir) -> SyslogReceiver {
        let socket = std::os::unix::net::UnixDatagram::bind(dir.path("log")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path("log"), std::fs::Permissions::from_mode(0o666)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        SyslogReceiver {
            socket,
            seen: vec![],
        }
    }

    /// Waits for a datagram satisfying `pred`.
    pub fn expect(&mut self, pred: impl Fn(&str) -> bool) -> String {
        let found = self.wait_for(DEADLINE, &pred);
        found.unwrap_or_else(|| panic!("no such datagram: {:?}", self.seen))
    }

    /// Waits at most `within` for a datagram satisfying `pred`, for a caller that
    /// asks again (a dump that may predate what it waits for).
    pub fn wait_for(&mut self, within: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(d) = self.seen.iter().find(|d| pred(d)) {
                return Some(d.clone());
            }
            if Instant::now() >= deadline {
                return None;
            }
            let mut buf = [0u8; 4096];
            if let Ok(n) = restarting(|| self.socket.recv(&mut buf)) {
                self.seen
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    }
}

/// True when plug can be given a private /dev (see [`private_dev_launch`]):
/// root, and `unshare` installed. Says loudly when not, as for a missing program.
pub fn private_dev(what: &str) -> bool {
    running_as_root(what) && optional_program("unshare", "util-linux").is_some()
}

/// `args` with every `{port}` replaced by `port`.
fn with_port(args: &[&str], port: u16) -> Vec<String> {
    args.iter()
        .map(|a| a.replace("{port}", &port.to_string()))
        .collect()
}

/// The PID a pid file holds (its first line).
pub fn read_pid(path: &Path) -> u32 {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no PID in {}: {text:?}", path.display()))
}

/// Runs `command`, a plug that detaches (PROC-1), and returns the daemon's PID
/// from `pid_file` once the command has exited 0: the parent exits only when the
/// daemon is ready, so no further wait is needed.
pub fn start_detached(command: &mut Command, pid_file: &Path) -> u32 {
    let out = command.stdin(Stdio::null()).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    read_pid(pid_file)
}

/// Sends SIGTERM to a daemon with no open connections and waits until it is gone.
pub fn stop_daemon(pid: u32) {
    send_signal(pid, libc::SIGTERM);
    assert!(
        eventually(|| !process_alive(pid)),
        "{pid} did not exit on SIGTERM"
    );
}

/// Runs `bin` to completion with `args`, `{port}` replaced by a free port, and
/// returns the port and the output; tries another port if that one was taken
/// between choosing and binding (ports are a shared resource between test
/// processes).
pub fn run_on_free_port(bin: &Binary, args: &[&str]) -> (u16, std::process::Output) {
    for _ in 0..5 {
        let port = free_port();
        let words = with_port(args, port);
        let out = Command::new(&bin.path)
            .args(&words)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        if !String::from_utf8_lossy(&out.stderr).contains("cannot listen on") {
            return (port, out);
        }
    }
    panic!("{}: no free port after 5 tries", bin.label)
}

/// A running plug in the foreground with stdout and stderr captured.
pub struct Plug {
    child: Child,
    /// The name of the binary.
    pub name: &'static str,
    /// Standard error, line by line.
    pub stderr: Arc<Lines>,
    /// Standard output, line by line.
    pub stdout: Arc<Lines>,
    /// The listening port.
    pub port: u16,
}

impl Plug {
    /// Starts `bin` with `args`, where the word `{port}` is replaced by a free port,
    /// and `-d` is added so readiness can be seen: returns once it logged that it is
    /// listening. Retries with another port if the chosen one was taken meanwhile.
    pub fn start(bin: &Binary, args: &[&str]) -> Plug {
        Plug::start_limited(bin, None, args)
    }

    /// Like [`Plug::start`], with the open-file limit (soft and hard) set to
    /// `nofile` first, as `ulimit -n` would.
    pub fn start_limited(bin: &Binary, nofile: Option<u32>, args: &[&str]) -> Plug {
        let via = nofile.map(|n| {
            let script = format!("ulimit -n {n} && exec \"$0\" \"$@\"");
            ("/bin/sh".to_string(), vec!["-c".to_string(), script])
        });
        Plug::start_with(bin, &Launch { env: vec![], via }, args)
    }

    /// Like [`Plug::start`], launched as `launch` says.
    pub fn start_with(bin: &Binary, launch: &Launch, args: &[&str]) -> Plug {
        for _ in 0..5 {
            let port = free_port();
            let mut words: Vec<String> = vec!["-d".into()];
            words.extend(with_port(args, port));
            let mut plug = Plug::spawn_launched(bin, launch, words, &launch.env, port);
            if plug
                .stderr
                .wait_for(|l| l.contains("listening on"))
                .is_some()
            {
                return plug;
            }
            let lines = plug.stderr.all();
            let _ = plug.child.kill();
            let _ = plug.child.wait();
            if !lines.iter().any(|l| l.contains("cannot listen")) {
                panic!("{} did not start: {lines:?}", bin.name);
            }
        }
        panic!("{}: no free port after 5 tries", bin.name);
    }

    /// Starts `bin` with exactly `args` (no `-d`), with `{port}` replaced by a free
    /// port, and returns once it is serving, learnt as systemd would: the
    /// `READY=1` it sends to `NOTIFY_SOCKET` (OPT-7). For tests of what plug logs
    /// at the normal level, without the `-d` that [`Plug::start`] adds.
    pub fn start_quiet(bin: &Binary, args: &[&str]) -> Plug {
        Plug::start_quiet_with(bin, &Launch::default(), args)
    }

    /// Like [`Plug::start_quiet`], launched as `launch` says.
    pub fn start_quiet_with(bin: &Binary, launch: &Launch, args: &[&str]) -> Plug {
        let dir = TempDir::new("ready");
        let path = dir.path("notify");
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(DEADLINE)).unwrap();
        // A plug started as another user (as systemd's DynamicUser) reports too.
        {
            use std::os::unix::fs::PermissionsExt;
            let open = std::fs::Permissions::from_mode(0o777);
            std::fs::set_permissions(&dir.0, open.clone()).unwrap();
            std::fs::set_permissions(&path, open).unwrap();
        }
        let mut env = launch.env.clone();
        env.push((
            "NOTIFY_SOCKET".to_string(),
            path.to_string_lossy().into_owned(),
        ));
        for _ in 0..5 {
            let port = free_port();
            let words = with_port(args, port);
            let mut plug = Plug::spawn_launched(bin, launch, words, &env, port);
            let mut buf = [0u8; 256];
            if restarting(|| sock.recv(&mut buf)).is_ok_and(|n| buf[..n].starts_with(b"READY=1")) {
                return plug;
            }
            let _ = plug.child.kill();
            plug.stderr.wait_closed();
            let lines = plug.stderr.all();
            if !lines.iter().any(|l| l.contains("cannot listen")) {
                panic!("{} did not start: {lines:?}", bin.name);
            }
        }
        panic!("{}: no free port after 5 tries", bin.name);
    }

    /// Starts `bin` with `words`, through `launch`'s wrapper when it has one (the
    /// wrapper is given plug's path and words, and execs it), with `env`.
    fn spawn_launched(
        bin: &Binary,
        launch: &Launch,
        words: Vec<String>,
        env: &[(String, String)],
        port: u16,
    ) -> Plug {
        match &launch.via {
            None => Plug::spawn_env(bin, &words, env, port),
            Some((program, leading)) => {
                let mut wrapped = leading.clone();
                wrapped.push(bin.path.to_string_lossy().into_owned());
                wrapped.extend(words);
                let wrapper = Binary {
                    name: bin.name,
                    label: bin.label.clone(),
                    path: program.into(),
                };
                Plug::spawn_env(&wrapper, &wrapped, env, port)
            }
        }
    }

    /// Starts `bin` with exactly `args` (no `-d`, no readiness wait).
    pub fn spawn(bin: &Binary, args: &[String], port: u16) -> Plug {
        Plug::spawn_env(bin, args, &[], port)
    }

    /// Starts `bin` with exactly `args` and extra environment variables.
    pub fn spawn_env(bin: &Binary, args: &[String], env: &[(String, String)], port: u16) -> Plug {
        let mut child = Command::new(&bin.path)
            .args(args)
            // systemd variables only when a test sets them (OPT-7).
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDS")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.path.display()));
        let stderr = Lines::capture(child.stderr.take().unwrap());
        let stdout = Lines::capture(child.stdout.take().unwrap());
        Plug {
            child,
            name: bin.name,
            stderr,
            stdout,
            port,
        }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`).
    pub fn signal(&self, signal: i32) {
        send_signal(self.child.id(), signal);
    }

    /// Waits for the process to exit; panics at the deadline.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let status = wait_exit_within_deadline(&mut self.child);
        status.unwrap_or_else(|| panic!("{} did not exit", self.name))
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Plug {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a signal to a process.
pub fn send_signal(pid: u32, signal: i32) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// True while a process with this PID exists.
pub fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

/// Waits until `cond` holds, polling every few milliseconds; false at the deadline.
pub fn eventually(cond: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        thread::sleep(Duration::from_millis(5));
    }
    cond()
}

/// How a backend treats each accepted connection.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Echo everything; shut down writing after the client's EOF.
    Echo,
    /// Send `tag` and a newline, then echo.
    Tagged(String),
    /// Send these bytes, then shut down writing, then read until EOF (kept).
    Send(Vec<u8>),
    /// Read until EOF (kept), then send these bytes and close.
    ReplyAfterEof(Vec<u8>),
    /// Read one byte, then reset the connection.
    Reset,
    /// Send 64 KiB chunks as fast as the client takes them, until it goes away.
    Flood,
}

/// A loopback server, stopped when dropped.
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    accepted: Arc<Mutex<Vec<SocketAddr>>>,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    open: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl Backend {
    /// Starts a backend on 127.0.0.1 with an ephemeral port.
    pub fn start(behaviour: Behaviour) -> Backend {
        Backend::start_on("127.0.0.1:0", behaviour)
    }

    /// Starts a backend on `addr`.
    pub fn start_on(addr: &str, behaviour: Behaviour) -> Backend {
        let listener = TcpListener::bind(addr).unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(Mutex::new(vec![]));
        let received = Arc::new(Mutex::new(vec![]));
        let open = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (acc, rec, op, st) = (
            Arc::clone(&accepted),
            Arc::clone(&received),
            Arc::clone(&open),
            Arc::clone(&stop),
        );
        let acceptor = thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                // A client that reset before we got here has no peer any more.
                let Ok(peer) = conn.peer_addr() else { continue };
                acc.lock().unwrap().push(peer);
                let behaviour = behaviour.clone();
                let op = Arc::clone(&op);
                let rec = Arc::clone(&rec);
                op.fetch_add(1, Ordering::SeqCst);
                thread::spawn(move || {
                    let mut kept = vec![];
                    let _ = serve_backend(conn, &behaviour, &mut kept);
                    rec.lock().unwrap().push(kept);
                    op.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Backend {
            addr,
            accepted,
            received,
            open,
            stop,
            acceptor: Some(acceptor),
        }
    }

    /// What each finished connection sent (for `Send` and `ReplyAfterEof`).
    pub fn received(&self) -> Vec<Vec<u8>> {
        self.received.lock().unwrap().clone()
    }

    /// The peer addresses of every connection accepted so far.
    pub fn accepted(&self) -> Vec<SocketAddr> {
        self.accepted.lock().unwrap().clone()
    }

    /// How many connections are being served now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// This backend as a destination argument.
    pub fn dest(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        // The listener closes when its thread ends.
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        // A process another test is spawning right now holds a copy of every
        // descriptor between its fork and exec (CLOEXEC acts only at exec), which
        // keeps the port accepting for a moment: return only once it refuses.
        let deadline = Instant::now() + DEADLINE;
        while Instant::now() < deadline {
            match TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)) {
                Err(_) => break,
                Ok(probe) => {
                    drop(probe);
                    thread::sleep(Duration::from_millis(2));
                }
            }
        }
    }
}

fn serve_backend(mut conn: TcpStream, behaviour: &Behaviour, kept: &mut Vec<u8>) -> io::Result<()> {
    conn.set_read_timeout(Some(DEADLINE * 3))?;
    match behaviour {
        Behaviour::Echo => echo(&mut conn),
        Behaviour::Tagged(tag) => {
            conn.write_all(format!("{tag}\n").as_bytes())?;
            echo(&mut conn)
        }
        Behaviour::Send(bytes) => {
            conn.write_all(bytes)?;
            conn.shutdown(Shutdown::Write)?;
            conn.read_to_end(kept).map(|_| ())
        }
        Behaviour::ReplyAfterEof(bytes) => {
            conn.read_to_end(kept)?;
            conn.write_all(bytes)
        }
        Behaviour::Flood => {
            let chunk = vec![b'f'; 64 * 1024];
            loop {
                conn.write_all(&chunk)?;
            }
        }
        Behaviour::Reset => {
            let mut one = [0u8; 1];
            conn.read_exact(&mut one)?;
            socket2::SockRef::from(&conn).set_linger(Some(Duration::ZERO))
        }
    }
}

fn echo(conn: &mut TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = restarting(|| conn.read(&mut buf))?;
        if n == 0 {
            return conn.shutdown(Shutdown::Write);
        }
        conn.write_all(&buf[..n])?;
    }
}

/// Connects to `addr` with bounded timeouts on every operation.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, DEADLINE)
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.set_write_timeout(Some(DEADLINE)).unwrap();
    s
}

/// Connects from a chosen local address (e.g. 127.0.0.2) to `addr`.
pub fn connect_from(local: &str, addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .unwrap();
    let local: SocketAddr = format!("{local}:0").parse().unwrap();
    socket.bind(&local.into()).unwrap();
    socket.connect_timeout(&addr.into(), DEADLINE).unwrap();
    let s: TcpStream = socket.into();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.set_write_timeout(Some(DEADLINE)).unwrap();
    s
}

/// Makes one socket call, again while it fails with EINTR. A read or recv on a
/// socket with a timeout fails so when the test process is stopped and continued
/// (a debugger, a frozen cgroup, a CI host's checkpoint; signal(7)), with no
/// handler installed: that says nothing about plug, and CI saw it fail tests.
pub fn restarting<T>(mut call: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    for _ in 0..1_000 {
        match call() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            done => return done,
        }
    }
    call()
}

/// How a stream read to its end ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// End of stream: the peer closed cleanly.
    Clean,
    /// The peer reset the connection.
    Reset,
    /// Nothing came for the read timeout.
    Silent,
    /// Another error, as the read reported it.
    Failed(String),
}

/// Reads `s` until it ends: what came, and how it ended, so a failure can say
/// which. Keeps the socket's read timeout (the connect helpers set DEADLINE).
pub fn read_until_end(s: &mut TcpStream) -> (Vec<u8>, End) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    for _ in 0..100_000 {
        match restarting(|| s.read(&mut buf)) {
            Ok(0) => return (got, End::Clean),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => {
                let end = match e.kind() {
                    io::ErrorKind::ConnectionReset => End::Reset,
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => End::Silent,
                    _ => End::Failed(e.to_string()),
                };
                return (got, end);
            }
        }
    }
    (got, End::Failed("no end after 100,000 reads".into()))
}

/// Reads one line (without the newline) from `s`; an error says what was read.
pub fn try_read_line(s: &mut TcpStream) -> Result<String, String> {
    let mut out = vec![];
    let mut byte = [0u8; 1];
    loop {
        match restarting(|| s.read(&mut byte)) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => out.push(byte[0]),
            Err(e) => {
                return Err(format!(
                    "read_line: {e} after {:?}",
                    String::from_utf8_lossy(&out)
                ))
            }
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Reads one line (without the newline) from `s`.
pub fn read_line(s: &mut TcpStream) -> String {
    try_read_line(s).unwrap_or_else(|e| panic!("{e}"))
}

/// Connects through plug to a tagged backend and returns the tag it sent, or the
/// read error in angle brackets (so the caller's assertion can show plug's log).
pub fn which(addr: SocketAddr) -> String {
    let mut s = connect(addr);
    let tag = try_read_line(&mut s).unwrap_or_else(|e| format!("<{e}>"));
    let _ = s.shutdown(Shutdown::Write);
    let mut rest = vec![];
    let _ = s.read_to_end(&mut rest);
    tag
}

/// True when the connection is closed by the other side without any data (EOF or
/// reset) within the deadline.
pub fn closed_without_data(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 16];
    match restarting(|| s.read(&mut buf)) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
        ),
    }
}

/// Deterministic pseudo-random bytes (xorshift), so failures can be reproduced.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Sends `data` on `s` while reading everything back, then returns what was read
/// once the other side closed. Writing half-closes when done.
pub fn exchange(s: TcpStream, data: Vec<u8>) -> Vec<u8> {
    let mut writer = s.try_clone().unwrap();
    let w = thread::spawn(move || {
        writer.write_all(&data).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut got = vec![];
    let mut reader = s;
    reader.read_to_end(&mut got).unwrap();
    w.join().unwrap();
    got
}

/// Sends `data` on `s` while reading the same number of bytes back, without
/// half-closing (for peers such as tinyproxy that end the tunnel on the first EOF).
pub fn round_trip(s: &TcpStream, data: &[u8]) -> Vec<u8> {
    let mut writer = s.try_clone().unwrap();
    let out = data.to_vec();
    let w = thread::spawn(move || writer.write_all(&out).unwrap());
    let mut got = vec![0u8; data.len()];
    let mut reader = s;
    reader.read_exact(&mut got).unwrap();
    w.join().unwrap();
    got
}

/// Parses a session line into its fields after the time stamp.
pub fn session_fields(line: &str) -> BTreeMap<&'static str, String> {
    let rest = line.split_once("] ").map(|(_, r)| r).unwrap_or("");
    let names = ["word", "from", "peer", "to", "in", "out", "duration"];
    names
        .iter()
        .copied()
        .zip(rest.split(' ').map(str::to_string))
        .collect()
}

/// A fresh temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates one under the system temp dir.
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "plug-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// A path inside it.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The rows of the kernel's TCP socket tables `tables` (/proc/net/tcp, tcp6),
/// each split into its fields; a table that cannot be read gives none.
fn proc_tcp_rows(tables: &[&str]) -> Vec<Vec<String>> {
    tables
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .map(|line| line.split_whitespace().map(String::from).collect())
                .collect::<Vec<Vec<String>>>()
        })
        .collect()
}

/// The port of an address field of those tables (`0100007F:1F90`).
fn hex_port(field: &str) -> Option<u16> {
    u16::from_str_radix(field.rsplit(':').next()?, 16).ok()
}

/// The kernel's timer state (`tr` in /proc/net/tcp) of the IPv4 TCP socket with
/// this local and remote port: 0 none, 1 retransmit, 2 keepalive, ...
pub fn tcp_timer(local_port: u16, remote_port: u16) -> Option<u8> {
    proc_tcp_rows(&["/proc/net/tcp"]).iter().find_map(|f| {
        if f.len() > 5
            && hex_port(&f[1]) == Some(local_port)
            && hex_port(&f[2]) == Some(remote_port)
        {
            f[5].split(':').next()?.parse().ok()
        } else {
            None
        }
    })
}

/// The TCP sockets whose local port is `port`, as /proc/net/tcp and tcp6 give
/// them (local and remote address in hex, state in hex: 0A listening, 07
/// closed; inode): for a failure message when a bind that should succeed does
/// not.
pub fn sockets_on_port(port: u16) -> String {
    let found: Vec<String> = proc_tcp_rows(&["/proc/net/tcp", "/proc/net/tcp6"])
        .iter()
        .filter(|f| f.get(1).and_then(|a| hex_port(a)) == Some(port))
        .map(|f| {
            let field = |i: usize| f.get(i).map_or("?", String::as_str);
            format!(
                "{} -> {} state {} inode {}",
                field(1),
                field(2),
                field(3),
                field(9)
            )
        })
        .collect();
    match found.is_empty() {
        true => format!("no TCP socket on port {port}"),
        false => format!("TCP sockets on port {port}: {}", found.join("; ")),
    }
}

/// How many descriptors a process has open.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A process's resident memory in KiB (VmRSS).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The /proc task directories of `pid`'s threads named `name` (plug names the
/// threads tests look at: `writer`, `probe`).
pub fn threads_named(pid: u32, name: &str) -> Vec<PathBuf> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return vec![];
    };
    tasks
        .flatten()
        .map(|task| task.path())
        .filter(|task| {
            std::fs::read_to_string(task.join("comm")).is_ok_and(|comm| comm.trim_end() == name)
        })
        .collect()
}

/// CPU time a process has used (user + system, all threads), in clock ticks
/// (normally 100 per second).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, r)| r.split(' ').collect())
        .unwrap_or_default();
    // After the command name: state is field 0, utime 11, stime 12.
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

/// Runs `command` with `input` on its standard input; its output and status.
pub fn output_with_input(command: &mut Command, input: &[u8]) -> std::process::Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(input);
    child.wait_with_output().unwrap()
}

/// Runs `command` to its end and requires that it succeeded (its output, both
/// streams, in the failure); returns its stdout.
pub fn succeeded(command: &mut Command) -> String {
    let out = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{command:?} failed: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A redis-server of the caller's own on 127.0.0.1 (no persistence), killed
/// when dropped: a real server for real clients through plug.
pub struct RedisServer {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl RedisServer {
    /// Starts `server` (the redis-server program) on a free port and waits
    /// until it accepts.
    pub fn start(server: &Path) -> RedisServer {
        let port = free_port();
        let child = Command::new(server)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", server.display()));
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        assert!(
            eventually(|| TcpStream::connect(addr).is_ok()),
            "redis-server did not start"
        );
        RedisServer { child, addr }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fails unless Prometheus' own checker (`promtool check metrics`, lint
/// included) accepts `text` without a word.
pub fn assert_promtool_accepts(promtool: &Path, text: &str) {
    let out = output_with_input(
        Command::new(promtool).args(["check", "metrics"]),
        text.as_bytes(),
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{text}"
    );
}
