//! The command line (SPEC §1): argv into a validated [`Config`], or version, or help.
//!
//! A getopt-style pre-pass splits clusters (`-nfl`, `-dd`, `-kP file`, `-i10.0.0.1`)
//! and long options (`--name value`, `--name=value`) into one key and one value per
//! option; pico-args then collects them. (pico-args' own combined-flags feature
//! corrupts attached values, so it is not used.) Every value is validated here, with
//! a message naming the bad word (CLI-7).

use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::config::addr::{parse_ip, parse_socket_addr, AddrError, Destination, Source};
use crate::config::rules::{AcceptRule, AcceptRules};
use crate::connection::connect::ProxyCredentials;
use crate::connection::dial::{DialOptions, DEFAULT_CONNECT_TIMEOUT};
use crate::connection::relay::{RelayOptions, DEFAULT_BUFFER_SIZE};
use crate::forwarder::select::{
    Order, SelectPolicy, StickyPolicy, DEFAULT_STICKY_CAPACITY, DEFAULT_STICKY_TIMEOUT,
};

/// Exit status of a normal end (CLI-6).
pub const EXIT_OK: i32 = 0;
/// Exit status of a fatal error: cannot bind, cannot write the pid file, … (CLI-6).
pub const EXIT_FATAL: i32 = 4;
/// Exit status of a usage error (CLI-6).
pub const EXIT_SYNTAX: i32 = 5;

/// The port an upstream proxy listens on when `-h` names none.
pub const DEFAULT_PROXY_PORT: u16 = 80;

/// The largest number of seconds any option takes (about 100 years): far beyond any
/// real use, small enough that adding it to an instant can never overflow.
const MAX_SECONDS: u64 = 3_155_760_000;

/// Single-letter flags of 2.5.5.
const FLAGS: &[u8] = b"nklfodV";
/// Single-letter options that take a value.
const VALUE_OPTIONS: &[u8] = b"PSipahtr";
/// A usage error: exit status 5, a one-line message naming the bad word, then usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    message: String,
}

impl CliError {
    fn new(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
        }
    }

    /// The exit status: always [`EXIT_SYNTAX`].
    pub fn status(&self) -> i32 {
        EXIT_SYNTAX
    }

    /// The message, without the program name.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

impl From<AddrError> for CliError {
    fn from(e: AddrError) -> Self {
        CliError::new(e.to_string())
    }
}

/// Where session lines go (`-S`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionTarget {
    /// `-S -`: standard output (implies `-n`).
    Stdout,
    /// A file, opened anew for every line.
    File(PathBuf),
}

/// The PROXY protocol version of `--proxy-protocol` (OPT-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocol {
    /// The text header.
    V1,
    /// The binary header.
    V2,
}

/// The account of `--user USER[:GROUP]` (PROC-9), as written: names or numeric
/// IDs, looked up by the adapter (the core reads no user database).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSpec {
    /// The user name or numeric UID.
    pub user: String,
    /// The group name or numeric GID; `None`: the user's primary group.
    pub group: Option<String>,
}

impl UserSpec {
    /// Parses `USER[:GROUP]`: each part non-empty, without spaces, control
    /// characters or a second colon.
    pub fn parse(word: &str) -> Result<Self, CliError> {
        let bad = || {
            CliError::new(format!(
                "bad value '{word}' for --user: expected USER or USER:GROUP"
            ))
        };
        let ok = |part: &str| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| !c.is_control() && !c.is_whitespace() && c != ':' && c != '/')
        };
        let (user, group) = match word.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (word, None),
        };
        if !ok(user) || group.is_some_and(|g| !ok(g)) {
            return Err(bad());
        }
        Ok(UserSpec {
            user: user.to_string(),
            group: group.map(str::to_string),
        })
    }
}

impl fmt::Display for UserSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.group {
            Some(g) => write!(f, "{}:{g}", self.user),
            None => f.write_str(&self.user),
        }
    }
}

/// A validated command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where to listen (source argument and `-i`).
    pub source: Source,
    /// Destinations in command-line order.
    pub destinations: Vec<Destination>,
    /// Stay in the foreground: `-n`, `-d` or `-S -`.
    pub foreground: bool,
    /// `-d` count: debug detail on stderr.
    pub debug: u8,
    /// `-l`: log connections to syslog.
    pub log_connections: bool,
    /// `-k`: SO_KEEPALIVE on both sockets.
    pub keepalive: bool,
    /// `-o`, `-f`, `-t`, `-r`.
    pub select: SelectPolicy,
    /// `-P`.
    pub pid_file: Option<PathBuf>,
    /// `-S`.
    pub session: Option<SessionTarget>,
    /// `-a`, in order.
    pub rules: AcceptRules,
    /// `-p`.
    pub bind: Option<IpAddr>,
    /// `-h`.
    pub proxy: Option<SocketAddr>,
    /// `--connect-timeout` (OPT-1).
    pub connect_timeout: Duration,
    /// `--idle-timeout` (OPT-2).
    pub idle_timeout: Option<Duration>,
    /// `--max-conns` (OPT-3); `None` means derived from the descriptor limit.
    pub max_conns: Option<u32>,
    /// `--max-conns-per-ip` (OPT-3).
    pub max_conns_per_ip: Option<u32>,
    /// `--proxy-protocol` (OPT-4).
    pub proxy_protocol: Option<ProxyProtocol>,
    /// `--proxy-auth-file` (OPT-5); the adapter reads it at start.
    pub proxy_auth_file: Option<PathBuf>,
    /// `--drain-timeout` (OPT-8).
    pub drain_timeout: Option<Duration>,
    /// `--user` (PROC-9).
    pub user: Option<UserSpec>,
    /// `--resolve` (OPT-11): host-name destinations, looked up this often.
    pub resolve: Option<Duration>,
    /// `--health-check` (OPT-10): every destination probed this often.
    pub health_check: Option<Duration>,
    /// `--metrics` (OPT-9): where `/metrics` is served.
    pub metrics: Option<SocketAddr>,
    /// `--check` (OPT-14): validate as a start would, say so, and exit; bind,
    /// connect, resolve, write and detach nothing.
    pub check: bool,
    /// `--config` (OPT-13): the file the listeners came from, re-read on SIGHUP.
    pub config_file: Option<PathBuf>,
}

impl Config {
    /// The dialing settings, with the credentials read from `--proxy-auth-file`.
    pub(crate) fn dial_options(&self, credentials: Option<ProxyCredentials>) -> DialOptions {
        DialOptions {
            proxy: self.proxy,
            bind: self.bind,
            connect_timeout: self.connect_timeout,
            credentials,
        }
    }

    /// The relay settings.
    pub(crate) fn relay_options(&self) -> RelayOptions {
        RelayOptions {
            buffer_size: DEFAULT_BUFFER_SIZE,
            idle_timeout: self.idle_timeout,
        }
    }

