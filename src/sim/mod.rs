//! Deterministic simulation: find and replay the shutdown races of your own services and
//! sessions.
//!
//! Does a queue worker lose a job if SIGTERM lands between taking it and beginning its
//! session? A test on a real executor answers only for the interleaving it happened to get.
//! Here the scenario runs on a seeded single-thread executor on which every service, stop
//! trigger and task is one schedulable task, and a scheduler — uniformly random, or PCT —
//! picks which ready task runs at each step. Time is simulated: it jumps to the next
//! deadline whenever nothing can run, so a 30 s grace drains in microseconds. The
//! environment is a task too: the stops, signals, forces, panics and clock jumps the
//! scenario queues fire at moments the scheduler chooses, so *when* a signal lands is
//! explored like any other interleaving.
//!
//! [`Config::search`] runs the scenario under many schedules (1,000 by default) and stops
//! at the first failure: the scenario's check fails (it returns an error or panics), a task
//! panics, the run deadlocks (nothing can run, no timer is set, the scenario has not
//! returned — reported with the names and ages of the live services and sessions), it
//! runs past its step limit, or it reaches [out of the simulation](#out-of-reach). The
//! [`Failure`] prints one `replay: TOKEN` line; [`replay`] (or the [`REPLAY_ENV`] variable,
//! which [`Config::search`] honours) runs exactly that schedule again, and both print the
//! same `trace: HASH` line: a hash (FNV-1a 64) of every scheduling decision, clock jump,
//! fault and lifecycle event, and of the failure's report. A failing run is re-run before it
//! is reported, and so is a search's first: a different hash is a failure of its own
//! ([`FailureKind::Nondeterministic`]; see [what it compares](#determinism-and-what-its-check-compares)).
//!
//! # Example
//!
//! A worker that takes a job off a queue, then begins its session: if the stop lands in
//! between, the session is refused and the job is lost. The search finds the schedule
//! where it does, and the token replays it.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//! use async_lifecycle::sim::{self, Config, Env, Fault};
//! use futures::future::{Either, select};
//!
//! async fn scenario(env: Env) -> sim::Outcome {
//!     let lc = env.lifecycle(|b| b.grace(Duration::from_secs(5)));
//!     let (tx, rx) = async_channel::unbounded::<u32>();
//!     let (taken, done) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
//!     let (sessions, t, d) = (lc.downgrade(), taken.clone(), done.clone());
//!     lc.service("worker", move |mut stop| async move {
//!         while let Either::Left((Ok(job), _)) = select(std::pin::pin!(rx.recv()), &mut stop).await {
//!             t.lock().unwrap().push(job);
//!             // The race: the job is off the queue, its session not begun yet.
//!             let Ok(_session) = sessions.session(format!("job {job}")) else { break };
//!             d.lock().unwrap().push(job);
//!         }
//!     })?;
//!     let queue = tx.clone();
//!     env.spawn("producer", async move {
//!         for job in 0..3 {
//!             queue.send(job).await.unwrap();
//!             sim::yield_now().await;
//!         }
//!     });
//!     env.fault(Fault::Signal); // a SIGTERM, at a moment the scheduler picks
//!     lc.wait().await;
//!     let (taken, done) = (taken.lock().unwrap(), done.lock().unwrap());
//!     if *taken != *done {
//!         return Err(format!("jobs taken {taken:?}, done only {done:?}").into());
//!     }
//!     Ok(())
//! }
//!
//! let failure = Config::new().runs(1000).search(scenario).unwrap_err();
//! println!("{failure}"); // what went wrong, then `replay: v1-…` and `trace: …`
//! let token = failure.token().to_string();
//! let again = sim::replay(&token, scenario).unwrap_err();
//! assert_eq!(again.trace(), failure.trace());
//! assert_eq!(again.kind(), failure.kind());
//! ```
//!
//! # What is simulated
//!
//! - Build lifecycles with [`Env::lifecycle`] (or [`Env::builder`]): they get the simulated
//!   clock and spawner, and a seed from the run's choices. The scenario awaits
//!   `lc.wait()` itself, so it is scheduled like everything else.
//! - Spawn with [`Env::spawn`], sleep with [`Env::sleep`] (or the lifecycle's clock), yield
//!   with [`yield_now`]. Any `Send` future works inside (channels such as async-channel or
//!   futures' are fine: they only wake tasks).
//! - Faults: [`Env::fault`] with a [`Fault`]; [`Env::panicky`] wraps a service for
//!   [`Fault::Panic`].
//! - Choices: [`Choices`] — a seed per run in a search, or raw bytes (cargo-fuzz) or a
//!   number list (proptest, which shrinks it) through [`Config::run`] and a [`Token`].
//!
//! # Out of reach
//!
//! What the simulator cannot control would make a run unrepeatable, so it is an error, not
//! a silent difference: within a run, [`SystemClock`](crate::SystemClock), the `tokio` and
//! `async-io` clocks and spawners of this crate, tokio timers, sockets and spawns (tokio
//! panics without its runtime), an [`Env`] kept from an earlier run (or a lifecycle it
//! built), and any wake or spawn that comes from another thread (a real timer, a real
//! socket, another executor) fail the run with [`FailureKind::OutOfReach`], naming what was
//! used and what to use instead — in the scenario closure too, before its first await.
//!
//! A real timer (futures-timer's `Delay`, an async-io `Timer`, a `SystemClock` sleep from
//! code that never read the clock) or a task on another executor (`smol::spawn`) wakes its
//! task from its own thread, typically after the run has nothing left to run. So a run that
//! looks deadlocked waits up to [`FOREIGN_WAKE_WAIT`] (150 ms of real time, spent only on a
//! failing run) for such a wake: one that comes is out of reach, naming the task it woke.
//! A wake from another thread is seen whenever it lands, while the run waits or while the
//! woken task is being polled. What wakes nothing within the wait — a socket no one connects
//! to, a timer set further out — is reported as a [`FailureKind::Deadlock`], whose message
//! lists these causes. A task on another executor that finishes before it is first awaited
//! wakes nothing at all, and cannot be seen (`smol::spawn` on a loaded machine, whose thread
//! may run the task before the scenario awaits it: such a search can pass).
//!
//! Nor can blocking calls be seen. `std::thread::sleep` or blocking I/O only make the run
//! slower, but a blocking wait on something only the simulator can complete never returns:
//! `futures::executor::block_on(env.sleep(..))`, or `block_on(lc.wait())` inside a service,
//! blocks the run's only thread, so the simulated clock cannot move and the search hangs.
//!
//! With the `tokio` feature, [`Config::search`] and [`Config::run`] refuse to run inside a
//! tokio runtime (a `#[tokio::test]`): there a tokio timer or spawn would go to that
//! runtime, outside the simulation — a `tokio::spawn` would pass silently. Search from a
//! plain `#[test]`. Without the feature the crate cannot check this: do not search inside a
//! runtime.
//!
//! # Determinism, and what its check compares
//!
//! The determinism check runs one token twice, back to back — a search's first run and each
//! failing run — and compares the two traces, which cover every scheduling decision, clock
//! jump, fault and lifecycle event and the failure's whole report (the check's message, the
//! panicking task, who was stuck in a deadlock and for how long; only the thread an
//! out-of-reach message names is left out). A difference is
//! [`FailureKind::Nondeterministic`], with how each of the two runs ended. It sees what
//! differs between those two runs: a `HashMap`'s random order, the system clock read
//! directly, a thread racing the run, a global that the first of the two changed. It cannot
//! see what is the same in both and differs later — a global that changes the outcome of
//! the search's fifth run and its re-run alike, then not a replay's — nor anything in a run
//! that is neither the first nor failing. A `replay:` line is trustworthy as far as these two
//! runs are.
//!
//! # Panics and output
//!
//! Panics on the thread running a simulation are caught and reported by the run (or by the
//! lifecycle, for a service): a panic hook, installed at the first run, keeps them from
//! printing and leaves every other thread's to the hook that was there before.

