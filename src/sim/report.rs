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

    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }
}

/// What went wrong in a failing run.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    /// The scenario's check failed: it returned an error, or it panicked (a failed
    /// `assert!`); the message says which.
    Check(String),
    /// A task other than the scenario panicked (services' panics are caught by their
    /// lifecycle and show in its report instead).
    Panic {
        /// The task, as `name #number` (numbers count spawns in the run).
        task: String,
        /// The panic's message and where it was raised.
        message: String,
    },
    /// Nothing could run, no timer was set and the scenario had not returned.
    Deadlock(Deadlock),
    /// The run touched something the simulator cannot control or replay: a real clock, a
    /// tokio or async-io timer, a spawn on another executor, a wake from another thread
    /// (a real socket, a real timer). The message names it and what to use instead.
    OutOfReach(String),
    /// The run was still going after [`Config::max_steps`](super::Config::max_steps) steps:
    /// a livelock (tasks waking each other forever), or a scenario longer than the limit.
    StepLimit {
        /// The limit.
        steps: u64,
    },
    /// The same token ran twice and left different traces: something outside the simulator
    /// decided part of the run (the system clock, a thread, a `HashMap`'s random order, a
    /// global that outlived the first run), so its replay could not be trusted.
    Nondeterministic {
        /// The first run's trace hash.
        first: u64,
        /// The second run's.
        second: u64,
    },
}

/// Who was stuck in a [`FailureKind::Deadlock`]: the unfinished tasks, and the live services
/// and sessions of every lifecycle the environment watches, with their ages.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Deadlock {
    /// Simulated time since the run began.
    pub elapsed: Duration,
    /// The unfinished tasks (the environment's own excluded), as `name #number`.
    pub tasks: Vec<String>,
    /// Each running service: its name and uptime.
    pub services: Vec<(String, Duration)>,
    /// The oldest live named sessions: name and age.
    pub sessions: Vec<(String, Duration)>,
}

impl fmt::Display for Deadlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "deadlock after {:?} of simulated time: nothing can run, no timer is set, and the \
             scenario has not returned (a task waiting on something outside the simulation, \
             such as a tokio timer or a real socket, looks like this too)",
            self.elapsed
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
        if !self.sessions.is_empty() {
            write!(f, "\n  live sessions: {}", list(&self.sessions, "age"))?;
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
