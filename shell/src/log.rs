//! Where plug's lines go: syslog for `-l` and for errors once detached (PROC-5),
//! stderr in the foreground, and `-d` debug lines on stderr.

use std::io::Write;

use plug_core::log::{LogLevel, LogRecord};

use crate::sys::{self, Priority};

/// Sends log lines to the right place for this process's mode.
#[derive(Debug)]
pub struct Logger {
    program: String,
    detached: bool,
    debug: u8,
    log_connections: bool,
}

impl Logger {
    /// Creates the logger; `detached` is true once the process has left the terminal.
    pub fn new(program: &str, detached: bool, debug: u8, log_connections: bool) -> Self {
        Logger {
            program: program.to_string(),
            detached,
            debug,
            log_connections,
        }
    }

    fn stderr(&self, message: &str) {
        // One write per line so concurrent lines do not interleave.
        let line = format!("{}: {message}\n", self.program);
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    /// A connection line of PROC-5 (`-l`): to syslog, and to stderr with `-d`.
    pub fn connection(&self, line: &str) {
        if self.log_connections {
            sys::syslog(Priority::Notice, line);
        }
        if self.debug > 0 {
            self.stderr(line);
        }
    }

    /// An error or notice the operator must see: stderr in the foreground, syslog
    /// once detached.
    pub fn error(&self, message: &str) {
        if self.detached {
            sys::syslog(Priority::Err, message);
        } else {
            self.stderr(message);
        }
    }

    /// An operational notice (a destination failed, the sticky table is full): like
    /// [`Logger::error`] but at notice priority.
    pub fn notice(&self, message: &str) {
        if self.detached {
            sys::syslog(Priority::Notice, message);
        } else {
            self.stderr(message);
        }
    }

    /// A debug line, shown when `-d` was given at least `level` times.
    pub fn debug(&self, level: u8, message: &str) {
        if self.debug >= level {
            self.stderr(message);
        }
    }

    /// True when debug lines of `level` are shown (to skip formatting otherwise).
    pub fn debugging(&self, level: u8) -> bool {
        self.debug >= level
    }

    /// Writes a record the core made, where its level says.
    pub fn write(&self, record: &LogRecord) {
        match record.level {
            LogLevel::Connection => self.connection(&record.text),
            LogLevel::Notice => self.notice(&record.text),
            LogLevel::Error => self.error(&record.text),
            LogLevel::Debug(n) => self.debug(n, &record.text),
        }
    }
}