mod choice;
mod env;
mod executor;
mod reach;
mod report;
mod sched;
mod token;

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use choice::Choices;
pub use env::{Env, Fault, Panicky, YieldNow};
pub use executor::JoinHandle;
use report::FailureInner;
pub use report::{Deadlock, Failure, FailureKind, Run, Stats};
pub use sched::Scheduler;
pub use token::{Token, TokenError};

pub(crate) use reach::out_of_reach;

use executor::{Core, Culprit, ENVIRONMENT};

/// What a scenario returns: `Ok(())` when its check passed, an error saying what is wrong
/// otherwise (`Err("lost a job".into())`, or any error through `?`).
pub type Outcome = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// The environment variable [`Config::search`] honours: set to a replay token, the search
/// runs only that run (as [`Config::run`] would), so a failure seen in CI replays under the
/// same test command.
pub const REPLAY_ENV: &str = "ASYNC_LIFECYCLE_SIM_REPLAY";

/// The environment variable that sets a search's base seed (decimal, or hex after `0x`)
/// when [`Config::seed`] did not: to explore other schedules than the default seed's.
pub const SEED_ENV: &str = "ASYNC_LIFECYCLE_SIM_SEED";

/// How long a run that looks deadlocked waits, in real time, for a wake from another thread
/// before it is reported as a [`FailureKind::Deadlock`]: a real timer (futures-timer, async-io,
/// a [`SystemClock`](crate::SystemClock) sleep), a real socket or another executor wakes its
/// task from its own thread, later than the simulator would notice otherwise. A wake within
/// it makes the run [`FailureKind::OutOfReach`], naming the task it woke. Spent only on a
/// failing run; a timer set further out still reads as a deadlock.
pub const FOREIGN_WAKE_WAIT: Duration = Duration::from_millis(150);

