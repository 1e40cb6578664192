//! Detaching (PROC-1) with a readiness pipe, and the pid file (PROC-3).

use std::fs;
use std::io::{self, Read, Write};
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
/// the child starts a new session, points stdio at /dev/null and gets its end of
/// the pipe. Call only while single-threaded.
pub fn detach() -> io::Result<Result<Readiness, ParentOutcome>> {
    let (mut reader, writer) = io::pipe()?;
    match sys::fork()? {
        Fork::Parent(_) => {
            drop(writer);
            let mut report = String::new();
            // EOF without a report means the child died first.
            let _ = reader.read_to_string(&mut report);
            Ok(Err(match report.strip_prefix("OK") {
                Some(_) => ParentOutcome::Ready,
                None => ParentOutcome::Failed(match report.strip_prefix("ERR ") {
                    Some(msg) => msg.trim_end().to_string(),
                    None => "the daemon exited before it was ready".to_string(),
                }),
            }))
        }
        Fork::Child => {
            drop(reader);
            sys::setsid()?;
            sys::redirect_stdio_to_null()?;
            Ok(Ok(Readiness { pipe: Some(writer) }))
        }
    }
}

/// The pid file: written once the daemon's PID is final, removed on exit.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Writes `pid` and a newline to `path` in one write.
    pub fn write(path: &Path, pid: u32) -> io::Result<Self> {
        fs::write(path, format!("{pid}\n"))?;
        Ok(PidFile {
            path: path.to_path_buf(),
        })
    }

    /// Removes the file; errors are ignored (it may be gone already).
    pub fn remove(&self) {
        let _ = fs::remove_file(&self.path);
    }
}
