//! Detaching (PROC-1, PROC-7) with a readiness pipe, and the pid file (PROC-3,
//! PROC-6).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::sys::{self, Fork};

/// The child's end of the readiness pipe: it tells the waiting parent whether
/// start-up succeeded.
#[derive(Debug)]
pub struct Readiness {
    pipe: Option<io::PipeWriter>,
}

impl Readiness {
    /// A readiness report that goes nowhere (foreground).
    pub fn none() -> Self {
        Readiness { pipe: None }
    }

    /// Tells the parent start-up finished; it exits 0.
    pub fn ready(&mut self) {
        if let Some(mut p) = self.pipe.take() {
            let _ = p.write_all(b"OK\n");
        }
    }

    /// Tells the parent start-up failed with `message`; it prints it and exits 4.
    /// Returns true if there was a parent to tell.
    pub fn failed(&mut self, message: &str) -> bool {
        match self.pipe.take() {
            Some(mut p) => {
                let _ = p.write_all(format!("ERR {message}\n").as_bytes());
                true
            }
            None => false,
        }
    }
}

/// What the parent learned from its child.
pub enum ParentOutcome {
    /// The child is serving.
    Ready,
    /// The child failed before it was ready.
    Failed(String),
}

/// Forks; the parent waits for the child's report and returns it (never serving),
/// the child starts a new session, moves to `/` so it keeps no directory busy
/// (PROC-7), points stdio at /dev/null and gets its end of the pipe. Call only
/// while single-threaded.
pub fn detach() -> io::Result<Result<Readiness, ParentOutcome>> {
    let (mut reader, writer) = io::pipe()?;
    match sys::fork()? {
        Fork::Parent(child) => {
            drop(writer);
            let mut report = String::new();
            // EOF without a report means the child died first.
            let _ = reader.read_to_string(&mut report);
            if report.starts_with("OK") {
                return Ok(Err(ParentOutcome::Ready));
            }
            // A failed child still holds the pid file's lock until it has exited:
            // waiting for it means a restart right after this one is not told
            // `already running` by a plug that is on its way out.
            sys::wait_child(child);
            Ok(Err(ParentOutcome::Failed(
                match report.strip_prefix("ERR ") {
                    Some(msg) => msg.trim_end().to_string(),
                    None => "the daemon exited before it was ready".to_string(),
                },
            )))
        }
        Fork::Child => {
            drop(reader);
            sys::setsid()?;
            sys::chdir_root()?;
            sys::redirect_stdio_to_null()?;
            Ok(Ok(Readiness { pipe: Some(writer) }))
        }
    }
}

/// Why the pid file cannot be had.
#[derive(Debug)]
pub enum PidFileError {
    /// Another plug holds its lock: it is running, with this PID if the file says.
    AlreadyRunning {
        /// The pid file.
        path: PathBuf,
        /// The PID it holds, if it could be read.
        pid: Option<u32>,
    },
    /// It could not be opened, locked or written.
    Io {
        /// The pid file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
}

impl fmt::Display for PidFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PidFileError::AlreadyRunning {
                path,
                pid: Some(pid),
            } => write!(
                f,
                "already running as PID {pid} (pid file {} is locked)",
                path.display()
            ),
            PidFileError::AlreadyRunning { path, pid: None } => {
                write!(f, "already running (pid file {} is locked)", path.display())
            }
            PidFileError::Io { path, error } if error.raw_os_error() == Some(libc::ELOOP) => {
                write!(
                    f,
                    "cannot write pid file {}: it is a symbolic link, which plug does not follow",
                    path.display()
                )
            }
            PidFileError::Io { path, error } => {
                write!(f, "cannot write pid file {}: {error}", path.display())
            }
        }
    }
}

/// The pid file (PROC-3, PROC-6): opened without following a symbolic link and
/// locked with flock(2) for as long as plug runs, so a second plug on the same
/// file knows the first is alive; a file nobody has locked is stale and taken
/// over. The lock is taken before detaching and outlives the fork: it belongs to
/// the open file, which the daemon keeps.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    file: File,
    pid: Option<u32>,
}

impl PidFile {
    /// Opens (creating, mode 0644) and locks `path`.
    pub fn lock(path: &Path) -> Result<Self, PidFileError> {
        let io = |error| PidFileError::Io {
            path: path.to_path_buf(),
            error,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(io)?;
        if !file.metadata().map_err(io)?.is_file() {
            return Err(io(io::Error::other("not a regular file")));
        }
        if !sys::try_lock_exclusive(file.as_raw_fd()).map_err(io)? {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let pid = text.lines().next().and_then(|l| l.trim().parse().ok());
            return Err(PidFileError::AlreadyRunning {
                path: path.to_path_buf(),
                pid,
            });
        }
        Ok(PidFile {
            path: path.to_path_buf(),
            file,
            pid: None,
        })
    }

    /// Writes `pid` and a newline as the whole file, mode 0644 whatever the umask
    /// (PROC-3: once the daemon's PID is final).
    pub fn write(&mut self, pid: u32) -> Result<(), PidFileError> {
        let io = |error| PidFileError::Io {
            path: self.path.clone(),
            error,
        };
        let text = format!("{pid}\n");
        self.file.set_len(0).map_err(io)?;
        self.file.rewind().map_err(io)?;
        self.file.write_all(text.as_bytes()).map_err(io)?;
        self.file
            .set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(io)?;
        self.pid = Some(pid);
        Ok(())
    }

    /// Removes the file plug locked but has not written yet (a fatal error during
    /// start-up, PROC-3): it is plug's as long as the name still leads to the
    /// file plug holds the lock of, whatever it held before (stale, or empty).
    pub fn discard(self) {
        let ours = (|| {
            let on_disk = fs::symlink_metadata(&self.path).ok()?;
            let held = self.file.metadata().ok()?;
            Some(on_disk.dev() == held.dev() && on_disk.ino() == held.ino())
        })();
        if ours == Some(true) {
            let _ = fs::remove_file(&self.path);
        }
    }

    /// Removes the file if it is still the one plug wrote and holds plug's PID (a
    /// new instance may have replaced it since a graceful stop began), then lets
    /// go of the lock. Errors are ignored: after `--user` the directory may not
    /// let plug remove it, and it stays, unlocked.
    pub fn remove(self) {
        let ours = (|| {
            let on_disk = fs::symlink_metadata(&self.path).ok()?;
            let held = self.file.metadata().ok()?;
            let text = fs::read_to_string(&self.path).ok()?;
            let pid: u32 = text.lines().next()?.trim().parse().ok()?;
            Some(
                on_disk.dev() == held.dev() && on_disk.ino() == held.ino() && Some(pid) == self.pid,
            )
        })();
        if ours == Some(true) {
            let _ = fs::remove_file(&self.path);
        }
    }
}