/// A run's step limit unless [`Config::max_steps`] sets another.
const DEFAULT_MAX_STEPS: u64 = 100_000;

/// The base seed of a search when neither [`Config::seed`] nor [`SEED_ENV`] sets one: a
/// search explores the same schedules every time, so CI is repeatable.
pub const DEFAULT_SEED: u64 = 0x5EED_BA5E_0000_0001;

/// Yields once, as [`Env::yield_now`] does, without an `Env` at hand.
pub fn yield_now() -> YieldNow {
    env::yield_now()
}

/// How a simulation searches: how many runs, which scheduler, which seed, which limits.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use async_lifecycle::sim::{Config, Fault, Scheduler};
///
/// let stats = Config::new()
///     .runs(50)
///     .scheduler(Scheduler::Pct(2))
///     .seed(7)
///     .search(|env| async move {
///         let lc = env.lifecycle(|b| b.grace(Duration::from_secs(30)));
///         lc.service("ticker", |stop| stop)?;
///         env.fault(Fault::Signal);
///         let report = lc.wait().await;
///         assert_eq!(report.exit_code(), 0);
///         Ok(())
///     })?;
/// assert_eq!(stats.runs(), 50);
/// # Ok::<(), async_lifecycle::sim::Failure>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a Config does nothing until .search(..) or .run(..) is called"]
pub struct Config {
    runs: u64,
    seed: Option<u64>,
    scheduler: Scheduler,
    max_steps: u64,
    pct_steps: Option<u64>,
    check_determinism: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config::new()
    }
}

impl Config {
    /// 1,000 runs, the [`Scheduler::Portfolio`], the [`DEFAULT_SEED`] (or [`SEED_ENV`]),
    /// 100,000 steps a run, PCT's run length learned from the runs so far, and the
    /// determinism check on.
    pub fn new() -> Self {
        Config {
            runs: 1000,
            seed: None,
            scheduler: Scheduler::Portfolio,
            max_steps: DEFAULT_MAX_STEPS,
            pct_steps: None,
            check_determinism: true,
        }
    }

    /// How many runs a search makes at most (it stops at the first failure).
    pub fn runs(mut self, runs: u64) -> Self {
        self.runs = runs;
        self
    }

    /// The search's base seed: run `i` is seeded from it and `i`.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The scheduler ([`Scheduler::Portfolio`] by default).
    ///
    /// # Panics
    ///
    /// For a PCT depth other than 1, 2 or 3.
    pub fn scheduler(mut self, scheduler: Scheduler) -> Self {
        if let Scheduler::Pct(depth) = scheduler {
            assert!(
                (1..=3).contains(&depth),
                "async_lifecycle::sim: PCT depth {depth}: it is 1, 2 or 3"
            );
        }
        self.scheduler = scheduler;
        self
    }

    /// The most steps (task polls) one run may take before it fails with
    /// [`FailureKind::StepLimit`] (100,000 by default). A replay token does not carry it:
    /// replay a run found under another limit with the same `Config` (a step-limit failure's
    /// report says so).
    pub fn max_steps(mut self, steps: u64) -> Self {
        self.max_steps = steps.max(1);
        self
    }

    /// The run length PCT spreads its change points over. By default it is learned: the
    /// longest run of the search so far (64 before the first).
    pub fn pct_steps(mut self, steps: u64) -> Self {
        self.pct_steps = Some(steps.max(1));
        self
    }

