//! The life of the process (PROC-4, PROC-8, OPT-6, OPT-8, FAULT-7), as a machine
//! like a connection's: the shell feeds it signals, the open-connection count and
//! time, and carries out what it says. Nothing here waits or exits; the shell
//! does, when told.
//!
//! ```text
//!  Running ──stop──▶ Draining ──stop, or --drain-timeout──▶ Cutting ──▶ Exiting
//!                       │ none open                            │ none open, a third
//!                       └──────────────────────────────────────┴─ stop, or CUT_GRACE
//! ```
//!
//! What each phase promises: a first SIGTERM/SIGINT stops accepting at once and
//! lets open connections finish (PROC-4); a second one, or the end of
//! `--drain-timeout`, cuts what is still open (each connection is reset on both
//! sides and still writes its session and `Complete` lines, OPT-8); and the
//! process exits within [`CUT_GRACE`] + [`FLUSH_GRACE`] (under 1 s) of that,
//! whatever its output is doing: lines that cannot be written by then are
//! dropped, never waited for (FAULT-7).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::reports::log::{LogLevel, LogRecord};

/// How long cut connections have to write their session and `Complete` lines and
/// hand their counts over before the process exits anyway.
pub const CUT_GRACE: Duration = Duration::from_millis(500);

/// How long queued log and session lines may take to be written at exit; what
/// is not written by then is dropped (FAULT-7).
pub const FLUSH_GRACE: Duration = Duration::from_millis(400);

/// A signal plug handles, by what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT: stop (PROC-4).
    Stop,
    /// SIGUSR1: the state dump (OPT-6).
    Dump,
    /// SIGHUP: reload (PROC-8).
    Reload,
}

/// Where the process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Accepting and serving.
    Running,
    /// Not accepting; open connections finish, until the drain deadline if any.
    Draining,
    /// Open connections have been cut; waiting briefly for their records.
    Cutting,
    /// Told to exit; nothing more happens.
    Exiting,
}

/// Why open connections were cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutReason {
    /// A second SIGTERM/SIGINT.
    SecondSignal,
    /// `--drain-timeout` passed.
    DrainTimeout,
}

/// What the shell must do, drained with [`Process::poll_output`].
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub enum ProcessOutput {
    /// Begin the graceful stop: remove the pid file, tell systemd `STOPPING=1`,
    /// and shut every listener, so a new instance can bind at once and the accept
    /// loops end. Report the open count with [`Process::handle_open`] afterwards.
    StopAccepting,
    /// Write the SIGUSR1 state dump.
    Dump,
    /// Re-read what SIGHUP re-reads, bounded and without blocking (FAULT-7).
    Reload,
    /// Cut every open connection: reset both of its sockets (SO_LINGER 0) and
    /// end it, so that it writes its session line and a `Complete, status=N`
    /// line with N non-zero and hands its counts over (OPT-8, FAULT-5).
    CutConnections(CutReason),
    /// Cut every open connection of the listener a reload closed
    /// ([`Process::handle_listener_closed`]), as [`ProcessOutput::CutConnections`]
    /// does for all: its `--drain-timeout` has passed (OPT-15).
    CutListener(u64),
    /// A line for the log.
    Log(LogRecord),
    /// Exit with `status`, letting queued output be written until `flush_until`
    /// at the latest and dropping the rest (FAULT-7).
    Exit {
        /// The exit status.
        status: i32,
        /// When to stop waiting for output.
        flush_until: Instant,
    },
}

/// The process machine.
#[derive(Debug)]
pub struct Process {
    phase: Phase,
    drain_timeout: Option<Duration>,
    /// When the phase ends by time: the drain deadline, or the cut grace.
    deadline: Option<Instant>,
    open: usize,
    /// The accept loop has seen its listener shut and returned: no client can
    /// be admitted any more, so "none open" is final.
    accept_ended: bool,
    /// Listeners a reload closed, with when their open connections are cut.
    retired: Vec<(u64, Instant)>,
    queue: VecDeque<ProcessOutput>,
}