    /// The configuration as `-dd` shows it at start, one line per topic;
    /// `max_conns` is the `--max-conns` in force (derived when not given).
    pub fn describe(&self, max_conns: usize) -> Vec<String> {
        fn secs(d: Option<Duration>) -> String {
            d.map_or("off".to_string(), |d| format!("{}s", d.as_secs()))
        }
        fn or_none<T: fmt::Display>(v: Option<&T>) -> String {
            v.map_or("none".to_string(), ToString::to_string)
        }
        let dests: Vec<String> = self.destinations.iter().map(ToString::to_string).collect();
        let order = match self.select.order {
            Order::RoundRobin => "round robin",
            Order::FirstHealthy => "first healthy (-o)",
        };
        let sticky = match self.select.sticky {
            Some(_) if self.select.hash => "by rendezvous hash of the client address".to_string(),
            Some(s) => format!("{}s, at most {} clients", s.timeout.as_secs(), s.capacity),
            None => "off".to_string(),
        };
        let retry = match self.select.retry {
            Some(r) => format!("after {}s", r.as_secs()),
            None => "once all have failed".to_string(),
        };
        let session = match &self.session {
            None => "none".to_string(),
            Some(SessionTarget::Stdout) => "stdout".to_string(),
            Some(SessionTarget::File(p)) => p.display().to_string(),
        };
        let path = |p: &Option<PathBuf>| {
            p.as_ref()
                .map_or("none".into(), |p| p.display().to_string())
        };
        let protocol = match self.proxy_protocol {
            None => "off",
            Some(ProxyProtocol::V1) => "v1",
            Some(ProxyProtocol::V2) => "v2",
        };
        vec![
            format!(
                "config: listen {} (tag {}), destinations {}",
                self.source.bind_addr(),
                self.source.log_tag(),
                dests.join(" ")
            ),
            format!("config: order {order}, sticky {sticky}, retry a failed destination {retry}"),
            format!(
                "config: connect timeout {}s, idle timeout {}, drain timeout {}",
                self.connect_timeout.as_secs(),
                secs(self.idle_timeout),
                secs(self.drain_timeout)
            ),
            format!(
                "config: max conns {max_conns}, per ip {}, accept rules {}",
                or_none(self.max_conns_per_ip.as_ref()),
                match self.rules.rules() {
                    [] => "none (every client)".to_string(),
                    rules => rules.iter().map(ToString::to_string).collect::<Vec<_>>().join(" "),
                }
            ),
            format!(
                "config: proxy {}, proxy auth file {}, bind {}, proxy protocol {protocol}, keepalive {}",
                or_none(self.proxy.as_ref()),
                path(&self.proxy_auth_file),
                or_none(self.bind.as_ref()),
                if self.keepalive { "on" } else { "off" }
            ),
            format!(
                "config: metrics {}, health checks {}, resolve names {}",
                or_none(self.metrics.as_ref()),
                secs(self.health_check),
                secs(self.resolve)
            ),
            format!(
                "config: session file {session}, pid file {}, user {}, syslog {}",
                path(&self.pid_file),
                or_none(self.user.as_ref()),
                if self.log_connections { "on" } else { "off" }
            ),
        ]
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Serve with this configuration.
    Run(Box<Config>),
    /// `-V`: print [`crate::reports::log::version`] on stdout and exit 0.
    Version,
    /// `--version`: the same, as GNU programs print it (no `PROG: `).
    LongVersion,
    /// `--help`: print [`help`] on stdout and exit 0.
    Help,
    /// `--config FILE` (OPT-13): read the file, then make its listeners with
    /// [`crate::config::file::parse`].
    RunFile(Box<FileStart>),
}

/// A start with `--config` (OPT-13), before the file is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStart {
    /// The file named by `--config`.
    pub file: PathBuf,
    /// `--check`: validate and exit (OPT-14).
    pub check: bool,
    /// The command line's options, every line's defaults.
    pub defaults: Defaults,
}

/// The options given on the command line, as every line of a `--config` file
/// starts from them (OPT-13).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Defaults {
    opts: Vec<Opt>,
}

/// Options that belong to the whole process: on a `--config` line they are an
/// error (OPT-13).
const PROCESS_WIDE: &[&str] = &[
    "-n",
    "-d",
    "-l",
    "-P",
    "--user",
    "--metrics",
    "--max-conns",
    "--drain-timeout",
    "--config",
    "--check",
];

/// Makes the configuration of the listener one `--config` line describes
/// (`words`: the line split at blanks, comment removed): the command line's
/// options, overridden by the line's own (its `-a` rules replace the command
/// line's), then the line's `source dest...` (OPT-13).
pub(crate) fn listener_from_line(
    defaults: &Defaults,
    words: &[String],
) -> Result<Config, CliError> {
    let (line_opts, positionals) = match pre_pass(words)? {
        PrePass::Parsed { opts, positionals } => (opts, positionals),
        PrePass::Early(_) => {
            return Err(CliError::new(
                "-V, --version and --help belong on the command line",
            ))
        }
    };
    if let Some(o) = line_opts.iter().find(|o| PROCESS_WIDE.contains(&o.key)) {
        return Err(CliError::new(format!(
            "option {} applies to the whole process: give it on the command line",
            o.key
        )));
    }
    let own_rules = line_opts.iter().any(|o| o.key == "-a");
    let mut opts: Vec<Opt> = defaults
        .opts
        .iter()
        .filter(|o| !(own_rules && o.key == "-a") && o.key != "--config")
        .cloned()
        .collect();
    opts.extend(line_opts);
    let mut config = assemble(values(opts)?, positionals)?;
    config.config_file = defaults
        .opts
        .iter()
        .rev()
        .find(|o| o.key == "--config")
        .and_then(|o| o.value.clone())
        .map(PathBuf::from);
    Ok(config)
}

/// The usage summary printed after a syntax error.
pub fn usage(program: &str) -> String {
    let pad = " ".repeat(program.len());
    format!(
        "usage: {program} -V\n       {program} [options] --config file\n       {program} [-nklfod...] [-P pidfile] [-S sessionfile] [-i listenaddr] [-p bindaddr]\n       {pad} [-a net[/bits]]... [-h proxy[:port]] [-t seconds] [-r seconds] [--option value]...\n       {pad} source dest[:port] [dest[:port]]...\n"
    )
}

/// The text of `--help`.
pub fn help(program: &str) -> String {
    format!(
        "{}\n\
source:       port, :port, *:port, addr:port or [v6addr]:port\n\
dest:         addr[:port] or [v6addr][:port]; the port defaults to the source port;\n\
              ,weight=N and ,drain may follow (smooth weighted rotation, no new clients)\n\
  -n          stay in the foreground          -d  debug to stderr (repeat for more)\n\
  -l          log connections to syslog       -k  SO_KEEPALIVE on both sockets\n\
  -f          keep clients on one destination -o  always the first healthy destination\n\
  -V          print the version and exit\n\
  -P file     pid file                        -S file   session file (- = stdout)\n\
  -i addr     listen address                  -p addr   bind outgoing connections to addr\n\
  -a net[/bits]  accept only these clients (repeatable)\n\
  -h addr[:port] connect through this HTTP CONNECT proxy (port 80 by default)\n\
  -t secs     sticky timeout (3600)           -r secs   retry a dead destination after secs\n\
  --connect-timeout secs (10)   --idle-timeout secs   --drain-timeout secs\n\
  --max-conns n   --max-conns-per-ip n   --proxy-protocol v1|v2   --proxy-auth-file file\n\
  --user user[:group]  drop root for this account once listening\n\
  --hash      with -f: choose by a hash of the client address, the same in every plug\n\
  --resolve secs  destinations may be host names, looked up now and every secs\n\
  --health-check secs  probe every destination this often (a connect, or CONNECT with -h)\n\
  --metrics addr:port  serve Prometheus metrics at http://addr:port/metrics\n\
  --config file  listeners from file, one per line (SIGHUP reloads it)\n\
  --check     check the command line (and the files it names), bind nothing, exit\n\
  --help      print this help and exit\n",
        usage(program)
    )
}

/// One option after the pre-pass: a key pico-args knows and its value, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Opt {
    key: &'static str,
    value: Option<String>,
}

/// The pre-pass result: options in order, positionals in order, or an early action.
enum PrePass {
    Parsed {
        opts: Vec<Opt>,
        positionals: Vec<String>,
    },
    Early(Action),
}

