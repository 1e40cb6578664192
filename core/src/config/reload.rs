//! A reload of the `--config` file (OPT-15) as a pure function: the listeners
//! running and the file's new listeners give what must change. A listener is
//! its address and port: one in both files keeps its socket (and its state),
//! whatever else its line changed.

use std::net::SocketAddr;

use crate::config::cli::Config;

/// A listener in both the old and the new file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// Its position among the running listeners.
    pub old: usize,
    /// Its new line.
    pub config: Config,
    /// True when the line differs from the one it runs now.
    pub changed: bool,
}

/// A listener in the new file only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    /// Its line.
    pub config: Config,
    /// Removed listeners (positions among the running ones) whose sockets
    /// hold its port: the kernel refuses the bind while they listen (moving
    /// `0.0.0.0:P` to `127.0.0.1:P`), so they are released first and, if the
    /// bind still fails, listen again as before.
    pub after_releasing: Vec<usize>,
}

/// What a reload changes. The shell executes it in this order, so that a
/// failure at any step before the commit changes nothing (OPT-15):
/// 1. open what kept listeners' changed lines need;
/// 2. bind every added listener with nothing in `after_releasing`;
/// 3. for the others, release those sockets and bind; if that fails, the
///    released listeners listen again on their own addresses;
/// 4. commit: kept listeners take their lines, removed ones close, added ones
///    start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadPlan {
    /// Listeners that stay, in the new file's order.
    pub kept: Vec<Kept>,
    /// New listeners, to bind.
    pub added: Vec<Added>,
    /// Positions of running listeners whose source is gone: close their
    /// listening sockets at once; their open connections finish.
    pub removed: Vec<usize>,
}

fn key(config: &Config) -> SocketAddr {
    config.source.bind_addr()
}

/// True when a socket listening on `a` makes the kernel refuse a bind on `b`
/// (or the reverse): the same port, and the same address or a wildcard that
/// covers the other (`[::]` is dual-stack, PROC-1).
pub(crate) fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    let covers = |wide: SocketAddr, other: SocketAddr| {
        wide.ip().is_unspecified() && (wide.is_ipv6() || other.is_ipv4())
    };
    a.port() == b.port() && (a.ip() == b.ip() || covers(a, b) || covers(b, a))
}

/// Compares the running listeners `old` with the file's `new` ones.
pub fn plan(old: &[Config], new: Vec<Config>) -> ReloadPlan {
    let mut kept = Vec::new();
    let mut added = Vec::new();
    for config in new {
        match old.iter().position(|o| key(o) == key(&config)) {
            Some(i) => kept.push(Kept {
                old: i,
                changed: old[i] != config,
                config,
            }),
            None => added.push(config),
        }
    }
    let removed: Vec<usize> = (0..old.len())
        .filter(|i| !kept.iter().any(|k| k.old == *i))
        .collect();
    let added = added
        .into_iter()
        .map(|config| Added {
            after_releasing: removed
                .iter()
                .copied()
                .filter(|&i| overlaps(key(&old[i]), key(&config)))
                .collect(),
            config,
        })
        .collect();
    ReloadPlan {
        kept,
        added,
        removed,
    }
}

impl ReloadPlan {
    /// Kept listeners whose line did not change but names a
    /// `--proxy-auth-file`: they re-read it at commit, as SIGHUP always has
    /// (PROC-8); a failure to read keeps their old credentials and is logged
    /// ([`Forwarder::handle_reload`](crate::forwarder::Forwarder::handle_reload)),
    /// it does not fail the reload. A changed or added line's files are read
    /// before the commit instead, and a failure there fails it (step 1).
    pub fn credentials_to_reread(&self) -> impl Iterator<Item = &Kept> {
        self.kept
            .iter()
            .filter(|k| !k.changed && k.config.proxy_auth_file.is_some())
    }

