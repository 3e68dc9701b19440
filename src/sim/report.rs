//! What a simulated run leaves: its trace hash, and a failure's report.

use std::fmt;
use std::time::Duration;

use super::executor::TaskId;
use super::token::Token;

/// FNV-1a, 64 bits, over everything that happened in a run: which task ran at each step,
/// every clock jump, every fault fired, every lifecycle event and the final snapshots. Written
/// out here (not `std`'s hasher, whose output may change between Rust versions), so a trace
/// hash printed today is comparable tomorrow.
#[derive(Debug, Clone)]
pub(crate) struct Trace {
    hash: u64,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl Trace {
    pub(crate) fn new() -> Self {
        Trace { hash: FNV_OFFSET }
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.hash ^= u64::from(byte);
            self.hash = self.hash.wrapping_mul(FNV_PRIME);
        }
    }

    fn record(&mut self, tag: u8, bytes: &[u8]) {
        self.write(&[tag]);
        self.write(&(bytes.len() as u64).to_le_bytes());
        self.write(bytes);
    }

    pub(crate) fn step(&mut self, task: TaskId) {
        self.record(b's', &(task.0 as u64).to_le_bytes());
    }

    pub(crate) fn jump(&mut self, to: Duration) {
        self.record(b'j', &to.as_nanos().to_le_bytes());
    }

    pub(crate) fn fault(&mut self, fault: &str) {
        self.record(b'f', fault.as_bytes());
    }

    pub(crate) fn event(&mut self, event: &str) {
        self.record(b'e', event.as_bytes());
    }

    pub(crate) fn text(&mut self, text: &str) {
        self.record(b't', text.as_bytes());
    }

    /// How the run ended, with everything the report says (the check's message, the
    /// panicking task and its message, who was stuck in a deadlock and for how long), so that
    /// two runs of one token that fail differently leave different hashes. Only what names a
    /// thread of this process (its id or name: it differs from one process to the next) is
    /// left out of an out-of-reach message.
    pub(crate) fn outcome(&mut self, outcome: Result<(), &FailureKind>) {
        let kind = match outcome {
            Ok(()) => {
                self.record(b'r', b"passed");
                return;
            }
            Err(kind) => kind,
        };
        match kind {
            FailureKind::Check(message) => self.record(b'c', message.as_bytes()),
            FailureKind::Panic { task, message } => {
                self.record(b'p', task.as_bytes());
                self.record(b'm', message.as_bytes());
            }
            FailureKind::Deadlock(deadlock) => {
                self.record(b'd', &deadlock.elapsed.as_nanos().to_le_bytes());
                for task in &deadlock.tasks {
                    self.record(b'w', task.as_bytes());
                }
                for (what, list) in [(b'v', &deadlock.services), (b'n', &deadlock.sessions)] {
                    for (name, age) in list {
                        self.record(what, name.as_bytes());
                        self.record(b'a', &age.as_nanos().to_le_bytes());
                    }
                }
                self.record(b'+', &deadlock.more_sessions.to_le_bytes());
            }
            FailureKind::OutOfReach(message) => {
                self.record(b'o', without_threads(message).as_bytes());
            }
            FailureKind::StepLimit { steps } => self.record(b'l', &steps.to_le_bytes()),
            FailureKind::Nondeterministic { first, second } => {
                self.record(b'x', &first.to_le_bytes());
                self.record(b'x', &second.to_le_bytes());
            }
        }
    }

    /// A task's future panicked as it was dropped at the run's end.
    pub(crate) fn drop_panic(&mut self, task: &str, message: &str) {
        self.record(b'D', task.as_bytes());
        self.record(b'm', message.as_bytes());
    }

    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }
}