impl Process {
    /// A process that has started serving, with `--drain-timeout` (OPT-8).
    pub fn new(drain_timeout: Option<Duration>) -> Self {
        Process {
            phase: Phase::Running,
            drain_timeout,
            deadline: None,
            open: 0,
            accept_ended: false,
            retired: Vec::new(),
            queue: VecDeque::new(),
        }
    }

    /// The phase now.
    #[cfg(test)]
    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    /// Takes a signal received at `now`.
    pub fn handle_signal(&mut self, now: Instant, signal: Signal) {
        match (self.phase, signal) {
            (Phase::Exiting, _) => {}
            (_, Signal::Dump) => self.queue.push_back(ProcessOutput::Dump),
            (Phase::Running | Phase::Draining, Signal::Reload) => {
                self.queue.push_back(ProcessOutput::Reload)
            }
            (Phase::Cutting, Signal::Reload) => {}
            (Phase::Running, Signal::Stop) => self.stop(now),
            (Phase::Draining, Signal::Stop) => self.cut(now, CutReason::SecondSignal),
            // A third: cut connections had their chance.
            (Phase::Cutting, Signal::Stop) => self.exit(now),
        }
    }

    /// Reports how many connections are open at `now`: after
    /// [`ProcessOutput::StopAccepting`], and whenever one closes while stopping.
    pub fn handle_open(&mut self, now: Instant, open: usize) {
        self.open = open;
        self.exit_if_drained(now);
    }

    /// Reports that the accept loop has returned after
    /// [`ProcessOutput::StopAccepting`]: until then a client may still be
    /// admitted, so the process does not exit for having none open.
    pub fn handle_accept_ended(&mut self, now: Instant) {
        self.accept_ended = true;
        self.exit_if_drained(now);
    }

    fn exit_if_drained(&mut self, now: Instant) {
        let stopping = matches!(self.phase, Phase::Draining | Phase::Cutting);
        if stopping && self.accept_ended && self.open == 0 {
            self.exit(now);
        }
    }

    /// Reports that a reload closed listener `listener` at `now` (OPT-15): its
    /// open connections finish, bounded by `--drain-timeout` when it is set.
    pub fn handle_listener_closed(&mut self, now: Instant, listener: u64) {
        if let Some(deadline) = self.drain_timeout.and_then(|t| now.checked_add(t)) {
            self.retired.push((listener, deadline));
        }
    }