    /// Whether to run again, and compare traces, the search's first run and every failing
    /// run (on by default): a mismatch is [`FailureKind::Nondeterministic`]. The trace covers
    /// the schedule, the clock, the faults, the lifecycles' events and the failure's whole
    /// report. A run that reached [out of the simulation](self#out-of-reach) is reported as
    /// that, without a second run.
    pub fn check_determinism(mut self, check: bool) -> Self {
        self.check_determinism = check;
        self
    }

    /// Runs `scenario` under up to [`runs`](Self::runs) schedules, stopping at the first
    /// failure. With [`REPLAY_ENV`] set, runs only the run its token names.
    ///
    /// `scenario` is called once per run, on the calling thread, with the run's [`Env`]; the
    /// future it returns is the run's scenario task. The run ends when that future returns.
    ///
    /// # Errors
    ///
    /// The first failing run, as a [`Failure`] whose `Display` ends with its `replay:` and
    /// `trace:` lines.
    ///
    /// # Panics
    ///
    /// When [`REPLAY_ENV`] or [`SEED_ENV`] is set to something that does not parse (set
    /// empty, or to blanks, each counts as unset), when called inside a simulated run, and
    /// (with the `tokio` feature) when called inside a tokio runtime — a `#[tokio::test]`:
    /// there tokio's timers and spawns would go to that runtime, outside the simulation;
    /// search from a plain `#[test]`.
    pub fn search<F, Fut>(&self, scenario: F) -> Result<Stats, Failure>
    where
        F: Fn(Env) -> Fut,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        refuse_inside_tokio("Config::search");
        let started = Instant::now();
        let replay = std::env::var_os(REPLAY_ENV);
        let replay = replay_token(replay.as_deref().map(|v| v.to_string_lossy()).as_deref())
            .unwrap_or_else(|e| panic!("async_lifecycle::sim: {e}"));
        if let Some(token) = replay {
            let run = self.run(&token, &scenario)?;
            let mut stats = Stats::default();
            stats.add(&run);
            stats.wall = started.elapsed();
            return Ok(stats);
        }
        let base = match self.seed {
            Some(seed) => seed,
            None => {
                let seed = std::env::var_os(SEED_ENV);
                seed_from_env(seed.as_deref().map(|v| v.to_string_lossy()).as_deref())
                    .unwrap_or_else(|e| panic!("async_lifecycle::sim: {e}"))
                    .unwrap_or(DEFAULT_SEED)
            }
        };
        let mut stats = Stats::default();
        let mut steps = self.pct_steps.unwrap_or(64);
        for index in 0..self.runs {
            let seed = choice::mix(base.wrapping_add(index.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
            let choices = Choices::seed(seed);
            let scheduler = match self.scheduler {
                Scheduler::Portfolio => match index % 4 {
                    0 => Scheduler::Random,
                    depth => Scheduler::Pct(depth as u8),
                },
                scheduler => scheduler,
            };
            let token = match scheduler {
                Scheduler::Pct(depth) => Token::pct(depth, steps, choices),
                _ => Token::random(choices),
            };
            let checked = self.check_determinism && index == 0;
            match self.run_checked(&token, &scenario, checked) {
                Ok(run) => {
                    stats.add(&run);
                    if self.pct_steps.is_none() {
                        steps = stats.longest.max(1);
                    }
                }
                Err(mut failure) => {
                    failure.set_run(index);
                    return Err(failure);
                }
            }
        }
        stats.wall = started.elapsed();
        Ok(stats)
    }

    /// Runs the one schedule `token` names (with the determinism check, if on): a replay,
    /// or a run driven by a fuzzer's bytes or proptest's list through [`Choices`].
    ///
    /// # Errors
    ///
    /// The run's [`Failure`].
    ///
    /// # Panics
    ///
    /// When called inside a simulated run, or (with the `tokio` feature) inside a tokio
    /// runtime, as [`search`](Self::search).
    pub fn run<F, Fut>(&self, token: &Token, scenario: F) -> Result<Run, Failure>
    where
        F: Fn(Env) -> Fut,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        refuse_inside_tokio("Config::run");
        self.run_checked(token, &scenario, self.check_determinism)
    }