/// The key of a short option other than `-V`, which acts where it appears
/// (CLI-1) and never becomes an option.
fn short_key(c: u8) -> &'static str {
    match c {
        b'n' => "-n",
        b'k' => "-k",
        b'l' => "-l",
        b'f' => "-f",
        b'o' => "-o",
        b'd' => "-d",
        b'P' => "-P",
        b'S' => "-S",
        b'i' => "-i",
        b'p' => "-p",
        b'a' => "-a",
        b'h' => "-h",
        b't' => "-t",
        _ => "-r",
    }
}

/// Every long option's name, for suggestions.
const LONG_NAMES: &[&str] = &[
    "connect-timeout",
    "idle-timeout",
    "max-conns",
    "max-conns-per-ip",
    "proxy-protocol",
    "proxy-auth-file",
    "drain-timeout",
    "user",
    "resolve",
    "health-check",
    "metrics",
    "config",
    "check",
    "hash",
    "help",
    "version",
];

/// The long option an operator most likely meant by `name`: the closest by
/// edit distance, if it is close (at most 2 edits, and fewer than half the
/// word), so a typo gets a suggestion and a wholly other word does not.
fn suggestion(name: &str) -> Option<&'static str> {
    let (best, distance) = LONG_NAMES
        .iter()
        .map(|&known| (known, edit_distance(name, known)))
        .min_by_key(|&(_, d)| d)?;
    (distance <= 2 && distance * 2 < name.len().max(1)).then_some(best)
}

/// Levenshtein distance between two words (insertions, deletions, changes).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// The long options that take a value (CLI-9, §6).
fn long_key(name: &str) -> Option<&'static str> {
    match name {
        "connect-timeout" => Some("--connect-timeout"),
        "idle-timeout" => Some("--idle-timeout"),
        "max-conns" => Some("--max-conns"),
        "max-conns-per-ip" => Some("--max-conns-per-ip"),
        "proxy-protocol" => Some("--proxy-protocol"),
        "proxy-auth-file" => Some("--proxy-auth-file"),
        "drain-timeout" => Some("--drain-timeout"),
        "user" => Some("--user"),
        "resolve" => Some("--resolve"),
        "health-check" => Some("--health-check"),
        "metrics" => Some("--metrics"),
        "config" => Some("--config"),
        _ => None,
    }
}

/// Splits clusters and long options; `-V` and `--help` act where they appear.
fn pre_pass(words: &[String]) -> Result<PrePass, CliError> {
    let mut opts = Vec::new();
    let mut positionals = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let word = &words[i];
        i += 1;
        if word == "--" {
            positionals.extend(words[i..].iter().cloned());
            break;
        }
        if let Some(long) = word.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            if ["help", "hash", "version", "check"].contains(&name) {
                if inline.is_some() {
                    return Err(CliError::new(format!("option --{name} takes no value")));
                }
                if name == "help" {
                    return Ok(PrePass::Early(Action::Help));
                }
                if name == "version" {
                    return Ok(PrePass::Early(Action::LongVersion));
                }
                opts.push(Opt {
                    key: if name == "hash" { "--hash" } else { "--check" },
                    value: None,
                });
                continue;
            }
            let key = long_key(name).ok_or_else(|| {
                let hint = suggestion(name)
                    .map(|s| format!(" (did you mean '--{s}'?)"))
                    .unwrap_or_default();
                CliError::new(format!("unknown option '--{name}'{hint}"))
            })?;
            let value = match inline {
                Some(v) => v,
                None if i < words.len() => {
                    i += 1;
                    words[i - 1].clone()
                }
                None => return Err(CliError::new(format!("option --{name} needs a value"))),
            };
            opts.push(Opt {
                key,
                value: Some(value),
            });
            continue;
        }
        let Some(cluster) = word.strip_prefix('-').filter(|c| !c.is_empty()) else {
            positionals.push(word.clone());
            continue;
        };
        let bytes = cluster.as_bytes();
        for (at, &c) in bytes.iter().enumerate() {
            if FLAGS.contains(&c) {
                if c == b'V' {
                    return Ok(PrePass::Early(Action::Version));
                }
                opts.push(Opt {
                    key: short_key(c),
                    value: None,
                });
            } else if VALUE_OPTIONS.contains(&c) {
                // A value option takes the rest of its word, or else the next word.
                let rest = &cluster[at + 1..];
                let value = if !rest.is_empty() {
                    rest.to_string()
                } else if i < words.len() {
                    i += 1;
                    words[i - 1].clone()
                } else {
                    return Err(CliError::new(format!(
                        "option -{} needs a value",
                        char::from(c)
                    )));
                };
                opts.push(Opt {
                    key: short_key(c),
                    value: Some(value),
                });
                break;
            } else {
                let shown: String = cluster[at..]
                    .chars()
                    .next()
                    .map(String::from)
                    .unwrap_or_default();
                return Err(CliError::new(format!(
                    "unknown option '-{shown}' in '{word}'"
                )));
            }
        }
    }
    Ok(PrePass::Parsed { opts, positionals })
}

/// Marks a value so that pico-args can never take it for a key: every key starts
/// with `-`, every marked value with `=`.
fn mark(value: &str) -> OsString {
    OsString::from(format!("={value}"))
}

fn unmark(marked: &str) -> Result<String, &'static str> {
    marked
        .strip_prefix('=')
        .map(str::to_string)
        .ok_or("value lost its marker")
}

/// Collects the pre-pass output with pico-args: flags counted, values gathered in
/// order per key.
struct Collected {
    args: pico_args::Arguments,
}

impl Collected {
    fn new(opts: Vec<Opt>) -> Self {
        let mut tokens = Vec::with_capacity(opts.len() * 2);
        for opt in opts {
            tokens.push(OsString::from(opt.key));
            if let Some(v) = opt.value {
                tokens.push(mark(&v));
            }
        }
        Collected {
            args: pico_args::Arguments::from_vec(tokens),
        }
    }

    fn values(&mut self, key: &'static str) -> Result<Vec<String>, CliError> {
        self.args
            .values_from_fn(key, unmark)
            .map_err(|e| CliError::new(format!("option {key}: {e}")))
    }

    fn last(&mut self, key: &'static str) -> Result<Option<String>, CliError> {
        Ok(self.values(key)?.pop())
    }

    fn count(&mut self, key: &'static str) -> usize {
        let mut n = 0;
        while self.args.contains(key) {
            n += 1;
        }
        n
    }
}

fn seconds(option: &str, word: &str, min: u64) -> Result<Duration, CliError> {
    let bad = || {
        CliError::new(format!(
            "bad value '{word}' for {option}: expected whole seconds from {min} to {MAX_SECONDS}"
        ))
    };
    // Digits only: Rust's parser would also take `+5`. An empty or too long
    // word fails the parse or the range below.
    if !word.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match word.parse::<u64>() {
        Ok(s) if (min..=MAX_SECONDS).contains(&s) => Ok(Duration::from_secs(s)),
        _ => Err(bad()),
    }
}

fn count_value(option: &str, word: &str) -> Result<u32, CliError> {
    match word.parse::<u32>() {
        Ok(n) if n >= 1 && word.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(CliError::new(format!(
            "bad value '{word}' for {option}: expected a whole number from 1 to {}",
            u32::MAX
        ))),
    }
}

fn path(option: &str, word: String) -> Result<PathBuf, CliError> {
    if word.is_empty() {
        return Err(CliError::new(format!("option {option} needs a file name")));
    }
    Ok(PathBuf::from(word))
}

fn ip(option: &str, word: &str) -> Result<IpAddr, CliError> {
    parse_ip(word).map_err(|e| CliError::new(format!("option {option}: {e}")))
}