    fn phase_deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Draining | Phase::Cutting => self.deadline,
            Phase::Running | Phase::Exiting => None,
        }
    }

    /// When [`Process::handle_timeout`] is due, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let retired = match self.phase {
            Phase::Exiting => None,
            _ => self.retired.iter().map(|&(_, at)| at).min(),
        };
        match (self.phase_deadline(), retired) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Moves on by time: the drain deadline cuts, the cut grace exits, a closed
    /// listener's deadline cuts its connections. Early or repeated calls do
    /// nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase != Phase::Exiting {
            let (due, later): (Vec<_>, Vec<_>) =
                self.retired.iter().partition(|&&(_, at)| at <= now);
            self.retired = later;
            for (listener, _) in due {
                self.queue.push_back(ProcessOutput::CutListener(listener));
            }
        }
        let Some(deadline) = self.phase_deadline() else {
            return;
        };
        if now < deadline {
            return;
        }
        match self.phase {
            Phase::Draining => self.cut(now, CutReason::DrainTimeout),
            Phase::Cutting => self.exit(now),
            Phase::Running | Phase::Exiting => {}
        }
    }

    /// The next thing for the shell to do.
    pub fn poll_output(&mut self) -> Option<ProcessOutput> {
        self.queue.pop_front()
    }

    fn log(&mut self, level: LogLevel, text: String) {
        self.queue
            .push_back(ProcessOutput::Log(LogRecord::new(level, text)));
    }

    fn stop(&mut self, now: Instant) {
        self.phase = Phase::Draining;
        self.deadline = self.drain_timeout.and_then(|t| now.checked_add(t));
        self.queue.push_back(ProcessOutput::StopAccepting);
        let text = match self.drain_timeout {
            Some(t) => format!(
                "stopping: listener closed, waiting up to {}s for open connections",
                t.as_secs_f64()
            ),
            None => "stopping: listener closed, waiting for open connections".to_string(),
        };
        self.log(LogLevel::Debug(1), text);
    }

    fn cut(&mut self, now: Instant, reason: CutReason) {
        if self.open == 0 {
            // Nothing to cut; the accept loop is ending, or stuck: go.
            return self.exit(now);
        }
        self.phase = Phase::Cutting;
        self.deadline = Some(now.checked_add(CUT_GRACE).unwrap_or(now));
        let why = match reason {
            CutReason::SecondSignal => "second signal",
            CutReason::DrainTimeout => "drain timeout",
        };
        let open = self.open;
        self.log(
            LogLevel::Notice,
            format!("{why}: exiting, resetting {open} open connections"),
        );
        self.queue.push_back(ProcessOutput::CutConnections(reason));
    }

    fn exit(&mut self, now: Instant) {
        self.phase = Phase::Exiting;
        self.deadline = None;
        self.queue.push_back(ProcessOutput::Exit {
            status: 0,
            flush_until: now.checked_add(FLUSH_GRACE).unwrap_or(now),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_clock::t0;
    use proptest::prelude::*;

    fn drain(p: &mut Process) -> Vec<ProcessOutput> {
        std::iter::from_fn(|| p.poll_output()).collect()
    }

    fn kinds(outs: &[ProcessOutput]) -> Vec<&'static str> {
        outs.iter()
            .filter_map(|o| match o {
                ProcessOutput::StopAccepting => Some("stop"),
                ProcessOutput::Dump => Some("dump"),
                ProcessOutput::Reload => Some("reload"),
                ProcessOutput::CutConnections(_) => Some("cut"),
                ProcessOutput::CutListener(_) => Some("cut listener"),
                ProcessOutput::Exit { .. } => Some("exit"),
                ProcessOutput::Log(_) => None,
            })
            .collect()
    }

    fn logs(outs: &[ProcessOutput]) -> Vec<String> {
        outs.iter()
            .filter_map(|o| match o {
                ProcessOutput::Log(r) => Some(r.text.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_stop_with_nothing_open_exits_at_once_proc_4() {
        let now = t0();
        let mut p = Process::new(None);
        assert_eq!(p.phase(), Phase::Running);
        p.handle_signal(now, Signal::Stop);
        let outs = drain(&mut p);
        assert_eq!(kinds(&outs), ["stop"]);
        assert_eq!(
            logs(&outs),
            ["stopping: listener closed, waiting for open connections"]
        );
        p.handle_open(now, 0);
        assert!(
            drain(&mut p).is_empty(),
            "the accept loop may still admit one"
        );
        p.handle_accept_ended(now);
        assert_eq!(
            drain(&mut p),
            [ProcessOutput::Exit {
                status: 0,
                flush_until: now + FLUSH_GRACE
            }]
        );
        assert!(FLUSH_GRACE + CUT_GRACE < Duration::from_secs(1), "FAULT-7");
    }

    #[test]
    fn without_a_drain_timeout_open_connections_are_waited_for_opt_8() {
        let now = t0();
        let mut p = Process::new(None);
        p.handle_signal(now, Signal::Stop);
        p.handle_open(now, 3);
        p.handle_accept_ended(now);
        assert_eq!(p.poll_timeout(), None);
        p.handle_timeout(now + Duration::from_secs(86_400));
        assert_eq!(kinds(&drain(&mut p)), ["stop"]);
        assert_eq!(p.phase(), Phase::Draining);
        // A dump and a reload while draining are still served.
        p.handle_signal(now, Signal::Dump);
        p.handle_signal(now, Signal::Reload);
        assert_eq!(kinds(&drain(&mut p)), ["dump", "reload"]);
        p.handle_open(now, 0);
        assert_eq!(kinds(&drain(&mut p)), ["exit"]);
    }

    #[test]
    fn the_drain_timeout_cuts_then_exits_opt_8() {
        let now = t0();
        let mut p = Process::new(Some(Duration::from_secs(5)));
        p.handle_signal(now, Signal::Stop);
        let outs = drain(&mut p);
        assert_eq!(kinds(&outs), ["stop"]);
        assert_eq!(
            logs(&outs),
            ["stopping: listener closed, waiting up to 5s for open connections"]
        );
        p.handle_open(now, 2);
        p.handle_accept_ended(now);
        assert_eq!(p.poll_timeout(), Some(now + Duration::from_secs(5)));
        p.handle_timeout(now + Duration::from_secs(4));
        assert!(drain(&mut p).is_empty(), "not before the deadline");
        let at = now + Duration::from_secs(5);
        p.handle_timeout(at);
        let outs = drain(&mut p);
        assert_eq!(kinds(&outs), ["cut"]);
        assert_eq!(p.phase(), Phase::Cutting);
        assert_eq!(
            logs(&outs),
            ["drain timeout: exiting, resetting 2 open connections"]
        );
        assert!(outs.contains(&ProcessOutput::CutConnections(CutReason::DrainTimeout)));
        // Cut connections close and report: exit as soon as none is open.
        p.handle_open(at, 1);
        assert!(drain(&mut p).is_empty());
        p.handle_open(at, 0);
        assert_eq!(kinds(&drain(&mut p)), ["exit"]);
    }

    #[test]
    fn a_second_signal_cuts_and_a_connection_that_never_reports_is_not_waited_for_fault_7() {
        let now = t0();
        let mut p = Process::new(None);
        p.handle_signal(now, Signal::Stop);
        p.handle_open(now, 1);
        let later = now + Duration::from_secs(60);
        p.handle_signal(later, Signal::Stop);
        let outs = drain(&mut p);
        assert_eq!(kinds(&outs), ["stop", "cut"], "the second signal cuts");
        assert!(logs(&outs)
            .contains(&"second signal: exiting, resetting 1 open connections".to_string()));
        assert_eq!(p.poll_timeout(), Some(later + CUT_GRACE));
        p.handle_timeout(later + CUT_GRACE);
        let outs = drain(&mut p);
        assert_eq!(
            outs,
            [ProcessOutput::Exit {
                status: 0,
                flush_until: later + CUT_GRACE + FLUSH_GRACE
            }]
        );
        assert_eq!(p.phase(), Phase::Exiting);
        // Exiting: nothing more, whatever comes.
        p.handle_signal(later, Signal::Stop);
        p.handle_signal(later, Signal::Dump);
        p.handle_open(later, 0);
        p.handle_timeout(later + Duration::from_secs(9));
        assert!(drain(&mut p).is_empty());
    }

    #[derive(Debug, Clone)]
    enum Input {
        Signal(Signal),
        Open(usize),
        /// The accept loop returns (the shell reports it after the stop only).
        AcceptEnded,
        /// Time moves on by this many milliseconds (a jump when large).
        Wait(u64),
    }

    fn input() -> impl Strategy<Value = Input> {
        prop_oneof![
            prop_oneof![Just(Signal::Stop), Just(Signal::Dump), Just(Signal::Reload)]
                .prop_map(Input::Signal),
            (0usize..4).prop_map(Input::Open),
            Just(Input::AcceptEnded),
            prop_oneof![0u64..100, 0u64..3_000, Just(86_400_000)].prop_map(Input::Wait),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// The promises of PROC-4, OPT-8 and FAULT-7, checked against the
        /// scenario's own record of signals, counts and time, never against the
        /// machine's phase: the listener closes once, at the first stop, and
        /// before anything is cut or exits; nothing is cut before a second stop
        /// or the drain deadline; the process exits once, when nothing is open
        /// after a stop, by the drain deadline + 1 s, and within 1 s of a second
        /// stop; without a drain timeout and with connections open, a single
        /// stop never ends it; a dump or reload asked before the exit is done.
        #[test]
        fn the_lifecycle_keeps_its_promises(
            drain_ms in proptest::option::of(0u64..10_000),
            inputs in proptest::collection::vec(input(), 0..40),
        ) {
            let start = t0();
            let drain_timeout = drain_ms.map(Duration::from_millis);
            let mut p = Process::new(drain_timeout);
            let mut now = start;
            let mut open = 0usize;
            let mut stops: Vec<Instant> = vec![];
            let mut stop_accepting = 0;
            let mut cut_at: Option<Instant> = None;
            let mut exit_at: Option<Instant> = None;
            // Whether nothing was open, with the accept loop ended, at some
            // moment since the first stop.
            let mut emptied = false;
            let mut accept_ended = false;
            let (mut dumps_asked, mut dumps_done) = (0, 0);
            let one_second = Duration::from_secs(1);
            for input in inputs {
                match input {
                    Input::Signal(s) => {
                        if exit_at.is_none() {
                            match s {
                                Signal::Stop => stops.push(now),
                                Signal::Dump => dumps_asked += 1,
                                Signal::Reload => {}
                            }
                        }
                        p.handle_signal(now, s);
                    }
                    Input::Open(n) => {
                        open = n;
                        p.handle_open(now, n);
                    }
                    Input::AcceptEnded => {
                        if stop_accepting == 1 {
                            accept_ended = true;
                            p.handle_accept_ended(now);
                        }
                    }
                    Input::Wait(ms) => {
                        // The shell wakes at the machine's timeout, or at the
                        // end of the wait if that comes first.
                        let until = now + Duration::from_millis(ms);
                        for _ in 0..4 {
                            match p.poll_timeout() {
                                Some(t) if t <= until => {
                                    now = t.max(now);
                                    p.handle_timeout(now);
                                    while let Some(out) = p.poll_output() {
                                        record(out, now, open, &mut stop_accepting,
                                            &mut cut_at, &mut exit_at, &mut dumps_done)?;
                                    }
                                }
                                _ => break,
                            }
                        }
                        now = until;
                        p.handle_timeout(now);
                    }
                }
                while let Some(out) = p.poll_output() {
                    let before = exit_at;
                    record(out, now, open, &mut stop_accepting, &mut cut_at, &mut exit_at,
                        &mut dumps_done)?;
                    // The open count the shell reports right after the stop.
                    if stop_accepting == 1 && before.is_none() && exit_at.is_none() {
                        p.handle_open(now, open);
                    }
                }
                while let Some(out) = p.poll_output() {
                    record(out, now, open, &mut stop_accepting, &mut cut_at, &mut exit_at,
                        &mut dumps_done)?;
                }
                if let Some(&first) = stops.first() {
                    prop_assert_eq!(stop_accepting, 1, "the listener closes at the first stop");
                    if open == 0 && accept_ended {
                        prop_assert!(exit_at.is_some(), "nothing open after a stop: exit");
                    }
                    if let Some(t) = drain_timeout {
                        if now >= first + t + one_second {
                            prop_assert!(exit_at.is_some_and(|e| e <= first + t + one_second),
                                "--drain-timeout + 1 s bounds the exit");
                        }
                    }
                    if let Some(&second) = stops.get(1) {
                        if now >= second + one_second {
                            prop_assert!(exit_at.is_some_and(|e| e <= second + one_second),
                                "a second stop ends plug within 1 s");
                        }
                    }
                    if open == 0 && accept_ended {
                        emptied = true;
                    }
                    if drain_timeout.is_none() && stops.len() == 1 && !emptied {
                        prop_assert!(exit_at.is_none(), "open connections are waited for");
                    }
                } else {
                    prop_assert_eq!(stop_accepting, 0);
                    prop_assert!(exit_at.is_none());
                }
                if let Some(c) = cut_at {
                    let first = stops[0];
                    let by_signal = stops.get(1).is_some_and(|&s| s <= c);
                    let by_deadline = drain_timeout.is_some_and(|t| c >= first + t);
                    prop_assert!(by_signal || by_deadline, "cut only by a second stop or the deadline");
                }
                if exit_at.is_none() {
                    prop_assert_eq!(dumps_done, dumps_asked);
                }
            }
        }
    }

    fn record(
        out: ProcessOutput,
        now: Instant,
        open: usize,
        stop_accepting: &mut usize,
        cut_at: &mut Option<Instant>,
        exit_at: &mut Option<Instant>,
        dumps_done: &mut usize,
    ) -> Result<(), TestCaseError> {
        prop_assert!(exit_at.is_none(), "nothing after the exit: {:?}", out);
        match out {
            ProcessOutput::StopAccepting => *stop_accepting += 1,
            ProcessOutput::Dump => *dumps_done += 1,
            ProcessOutput::Reload | ProcessOutput::Log(_) => {}
            ProcessOutput::CutListener(_) => prop_assert!(false, "no listener was closed"),
            ProcessOutput::CutConnections(_) => {
                prop_assert!(open > 0, "nothing to cut");
                prop_assert!(*stop_accepting == 1);
                *cut_at = Some(now);
            }
            ProcessOutput::Exit {
                status,
                flush_until,
            } => {
                prop_assert_eq!(status, 0);
                prop_assert!(*stop_accepting == 1, "exit only after a stop");
                prop_assert!(flush_until <= now + FLUSH_GRACE);
                *exit_at = Some(flush_until);
            }
        }
        Ok(())
    }

    #[test]
    fn a_closed_listener_is_cut_by_the_drain_timeout_opt_15() {
        let t = t0();
        let mut p = Process::new(Some(Duration::from_secs(5)));
        p.handle_listener_closed(t, 7);
        assert_eq!(p.poll_timeout(), Some(t + Duration::from_secs(5)));
        p.handle_timeout(t + Duration::from_secs(4));
        assert_eq!(p.poll_output(), None, "not yet");
        p.handle_timeout(t + Duration::from_secs(5));
        assert_eq!(p.poll_output(), Some(ProcessOutput::CutListener(7)));
        assert_eq!(p.poll_output(), None);
        assert_eq!(p.poll_timeout(), None, "once");
        assert_eq!(p.phase(), Phase::Running, "the process goes on");
        // Without --drain-timeout, its connections finish whenever they do.
        let mut q = Process::new(None);
        q.handle_listener_closed(t, 1);
        assert_eq!(q.poll_timeout(), None);
        // Once told to exit, nothing more is due, not even a closed listener's cut.
        p.handle_listener_closed(t, 8);
        p.handle_signal(t, Signal::Stop);
        p.handle_accept_ended(t);
        p.handle_open(t, 0);
        assert_eq!(p.phase(), Phase::Exiting);
        assert_eq!(p.poll_timeout(), None);
    }

    proptest! {
        /// OPT-15: a listener a reload closed has its connections cut once,
        /// --drain-timeout after it was closed (never without the option, never
        /// for one not closed), and the process goes on serving.
        #[test]
        fn a_closed_listener_is_cut_once_at_its_deadline_opt_15(
            drain in proptest::option::of(0u64..5_000),
            steps in proptest::collection::vec((proptest::option::of(0u64..6), 0u64..3_000), 1..30),
        ) {
            let t = t0();
            let drain_timeout = drain.map(Duration::from_millis);
            let mut p = Process::new(drain_timeout);
            let mut now = t;
            let mut closed: Vec<(u64, Instant)> = vec![];
            let mut cuts: Vec<(u64, Instant)> = vec![];
            for (close, wait) in steps {
                if let Some(id) = close.filter(|id| !closed.iter().any(|c| c.0 == *id)) {
                    p.handle_listener_closed(now, id);
                    closed.push((id, now));
                }
                // The shell wakes at the machine's timeout, or at the end of the wait.
                let until = now + Duration::from_millis(wait);
                for _ in 0..40 {
                    match p.poll_timeout() {
                        Some(at) if at <= until => {
                            now = at.max(now);
                            p.handle_timeout(now);
                            while let Some(out) = p.poll_output() {
                                if let ProcessOutput::CutListener(id) = out {
                                    cuts.push((id, now));
                                } else {
                                    prop_assert!(false, "{:?}", out);
                                }
                            }
                        }
                        _ => break,
                    }
                }
                now = until;
                prop_assert_eq!(p.phase(), Phase::Running);
            }
            for &(id, at) in &cuts {
                let when = closed.iter().find(|c| c.0 == id).map(|c| c.1);
                prop_assert!(when.is_some(), "{} was never closed", id);
                let due = when.unwrap_or(at) + drain_timeout.unwrap_or(Duration::MAX / 4);
                prop_assert_eq!(at, due, "cut at its deadline");
                prop_assert_eq!(cuts.iter().filter(|c| c.0 == id).count(), 1);
            }
            for &(id, at) in &closed {
                let cut = cuts.iter().any(|c| c.0 == id);
                let due = drain_timeout.map(|d| at + d);
                prop_assert_eq!(cut, due.is_some_and(|d| d <= now), "listener {}", id);
            }
        }
    }
}
