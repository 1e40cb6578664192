//! The session-file writer (SPEC §4): one line per finished connection, each a
//! single append, never interleaved; the file is opened anew for every line, as
//! 2.5.5 did, so logrotate can move it away without telling plug.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Mutex;

use plug_core::config::cli::SessionTarget;

/// Writes session lines to a file or stdout.
#[derive(Debug)]
pub struct SessionWriter {
    target: SessionTarget,
    // Serialises writers inside this process; O_APPEND does the rest.
    lock: Mutex<()>,
}

impl SessionWriter {
    /// Creates the writer and, for a file, checks now that it can be opened, so a
    /// bad path is reported at start-up (exit 4) rather than lost later.
    pub fn open(target: SessionTarget) -> io::Result<Self> {
        if let SessionTarget::File(path) = &target {
            Self::open_file(path)?;
        }
        Ok(SessionWriter {
            target,
            lock: Mutex::new(()),
        })
    }

    /// Opens the file for one line, never through a symbolic link (PROC-6): a
    /// link put in its place is an error naming the path, not a write elsewhere.
    fn open_file(path: &PathBuf) -> io::Result<std::fs::File> {
        OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o666)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| {
                let why = match e.raw_os_error() {
                    Some(libc::ELOOP) => {
                        "it is a symbolic link, which plug does not follow".to_string()
                    }
                    _ => e.to_string(),
                };
                io::Error::new(e.kind(), format!("{}: {why}", path.display()))
            })
    }

    /// Appends one line (newline included) in a single write.
    pub fn write(&self, line: &str) -> io::Result<()> {
        let _guard = crate::shared::lock(&self.lock);
        match &self.target {
            SessionTarget::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(line.as_bytes())?;
                out.flush()
            }
            SessionTarget::File(path) => {
                let mut file = Self::open_file(path)?;
                let n = file.write(line.as_bytes())?;
                if n != line.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "short write to the session file",
                    ));
                }
                Ok(())
            }
        }
    }
}