/// Parses the arguments after the program name (CLI-1 … CLI-9).
pub fn parse(args: Vec<OsString>) -> Result<Action, CliError> {
    let mut words = Vec::with_capacity(args.len());
    for a in args {
        match a.into_string() {
            Ok(s) => words.push(s),
            Err(raw) => {
                return Err(CliError::new(format!(
                    "argument '{}' is not valid UTF-8",
                    raw.to_string_lossy()
                )))
            }
        }
    }
    let (opts, positionals) = match pre_pass(&words)? {
        PrePass::Early(action) => return Ok(action),
        PrePass::Parsed { opts, positionals } => (opts, positionals),
    };
    if opts.iter().any(|o| o.key == "--config") {
        // The command line's own values are checked now, once; a line's are
        // checked with them when the file is read (OPT-13).
        let v = values(opts.clone())?;
        if let Some(extra) = positionals.first() {
            return Err(CliError::new(format!(
                "unexpected argument '{extra}': with --config the listeners come from the file"
            )));
        }
        let file = v.config_file.unwrap_or_default();
        return Ok(Action::RunFile(Box::new(FileStart {
            file,
            check: v.check,
            defaults: Defaults { opts },
        })));
    }
    assemble(values(opts)?, positionals).map(|c| Action::Run(Box::new(c)))
}

/// Every option's value, each checked on its own (CLI-7); what depends on the
/// source, the destinations or other options is checked by [`assemble`].
struct Values {
    pid_file: Option<PathBuf>,
    session: Option<SessionTarget>,
    listen: Option<IpAddr>,
    bind: Option<IpAddr>,
    rules: Vec<AcceptRule>,
    proxy: Option<SocketAddr>,
    sticky_timeout: Option<Duration>,
    retry: Option<Duration>,
    connect_timeout: Duration,
    idle_timeout: Option<Duration>,
    resolve: Option<Duration>,
    health_check: Option<Duration>,
    metrics: Option<SocketAddr>,
    drain_timeout: Option<Duration>,
    max_conns: Option<u32>,
    max_conns_per_ip: Option<u32>,
    proxy_protocol: Option<ProxyProtocol>,
    proxy_auth_file: Option<PathBuf>,
    user: Option<UserSpec>,
    config_file: Option<PathBuf>,
    foreground_flag: bool,
    debug: u8,
    log_connections: bool,
    keepalive: bool,
    sticky: bool,
    first_healthy: bool,
    hash: bool,
    check: bool,
}