/// `message` without the thread it names: the parenthesis after "another thread" (a name or
/// a `ThreadId(n)`, which differ between processes and between runs of a thread pool).
pub(crate) fn without_threads(message: &str) -> String {
    const MARK: &str = "another thread (";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(MARK) {
        out.push_str(&rest[..at + MARK.len()]);
        rest = &rest[at + MARK.len()..];
        let mut depth = 1;
        let end = rest
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .map_or(rest.len(), |(i, _)| i);
        out.push('…');
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// What went wrong in a failing run.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    /// The scenario's check failed: it returned an error, or it panicked (a failed
    /// `assert!`); the message says which.
    Check(String),
    /// A task other than the scenario panicked (services' panics are caught by their
    /// lifecycle and show in its report instead); or, in a run that otherwise passed, a
    /// task's future (the scenario's included) panicked while it was dropped at the end of
    /// the run — its message then says so.
    Panic {
        /// The task, as `name #number` (numbers count spawns in the run).
        task: String,
        /// The panic's message and where it was raised.
        message: String,
    },
    /// Nothing could run, no timer was set, the scenario had not returned, and no wake came
    /// from another thread within [`FOREIGN_WAKE_WAIT`](super::FOREIGN_WAKE_WAIT).
    Deadlock(Deadlock),
    /// The run touched something the simulator cannot control or replay: a real clock, a
    /// tokio or async-io timer, a spawn on another executor, a wake from another thread
    /// (a real socket, a real timer), an `Env` kept from an earlier run. The message names it
    /// and what to use instead.
    OutOfReach(String),
    /// The run was still going after [`Config::max_steps`](super::Config::max_steps) steps:
    /// a livelock (tasks waking each other forever), or a scenario longer than the limit.
    StepLimit {
        /// The limit.
        steps: u64,
    },
    /// The same token ran twice, back to back, and left different traces (the trace covers
    /// the failure's report too: a check whose message changed counts): something outside
    /// the simulator decided part of the run (the system clock, a thread, a `HashMap`'s
    /// random order, a global that outlived the first of the two), so its replay could not
    /// be trusted. The failure's `Display` says how each of the two runs ended.
    Nondeterministic {
        /// The first run's trace hash.
        first: u64,
        /// The second run's.
        second: u64,
    },
}

/// Who was stuck in a [`FailureKind::Deadlock`]: the unfinished tasks, and the live services
/// and sessions of every lifecycle the environment watches ([`Env::lifecycle`],
/// [`Env::watch`]) or reports ([`Env::nest`]), with their ages.
///
/// Tasks a lifecycle spawned (its services, restarts, stop triggers) are named `lifecycle
/// task #N`: a spawner is not told which service it runs; [`services`](Self::services)
/// names them. A lifecycle nested with `lc.nest(.., env.builder())` is not named (its
/// parent's service is): nest it with [`Env::nest`].
///
/// [`Env::lifecycle`]: super::Env::lifecycle
/// [`Env::watch`]: super::Env::watch
/// [`Env::nest`]: super::Env::nest
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Deadlock {
    /// Simulated time since the run began.
    pub elapsed: Duration,
    /// The unfinished tasks (the environment's own excluded), as `name #number`.
    pub tasks: Vec<String>,
    /// Each running service: its name and uptime.
    pub services: Vec<(String, Duration)>,
    /// The oldest live named sessions: name and age (at most
    /// [`Snapshot::OLDEST`](crate::Snapshot::OLDEST) a lifecycle).
    pub sessions: Vec<(String, Duration)>,
    /// How many more sessions were live: unnamed ones, and named ones younger than those
    /// listed.
    pub more_sessions: u64,
}

impl fmt::Display for Deadlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "deadlock after {:?} of simulated time: nothing can run, no timer is set, and the \
             scenario has not returned. If nothing in the simulation is stuck, a task waits on \
             something outside it that did not wake it within {:?} of real time: a real timer \
             (futures-timer's Delay, an async-io Timer, a SystemClock sleep), a real socket, \
             or a task on another executor (smol::spawn, a thread pool)",
            self.elapsed,
            super::FOREIGN_WAKE_WAIT,
        )?;
        let list = |items: &[(String, Duration)], what: &str| {
            items
                .iter()
                .map(|(name, age)| format!("\"{name}\" ({what} {age:?})"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !self.services.is_empty() {
            write!(f, "\n  live services: {}", list(&self.services, "up"))?;
        }
        match (self.sessions.is_empty(), self.more_sessions) {
            (true, 0) => {}
            (false, 0) => write!(f, "\n  live sessions: {}", list(&self.sessions, "age"))?,
            (true, more) => write!(f, "\n  live sessions: {more} unnamed")?,
            (false, more) => write!(
                f,
                "\n  live sessions: {}, and {more} more (unnamed, or younger)",
                list(&self.sessions, "age")
            )?,
        }
        if !self.tasks.is_empty() {
            write!(f, "\n  waiting tasks: {}", self.tasks.join(", "))?;
        }
        Ok(())
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureKind::Check(message) => write!(f, "check failed: {message}"),
            FailureKind::Panic { task, message } => {
                write!(f, "task {task} panicked: {message}")
            }
            FailureKind::Deadlock(deadlock) => deadlock.fmt(f),
            FailureKind::OutOfReach(message) => write!(f, "out of reach: {message}"),
            FailureKind::StepLimit { steps } => write!(
                f,
                "step limit: still running after {steps} steps (a livelock? raise \
                 Config::max_steps if the scenario is that long)"
            ),
            FailureKind::Nondeterministic { first, second } => write!(
                f,
                "nondeterministic: the same run left two different traces ({first:016x}, then \
                 {second:016x}): something outside the simulator (the system clock, a thread, \
                 a HashMap's random order, a global) decided part of it"
            ),
        }
    }
}