    /// The log line of a reload that succeeded:
    /// `reloaded FILE: N listeners (A added, R removed, C changed)`.
    pub fn summary(&self, file: &str) -> String {
        let changed = self.kept.iter().filter(|k| k.changed).count();
        format!(
            "reloaded {file}: {} listeners ({} added, {} removed, {changed} changed)",
            self.kept.len() + self.added.len(),
            self.added.len(),
            self.removed.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::cli::{parse as parse_cli, Action, FileStart};
    use crate::config::file;
    use proptest::prelude::*;
    use std::ffi::OsString;

    fn start() -> FileStart {
        let argv = ["--config", "f"].map(OsString::from).to_vec();
        match parse_cli(argv) {
            Ok(Action::RunFile(s)) => *s,
            other => panic!("{other:?}"),
        }
    }

    fn listeners(lines: &[String]) -> Vec<Config> {
        file::parse(&start(), "f", &lines.join("\n")).unwrap()
    }

    /// A line for listener `port` with destination variant `v`.
    fn line(port: u16, v: u8) -> String {
        format!(
            "{port} 127.0.0.1:{} 127.0.0.2:80,weight={}",
            9000 + u16::from(v % 3),
            1 + v % 2
        )
    }

    fn file_of() -> impl Strategy<Value = Vec<String>> {
        proptest::collection::btree_map(8000u16..8008, 0u8..6, 1..6)
            .prop_map(|m| m.into_iter().map(|(p, v)| line(p, v)).collect())
    }

    /// What the kernel does (Linux, without SO_REUSEPORT): a listening socket
    /// refuses binds on its port for its address and, when it is a wildcard,
    /// for every address it covers.
    #[test]
    fn an_added_listener_waits_for_the_removed_socket_that_holds_its_port() {
        let one = |text: &str| listeners(&[text.to_string()]);
        let after = |old: &str, new: &str| {
            let p = plan(&one(old), one(new));
            assert_eq!(p.removed, vec![0], "{old} -> {new}");
            p.added[0].after_releasing.clone()
        };
        // The move an operator makes: every address to loopback only, and back.
        assert_eq!(after("8000 127.0.0.1:1", "127.0.0.1:8000 127.0.0.1:1"), [0]);
        assert_eq!(after("127.0.0.1:8000 127.0.0.1:1", "8000 127.0.0.1:1"), [0]);
        // [::] is dual-stack: it holds the IPv4 port too.
        assert_eq!(
            after("[::]:8000 127.0.0.1:1", "127.0.0.1:8000 127.0.0.1:1"),
            [0]
        );
        assert_eq!(
            after("[::]:8000 127.0.0.1:1", "[::1]:8000 127.0.0.1:1"),
            [0]
        );
        // Independent: another port, another address, another family.
        assert!(after("8000 127.0.0.1:1", "8001 127.0.0.1:1").is_empty());
        assert!(after("127.0.0.1:8000 127.0.0.1:1", "127.0.0.2:8000 127.0.0.1:1").is_empty());
        assert!(after("8000 127.0.0.1:1", "[::1]:8000 127.0.0.1:1").is_empty());
        assert!(after("[::1]:8000 127.0.0.1:1", "127.0.0.1:8000 127.0.0.1:1").is_empty());
    }

    #[test]
    fn only_unchanged_lines_reread_their_credentials_at_commit_proc_8() {
        let auth = |port: u16, dest: &str| {
            format!("-h 127.0.0.1:3128 --proxy-auth-file /etc/plug/auth {port} {dest}")
        };
        let old = listeners(&[
            auth(8000, "a.example:22"),
            auth(8001, "b.example:22"),
            "8002 127.0.0.1:1".into(),
        ]);
        let new = listeners(&[
            auth(8000, "a.example:22"),
            auth(8001, "c.example:22"),
            "8002 127.0.0.1:1".into(),
        ]);
        let p = plan(&old, new);
        let reread: Vec<usize> = p.credentials_to_reread().map(|k| k.old).collect();
        assert_eq!(
            reread,
            [0],
            "the changed line read its file before the commit"
        );
    }

    #[test]
    fn a_kept_listener_is_never_released() {
        let old = listeners(&[
            "8000 127.0.0.1:1".into(),
            "127.0.0.1:8001 127.0.0.1:1".into(),
        ]);
        let new = listeners(&["8000 127.0.0.1:2".into(), "8001 127.0.0.1:1".into()]);
        let p = plan(&old, new);
        assert_eq!(p.removed, vec![1]);
        assert_eq!(p.added.len(), 1);
        assert_eq!(p.added[0].after_releasing, [1]);
    }

    proptest! {
        /// OPT-15: reloading the same file changes nothing.
        #[test]
        fn the_same_file_changes_nothing_opt_15(lines in file_of()) {
            let old = listeners(&lines);
            let p = plan(&old, old.clone());
            prop_assert!(p.added.is_empty() && p.removed.is_empty());
            prop_assert!(p.kept.iter().all(|k| !k.changed));
            prop_assert_eq!(p.summary("f"), format!("reloaded f: {} listeners (0 added, 0 removed, 0 changed)", old.len()));
        }

        /// OPT-15: every running listener is kept or removed, once; every new
        /// one is kept or added, once; kept means the same address and port,
        /// changed means another line.
        #[test]
        fn every_listener_is_accounted_for_once_opt_15(a in file_of(), b in file_of()) {
            let old = listeners(&a);
            let new = listeners(&b);
            let p = plan(&old, new.clone());
            for (i, o) in old.iter().enumerate() {
                let in_new = new.iter().find(|n| n.source.bind_addr() == o.source.bind_addr());
                let kept: Vec<&Kept> = p.kept.iter().filter(|k| k.old == i).collect();
                match in_new {
                    Some(n) => {
                        prop_assert_eq!(kept.len(), 1);
                        prop_assert_eq!(&kept[0].config, n);
                        prop_assert_eq!(kept[0].changed, n != o);
                        prop_assert!(!p.removed.contains(&i));
                    }
                    None => {
                        prop_assert!(kept.is_empty());
                        prop_assert!(p.removed.contains(&i));
                    }
                }
            }
            for n in &new {
                let was = old.iter().any(|o| o.source.bind_addr() == n.source.bind_addr());
                prop_assert_eq!(p.added.iter().any(|a| &a.config == n), !was);
            }
            prop_assert_eq!(p.kept.len() + p.added.len(), new.len());
            // Only a listener that goes can be released.
            for a in &p.added {
                prop_assert!(a.after_releasing.iter().all(|i| p.removed.contains(i)));
            }
        }
    }
}