    fn run_checked<F, Fut>(&self, token: &Token, scenario: &F, check: bool) -> Result<Run, Failure>
    where
        F: Fn(Env) -> Fut,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        let first = self.run_once(token, scenario);
        if !(self.check_determinism && (check || first.is_err())) {
            return first;
        }
        let out_of_reach = |r: &Result<Run, Failure>| matches!(r, Err(f) if matches!(f.kind(), FailureKind::OutOfReach(_)));
        if out_of_reach(&first) {
            // What it reached explains any difference a second run would show.
            return first;
        }
        let (hash, steps, elapsed) = match &first {
            Ok(run) => (run.trace, run.steps, run.elapsed),
            Err(failure) => (failure.trace(), failure.steps(), failure.elapsed()),
        };
        let second = self.run_once(token, scenario);
        if out_of_reach(&second) {
            return second;
        }
        let again = match &second {
            Ok(run) => run.trace,
            Err(failure) => failure.trace(),
        };
        if again != hash {
            let ended = |r: &Result<Run, Failure>| match r {
                Ok(_) => "passed".to_owned(),
                Err(failure) => failure.kind().to_string(),
            };
            return Err(Failure::new(FailureInner {
                kind: FailureKind::Nondeterministic {
                    first: hash,
                    second: again,
                },
                token: token.clone(),
                trace: hash,
                run: None,
                steps,
                elapsed,
                notes: vec![
                    format!("the first run: {}", ended(&first)),
                    format!("the second run: {}", ended(&second)),
                ],
            }));
        }
        first
    }

    /// One run of `token`.
    fn run_once<F, Fut>(&self, token: &Token, scenario: &F) -> Result<Run, Failure>
    where
        F: Fn(Env) -> Fut,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        static RUNS: AtomicU64 = AtomicU64::new(1);
        let id = RUNS.fetch_add(1, Ordering::Relaxed);
        let entered = reach::enter(id);
        let core = Core::new(id, token);
        let env = Env {
            core: Arc::clone(&core),
        };
        let environment = core.spawn("environment".to_owned(), env.task());
        debug_assert_eq!(environment, Some(ENVIRONMENT));
        let drive = match catch_unwind(AssertUnwindSafe(|| scenario(env.clone()))) {
            Ok(future) => {
                let weak = Arc::downgrade(&core);
                let task = async move {
                    let outcome = future.await;
                    if let Some(core) = weak.upgrade() {
                        core.set_output(outcome);
                    }
                };
                let id = core
                    .spawn("scenario".to_owned(), task)
                    .expect("on the run's thread");
                core.drive(id, self.max_steps)
            }
            // Out of reach before its first await too (`Lifecycle::new()` in the closure).
            Err(payload) => executor::Drive {
                result: Err(core.classify(Culprit::Closure, &*payload)),
                steps: 0,
            },
        };
        let result = match drive.result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(FailureKind::Check(error.to_string())),
            Err(kind) => Err(kind),
        };
        let snapshots = core.final_snapshots();
        let elapsed = core.elapsed();
        let mut trace = {
            let mut state = core.state();
            for snapshot in &snapshots {
                state.trace.text(snapshot);
            }
            state.trace.clone()
        };
        core.end();
        // Every future of the run is dropped here; one that panics as it is dropped (a
        // guard asserting its job finished) is reported, not an abort.
        let mut dropped = core.cleanup().into_iter();
        let (jumps, faults) = {
            let state = core.state();
            (state.jumps, state.faults_fired)
        };
        drop((env, core, entered));
        let mut notes = Vec::new();
        let result = match result {
            Ok(()) => match dropped.next() {
                Some((task, message)) => Err(FailureKind::Panic {
                    message: format!(
                        "it panicked while being dropped at the end of the run: {message}"
                    ),
                    task,
                }),
                None => Ok(()),
            },
            Err(kind) => Err(kind),
        };
        trace.outcome(result.as_ref().map(|_| ()));
        for (task, message) in dropped {
            trace.drop_panic(&task, &message);
            notes.push(format!(
                "then, as the run ended, task {task} panicked while being dropped: {message}"
            ));
        }
        if let Err(FailureKind::StepLimit { steps }) = &result {
            if *steps != DEFAULT_MAX_STEPS {
                notes.push(format!(
                    "found under Config::max_steps({steps}): replay it with the same Config \
                     (`Config::new().max_steps({steps}).run(&token, scenario)`); \
                     sim::replay runs with the default limit, {DEFAULT_MAX_STEPS}"
                ));
            }
        }
        let trace = trace.hash();
        match result {
            Ok(()) => Ok(Run {
                token: token.clone(),
                trace,
                steps: drive.steps,
                jumps,
                faults,
                elapsed,
            }),
            Err(kind) => Err(Failure::new(FailureInner {
                kind,
                token: token.clone(),
                trace,
                run: None,
                steps: drive.steps,
                elapsed,
                notes,
            })),
        }
    }
}

