//! Where plug's lines go (PROC-5): the core's [`LogTargets::route`] decides
//! between syslog and stderr; this writes them there, and puts a line that
//! syslog did not take on stderr instead while plug runs in the foreground.

use std::io::Write;

use plug_core::reports::log::{LogLevel, LogRecord, LogTargets};

use crate::output::syslog::Syslog;

/// Sends log lines to the right place for this process's mode.
#[derive(Debug)]
pub struct Logger {
    program: String,
    targets: LogTargets,
    syslog: Syslog,
}

impl Logger {
    /// Creates the logger for `targets` (detached, `-l`, `-d`), sending syslog
    /// lines through `syslog`.
    pub fn new(program: &str, targets: LogTargets, syslog: Syslog) -> Self {
        Logger {
            program: program.to_string(),
            targets,
            syslog,
        }
    }

    fn stderr(&self, message: &str) {
        // One write per line so concurrent lines do not interleave.
        let line = format!("{}: {message}\n", self.program);
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    /// Writes a record the core made, where its level says.
    pub fn write(&self, record: &LogRecord) {
        let route = self.targets.route(record.level);
        let mut taken = true;
        if let Some(severity) = route.syslog {
            taken = self.syslog.send(severity, &record.text);
        }
        if route.stderr || (!taken && self.targets.falls_back_to_stderr(route)) {
            self.stderr(&record.text);
        }
    }

    /// An error the operator must see: stderr in the foreground, syslog with `-l`
    /// or once detached.
    pub fn error(&self, message: &str) {
        self.write(&LogRecord::new(LogLevel::Error, message));
    }
}

/// Writes `text` to stderr from a thread of its own and waits for it at most
/// 100 ms: a stderr nobody reads never holds up exit (FAULT-7).
pub fn last_word(text: String) {
    let (done, written) = std::sync::mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("last-word".into())
        .spawn(move || {
            let _ = writeln!(std::io::stderr(), "{text}");
            let _ = done.send(());
        });
    if spawned.is_ok() {
        let _ = written.recv_timeout(std::time::Duration::from_millis(100));
    }
}