/// A failing simulated run: what went wrong, and how to run it again.
///
/// Its `Display` ends with two lines, `replay: TOKEN` and `trace: HASH`: pass the token to
/// [`replay`](super::replay) (or set [`REPLAY_ENV`](super::REPLAY_ENV) to it) to run the same
/// schedule again, which prints the same trace hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure(Box<FailureInner>);

/// Boxed, so a `Result<_, Failure>` stays small.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FailureInner {
    pub(crate) kind: FailureKind,
    pub(crate) token: Token,
    pub(crate) trace: u64,
    pub(crate) run: Option<u64>,
    pub(crate) steps: u64,
    pub(crate) elapsed: Duration,
    /// Lines printed after the kind: what else happened (a panic while the run's futures were
    /// dropped), how each run of a nondeterministic pair ended, how to replay a step limit.
    pub(crate) notes: Vec<String>,
}

impl Failure {
    pub(crate) fn new(inner: FailureInner) -> Self {
        Failure(Box::new(inner))
    }

    pub(crate) fn set_run(&mut self, run: u64) {
        self.0.run = Some(run);
    }

    /// What went wrong.
    pub fn kind(&self) -> &FailureKind {
        &self.0.kind
    }

    /// The token that replays the run.
    pub fn token(&self) -> &Token {
        &self.0.token
    }

    /// The hash of the run's trace (FNV-1a 64): a replay of [`token`](Self::token) leaves
    /// the same.
    pub fn trace(&self) -> u64 {
        self.0.trace
    }

    /// The run's index in its search (from 0), or `None` for a single run or a replay.
    pub fn run_index(&self) -> Option<u64> {
        self.0.run
    }

    /// How many steps (polls) the run took.
    pub fn steps(&self) -> u64 {
        self.0.steps
    }