/// Refuses a simulated run inside a tokio runtime: tokio's timers, sockets and spawns would
/// go to that runtime — outside the simulation, where they neither fail the run nor replay.
fn refuse_inside_tokio(what: &str) {
    #[cfg(feature = "tokio")]
    if tokio::runtime::Handle::try_current().is_ok() {
        panic!(
            "async_lifecycle::sim: {what} inside a tokio runtime (a #[tokio::test], or \
             Runtime::block_on): a tokio timer, socket or spawn in the scenario would go to that \
             runtime, outside the simulation, and be neither reported nor replayed. Run the \
             simulation from a plain #[test]"
        );
    }
    #[cfg(not(feature = "tokio"))]
    let _ = what;
}

/// The token [`REPLAY_ENV`] names: `None` when unset, empty or blank.
fn replay_token(value: Option<&str>) -> Result<Option<Token>, String> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(token) => token
            .parse()
            .map(Some)
            .map_err(|e| format!("{REPLAY_ENV}: {e}")),
    }
}

/// The seed [`SEED_ENV`] sets: `None` when unset, empty or blank.
fn seed_from_env(value: Option<&str>) -> Result<Option<u64>, String> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(seed) => parse_seed(seed)
            .map(Some)
            .ok_or_else(|| format!("{SEED_ENV}={seed:?}: not a number")),
    }
}

fn parse_seed(seed: &str) -> Option<u64> {
    let seed = seed.trim();
    match seed.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => seed.parse().ok(),
    }
}

/// Runs `scenario` under up to 1,000 schedules with the default [`Config`]; see
/// [`Config::search`].
///
/// # Errors
///
/// The first failing run.
pub fn search<F, Fut>(scenario: F) -> Result<Stats, Failure>
where
    F: Fn(Env) -> Fut,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    Config::new().search(scenario)
}

/// Runs again the run that `token` (a failure's `replay:` line) names, with the default
/// [`Config`]; see [`Config::run`]. A run found under another [`Config::max_steps`] replays
/// with that `Config` (`config.run(&token, scenario)`), not here.
///
/// # Errors
///
/// The run's [`Failure`] — the same as the first time, with the same trace hash.
///
/// # Panics
///
/// When `token` does not parse (parse it with [`Token`]'s `FromStr` to handle that).
pub fn replay<F, Fut>(token: &str, scenario: F) -> Result<Run, Failure>
where
    F: Fn(Env) -> Fut,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let token: Token = token
        .parse()
        .unwrap_or_else(|e| panic!("async_lifecycle::sim::replay: {e}"));
    Config::new().run(&token, scenario)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sched::Plan;

    #[test]
    fn plans_name_their_scheduler() {
        assert_eq!(Plan::Random.scheduler(), Scheduler::Random);
        assert_eq!(parse_seed("0x10"), Some(16));
        assert_eq!(parse_seed("10"), Some(10));
        assert_eq!(parse_seed("x"), None);
    }

    #[test]
    fn empty_or_blank_variables_count_as_unset() {
        for unset in [None, Some(""), Some("  "), Some("\n")] {
            assert_eq!(replay_token(unset), Ok(None));
            assert_eq!(seed_from_env(unset), Ok(None));
        }
        assert_eq!(
            replay_token(Some(" v1-random-s1\n")),
            Ok(Some(Token::random(Choices::seed(1))))
        );
        let bad = replay_token(Some("v1-random-zzz")).unwrap_err();
        assert!(
            bad.starts_with("ASYNC_LIFECYCLE_SIM_REPLAY: bad replay token \"v1-random-zzz\""),
            "{bad}"
        );
        for (good, seed) in [
            ("0x10", 16),
            ("16", 16),
            (" 42 ", 42),
            ("18446744073709551615", u64::MAX),
        ] {
            assert_eq!(seed_from_env(Some(good)), Ok(Some(seed)), "{good}");
        }
        for bad in ["-1", "0X10", "ten", "18446744073709551616", "0x"] {
            let e = seed_from_env(Some(bad)).unwrap_err();
            assert!(e.ends_with("not a number"), "{bad}: {e}");
        }
    }
}