/// Collects and checks the options' values.
fn values(opts: Vec<Opt>) -> Result<Values, CliError> {
    let mut c = Collected::new(opts);

    // Values first, then flags: the keys are unambiguous either way, but this is
    // the order pico-args documents.
    let pid_file = c.last("-P")?.map(|w| path("-P", w)).transpose()?;
    let session = match c.last("-S")? {
        None => None,
        Some(w) if w == "-" => Some(SessionTarget::Stdout),
        Some(w) => Some(SessionTarget::File(path("-S", w)?)),
    };
    let listen = c.last("-i")?.map(|w| ip("-i", &w)).transpose()?;
    let bind = c.last("-p")?.map(|w| ip("-p", &w)).transpose()?;
    let rules = c
        .values("-a")?
        .iter()
        .map(|w| AcceptRule::parse(w).map_err(|e| CliError::new(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let proxy = c
        .last("-h")?
        .map(|w| {
            parse_socket_addr(&w, DEFAULT_PROXY_PORT)
                .map_err(|e| CliError::new(format!("option -h: {e}")))
        })
        .transpose()?;
    let sticky_timeout = c.last("-t")?.map(|w| seconds("-t", &w, 0)).transpose()?;
    let retry = c.last("-r")?.map(|w| seconds("-r", &w, 0)).transpose()?;
    let connect_timeout = c
        .last("--connect-timeout")?
        .map(|w| seconds("--connect-timeout", &w, 1))
        .transpose()?
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let idle_timeout = c
        .last("--idle-timeout")?
        .map(|w| seconds("--idle-timeout", &w, 1))
        .transpose()?;
    let resolve = c
        .last("--resolve")?
        .map(|w| seconds("--resolve", &w, 1))
        .transpose()?;
    let health_check = c
        .last("--health-check")?
        .map(|w| seconds("--health-check", &w, 1))
        .transpose()?;
    let metrics = c
        .last("--metrics")?
        .map(|w| {
            Source::parse(&w)
                .map(|s| s.bind_addr())
                .map_err(|e| CliError::new(format!("option --metrics: {e}")))
        })
        .transpose()?;
    let drain_timeout = c
        .last("--drain-timeout")?
        .map(|w| seconds("--drain-timeout", &w, 0))
        .transpose()?;
    let max_conns = c
        .last("--max-conns")?
        .map(|w| count_value("--max-conns", &w))
        .transpose()?;
    let max_conns_per_ip = c
        .last("--max-conns-per-ip")?
        .map(|w| count_value("--max-conns-per-ip", &w))
        .transpose()?;
    let proxy_protocol = match c.last("--proxy-protocol")?.as_deref() {
        None => None,
        Some("v1") => Some(ProxyProtocol::V1),
        Some("v2") => Some(ProxyProtocol::V2),
        Some(w) => {
            return Err(CliError::new(format!(
                "bad value '{w}' for --proxy-protocol: expected v1 or v2"
            )))
        }
    };
    let proxy_auth_file = c
        .last("--proxy-auth-file")?
        .map(|w| path("--proxy-auth-file", w))
        .transpose()?;
    let user = c.last("--user")?.map(|w| UserSpec::parse(&w)).transpose()?;

    let config_file = c
        .last("--config")?
        .map(|w| path("--config", w))
        .transpose()?;
    let foreground_flag = c.count("-n") > 0;
    let debug = u8::try_from(c.count("-d")).unwrap_or(u8::MAX);
    let log_connections = c.count("-l") > 0;
    let keepalive = c.count("-k") > 0;
    let sticky = c.count("-f") > 0;
    let first_healthy = c.count("-o") > 0;
    let hash = c.count("--hash") > 0;
    let check = c.count("--check") > 0;
    let left = c.args.finish();
    if let Some(extra) = left.first() {
        return Err(CliError::new(format!(
            "unexpected argument '{}'",
            extra.to_string_lossy()
        )));
    }

    Ok(Values {
        pid_file,
        session,
        listen,
        bind,
        rules,
        proxy,
        sticky_timeout,
        retry,
        connect_timeout,
        idle_timeout,
        resolve,
        health_check,
        metrics,
        drain_timeout,
        max_conns,
        max_conns_per_ip,
        proxy_protocol,
        proxy_auth_file,
        user,
        config_file,
        foreground_flag,
        debug,
        log_connections,
        keepalive,
        sticky,
        first_healthy,
        hash,
        check,
    })
}

/// Makes the configuration of one listener from the options' values and its
/// `source dest...` words, checking what depends on them together.
fn assemble(v: Values, positionals: Vec<String>) -> Result<Config, CliError> {
    let Values {
        pid_file,
        session,
        listen,
        bind,
        rules,
        proxy,
        sticky_timeout,
        retry,
        connect_timeout,
        idle_timeout,
        resolve,
        health_check,
        metrics,
        drain_timeout,
        max_conns,
        max_conns_per_ip,
        proxy_protocol,
        proxy_auth_file,
        user,
        config_file,
        foreground_flag,
        debug,
        log_connections,
        keepalive,
        sticky,
        first_healthy,
        hash,
        check,
    } = v;
    let mut positionals = positionals.into_iter();
    let Some(source_word) = positionals.next() else {
        return Err(CliError::new("missing source port and destination"));
    };
    let mut source = Source::parse(&source_word)?;
    if let Some(addr) = listen {
        match source.addr {
            Some(given) if given != addr => {
                return Err(CliError::new(format!(
                    "listen address given twice: -i {addr} and source '{source_word}'"
                )))
            }
            _ => source.addr = Some(addr),
        }
    }
    if resolve.is_some() && proxy.is_some() {
        return Err(CliError::new(
            "--resolve has nothing to do with -h: the proxy resolves the names",
        ));
    }
    // Names only where something resolves them: the proxy, or --resolve (CLI-5).
    let names = proxy.is_some() || resolve.is_some();
    let destinations = positionals
        .map(|w| Destination::parse(&w, source.port, names))
        .collect::<Result<Vec<_>, _>>()?;
    if destinations.is_empty() {
        return Err(CliError::new("missing destination"));
    }
    if proxy_auth_file.is_some() && proxy.is_none() {
        return Err(CliError::new(
            "--proxy-auth-file needs an upstream proxy (-h)",
        ));
    }
    if let Some(b) = bind {
        // An outgoing socket bound to one family cannot reach the other.
        let reached: Vec<SocketAddr> = match proxy {
            Some(p) => vec![p],
            None => destinations
                .iter()
                .filter_map(Destination::socket_addr)
                .collect(),
        };
        if let Some(bad) = reached.iter().find(|a| a.is_ipv4() != b.is_ipv4()) {
            return Err(CliError::new(format!(
                "-p {b} cannot reach {bad}: address families differ"
            )));
        }
    }

    if hash && !sticky {
        return Err(CliError::new(
            "--hash chooses sticky destinations: it needs -f",
        ));
    }
    let select = SelectPolicy {
        order: if first_healthy {
            Order::FirstHealthy
        } else {
            Order::RoundRobin
        },
        retry,
        sticky: sticky.then(|| StickyPolicy {
            timeout: sticky_timeout.unwrap_or(DEFAULT_STICKY_TIMEOUT),
            capacity: DEFAULT_STICKY_CAPACITY,
        }),
        hash,
    };
    let foreground = foreground_flag || debug > 0 || session == Some(SessionTarget::Stdout);
    Ok(Config {
        source,
        destinations,
        foreground,
        debug,
        log_connections,
        keepalive,
        select,
        pid_file,
        session,
        rules: AcceptRules::new(rules),
        bind,
        proxy,
        connect_timeout,
        idle_timeout,
        max_conns,
        max_conns_per_ip,
        proxy_protocol,
        proxy_auth_file,
        drain_timeout,
        user,
        resolve,
        health_check,
        metrics,
        check,
        config_file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::addr::Host;
    use proptest::prelude::*;

    fn args(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    fn run(words: &[&str]) -> Config {
        match parse(args(words)) {
            Ok(Action::Run(c)) => *c,
            other => panic!("{words:?} gave {other:?}"),
        }
    }

    fn err(words: &[&str]) -> String {
        match parse(args(words)) {
            Err(e) => {
                assert_eq!(e.status(), EXIT_SYNTAX);
                e.to_string()
            }
            other => panic!("{words:?} gave {other:?}"),
        }
    }

    #[test]
    fn classic_forms_cli_1_cli_4() {
        let c = run(&["8080", "10.0.0.5:80", "10.0.0.6"]);
        assert_eq!(
            c.source,
            Source {
                addr: None,
                port: 8080
            }
        );
        assert_eq!(c.destinations[0].to_string(), "10.0.0.5:80");
        assert_eq!(c.destinations[1].to_string(), "10.0.0.6:8080");
        assert!(!c.foreground);
        assert_eq!(c.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(c.select, SelectPolicy::default());
        let c = run(&["-i", "192.168.0.14", "119", "10.0.3.15"]);
        assert_eq!(c.source.session_text(), "192.168.0.14:119");
    }

    #[test]
    fn clusters_and_attached_values_cli_1() {
        let c = run(&[
            "-nfl",
            "-dd",
            "-kP",
            "/run/plug.pid",
            "-i10.0.0.1",
            "80",
            "10.0.0.5",
        ]);
        assert!(c.foreground && c.log_connections && c.keepalive);
        assert_eq!(c.debug, 2);
        assert!(c.select.sticky.is_some());
        assert_eq!(c.pid_file, Some(PathBuf::from("/run/plug.pid")));
        assert_eq!(c.source.addr, Some("10.0.0.1".parse().unwrap()));
        // A value may itself look like an option.
        let c = run(&["-S", "-", "-P", "-n", "80", "10.0.0.5"]);
        assert_eq!(c.session, Some(SessionTarget::Stdout));
        assert_eq!(c.pid_file, Some(PathBuf::from("-n")));
        assert!(c.foreground, "-S - implies -n");
    }

    #[test]
    fn interleaving_repeats_and_accumulation_cli_1() {
        let c = run(&[
            "80",
            "-t",
            "5",
            "10.0.0.5",
            "-a",
            "10.0.0.0/8",
            "-t10",
            "10.0.0.6",
            "-a127.0.0.1",
        ]);
        assert_eq!(c.destinations.len(), 2);
        assert_eq!(c.select.sticky, None, "-t alone does not turn on -f");
        let c = run(&["-f", "80", "-t", "5", "10.0.0.5", "-t10"]);
        assert_eq!(c.select.sticky.unwrap().timeout, Duration::from_secs(10));
        let c = run(&["80", "-a", "10.0.0.0/8", "10.0.0.5", "-a127.0.0.1"]);
        assert_eq!(c.rules.rules().len(), 2);
        assert!(c.rules.allows("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn check_is_a_flag_opt_14() {
        let run = |w: &[&str]| match parse(args(w)) {
            Ok(Action::Run(c)) => c.check,
            other => panic!("{other:?}"),
        };
        assert!(run(&["--check", "8080", "127.0.0.1:80"]));
        assert!(!run(&["8080", "127.0.0.1:80"]));
        assert!(parse(args(&["--check=yes", "8080", "127.0.0.1:80"])).is_err());
    }

    #[test]
    fn a_mistyped_long_option_gets_a_suggestion_cli_9() {
        let err = |w: &[&str]| parse(args(w)).unwrap_err().to_string();
        let e = err(&["--conect-timeout", "5", "8080", "127.0.0.1:80"]);
        assert!(
            e.contains("unknown option '--conect-timeout' (did you mean '--connect-timeout'?)"),
            "{e}"
        );
        let e = err(&["--max-con", "5", "8080", "127.0.0.1:80"]);
        assert!(e.contains("did you mean '--max-conns'?"), "{e}");
        let e = err(&["--vesion"]);
        assert!(e.contains("did you mean '--version'?"), "{e}");
        // A word that is no option's name gets no guess.
        let e = err(&["--frobnicate", "8080", "127.0.0.1:80"]);
        assert!(!e.contains("did you mean"), "{e}");
        let e = err(&["--x", "8080", "127.0.0.1:80"]);
        assert!(!e.contains("did you mean"), "{e}");
    }

    /// Seconds are decimal digits only, within range, whatever their length.
    #[test]
    fn seconds_are_digits_within_range_cli_7() {
        assert_eq!(seconds("-t", "007", 1), Ok(Duration::from_secs(7)));
        assert_eq!(
            seconds("-t", "00000000000000000007", 1),
            Ok(Duration::from_secs(7))
        );
        assert_eq!(
            seconds("-t", "3155760000", 1),
            Ok(Duration::from_secs(3_155_760_000))
        );
        for bad in [
            "",
            "+5",
            "-5",
            " 5",
            "5s",
            "3155760001",
            "99999999999999999999999",
        ] {
            let e = seconds("-t", bad, 1).unwrap_err();
            assert_eq!(
                e.message(),
                format!("bad value '{bad}' for -t: expected whole seconds from 1 to 3155760000")
            );
        }
        assert!(seconds("-r", "0", 1).is_err());
        assert_eq!(seconds("--drain-timeout", "0", 0), Ok(Duration::ZERO));
    }

    /// An option that takes a value, last on the line with none, is named in a
    /// syntax error (CLI-7), long or short.
    #[test]
    fn a_value_option_last_without_its_value_is_an_error_cli_7_cli_9() {
        let err = |w: &[&str]| parse(args(w)).unwrap_err();
        let e = err(&["8080", "127.0.0.1:80", "--idle-timeout"]);
        assert_eq!(e.message(), "option --idle-timeout needs a value");
        assert_eq!(e.status(), 5, "a syntax error (CLI-6)");
        let e = err(&["8080", "127.0.0.1:80", "-t"]);
        assert_eq!(e.message(), "option -t needs a value");
    }

    /// The guess is the closest name at most 2 edits away, and fewer edits
    /// than half the word, so a short word is not "corrected" into another.
    #[test]
    fn a_suggestion_is_close_in_edits_and_in_proportion_cli_9() {
        // Levenshtein distances as the textbook gives them.
        for (a, b, d) in [
            ("kitten", "sitting", 3),
            ("flaw", "lawn", 2),
            ("", "abc", 3),
            ("abc", "", 3),
            ("abc", "abc", 0),
            ("ab", "ba", 2),
            ("hash", "hah", 1),
        ] {
            assert_eq!(edit_distance(a, b), d, "{a} / {b}");
        }
        assert_eq!(suggestion("hah"), Some("hash"), "1 edit in 3 letters");
        assert_eq!(
            suggestion("haxx"),
            None,
            "2 edits in 4 letters is half the word"
        );
        assert_eq!(suggestion("haxxy"), None, "3 edits");
        assert_eq!(suggestion("hasxx"), Some("hash"), "2 edits in 5 letters");
        assert_eq!(
            suggestion("connect-timeoutxyz"),
            None,
            "3 edits are too many even in a long word"
        );
    }

    #[test]
    fn version_acts_where_it_appears_cli_1() {
        assert_eq!(parse(args(&["-V"])), Ok(Action::Version));
        assert_eq!(
            parse(args(&["--version", "--bogus"])),
            Ok(Action::LongVersion)
        );
        assert_eq!(
            parse(args(&["-nV", "-t", "abc", "--bogus"])),
            Ok(Action::Version)
        );
        assert_eq!(parse(args(&["-t", "abc", "-V"])), Ok(Action::Version));
        assert!(
            parse(args(&["-x", "-V"])).is_err(),
            "an earlier unknown option wins"
        );
        assert_eq!(parse(args(&["80", "--help", "junk"])), Ok(Action::Help));
    }

    #[test]
    fn flags_cli_2() {
        let c = run(&["-o", "-r", "30", "80", "10.0.0.5"]);
        assert_eq!(c.select.order, Order::FirstHealthy);
        assert_eq!(c.select.retry, Some(Duration::from_secs(30)));
        let c = run(&["-d", "80", "10.0.0.5"]);
        assert!(c.foreground, "-d implies -n");
        let c = run(&["-f", "80", "10.0.0.5"]);
        assert_eq!(
            c.select.sticky,
            Some(StickyPolicy {
                timeout: DEFAULT_STICKY_TIMEOUT,
                capacity: DEFAULT_STICKY_CAPACITY
            })
        );
    }

    #[test]
    fn value_options_cli_3() {
        let c = run(&[
            "-p",
            "127.0.0.3",
            "-h",
            "127.0.0.1",
            "-S",
            "/tmp/s",
            "80",
            "example.com:443",
        ]);
        assert_eq!(c.bind, Some("127.0.0.3".parse().unwrap()));
        assert_eq!(c.proxy, Some("127.0.0.1:80".parse().unwrap()));
        assert_eq!(c.session, Some(SessionTarget::File("/tmp/s".into())));
        assert_eq!(c.destinations[0].host, Host::Name("example.com".into()));
        let c = run(&["-h", "[::1]:8008", "80", "10.0.0.5"]);
        assert_eq!(c.proxy, Some("[::1]:8008".parse().unwrap()));
    }

    #[test]
    fn numeric_only_without_proxy_cli_5() {
        assert!(err(&["80", "example.com"]).contains("example.com"));
        assert!(err(&["-i", "localhost", "80", "10.0.0.5"]).contains("localhost"));
        assert!(err(&["-h", "proxy.example", "80", "10.0.0.5"]).contains("proxy.example"));
    }

    #[test]
    fn garbage_is_named_cli_7() {
        for (words, bad) in [
            (&["-t", "abc", "80", "10.0.0.5"][..], "abc"),
            (&["80", "10.0.0.5:99999"], "99999"),
            (&["-a", "300.1.2.3/40", "80", "10.0.0.5"], "300.1.2.3/40"),
            (&["99999", "10.0.0.5"], "99999"),
            (&["-r", "-5", "80", "10.0.0.5"], "-5"),
            (&["--connect-timeout", "0", "80", "10.0.0.5"], "0"),
            (&["--max-conns", "1e3", "80", "10.0.0.5"], "1e3"),
            (&["--proxy-protocol", "v3", "80", "10.0.0.5"], "v3"),
            (&["-x", "80", "10.0.0.5"], "-x"),
            (&["--frobnicate", "80", "10.0.0.5"], "--frobnicate"),
            (&["80", "10.0.0.5", "-P"], "-P"),
            (&["-t", "99999999999", "80", "10.0.0.5"], "99999999999"),
            // The word the user wrote, not just its empty or bad port part.
            (&["8080", "127.0.0.1:"], "'127.0.0.1:'"),
            (&["8080", "127.0.0.1:80x"], "'127.0.0.1:80x'"),
            (&[":", "127.0.0.1"], "':'"),
            (&["127.0.0.1:0", "127.0.0.1"], "'127.0.0.1:0'"),
            (&["-h", "127.0.0.1:", "80", "x.example"], "'127.0.0.1:'"),
        ] {
            let msg = err(words);
            assert!(msg.contains(bad), "{words:?}: {msg}");
        }
        assert!(err(&["80"]).contains("destination"));
        assert!(err(&[]).contains("source"));
        assert!(err(&["--proxy-auth-file", "/x", "80", "10.0.0.5"]).contains("-h"));
        assert!(err(&["-p", "::1", "80", "10.0.0.5"]).contains("families"));
        assert!(err(&["-i", "127.0.0.1", "127.0.0.2:80", "10.0.0.5"]).contains("twice"));
        // The same address twice is no conflict (CLI-8).
        let c = run(&["-i", "127.0.0.2", "127.0.0.2:80", "10.0.0.5"]);
        assert_eq!(c.source.bind_addr(), "127.0.0.2:80".parse().unwrap());
    }

    #[test]
    fn user_and_group_proc_9() {
        let c = run(&["--user", "nobody:nogroup", "80", "10.0.0.5"]);
        let spec = c.user.unwrap();
        assert_eq!(
            (spec.user.as_str(), spec.group.as_deref()),
            ("nobody", Some("nogroup"))
        );
        assert_eq!(spec.to_string(), "nobody:nogroup");
        let c = run(&["--user=65534", "80", "10.0.0.5"]);
        assert_eq!(c.user.unwrap().group, None);
        for bad in ["", ":", "a:", ":b", "a:b:c", "a b", "a/b", "a\nb"] {
            let msg = err(&["--user", bad, "80", "10.0.0.5"]);
            assert!(msg.contains("--user"), "{bad:?}: {msg}");
        }
    }

    #[test]
    fn operability_options_opt_9_to_opt_12() {
        let c = run(&[
            "-f",
            "--hash",
            "--resolve=30",
            "--health-check",
            "5",
            "--metrics",
            "127.0.0.1:9100",
            "80",
            "web.example:8080",
            "10.0.0.5",
        ]);
        assert!(c.select.hash && c.select.sticky.is_some());
        assert_eq!(c.resolve, Some(Duration::from_secs(30)));
        assert_eq!(c.health_check, Some(Duration::from_secs(5)));
        assert_eq!(c.metrics, Some("127.0.0.1:9100".parse().unwrap()));
        assert_eq!(c.destinations[0].to_string(), "web.example:8080");
        assert_eq!(
            run(&["--metrics", "9100", "80", "10.0.0.5"]).metrics,
            Some("0.0.0.0:9100".parse().unwrap())
        );
        assert!(err(&["--hash", "80", "10.0.0.5"]).contains("-f"));
        assert!(err(&["--hash=yes", "-f", "80", "10.0.0.5"]).contains("takes no value"));
        assert!(err(&["--resolve", "0", "80", "10.0.0.5"]).contains("'0'"));
        assert!(err(&["--resolve", "5", "-h", "10.0.0.1:3128", "80", "x.example"]).contains("-h"));
        // Without --resolve or -h, names stay a syntax error (CLI-5).
        assert!(err(&["80", "web.example:8080"]).contains("--resolve"));
        assert!(err(&["--metrics", "localhost:9100", "80", "10.0.0.5"]).contains("localhost"));
    }

    #[test]
    fn dd_describes_the_configuration_cli_2() {
        let c = run(&[
            "-f",
            "-r",
            "30",
            "-a",
            "10.1.2.3/8",
            "8080",
            "10.0.0.5",
            "[::1]:81",
        ]);
        let lines = c.describe(441);
        assert_eq!(
            lines[0],
            "config: listen 0.0.0.0:8080 (tag (8080)), destinations 10.0.0.5:8080 [::1]:81"
        );
        assert_eq!(
            lines[1],
            "config: order round robin, sticky 3600s, at most 16384 clients, retry a failed destination after 30s"
        );
        assert!(lines[3].starts_with("config: max conns 441, per ip none, accept rules 10.0.0.0/8"));
        assert!(lines.iter().all(|l| l.starts_with("config: ")));
        assert_eq!(
            lines[2],
            "config: connect timeout 10s, idle timeout off, drain timeout off"
        );

        // Timeouts given show in seconds; a hashed choice is no table (CONN-5).
        let c = run(&[
            "-f",
            "--hash",
            "--idle-timeout",
            "90",
            "--drain-timeout",
            "5",
            "8080",
            "10.0.0.5",
        ]);
        let lines = c.describe(441);
        assert_eq!(
            lines[1],
            "config: order round robin, sticky by rendezvous hash of the client address, retry a failed destination once all have failed"
        );
        assert_eq!(
            lines[2],
            "config: connect timeout 10s, idle timeout 90s, drain timeout 5s"
        );
    }

    #[test]
    fn ipv6_everywhere_cli_8() {
        let c = run(&[
            "-i",
            "::",
            "-p",
            "::1",
            "-a",
            "2001:db8::/32",
            "8080",
            "[::1]:9000",
        ]);
        assert_eq!(c.source.bind_addr(), "[::]:8080".parse().unwrap());
        assert_eq!(c.bind, Some("::1".parse().unwrap()));
        assert!(c.rules.allows("2001:db8::5".parse().unwrap()));
        assert_eq!(
            c.destinations[0].socket_addr(),
            Some("[::1]:9000".parse().unwrap())
        );
        for src in ["8080", ":8080", "*:8080"] {
            assert_eq!(
                run(&[src, "10.0.0.5"]).source,
                Source {
                    addr: None,
                    port: 8080
                }
            );
        }
        assert_eq!(
            run(&["[::1]:8080", "::1"]).destinations[0].to_string(),
            "[::1]:8080"
        );
    }

    #[test]
    fn long_options_cli_9() {
        let c = run(&[
            "--connect-timeout=3",
            "--idle-timeout",
            "60",
            "--max-conns",
            "100",
            "--max-conns-per-ip=5",
            "--proxy-protocol",
            "v2",
            "--drain-timeout=0",
            "-h",
            "127.0.0.1:3128",
            "--proxy-auth-file",
            "/etc/plug/auth",
            "80",
            "10.0.0.5",
        ]);
        assert_eq!(c.connect_timeout, Duration::from_secs(3));
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(60)));
        assert_eq!(c.max_conns, Some(100));
        assert_eq!(c.max_conns_per_ip, Some(5));
        assert_eq!(c.proxy_protocol, Some(ProxyProtocol::V2));
        assert_eq!(c.drain_timeout, Some(Duration::ZERO));
        assert_eq!(c.proxy_auth_file, Some(PathBuf::from("/etc/plug/auth")));
        // A lone `--` ends the options.
        let c = run(&["-n", "--", "80", "10.0.0.5"]);
        assert!(c.foreground);
        assert!(err(&["--", "-n", "80", "10.0.0.5"]).contains("-n"));
    }

    #[test]
    fn usage_and_help_name_the_program() {
        assert!(usage("plug-std").starts_with("usage: plug-std -V\n"));
        assert!(help("plug").contains("--connect-timeout"));
    }

    /// A valid option set, as (short letter or long name, value) items.
    #[derive(Debug, Clone)]
    struct Item {
        key: String,
        value: Option<String>,
        long: bool,
    }

    fn valid_items() -> impl Strategy<Value = (Vec<Item>, Vec<String>)> {
        let flag = prop_oneof![
            Just('n'),
            Just('k'),
            Just('l'),
            Just('f'),
            Just('o'),
            Just('d')
        ];
        let short_value = prop_oneof![
            Just(('P', "/run/plug.pid".to_string())),
            Just(('S', "/var/log/plug.sessions".to_string())),
            Just(('S', "-".to_string())),
            Just(('p', "127.0.0.3".to_string())),
            Just(('h', "127.0.0.1:3128".to_string())),
            (0u64..100_000).prop_map(|s| ('t', s.to_string())),
            (0u64..100).prop_map(|s| ('r', s.to_string())),
            (0u8..=32).prop_map(|b| ('a', format!("10.1.2.3/{b}"))),
            Just(('a', "::1".to_string())),
        ];
        let long_value = prop_oneof![
            (1u64..100).prop_map(|s| ("connect-timeout", s.to_string())),
            (1u64..100).prop_map(|s| ("idle-timeout", s.to_string())),
            (1u32..1000).prop_map(|n| ("max-conns", n.to_string())),
            Just(("proxy-protocol", "v1".to_string())),
        ];
        let item = prop_oneof![
            flag.prop_map(|c| Item {
                key: c.to_string(),
                value: None,
                long: false
            }),
            short_value.prop_map(|(c, v)| Item {
                key: c.to_string(),
                value: Some(v),
                long: false
            }),
            long_value.prop_map(|(n, v)| Item {
                key: n.to_string(),
                value: Some(v),
                long: true
            }),
        ];
        let dests = proptest::collection::vec((1u8..255, proptest::option::of(1u16..)), 1..4)
            .prop_map(|ds| {
                ds.into_iter()
                    .map(|(h, p)| match p {
                        Some(p) => format!("10.9.8.{h}:{p}"),
                        None => format!("10.9.8.{h}"),
                    })
                    .collect::<Vec<_>>()
            });
        let source = prop_oneof![
            Just("8080".to_string()),
            Just(":8080".to_string()),
            Just("127.0.0.1:8080".to_string())
        ];
        (proptest::collection::vec(item, 0..12), source, dests).prop_map(|(items, src, dests)| {
            let mut pos = vec![src];
            pos.extend(dests);
            (items, pos)
        })
    }

    /// Renders items one per word (`-x value`, `--name value`), positionals last.
    fn canonical(items: &[Item], positionals: &[String]) -> Vec<String> {
        let mut out = vec![];
        for it in items {
            if it.long {
                out.push(format!("--{}", it.key));
            } else {
                out.push(format!("-{}", it.key));
            }
            out.extend(it.value.clone());
        }
        out.extend(positionals.iter().cloned());
        out
    }

    /// Renders items with random clustering, attachment, `=` forms and positionals
    /// interleaved, driven by `choices`.
    fn shuffled(items: &[Item], positionals: &[String], choices: &[u8]) -> Vec<String> {
        let mut pick = choices.iter().cycle().copied();
        let mut out: Vec<String> = vec![];
        let mut pos = positionals.iter().peekable();
        let mut cluster = String::new();
        let flush = |cluster: &mut String, out: &mut Vec<String>| {
            if !cluster.is_empty() {
                out.push(format!("-{cluster}"));
                cluster.clear();
            }
        };
        for it in items {
            let c = pick.next().unwrap_or(0);
            if c % 3 == 0 {
                if let Some(p) = pos.next() {
                    flush(&mut cluster, &mut out);
                    out.push(p.clone());
                }
            }
            match (&it.value, it.long) {
                (None, _) => {
                    cluster.push_str(&it.key);
                    if c % 2 == 0 {
                        flush(&mut cluster, &mut out);
                    }
                }
                (Some(v), true) => {
                    flush(&mut cluster, &mut out);
                    if c % 2 == 0 {
                        out.push(format!("--{}={v}", it.key));
                    } else {
                        out.push(format!("--{}", it.key));
                        out.push(v.clone());
                    }
                }
                (Some(v), false) => {
                    cluster.push_str(&it.key);
                    // A value starting with '-' must stand alone, as with getopt.
                    if c % 2 == 0 && !v.starts_with('-') {
                        cluster.push_str(v);
                        flush(&mut cluster, &mut out);
                    } else {
                        flush(&mut cluster, &mut out);
                        out.push(v.clone());
                    }
                }
            }
        }
        flush(&mut cluster, &mut out);
        out.extend(pos.cloned());
        out
    }

    fn parse_words(words: &[String]) -> Result<Action, CliError> {
        parse(words.iter().map(OsString::from).collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// CLI-1: any clustering, attachment, `=` form and interleaving of the same
        /// options parses to the same Config as the plain one-per-word form.
        #[test]
        fn clusterings_parse_to_the_same_config(
            (items, positionals) in valid_items(),
            choices in proptest::collection::vec(any::<u8>(), 1..32),
        ) {
            let plain = parse_words(&canonical(&items, &positionals));
            let mixed = parse_words(&shuffled(&items, &positionals, &choices));
            prop_assert!(plain.is_ok(), "{:?}", plain);
            prop_assert_eq!(mixed, plain);
        }

        /// CLI-1..4, §6: the Config says what the words say, read from the
        /// words themselves: a repeated option's last value, every `-a` in
        /// order, flags and their counts, the defaults, and a destination
        /// without a port taking the source's.
        #[test]
        fn the_config_says_what_the_words_say_cli_1_cli_4(
            (items, positionals) in valid_items(),
        ) {
            let parsed = parse_words(&canonical(&items, &positionals));
            let Ok(Action::Run(c)) = parsed else {
                return Err(TestCaseError::fail(format!("{parsed:?}")));
            };
            let last = |k: &str| items.iter().rev().find(|i| i.key == k).and_then(|i| i.value.clone());
            let count = |k: &str| items.iter().filter(|i| i.key == k).count();
            let secs = |v: String| Duration::from_secs(v.parse().unwrap());
            prop_assert_eq!(c.keepalive, count("k") > 0);
            prop_assert_eq!(c.log_connections, count("l") > 0);
            prop_assert_eq!(usize::from(c.debug), count("d"));
            let to_stdout = last("S").as_deref() == Some("-");
            prop_assert_eq!(c.foreground, count("n") > 0 || count("d") > 0 || to_stdout);
            prop_assert_eq!(c.select.order == Order::FirstHealthy, count("o") > 0);
            let sticky_for = (count("f") > 0).then(|| last("t").map_or(DEFAULT_STICKY_TIMEOUT, secs));
            prop_assert_eq!(c.select.sticky.map(|s| s.timeout), sticky_for);
            prop_assert_eq!(c.select.retry, last("r").map(secs));
            prop_assert_eq!(&c.pid_file, &last("P").map(PathBuf::from));
            let session = last("S").map(|v| match v.as_str() {
                "-" => SessionTarget::Stdout,
                _ => SessionTarget::File(PathBuf::from(v)),
            });
            prop_assert_eq!(&c.session, &session);
            prop_assert_eq!(c.bind, last("p").map(|v| v.parse::<IpAddr>().unwrap()));
            prop_assert_eq!(c.proxy, last("h").map(|v| v.parse::<SocketAddr>().unwrap()));
            let rules: Vec<AcceptRule> = items
                .iter()
                .filter(|i| i.key == "a")
                .map(|i| AcceptRule::parse(i.value.as_deref().unwrap()).unwrap())
                .collect();
            prop_assert_eq!(c.rules.rules(), rules.as_slice());
            prop_assert_eq!(c.connect_timeout, last("connect-timeout").map_or(DEFAULT_CONNECT_TIMEOUT, secs));
            prop_assert_eq!(c.idle_timeout, last("idle-timeout").map(secs));
            prop_assert_eq!(c.max_conns, last("max-conns").map(|v| v.parse().unwrap()));
            prop_assert_eq!(c.proxy_protocol, last("proxy-protocol").map(|_| ProxyProtocol::V1));
            prop_assert_eq!(c.source.port, 8080);
            let listen = positionals[0].starts_with("127.").then(|| IpAddr::from([127, 0, 0, 1]));
            prop_assert_eq!(c.source.addr, listen);
            let dests: Vec<String> = positionals[1..]
                .iter()
                .map(|w| if w.contains(':') { w.clone() } else { format!("{w}:8080") })
                .collect();
            let got: Vec<String> = c.destinations.iter().map(ToString::to_string).collect();
            prop_assert_eq!(got, dests);
        }

        /// CLI-7: arbitrary bytes as arguments (not UTF-8, NULs, anything) never
        /// panic; anything refused is status 5 with a message.
        #[test]
        fn arbitrary_argument_bytes_never_panic(words in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..24), 0..8)) {
            use std::os::unix::ffi::OsStringExt;
            let args: Vec<OsString> = words.into_iter().map(OsString::from_vec).collect();
            if let Err(e) = parse(args) {
                prop_assert_eq!(e.status(), EXIT_SYNTAX);
                prop_assert!(!e.message().is_empty());
            }
        }

        /// CLI-7: random words never panic; anything refused is status 5 with a
        /// message.
        #[test]
        fn garbage_never_panics(words in proptest::collection::vec(
            prop_oneof![
                "-[a-zA-Z]{1,4}",
                "--[a-z-]{1,18}(=[ -~]{0,6})?",
                "[0-9]{1,6}",
                "[0-9.:\\[\\]/a-f]{1,20}",
                "[ -~]{0,12}",
                Just("--".to_string()),
                Just("-".to_string()),
            ], 0..10)) {
            match parse_words(&words) {
                Ok(_) => {}
                Err(e) => {
                    prop_assert_eq!(e.status(), EXIT_SYNTAX);
                    prop_assert!(!e.message().is_empty());
                }
            }
        }
    }
}