    /// Simulated time since the run began, when it failed.
    pub fn elapsed(&self) -> Duration {
        self.0.elapsed
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "simulated run failed: {}", self.0.kind)?;
        for note in &self.0.notes {
            writeln!(f, "  {note}")?;
        }
        let scheduler = self.0.token.scheduler();
        match self.0.run {
            Some(run) => writeln!(
                f,
                "  run {run} of the search, {scheduler}, {} steps, {:?} simulated",
                self.0.steps, self.0.elapsed
            )?,
            None => writeln!(
                f,
                "  {scheduler}, {} steps, {:?} simulated",
                self.0.steps, self.0.elapsed
            )?,
        }
        writeln!(f, "replay: {}", self.0.token)?;
        write!(f, "trace: {:016x}", self.0.trace)
    }
}

impl std::error::Error for Failure {}

/// One passing run: its token, trace hash and counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub(crate) token: Token,
    pub(crate) trace: u64,
    pub(crate) steps: u64,
    pub(crate) jumps: u64,
    pub(crate) faults: u64,
    pub(crate) elapsed: Duration,
}

impl Run {
    /// The token that replays it.
    pub fn token(&self) -> &Token {
        &self.token
    }

    /// The hash of its trace (FNV-1a 64).
    pub fn trace(&self) -> u64 {
        self.trace
    }

    /// How many steps (polls) it took.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// How many times its clock jumped to the next deadline.
    pub fn clock_jumps(&self) -> u64 {
        self.jumps
    }

    /// How many injected faults fired.
    pub fn faults(&self) -> u64 {
        self.faults
    }

    /// The simulated time it spanned.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "passed: {} steps, {} clock jumps, {} faults, {:?} simulated\nreplay: {}\ntrace: {:016x}",
            self.steps, self.jumps, self.faults, self.elapsed, self.token, self.trace
        )
    }
}

/// A search that found nothing: how much it explored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stats {
    pub(crate) runs: u64,
    pub(crate) steps: u64,
    pub(crate) longest: u64,
    pub(crate) jumps: u64,
    pub(crate) faults: u64,
    pub(crate) wall: Duration,
}

impl Stats {
    /// Runs made (the determinism check's re-runs not counted).
    pub fn runs(&self) -> u64 {
        self.runs
    }

    /// Steps (polls) over all runs.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The most steps one run took.
    pub fn longest_run(&self) -> u64 {
        self.longest
    }

    /// Clock jumps over all runs.
    pub fn clock_jumps(&self) -> u64 {
        self.jumps
    }

    /// Faults fired over all runs.
    pub fn faults(&self) -> u64 {
        self.faults
    }

    /// Real time the search took.
    pub fn wall_time(&self) -> Duration {
        self.wall
    }

    pub(crate) fn add(&mut self, run: &Run) {
        self.runs += 1;
        self.steps += run.steps;
        self.longest = self.longest.max(run.steps);
        self.jumps += run.jumps;
        self.faults += run.faults;
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per_second = self.runs as f64 / self.wall.as_secs_f64().max(1e-9);
        write!(
            f,
            "{} runs passed ({} steps, the longest {}, {} clock jumps, {} faults) in {:.2?}, \
             {per_second:.0} runs/s",
            self.runs, self.steps, self.longest, self.jumps, self.faults, self.wall
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_names_are_left_out_of_the_hash() {
        assert_eq!(
            without_threads("task `a #1` was woken from another thread (ThreadId(7)): a real"),
            "task `a #1` was woken from another thread (…): a real"
        );
        assert_eq!(
            without_threads("another thread (thread `smol-3`), another thread (x"),
            "another thread (…), another thread (…"
        );
        assert_eq!(without_threads("no thread"), "no thread");
    }

    #[test]
    fn fnv1a_matches_its_reference_values() {
        let mut trace = Trace::new();
        assert_eq!(trace.hash(), 0xcbf2_9ce4_8422_2325);
        trace.write(b"a");
        assert_eq!(trace.hash(), 0xaf63_dc4c_8601_ec8c);
        let mut trace = Trace::new();
        trace.write(b"foobar");
        assert_eq!(trace.hash(), 0x8594_4171_f739_67e8);
    }
}
