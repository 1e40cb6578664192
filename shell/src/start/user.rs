//! `--user USER[:GROUP]` (PROC-9): the account is looked up at start-up, while
//! errors still reach the terminal, and switched to once the listener is bound,
//! syslog is open and the pid file is written. plug refuses to go on if any step
//! fails or if it could become root again afterwards.

use plug_core::config::cli::UserSpec;

use crate::sys;

/// The account plug runs as after start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// As the operator wrote it, for messages.
    spec: String,
    /// The login name, for the supplementary groups; `None` for a numeric ID
    /// with no user database entry (then the group is the only one).
    name: Option<String>,
    uid: u32,
    gid: u32,
}

fn numeric(word: &str) -> Option<u32> {
    word.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| word.parse().ok())
        .flatten()
}

impl Account {
    /// Looks `spec` up in the user and group databases; a part that names
    /// nobody may be a numeric ID. Errors say what to fix.
    pub fn look_up(spec: &UserSpec) -> Result<Self, String> {
        let bad = |what: String| format!("--user {spec}: {what}");
        let database = |e: std::io::Error| bad(format!("cannot read the user database: {e}"));
        let entry = match sys::user_by_name(&spec.user).map_err(database)? {
            Some(entry) => Some(entry),
            None => match numeric(&spec.user) {
                Some(uid) => sys::user_by_id(uid).map_err(database)?,
                None => return Err(bad(format!("no such user '{}'", spec.user))),
            },
        };
        // A numeric ID need not be in the database (containers often run so).
        let uid = match (&entry, numeric(&spec.user)) {
            (Some(e), _) => e.uid,
            (None, Some(uid)) => uid,
            (None, None) => return Err(bad(format!("no such user '{}'", spec.user))),
        };
        let gid = match (&spec.group, &entry) {
            (Some(group), _) => {
                let found = sys::group_by_name(group)
                    .map_err(|e| bad(format!("cannot read the group database: {e}")))?;
                match found.or_else(|| numeric(group)) {
                    Some(gid) => gid,
                    None => return Err(bad(format!("no such group '{group}'"))),
                }
            }
            (None, Some(e)) => e.gid,
            (None, None) => {
                return Err(bad(format!(
                    "user ID {uid} is not in the user database: give its group too \
                     (--user {uid}:GROUP)"
                )))
            }
        };
        if uid == 0 {
            return Err(bad(
                "that is root: plug would keep every privilege".to_string()
            ));
        }
        Ok(Account {
            spec: spec.to_string(),
            name: entry.map(|e| e.name),
            uid,
            gid,
        })
    }

    /// Switches the whole process to this account (initgroups, setgid, setuid),
    /// then checks that no ID is left behind and root cannot be regained. Call
    /// while single-threaded. Not running as root is fine only if plug already is
    /// exactly this account (nothing to drop).
    pub fn switch(&self) -> Result<(), String> {
        let fail = |what: String| format!("cannot switch to --user {}: {what}", self.spec);
        let want = ([self.uid; 3], [self.gid; 3]);
        let (uids, _) = sys::ids();
        if uids[1] != 0 {
            return if sys::ids() == want {
                Ok(())
            } else {
                Err(fail("plug is not running as root".to_string()))
            };
        }
        sys::switch_ids(self.name.as_deref(), self.uid, self.gid)
            .map_err(|e| fail(e.to_string()))?;
        if sys::ids() != want {
            return Err(fail(format!(
                "IDs are {:?} afterwards, not {want:?}",
                sys::ids()
            )));
        }
        if sys::can_regain_root() {
            return Err(fail("root privileges could be regained".to_string()));
        }
        Ok(())
    }
}
