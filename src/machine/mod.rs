//! The pure lifecycle state machine: no clock, no I/O, no locks, no async.
//!
//! [`Machine`] is the sans-IO heart of the crate, in the manner of `quinn-proto`: every input
//! is a method that takes `now` as an argument, and every output is either an [`Action`]
//! drained with [`Machine::poll`] or the next deadline from [`Machine::poll_timeout`]. The
//! async shell ([`Lifecycle`](crate::Lifecycle)) owns the clock, the services' futures and the
//! session gate, and only forwards what it observes; every decision — when draining starts,
//! whether the sessions are drained, whether the end is `Terminated` or `Abandoned`, whether
//! a lifecycle with nothing to run stops — is taken here. Tests, proptest schedules and fuzz
//! targets drive it directly with the same forwarding.
//!
//! # Call order
//!
//! After any input (`add_service`, `stop`, `force`, `service_exited`, `handle_*`), drain
//! [`Machine::poll`] until it returns `None` and act on each [`Action`]. An
//! [`Action::Census`] is answered by counting the sessions *after* acting on every earlier
//! action (admission is closed by then) and calling [`Machine::handle_census`] — which may
//! queue more actions. Arm a timer for [`Machine::poll_timeout`] and call
//! [`Machine::handle_timeout`] when it fires. Whoever sees the last session end after
//! admission closed calls [`Machine::handle_census`] with that census.
//!
//! # Transitions
//!
//! | from       | input                                                    | to           | actions |
//! |------------|----------------------------------------------------------|--------------|---------|
//! | `Running`  | `add_service_with` with dependencies all ready once (else it waits for them) | `Running` | `Start` |
//! | `Running`  | `service_ready`, or `run_made` of a service that does not declare readiness: the first time it is ready | `Running` | `Start` per dependent whose dependencies are now all ready |
//! | `Running`  | `handle_timeout(now >= a start timeout)`, service not ready | `Draining` (`StartFailed`) | `Drain`, `Census` |
//! | `Running`  | a service ends for good before it was ever ready, a dependent waiting | `Draining` (`StartFailed`) | (`Complain`), `Drain`, `Census` |
//! | `Running`  | `stop(cause)` (a service waiting for its restart ends at once, as its last run did; one waiting for its dependencies ends `NotStarted`; services with a dependent still running are held) | `Draining` | `Drain`, `Census` |
//! | `Running`  | a restartable service's run ends as its [`Restart`] policy says, within the [`RestartIntensity`] | `Running` (restart due after the [`Backoff`]) | `Restarting` |
//! | `Running`  | the same, but one restart too many within the window     | `Draining` (`RestartIntensity`) | `Complain`, `Drain`, `Census` |
//! | `Running`  | `handle_timeout(now >= a restart's due time)`            | `Running`    | `Start` (one per due service; the driver answers `run_made` or `cancel_start`) |
//! | `Running`  | any other service exit, policy `StopAll`                 | `Draining`   | `Complain`, `Drain`, `Census` |
//! | `Running`  | any other service exit, policy `ReportOnly`              | `Running`    | `Complain` |
//! | `Running`  | `force()`                                                | `Draining`, deadline = now | `Drain`, `Census` |
//! | `Running`  | `handle_wait_started()`, no service nor stop trigger ever added (once) | `Running` | `Census` |
//! | `Running`  | `handle_census(nothing live)` answering that census, still no service | `Draining` (`NothingToRun`) | `Drain`, `Census` |
//! | `Running`  | any other `handle_census`, `handle_timeout`              | `Running`    | — |
//! | `Draining` | `handle_census(nothing live)`, no service running         | `Terminated` | `Finish` |
//! | `Draining` | `handle_census(nothing live)`, services running           | `Draining` (sessions drained) | — |
//! | `Draining` | last service exits before the deadline, sessions drained | `Draining`   | (`Complain` if unclean), `Census` |
//! | `Draining` | a service exits before the deadline, other work left     | `Draining`   | (`Complain` if unclean) |
//! | `Draining` | a service exits at or after the deadline (too late)      | `Draining`   | `Census` (which abandons it) |
//! | `Draining` | `handle_census(work left)` before the deadline           | `Draining`   | — |
//! | `Draining` | the last running dependent of a held service ends (or is given up on) | `Draining` | `Release` (its budget starts) |
//! | `Draining` | `handle_timeout(now >= release + budget / 2)`, once per service | `Draining` | `SlowToStop` |
//! | `Draining` | `handle_timeout(now >= a service's budget end < deadline)`, or its exit then | `Draining` (the end will be `Abandoned`) | `Complain`, `GiveUp`, `Release`s, (`Census` if nothing runs) |
//! | `Draining` | `handle_timeout(now < deadline)`, otherwise              | `Draining`   | — |
//! | `Draining` | `handle_timeout(now >= deadline)`                        | `Draining`   | `Census` |
//! | `Draining` | `handle_census(work left)` at or past the deadline       | `Abandoned`  | `Abandon`, `Complain`×n, `Finish` |
//! | `Draining` | `force()`                                                | `Draining`, deadline = now | `Census` |
//! | `Draining` | `stop(cause)`                                            | `Draining`   | — (the first cause is kept) |
//! | terminal   | anything                                                 | unchanged    | — |
//!
//! A service's stop budget starts when its stop signal fires (at the stop, or at its
//! `Release`): the smaller of its own [`ServiceOptions::stop_budget`] and the time left to
//! the deadline; without one, half the time left for a service with dependencies (they keep
//! the other half), else all of it — so the budgets of a chain never stack past the grace,
//! and quick services down a long chain keep most of it. With no
//! dependencies anywhere every service is signalled at the stop with the whole grace as its
//! budget: the flat lifecycle.
//!
//! Every end is decided on a census: the session counts in the [`Report`] are those of the
//! census that ended the lifecycle. A zero grace puts the deadline at the stop itself, so
//! the census the stop asks for is also the deadline's: whatever is still running at the
//! stop is abandoned, whatever executor runs the services.
//!
//! A service "exits" cleanly only by returning `Ok` after the stop was requested; returning
//! before that (even `Ok`), failing, panicking or being dropped is unclean and is complained
//! about.
//!
//! # Invariants
//!
//! - `Terminated` and `Abandoned` are final: no input changes the state, the cause, the
//!   services' outcomes or the report afterwards.
//! - Nothing is admitted outside `Running`: [`Machine::add_service`] refuses, and the shell's
//!   session gate is closed by the `Drain` action before any other effect of the stop is
//!   visible.
//! - Service names are unique: a second service with a name already in use is refused.
//! - The first stop cause is kept; later ones are ignored.
//! - `Terminated` only on a census with nothing live and no service running, none given up
//!   on; `Abandoned` on a census at or after the deadline (a forced stop moves the deadline
//!   to the moment it was forced) with work still running, or once everything ended if a
//!   service was given up on past its stop budget.
//! - Dependents first: a service's own stop signal fires only once every service depending
//!   on it has ended or was given up on; a service is started only once every dependency was
//!   ready, and never after the stop.
//! - Every service ends exactly once in the report: with the outcome of its exit, or as
//!   [`ServiceOutcome::Abandoned`] if it was still running when the lifecycle gave up.

mod report;
mod supervise;

pub(crate) use report::shown;
pub use report::{NamedSession, PanickedSession, Report, ServiceReport, SessionReport};
pub(crate) use supervise::Rng;
pub use supervise::{Backoff, ConfigError, Restart, RestartIntensity, ServiceOptions};

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use crate::error::{Refused, ServiceError};

/// Where a lifecycle is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Services run and sessions are admitted.
    Running,
    /// A stop was requested: stop signals have fired, new work is refused and the grace
    /// deadline is armed.
    Draining,
    /// Every service and session ended within the grace period. Final.
    Terminated,
    /// The deadline passed, or the stop was forced, with work still running. Final.
    Abandoned,
}

impl State {
    /// Whether this state is final (`Terminated` or `Abandoned`).
    pub fn is_terminal(self) -> bool {
        matches!(self, State::Terminated | State::Abandoned)
    }

    /// The state's name in lowercase, as used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Draining => "draining",
            State::Terminated => "terminated",
            State::Abandoned => "abandoned",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a lifecycle stopped. Only the first cause is kept.
///
/// Anything string-like converts into [`StopCause::Requested`], so `lc.stop("deploy")` works.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StopCause {
    /// A caller asked for the stop, with a reason.
    Requested(Cow<'static, str>),
    /// The process received a signal (its name, such as `"SIGTERM"`).
    Signal(&'static str),
    /// A service ended uncleanly while running, and the policy is to stop everything.
    ServiceEnded {
        /// The service's name.
        service: Cow<'static, str>,
    },
    /// A restart storm: more restarts than the [`RestartIntensity`] allows within its
    /// window; `service` is the one whose failure tripped it.
    RestartIntensity {
        /// The service whose restart would have exceeded the intensity.
        service: Cow<'static, str>,
        /// Restarts counted within the window, the refused one included.
        restarts: u32,
        /// The window.
        within: Duration,
    },
    /// The stop was forced before anyone asked for a graceful one.
    Forced,
    /// A service did not become ready: past its
    /// [`start_timeout`](ServiceOptions::start_timeout) (`timeout` is `Some`), or it ended
    /// for good before it was ready while services depending on it waited (`None`). What
    /// already started is stopped, dependents first. Exit status 1.
    StartFailed {
        /// The service that did not become ready.
        service: Cow<'static, str>,
        /// The start timeout it exceeded, if that is what failed.
        timeout: Option<Duration>,
    },
    /// The lifecycle is nested in another ([`Lifecycle::nest`](crate::Lifecycle::nest)),
    /// which is stopping it: its deadline is the parent's, for it.
    ParentStopping,
    /// Every `Lifecycle` handle was dropped without a stop being requested.
    HandlesDropped,
    /// The lifecycle was waited on with nothing to run: no service was ever added and no
    /// session was live.
    NothingToRun,
}

impl fmt::Display for StopCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopCause::Requested(reason) => write!(f, "requested: {reason}"),
            StopCause::Signal(name) => write!(f, "received {name}"),
            StopCause::ServiceEnded { service } => {
                write!(f, "service \"{service}\" ended uncleanly")
            }
            StopCause::RestartIntensity {
                service,
                restarts,
                within,
            } => write!(
                f,
                "restart intensity exceeded: {restarts} restarts within {within:?}, the last \
                 of service \"{service}\""
            ),
            StopCause::StartFailed {
                service,
                timeout: Some(timeout),
            } => write!(
                f,
                "start failed: service \"{service}\" was not ready within {timeout:?}"
            ),
            StopCause::StartFailed {
                service,
                timeout: None,
            } => write!(
                f,
                "start failed: service \"{service}\" ended before it was ready, and services \
                 depending on it were waiting"
            ),
            StopCause::ParentStopping => f.write_str("the parent lifecycle is stopping"),
            StopCause::Forced => f.write_str("forced"),
            StopCause::HandlesDropped => f.write_str("every lifecycle handle was dropped"),
            StopCause::NothingToRun => {
                f.write_str("nothing to run: no service was added and no session was live")
            }
        }
    }
}

impl From<&'static str> for StopCause {
    fn from(reason: &'static str) -> Self {
        StopCause::Requested(Cow::Borrowed(reason))
    }
}

impl From<String> for StopCause {
    fn from(reason: String) -> Self {
        StopCause::Requested(Cow::Owned(reason))
    }
}

/// What the lifecycle does when a service ends uncleanly while running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Stop the whole lifecycle, with [`StopCause::ServiceEnded`] (the default).
    #[default]
    StopAll,
    /// Complain and record it in the report, but keep everything else running.
    ReportOnly,
}

/// Identifies a service within one [`Machine`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceId(pub(crate) usize);

impl ServiceId {
    /// The service's index, in the order services were added.
    pub fn index(self) -> usize {
        self.0
    }
}

/// How a service's future ended, as the shell observed it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exit {
    /// The future returned `Ok`.
    Ok,
    /// The future returned an error; the text is the error and its `source()` chain joined
    /// with `": "`.
    Err(String),
    /// The future panicked; the text is the panic payload.
    Panic(String),
    /// The future was dropped before it completed (its driver went away).
    Dropped,
}

/// How a service ended, as recorded in the [`Report`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServiceOutcome {
    /// It returned `Ok` after the stop was requested: the only clean outcome.
    Stopped,
    /// It returned `Ok` before anyone asked it to stop.
    EndedEarly,
    /// It returned an error (the error and its source chain).
    Failed(String),
    /// It panicked (the panic payload's text).
    Panicked(String),
    /// Its future was dropped before it completed.
    Dropped,
    /// It was still running when the lifecycle gave up on it: at the deadline, when the
    /// stop was forced, or past its own stop budget.
    Abandoned,
    /// It was never started: the stop came while it waited for its dependencies to be
    /// ready, or (in a nested lifecycle) before its lifecycle's own service ran. Clean:
    /// nothing it would have done was lost.
    NotStarted,
}

impl ServiceOutcome {
    /// Whether this outcome is clean: [`ServiceOutcome::Stopped`], or
    /// [`ServiceOutcome::NotStarted`] (the stop came before its dependencies were ready).
    pub fn is_clean(&self) -> bool {
        matches!(self, ServiceOutcome::Stopped | ServiceOutcome::NotStarted)
    }
}

impl fmt::Display for ServiceOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceOutcome::Stopped => f.write_str("stopped"),
            ServiceOutcome::EndedEarly => f.write_str("ended before stop was requested"),
            ServiceOutcome::Failed(error) => write!(f, "failed: {error}"),
            ServiceOutcome::Panicked(payload) => write!(f, "panicked: {payload}"),
            ServiceOutcome::Dropped => f.write_str("dropped before it finished"),
            ServiceOutcome::Abandoned => f.write_str("abandoned"),
            ServiceOutcome::NotStarted => f.write_str("not started (the stop came first)"),
        }
    }
}

/// What the machine asks its driver to do, drained with [`Machine::poll`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// The stop began: close session admission and fire every stop signal. A
    /// [`Census`](Action::Census) follows.
    Drain,
    /// Count the sessions (after acting on every earlier action) and hand the result to
    /// [`Machine::handle_census`].
    Census,
    /// A service ended uncleanly, or was abandoned: complain loudly.
    Complain {
        /// The service.
        service: ServiceId,
        /// Its name.
        name: Cow<'static, str>,
        /// How it ended.
        outcome: ServiceOutcome,
    },
    /// A service ended while running and will be started again after `after` (its
    /// `attempt`th restart): complain loudly about how it ended; a
    /// [`Start`](Action::Start) follows once the wait is over.
    Restarting {
        /// The service.
        service: ServiceId,
        /// Its name.
        name: Cow<'static, str>,
        /// How its run ended.
        outcome: ServiceOutcome,
        /// Which restart this is (1 for the first).
        attempt: u32,
        /// The wait before it.
        after: Duration,
    },
    /// Half the grace has gone and this service is still running: warn now, before the
    /// deadline abandons it.
    SlowToStop {
        /// The service.
        service: ServiceId,
        /// Its name.
        name: Cow<'static, str>,
        /// How long since its own stop signal fired (the stop, or its release).
        elapsed: Duration,
    },
    /// This service's dependents have all ended (or spent their stop budgets): fire its
    /// own stop signal now. Services with no dependent still running at the stop are
    /// signalled by [`Drain`](Action::Drain) itself; [`Machine::held`] lists the others then.
    Release {
        /// The service.
        service: ServiceId,
    },
    /// This service spent its stop budget before the deadline: cancel its run (it is
    /// recorded as abandoned, and a [`Complain`](Action::Complain) came first).
    GiveUp {
        /// The service.
        service: ServiceId,
    },
    /// Start the service's next run (from its factory): a restart, or a first run whose
    /// dependencies are ready.
    Start {
        /// The service.
        service: ServiceId,
    },
    /// The lifecycle gave up: cancel the services still running. The sessions live at the
    /// census it gave up on are in the report ([`SessionReport::abandoned`]).
    Abandon,
    /// A final state was reached; [`Machine::report`] is now available.
    Finish,
}

/// The driver's count of the sessions at one moment, the input of
/// [`Machine::handle_census`].
///
/// Admission counts cover the lifecycle's whole life up to the census; `live` and
/// `live_unnamed` are the sessions not yet ended at that moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionCensus {
    /// Sessions admitted so far.
    pub admitted: u64,
    /// Attempts refused so far.
    pub refused: u64,
    /// Named sessions live now, with their ages.
    pub live: Vec<NamedSession>,
    /// Unnamed sessions live now.
    pub live_unnamed: u64,
    /// Sessions that ended by a panic so far (at most [`PANICKED_KEPT`] of them: the first).
    pub panicked: Vec<PanickedSession>,
    /// How many sessions ended by a panic so far, including those not kept in `panicked`.
    pub panicked_count: u64,
}

/// How many panicked sessions a census (and so a report) names; the rest are counted.
pub const PANICKED_KEPT: usize = 1000;

impl SessionCensus {
    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty() && self.live_unnamed == 0
    }

    fn into_report(mut self, abandon: bool) -> SessionReport {
        if !abandon {
            debug_assert!(
                self.is_empty(),
                "only an abandoning census has live sessions"
            );
        }
        self.live.sort_by_key(|s| std::cmp::Reverse(s.age()));
        SessionReport::new(
            self.admitted,
            self.refused,
            self.live,
            self.live_unnamed,
            self.panicked,
            self.panicked_count,
        )
    }
}

#[derive(Debug)]
struct ServiceEntry {
    name: Cow<'static, str>,
    options: ServiceOptions,
    started: Instant,
    /// When the current run started.
    run_started: Instant,
    /// Runs started (1 + restarts).
    attempts: u32,
    /// Consecutive restarts since the last stable run (the backoff's exponent).
    streak: u32,
    /// How the last run ended, while waiting for a restart (and after).
    last_outcome: Option<ServiceOutcome>,
    /// While waiting for a restart: when it is due.
    backoff_until: Option<Instant>,
    /// A `Start` was asked for and the driver has not yet said the run was made
    /// ([`Machine::run_made`]) or not ([`Machine::cancel_start`]).
    starting: bool,
    ended: Option<(Instant, ServiceOutcome)>,
    /// The services it starts after and stops before.
    after: Vec<ServiceId>,
    /// The services that start after it.
    dependents: Vec<ServiceId>,
    /// How many of `dependents` have not ended: its stop signal waits for zero.
    live_dependents: usize,
    /// Its explicit stop budgets plus the longest such sum along its dependencies.
    chain: Duration,
    /// Its first run waits for its dependencies to be ready.
    waiting: bool,
    /// The run being made declared itself ready from inside its factory.
    ready_early: bool,
    /// Its current run is ready.
    ready: bool,
    /// A run of it was ready once: its dependents may start.
    ever_ready: bool,
    /// Its start timeout's deadline, until it is ready.
    ready_by: Option<Instant>,
    /// While draining: when its own stop signal fired.
    released: Option<Instant>,
    /// While draining: when its stop budget runs out.
    budget_end: Option<Instant>,
    /// While draining: when it is reported slow to stop (half its budget), until it is.
    slow_at: Option<Instant>,
}

impl ServiceEntry {
    /// Running, or waiting for a restart: not ended yet.
    fn is_live(&self) -> bool {
        self.ended.is_none()
    }

    /// Running or about to: not ended and not waiting for its dependencies.
    fn has_run(&self) -> bool {
        self.ended.is_none() && !self.waiting
    }
}

/// How a service that was between runs (waiting for its restart) at the stop ended: as its
/// last run did — except an early `Ok`, which under `Restart::Always` is a periodic job's
/// normal end: stopped between two runs, it stopped cleanly.
fn ended_between_runs(last: Option<ServiceOutcome>) -> ServiceOutcome {
    match last {
        Some(ServiceOutcome::EndedEarly) => ServiceOutcome::Stopped,
        Some(outcome) => outcome,
        // Its first run was never made: stopped before it started.
        None => ServiceOutcome::NotStarted,
    }
}

/// Where the machine is, with the data valid only there.
#[derive(Debug)]
enum Phase {
    Running {
        /// A census was asked for by the first wait (is there anything to run?).
        empty_check: bool,
    },
    Draining(Draining),
    Ended(Report),
}

#[derive(Debug)]
struct Draining {
    cause: StopCause,
    /// When the drain began, counted from the machine's start (the report's `drained_in`
    /// is then one `Instant` subtraction, not two).
    stopped_after: Duration,
    /// `None`: no deadline (a grace too large to represent), only a force ends it.
    deadline: Option<Instant>,
    forced: bool,
    /// A census saw nothing live after admission closed.
    sessions_drained: bool,
    /// A service was abandoned past its stop budget: the end is `Abandoned`.
    gave_up: bool,
}

/// The lifecycle's state machine. See the [module docs](self) for the transition table.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use async_lifecycle::machine::{Action, Exit, FailurePolicy, Machine, SessionCensus};
/// use async_lifecycle::State;
///
/// let t0 = Instant::now();
/// let mut m = Machine::new(t0, Duration::from_secs(10), FailurePolicy::StopAll);
/// let worker = m.add_service(t0, "worker").unwrap();
/// m.stop(t0, "deploy".into());
/// assert_eq!(m.poll(), Some(Action::Drain));
/// assert_eq!(m.poll(), Some(Action::Census));
/// m.handle_census(t0, SessionCensus::default()); // nothing live: the sessions are drained
/// // Half the grace first: the slow-to-stop warning (then the deadline, t0 + 10 s).
/// assert_eq!(m.poll_timeout(), Some(t0 + Duration::from_secs(5)));
/// m.service_exited(t0 + Duration::from_secs(1), worker, Exit::Ok);
/// assert_eq!(m.poll(), Some(Action::Census)); // the last count, for the report
/// m.handle_census(t0 + Duration::from_secs(1), SessionCensus::default());
/// assert_eq!(m.state(), State::Terminated);
/// assert_eq!(m.poll(), Some(Action::Finish));
/// assert_eq!(m.report().unwrap().exit_code(), 0);
/// ```
#[derive(Debug)]
pub struct Machine {
    phase: Phase,
    grace: Duration,
    policy: FailurePolicy,
    started: Instant,
    services: Vec<ServiceEntry>,
    /// The first wait was observed (the nothing-to-run question is asked once).
    wait_seen: bool,
    /// Stop triggers registered (futures that will stop the lifecycle): something to wait for.
    triggers: usize,
    intensity: RestartIntensity,
    /// When each restart within the intensity's window happened, oldest first.
    restarts: VecDeque<Instant>,
    rng: Rng,
    actions: VecDeque<Action>,
    /// A timer was set that may be earlier than the one a driver armed.
    rescheduled: bool,
    /// Services not ended yet (kept so that "did the last one end?" is not a walk).
    live: usize,
    /// Service index by name: names are unique, and dependencies are looked up by name. The
    /// table holds indexes only, hashed by the name their entry keeps (Fx: names come from
    /// the program, not from peers), so an owned name is not copied for it.
    names: hashbrown::HashTable<usize>,
    /// How long a requested stop keeps serving, not ready, before the drain begins.
    pre_drain: Duration,
    /// A requested stop in its pre-drain: when the drain begins, why, and the deadline it
    /// keeps (the grace counts from the request).
    pending: Option<(Instant, StopCause, Option<Instant>)>,
}

impl Machine {
    /// A machine in `Running`, created at `now`, that will allow `grace` for draining.
    ///
    /// A `grace` too large to add to an instant (such as `Duration::MAX`) means "no
    /// deadline": draining then waits as long as it takes, unless forced.
    pub fn new(now: Instant, grace: Duration, policy: FailurePolicy) -> Self {
        Machine {
            phase: Phase::Running { empty_check: false },
            grace,
            policy,
            started: now,
            services: Vec::new(),
            wait_seen: false,
            triggers: 0,
            intensity: RestartIntensity::DEFAULT,
            restarts: VecDeque::new(),
            rng: Rng::new(0x5EED),
            actions: VecDeque::new(),
            rescheduled: false,
            live: 0,
            names: hashbrown::HashTable::new(),
            pre_drain: Duration::ZERO,
            pending: None,
        }
    }

    /// Sets how many restarts are tolerated within a window (default
    /// [`RestartIntensity::DEFAULT`]).
    pub fn set_restart_intensity(&mut self, intensity: RestartIntensity) {
        self.intensity = intensity;
    }

    /// Seeds the random source of the backoffs' jitter.
    pub fn set_seed(&mut self, seed: u64) {
        self.rng = Rng::new(seed);
    }

    /// The current state.
    pub fn state(&self) -> State {
        match &self.phase {
            Phase::Running { .. } => State::Running,
            Phase::Draining(_) => State::Draining,
            Phase::Ended(report) => report.state(),
        }
    }

    /// The first stop cause, once a stop was requested.
    pub fn cause(&self) -> Option<&StopCause> {
        match &self.phase {
            Phase::Running { .. } => None,
            Phase::Draining(d) => Some(&d.cause),
            Phase::Ended(report) => report.cause(),
        }
    }

    /// The grace period this machine allows for draining.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// The number of services ever added.
    pub fn services(&self) -> usize {
        self.services.len()
    }

    /// The number of services that have not exited yet.
    pub fn running_services(&self) -> usize {
        self.live
    }

    /// The name a service was added with.
    ///
    /// # Panics
    ///
    /// If `id` was not returned by this machine's [`add_service`](Self::add_service).
    pub fn service_name(&self, id: ServiceId) -> &str {
        &self.services[id.0].name
    }

    /// When a service was added, and how it ended if it did.
    ///
    /// # Panics
    ///
    /// If `id` was not returned by this machine's [`add_service`](Self::add_service).
    pub fn service_status(&self, id: ServiceId) -> (Instant, Option<&(Instant, ServiceOutcome)>) {
        let entry = &self.services[id.0];
        (entry.started, entry.ended.as_ref())
    }

    /// A service's runs so far (1 + restarts), and when its restart is due if it is waiting
    /// for one.
    ///
    /// # Panics
    ///
    /// If `id` was not returned by this machine's [`add_service`](Self::add_service).
    pub fn service_restarts(&self, id: ServiceId) -> (u32, Option<Instant>) {
        let entry = &self.services[id.0];
        (entry.attempts, entry.backoff_until)
    }

    /// Registers a service that starts running at `now`, never restarted.
    ///
    /// # Errors
    ///
    /// See [`add_service_with`](Self::add_service_with).
    pub fn add_service(
        &mut self,
        now: Instant,
        name: impl Into<Cow<'static, str>>,
    ) -> Result<ServiceId, ServiceError> {
        self.add_service_with(now, name, ServiceOptions::default())
    }

    /// The index of the service named `name`, if one was added.
    fn service_index(&self, name: &str) -> Option<usize> {
        self.names
            .find(name_hash(name), |&index| self.services[index].name == name)
            .copied()
    }

    /// Registers a service at `now`, supervised and ordered as `options` say.
    ///
    /// A service with no dependency is running from `now` (its driver already has its
    /// future; a driver that makes runs with a factory calls
    /// [`first_run_pending`](Self::first_run_pending) next). A service with dependencies
    /// is started by an [`Action::Start`] once every dependency is ready — at once if they
    /// already are — and its driver answers [`run_made`](Self::run_made).
    ///
    /// # Errors
    ///
    /// [`ServiceError::Refused`] once the machine has left `Running` (a service cannot be
    /// started while the program is stopping), [`ServiceError::DuplicateName`] when a
    /// service of that name was already added (names identify services in the report),
    /// [`ServiceError::UnknownDependency`] and [`ServiceError::DependencyCycle`] for a
    /// dependency that is not an earlier service, [`ServiceError::Config`] for a zero or
    /// absurd start timeout or stop budget, and [`ServiceError::BudgetsExceedGrace`] when
    /// the stop budgets along its dependencies add up to more than the grace.
    pub fn add_service_with(
        &mut self,
        now: Instant,
        name: impl Into<Cow<'static, str>>,
        options: ServiceOptions,
    ) -> Result<ServiceId, ServiceError> {
        match self.state() {
            State::Running => {}
            State::Draining => return Err(ServiceError::Refused(Refused::Draining)),
            State::Terminated | State::Abandoned => {
                return Err(ServiceError::Refused(Refused::Ended));
            }
        }
        let name = name.into();
        if self.service_index(&name).is_some() {
            return Err(ServiceError::DuplicateName(name));
        }
        options.validate()?;
        let mut after = Vec::new();
        for dependency in options.dependencies() {
            if dependency == name {
                return Err(ServiceError::DependencyCycle { service: name });
            }
            let Some(index) = self.service_index(dependency) else {
                return Err(ServiceError::UnknownDependency {
                    service: name,
                    dependency: Cow::Owned(dependency.to_owned()),
                });
            };
            if !self.services[index].is_live() {
                return Err(ServiceError::DependencyEnded {
                    service: name,
                    dependency: self.services[index].name.clone(),
                });
            }
            if !after.contains(&ServiceId(index)) {
                after.push(ServiceId(index));
            }
        }
        let below = after.iter().map(|d| &self.services[d.0]);
        let chain = options
            .stop_budget_limit()
            .unwrap_or_default()
            .saturating_add(below.map(|d| d.chain).max().unwrap_or_default());
        if chain > self.grace {
            return Err(ServiceError::BudgetsExceedGrace {
                service: name,
                total: chain,
                grace: self.grace,
            });
        }
        let id = ServiceId(self.services.len());
        for dependency in &after {
            let entry = &mut self.services[dependency.0];
            entry.dependents.push(id);
            entry.live_dependents += 1;
        }
        self.live += 1;
        let waiting = after.iter().any(|d| !self.services[d.0].ever_ready);
        let ordered = !after.is_empty();
        let ready = !ordered && !options.is_declaring_ready();
        self.services.push(ServiceEntry {
            name,
            options,
            started: now,
            run_started: now,
            attempts: u32::from(!ordered),
            streak: 0,
            last_outcome: None,
            backoff_until: None,
            starting: false,
            ended: None,
            after,
            dependents: Vec::new(),
            live_dependents: 0,
            chain,
            waiting,
            ready_early: false,
            ready,
            ever_ready: ready,
            ready_by: None,
            released: None,
            budget_end: None,
            slow_at: None,
        });
        let services = &self.services;
        self.names
            .insert_unique(name_hash(&services[id.0].name), id.0, |&index| {
                name_hash(&services[index].name)
            });
        if !waiting {
            self.ask_first_run(now, id, ordered);
        }
        Ok(id)
    }

    /// A service's first run is asked for at `now`: its start timeout starts, and for a
    /// service with dependencies, a `Start` is queued.
    fn ask_first_run(&mut self, now: Instant, id: ServiceId, start: bool) {
        let entry = &mut self.services[id.0];
        entry.waiting = false;
        if entry.options.is_declaring_ready() {
            entry.ready_by = entry
                .options
                .start_timeout_limit()
                .and_then(|timeout| now.checked_add(timeout));
            self.rescheduled |= entry.ready_by.is_some();
        }
        if start {
            entry.starting = true;
            self.actions.push_back(Action::Start { service: id });
        }
    }

    /// The run of service `id` declared itself ready at `now` (a service that does not
    /// declare readiness is ready when its run is made). Returns whether that changed
    /// anything: `false` for a second call, a service that ended, or after the stop.
    ///
    /// The first time a service is ready, every dependent whose dependencies are now all
    /// ready gets an [`Action::Start`].
    ///
    /// # Panics
    ///
    /// If `id` was not returned by this machine's [`add_service`](Self::add_service).
    pub fn service_ready(&mut self, now: Instant, id: ServiceId) -> bool {
        let running = self.state() == State::Running;
        let entry = &mut self.services[id.0];
        // Not between two runs either: a signal of the run that ended cannot make the next
        // one ready.
        if !running
            || !entry.has_run()
            || entry.starting
            || entry.ready
            || entry.backoff_until.is_some()
        {
            return false;
        }
        entry.ready = true;
        entry.ready_by = None;
        if std::mem::replace(&mut entry.ever_ready, true) {
            return true;
        }
        let dependents = entry.dependents.clone();
        for dependent in dependents {
            let d = &self.services[dependent.0];
            if d.waiting && d.after.iter().all(|a| self.services[a.0].ever_ready) {
                self.ask_first_run(now, dependent, true);
            }
        }
        true
    }

    /// Whether a service is waiting for its dependencies (not started), and whether its
    /// current run is ready.
    ///
    /// # Panics
    ///
    /// If `id` was not returned by this machine's [`add_service`](Self::add_service).
    pub fn service_readiness(&self, id: ServiceId) -> (bool, bool) {
        let entry = &self.services[id.0];
        (entry.waiting, entry.ready)
    }

    /// While draining, the services whose stop signal has not fired yet (they still have a
    /// dependent running): a driver that gives each service its own stop signal asks this
    /// when it acts on [`Action::Drain`], and fires theirs on their [`Action::Release`].
    pub fn held(&self) -> impl Iterator<Item = ServiceId> + '_ {
        let draining = matches!(self.phase, Phase::Draining(_));
        self.services
            .iter()
            .enumerate()
            .filter(move |(_, s)| draining && s.is_live() && s.released.is_none())
            .map(|(index, _)| ServiceId(index))
    }

    /// The instant a service's stop must be over: its stop budget's end once its stop
    /// signal fired, else the lifecycle's deadline (`None`: no deadline).
    ///
    /// # Panics
    ///
    /// If `id` was not returned by this machine's [`add_service`](Self::add_service).
    pub fn service_deadline(&self, id: ServiceId) -> Option<Instant> {
        let deadline = match &self.phase {
            Phase::Draining(d) => d.deadline,
            _ => None,
        };
        self.services[id.0].budget_end.or(deadline)
    }

    /// Requests a graceful stop. Returns whether this call started the drain; a stop while
    /// already draining or ended changes nothing (the first cause is kept).
    pub fn stop(&mut self, now: Instant, cause: StopCause) -> bool {
        // A stop in its pre-drain came first: its cause and its deadline are kept, and its
        // drain begins now.
        if let Some((_, first, by)) = self.pending.take() {
            return self.stop_by(now, first, by);
        }
        self.stop_by(now, cause, None)
    }

    /// Sets the pre-drain of requested stops (see [`request_stop`](Self::request_stop)).
    pub fn set_pre_drain(&mut self, delay: Duration) {
        self.pre_drain = delay;
    }

    /// A stop requested from outside (a caller, a signal, a stop trigger): with a pre-drain
    /// set, the lifecycle keeps running and admitting — only
    /// [`stop_pending`](Self::stop_pending) says it is on its way out, so a readiness probe
    /// fails and load balancers move away — until the pre-drain (never more than the grace)
    /// has passed; then the drain begins, with the deadline still `grace` after this request:
    /// the pre-drain is spent inside the grace. Without one, as [`stop`](Self::stop).
    /// Returns whether this call started the stop; the first cause is kept.
    pub fn request_stop(&mut self, now: Instant, cause: StopCause) -> bool {
        if self.state() != State::Running || self.pending.is_some() {
            return false;
        }
        if self.pre_drain.is_zero() || self.grace.is_zero() {
            return self.stop(now, cause);
        }
        let Some(at) = now.checked_add(self.pre_drain.min(self.grace)) else {
            return self.stop(now, cause);
        };
        self.pending = Some((at, cause, now.checked_add(self.grace)));
        self.rescheduled = true;
        true
    }

    /// Whether requested stops have a pre-drain (and a grace to spend it in).
    pub fn has_pre_drain(&self) -> bool {
        !self.pre_drain.is_zero() && !self.grace.is_zero()
    }

    /// The instant by which the lifecycle ends, once a stop was requested (its pre-drain
    /// included): the stop plus the grace. `None` while running with no stop requested, with
    /// no deadline (a grace too large to represent), and once ended.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Running { .. } => self.pending.as_ref().and_then(|(.., deadline)| *deadline),
            Phase::Draining(d) => d.deadline,
            Phase::Ended(_) => None,
        }
    }

    /// Whether a requested stop is in its pre-drain (running, not ready), and its cause.
    pub fn stop_pending(&self) -> Option<&StopCause> {
        self.pending.as_ref().map(|(_, cause, _)| cause)
    }

    /// Requests a graceful stop whose deadline is the earlier of the grace and `by`: a
    /// nested lifecycle inherits what its parent has left for it. Otherwise as
    /// [`stop`](Self::stop).
    pub fn stop_by(&mut self, now: Instant, cause: StopCause, by: Option<Instant>) -> bool {
        if self.state() != State::Running {
            return false;
        }
        let deadline = match (now.checked_add(self.grace), by) {
            (Some(deadline), Some(by)) => Some(deadline.min(by.max(now))),
            (deadline, by) => deadline.or(by.map(|by| by.max(now))),
        };
        self.phase = Phase::Draining(Draining {
            cause,
            stopped_after: now.saturating_duration_since(self.started),
            deadline,
            forced: false,
            sessions_drained: false,
            gave_up: false,
        });
        // A service waiting for its restart (or whose restart the driver has not made yet)
        // is stopped at once, and never restarted: it ends as its last run did. One waiting
        // for its dependencies is never started.
        for entry in &mut self.services {
            entry.ready_by = None;
            // Waiting for its restart, or about to have it made: no run to stop.
            let between_runs = entry.backoff_until.take().is_some();
            if std::mem::take(&mut entry.waiting) {
                entry.started = now;
                entry.ended = Some((now, ServiceOutcome::NotStarted));
            } else if between_runs | std::mem::take(&mut entry.starting) {
                entry.ended = Some((now, ended_between_runs(entry.last_outcome.clone())));
            }
        }
        self.recount();
        // Dependents first: signalled now are the services no running service depends on;
        // the others when their dependents are done.
        for index in 0..self.services.len() {
            if self.releasable(ServiceId(index)) {
                self.release(now, ServiceId(index), false);
            }
        }
        self.actions.push_back(Action::Drain);
        // One census after admission closed: it finds the sessions drained (or, with a zero
        // grace, it is also the deadline's census).
        self.actions.push_back(Action::Census);
        true
    }

    /// Service `id` just ended: one fewer live service, and one fewer live dependent for
    /// each of its dependencies.
    fn note_ended(&mut self, id: ServiceId) {
        self.live -= 1;
        self.services[id.0].ready_by = None;
        for index in 0..self.services[id.0].after.len() {
            let dependency = self.services[id.0].after[index];
            self.services[dependency.0].live_dependents -= 1;
        }
    }

    /// Counts the live services and each one's live dependents again, after a walk that
    /// ended several.
    fn recount(&mut self) {
        self.live = self.services.iter().filter(|s| s.is_live()).count();
        for index in 0..self.services.len() {
            let live = self.services[index]
                .dependents
                .iter()
                .filter(|d| self.services[d.0].is_live())
                .count();
            self.services[index].live_dependents = live;
        }
    }

    /// Whether a live service's stop signal may fire: every dependent has ended.
    fn releasable(&self, id: ServiceId) -> bool {
        let entry = &self.services[id.0];
        entry.is_live() && entry.released.is_none() && entry.live_dependents == 0
    }

    /// Fires a service's stop signal at `now` (with an [`Action::Release`] if `announce`):
    /// its stop budget starts — its own, or the time left shared along its chain of
    /// dependencies — never past the deadline; the slow-to-stop warning is due at half of it.
    fn release(&mut self, now: Instant, id: ServiceId, announce: bool) {
        let Phase::Draining(d) = &self.phase else {
            return;
        };
        let left = d
            .deadline
            .map(|deadline| deadline.saturating_duration_since(now));
        let entry = &mut self.services[id.0];
        // Whether it has dependencies, not whether they still run: which of two exits at one
        // instant an executor polls first must not change a budget.
        let below = !entry.after.is_empty();
        let budget = match (entry.options.stop_budget_limit(), left) {
            (Some(own), Some(left)) => Some(own.min(left)),
            (Some(own), None) => Some(own),
            // Without its own: half of it for a service with dependencies (they keep the other
            // half: down a chain, budgets halve), else all of it.
            (None, Some(left)) if below => Some(left / 2),
            (None, Some(left)) => Some(left),
            (None, None) => None,
        };
        entry.released = Some(now);
        entry.budget_end = budget.and_then(|budget| now.checked_add(budget));
        entry.slow_at = budget
            .filter(|budget| !budget.is_zero() && entry.budget_end.is_some())
            .and_then(|budget| now.checked_add(budget / 2));
        if announce {
            // At the stop, the `Drain` wakes the drivers; later, this new budget may be the
            // earliest timer.
            self.rescheduled = true;
            self.actions.push_back(Action::Release { service: id });
        }
    }

    /// Service `id` is done stopping (ended, or given up on) at `now`: the services it
    /// depends on whose dependents are all done get their stop signal.
    fn release_dependencies(&mut self, now: Instant, id: ServiceId) {
        if !matches!(self.phase, Phase::Draining(_)) {
            return;
        }
        for index in 0..self.services[id.0].after.len() {
            let dependency = self.services[id.0].after[index];
            if self.releasable(dependency) {
                self.release(now, dependency, true);
            }
        }
    }

    /// Forces the stop: the deadline becomes `now`, and the census asked for decides at once
    /// (abandoning whatever is still running). Starts the drain first (with
    /// [`StopCause::Forced`]) if no stop was requested yet.
    pub fn force(&mut self, now: Instant) {
        // A stop in its pre-drain keeps its cause; the force ends the pre-drain at once.
        let started = self.stop(now, StopCause::Forced);
        if let Phase::Draining(d) = &mut self.phase {
            d.forced = true;
            d.deadline = Some(d.deadline.map_or(now, |deadline| deadline.min(now)));
            if !started {
                self.actions.push_back(Action::Census);
            }
        }
    }

    /// A stop trigger was registered: a future that will stop the lifecycle when it
    /// resolves. It is something to wait for, so the first wait does not stop a lifecycle
    /// that has one (see [`handle_wait_started`](Self::handle_wait_started)).
    pub fn handle_stop_trigger(&mut self) {
        self.triggers += 1;
    }

    /// The first `wait` on the lifecycle was observed. Once per machine: if no service was
    /// ever added and no stop trigger registered, a census is asked for, and if it finds
    /// nothing live the machine stops with [`StopCause::NothingToRun`] rather than wait
    /// forever.
    pub fn handle_wait_started(&mut self, _now: Instant) {
        if std::mem::replace(&mut self.wait_seen, true) {
            return;
        }
        if let Phase::Running { empty_check } = &mut self.phase {
            if self.services.is_empty() && self.triggers == 0 {
                *empty_check = true;
                self.actions.push_back(Action::Census);
            }
        }
    }

    /// Whether a census taken at `now` must name the live sessions: only one that may end
    /// the lifecycle as `Abandoned` (at or past the deadline) reports them. Otherwise a
    /// driver may leave [`SessionCensus::live`] empty and count every live session in
    /// [`SessionCensus::live_unnamed`] — the census only tells whether anything is live —
    /// which spares walking every live session at each stop.
    pub fn census_needs_names(&self, now: Instant) -> bool {
        match &self.phase {
            Phase::Draining(d) => d.deadline.is_some_and(|deadline| now >= deadline),
            _ => false,
        }
    }

    /// The driver's census of the sessions, taken at `now`: after an [`Action::Census`], or
    /// when the driver saw the last session end after admission closed.
    ///
    /// A census always counts at least as many admitted sessions as live ones; a driver that
    /// gives one that does not has a bug (checked in debug builds).
    pub fn handle_census(&mut self, now: Instant, census: SessionCensus) {
        debug_assert!(
            census.admitted >= census.live.len() as u64 + census.live_unnamed,
            "a census with more sessions live than admitted: {census:?}"
        );
        match &mut self.phase {
            Phase::Running { empty_check } => {
                if std::mem::take(empty_check) && self.services.is_empty() && census.is_empty() {
                    self.stop(now, StopCause::NothingToRun);
                }
            }
            Phase::Draining(d) => {
                if census.is_empty() {
                    d.sessions_drained = true;
                }
                let running = self.live > 0;
                let due = d.deadline.is_some_and(|deadline| now >= deadline);
                if d.sessions_drained && census.is_empty() && !running {
                    // Everything ended; `Abandoned` still if a service was given up on past
                    // its stop budget.
                    let state = if d.gave_up {
                        State::Abandoned
                    } else {
                        State::Terminated
                    };
                    self.end(now, state, census, false);
                } else if due {
                    self.end(now, State::Abandoned, census, true);
                }
            }
            Phase::Ended(_) => {}
        }
    }

    /// Reports that a service's future ended at `now`, and how.
    ///
    /// Exits reported after the machine ended (the service was already recorded as
    /// abandoned) and second exits of the same service are ignored. An exit at or after the
    /// deadline came too late: the deadline decides first (a census is asked for, and the
    /// service, still running at the deadline, is abandoned) — so whether a service ended in
    /// time depends only on the clock's reading at its exit, not on whether its executor
    /// ran it before the timer.
    ///
    /// # Panics
    ///
    /// If `id` was not returned by this machine's [`add_service`](Self::add_service).
    pub fn service_exited(&mut self, now: Instant, id: ServiceId, exit: Exit) {
        let state = self.state();
        if state.is_terminal() || self.services[id.0].ended.is_some() {
            return;
        }
        if let Phase::Draining(d) = &self.phase {
            if d.deadline.is_some_and(|deadline| now >= deadline) {
                self.actions.push_back(Action::Census);
                return;
            }
            // Likewise past its own stop budget: given up on, whichever came first.
            if self.services[id.0].budget_end.is_some_and(|end| now >= end) {
                self.handle_timeout(now);
                return;
            }
        }
        // Returning `Ok` after the stop was requested is a clean stop, even for a service
        // whose own signal had not fired yet (its dependents still running): which of two
        // exits at one instant an executor polls first must not change an outcome.
        let outcome = match (exit, state) {
            (Exit::Ok, State::Running) => ServiceOutcome::EndedEarly,
            (Exit::Ok, _) => ServiceOutcome::Stopped,
            (Exit::Err(error), _) => ServiceOutcome::Failed(error),
            (Exit::Panic(payload), _) => ServiceOutcome::Panicked(payload),
            (Exit::Dropped, _) => ServiceOutcome::Dropped,
        };
        if state == State::Running && self.restarts_after(id, &outcome) {
            self.restart(now, id, outcome);
            return;
        }
        let entry = &mut self.services[id.0];
        entry.ended = Some((now, outcome.clone()));
        self.note_ended(id);
        let entry = &self.services[id.0];
        if !outcome.is_clean() {
            self.actions.push_back(Action::Complain {
                service: id,
                name: entry.name.clone(),
                outcome,
            });
            if state == State::Running && self.policy == FailurePolicy::StopAll {
                let service = entry.name.clone();
                self.stop(now, StopCause::ServiceEnded { service });
                return;
            }
        }
        let entry = &self.services[id.0];
        if state == State::Running && entry.dependents.iter().any(|d| self.services[d.0].waiting) {
            // Ended for good while a dependent waits: that one would wait forever, or start
            // without it. The start failed.
            let service = entry.name.clone();
            self.stop(
                now,
                StopCause::StartFailed {
                    service,
                    timeout: None,
                },
            );
            return;
        }
        self.release_dependencies(now, id);
        // The last service ended after the sessions drained: one last census for the report.
        if let Phase::Draining(d) = &self.phase {
            if d.sessions_drained && self.live == 0 {
                self.actions.push_back(Action::Census);
            }
        }
    }

    /// The first run of this service is made by the driver after it was added (from a
    /// factory, outside the driver's lock): it counts as an attempt when the driver says it
    /// was made ([`run_made`](Self::run_made)), and a stop before that ends the service
    /// without a run (`Stopped`: it was asked to stop before it started).
    ///
    /// # Panics
    ///
    /// If `id` was not returned by this machine's [`add_service`](Self::add_service).
    pub fn first_run_pending(&mut self, id: ServiceId) {
        let entry = &mut self.services[id.0];
        if entry.attempts == 1 && entry.has_run() && !entry.starting {
            entry.attempts = 0;
            entry.starting = true;
            // Ready when its run is made, not before.
            entry.ready = false;
            entry.ever_ready = false;
        }
    }

    /// The driver made the run an [`Action::Start`] asked for, at `now`: it counts as an
    /// attempt from now on. Ignored unless a start is pending (so also after the end).
    /// Returns whether the run is ready because it declared so while it was being made
    /// ([`run_ready`](Self::run_ready) from inside its factory).
    pub fn run_made(&mut self, now: Instant, id: ServiceId) -> bool {
        if self.state().is_terminal() {
            return false;
        }
        let entry = &mut self.services[id.0];
        let early = std::mem::take(&mut entry.ready_early);
        if std::mem::take(&mut entry.starting) {
            if entry.attempts == 0 && !entry.after.is_empty() {
                // It waited for its dependencies: it runs from now.
                entry.started = now;
            }
            entry.attempts = entry.attempts.saturating_add(1);
            entry.run_started = now;
            entry.ready = false;
            if early || !entry.options.is_declaring_ready() {
                self.service_ready(now, id);
            }
            return early;
        }
        false
    }

    /// Run `attempt` of service `id` (1 for the first) declared itself ready at `now`: as
    /// [`service_ready`](Self::service_ready) for the current run, and also for the run being
    /// made (its factory declared it ready before returning: it is ready once
    /// [`run_made`](Self::run_made)). A stale attempt changes nothing. Returns whether this
    /// call changed anything.
    pub fn run_ready(&mut self, now: Instant, id: ServiceId, attempt: u32) -> bool {
        let running = self.state() == State::Running;
        let entry = &mut self.services[id.0];
        if entry.starting && attempt == entry.attempts.saturating_add(1) {
            // Only a service that declares readiness has one to declare: the others are
            // ready when made.
            let declares = entry.options.is_declaring_ready();
            return running && declares && !std::mem::replace(&mut entry.ready_early, true);
        }
        entry.attempts == attempt && self.service_ready(now, id)
    }

    /// Making the run an [`Action::Start`] asked for failed at `now` (its factory
    /// panicked): the run counts as an attempt that ended with `exit`, and was never ready.
    pub fn run_failed(&mut self, now: Instant, id: ServiceId, exit: Exit) {
        if self.state().is_terminal() {
            return;
        }
        let entry = &mut self.services[id.0];
        entry.ready_early = false;
        if std::mem::take(&mut entry.starting) {
            if entry.attempts == 0 && !entry.after.is_empty() {
                entry.started = now;
            }
            entry.attempts = entry.attempts.saturating_add(1);
            entry.run_started = now;
            entry.ready = false;
        }
        self.service_exited(now, id, exit);
    }

    /// The driver did not make the run an [`Action::Start`] asked for: the lifecycle left
    /// `Running` before it could (a stop on another thread, or from the factory of another
    /// service). The service ends at `now` as its last run did, like a service waiting for
    /// its restart at the stop; nothing happens if it already ended.
    pub fn cancel_start(&mut self, now: Instant, id: ServiceId) {
        let state = self.state();
        let entry = &mut self.services[id.0];
        if state == State::Running || state.is_terminal() || entry.ended.is_some() {
            return;
        }
        entry.starting = false;
        entry.ended = Some((now, ended_between_runs(entry.last_outcome.clone())));
        self.note_ended(id);
        self.release_dependencies(now, id);
        if let Phase::Draining(d) = &self.phase {
            if d.sessions_drained && self.live == 0 {
                self.actions.push_back(Action::Census);
            }
        }
    }

    /// Whether a run that ended with `outcome` while running is restarted, by its policy.
    fn restarts_after(&self, id: ServiceId, outcome: &ServiceOutcome) -> bool {
        match self.services[id.0].options.restart_policy() {
            Restart::Never => false,
            Restart::OnFailure => matches!(
                outcome,
                ServiceOutcome::Failed(_) | ServiceOutcome::Panicked(_)
            ),
            // A run dropped by its driver is not a run that ended: the driver went away.
            Restart::Always => !matches!(outcome, ServiceOutcome::Dropped),
        }
    }

    /// Schedules the restart of a service whose run ended with `outcome` at `now` — unless
    /// that restart would exceed the restart intensity: then the service ends with that
    /// outcome and the lifecycle stops with [`StopCause::RestartIntensity`].
    fn restart(&mut self, now: Instant, id: ServiceId, outcome: ServiceOutcome) {
        let window = self.intensity.within();
        while self
            .restarts
            .front()
            .is_some_and(|&at| now.saturating_duration_since(at) >= window)
        {
            self.restarts.pop_front();
        }
        self.restarts.push_back(now);
        let entry = &mut self.services[id.0];
        let counted = u32::try_from(self.restarts.len()).unwrap_or(u32::MAX);
        if counted > self.intensity.max_restarts() {
            entry.ended = Some((now, outcome.clone()));
            entry.last_outcome = Some(outcome.clone());
            self.note_ended(id);
            let entry = &self.services[id.0];
            self.actions.push_back(Action::Complain {
                service: id,
                name: entry.name.clone(),
                outcome,
            });
            let cause = StopCause::RestartIntensity {
                service: entry.name.clone(),
                restarts: counted,
                within: window,
            };
            self.stop(now, cause);
            return;
        }
        let backoff = entry.options.backoff_policy();
        if now.saturating_duration_since(entry.run_started) >= backoff.stable() {
            entry.streak = 0;
        }
        entry.streak = entry.streak.saturating_add(1);
        let after = backoff.delay(entry.streak, self.rng.next());
        entry.backoff_until = Some(now + after);
        self.rescheduled = true;
        entry.ready = false;
        entry.last_outcome = Some(outcome.clone());
        self.actions.push_back(Action::Restarting {
            service: id,
            name: entry.name.clone(),
            outcome,
            attempt: entry.attempts,
            after,
        });
    }

    /// The next instant at which [`handle_timeout`](Self::handle_timeout) must be called:
    /// while running, the earliest restart due or start timeout; while draining, the
    /// earliest of each signalled service's slow-to-stop warning (half its budget) and
    /// budget end, and the deadline; `None` otherwise.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Running { .. } => self
                .services
                .iter()
                .filter(|s| s.is_live())
                .flat_map(|s| [s.backoff_until, s.ready_by.filter(|_| !s.ever_ready)])
                .flatten()
                .chain(self.pending.as_ref().map(|(at, ..)| *at))
                .min(),
            Phase::Draining(d) => self
                .services
                .iter()
                .filter(|s| s.is_live())
                .flat_map(|s| {
                    [
                        s.slow_at,
                        // Before the deadline (at it, the deadline decides), or with none.
                        s.budget_end
                            .filter(|&end| d.deadline.is_none_or(|deadline| end < deadline)),
                    ]
                })
                .flatten()
                .chain(d.deadline)
                .min(),
            Phase::Ended(_) => None,
        }
    }

    /// Tells the machine the time is `now`. While running, a service past its start
    /// timeout stops the lifecycle ([`StopCause::StartFailed`]); otherwise every service
    /// whose restart is due gets an [`Action::Start`]. While draining, a signalled service
    /// at half its budget is reported slow to stop, one past its budget (before the
    /// deadline) is given up on — and the services it depends on are signalled — and at or
    /// past the deadline a census is asked for: it decides between `Terminated` (nothing
    /// left) and `Abandoned` (every running service and live session is given up on, and
    /// named).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.pending.as_ref().is_some_and(|(at, ..)| *at <= now) {
            if let Some((_, cause, by)) = self.pending.take() {
                self.stop_by(now, cause, by);
            }
        }
        if let Phase::Running { .. } = self.phase {
            let late = self
                .services
                .iter()
                .find(|s| s.has_run() && !s.ever_ready && s.ready_by.is_some_and(|by| by <= now));
            if let Some(entry) = late {
                let cause = StopCause::StartFailed {
                    service: entry.name.clone(),
                    timeout: entry.options.start_timeout_limit(),
                };
                self.stop(now, cause);
            }
        }
        if let Phase::Running { .. } = self.phase {
            for (index, entry) in self.services.iter_mut().enumerate() {
                if entry.backoff_until.is_some_and(|due| due <= now) {
                    entry.backoff_until = None;
                    // Counted when the driver says the run was made (`run_made`).
                    entry.starting = true;
                    self.actions.push_back(Action::Start {
                        service: ServiceId(index),
                    });
                }
            }
        }
        let Phase::Draining(d) = &self.phase else {
            return;
        };
        let deadline = d.deadline;
        for (index, entry) in self.services.iter_mut().enumerate() {
            if entry.is_live() && entry.slow_at.is_some_and(|slow| now >= slow) {
                entry.slow_at = None;
                let since = entry.released.unwrap_or(now);
                self.actions.push_back(Action::SlowToStop {
                    service: ServiceId(index),
                    name: entry.name.clone(),
                    elapsed: now.saturating_duration_since(since),
                });
            }
        }
        if deadline.is_some_and(|deadline| now >= deadline) {
            self.actions.push_back(Action::Census);
            return;
        }
        let spent: Vec<ServiceId> = (0..self.services.len())
            .map(ServiceId)
            .filter(|id| {
                let entry = &self.services[id.0];
                entry.is_live() && entry.budget_end.is_some_and(|end| now >= end)
            })
            .collect();
        for &id in &spent {
            let entry = &mut self.services[id.0];
            entry.ended = Some((now, ServiceOutcome::Abandoned));
            let name = entry.name.clone();
            self.note_ended(id);
            self.actions.push_back(Action::Complain {
                service: id,
                name,
                outcome: ServiceOutcome::Abandoned,
            });
            self.actions.push_back(Action::GiveUp { service: id });
        }
        if spent.is_empty() {
            return;
        }
        if let Phase::Draining(d) = &mut self.phase {
            d.gave_up = true;
        }
        for &id in &spent {
            self.release_dependencies(now, id);
        }
        if self.live == 0 {
            // The last service given up on: a census decides (the sessions may be drained).
            self.actions.push_back(Action::Census);
        }
    }

    /// Whether a timer was set since the last call that may come before the one a driver
    /// armed for [`poll_timeout`](Self::poll_timeout) (a restart's backoff, a start timeout,
    /// a stop budget started at a `Release`): the driver looks at `poll_timeout` again. A
    /// stop needs no such call: its `Drain` wakes every waiter.
    pub fn take_rescheduled(&mut self) -> bool {
        std::mem::take(&mut self.rescheduled)
    }

    /// The next action for the driver, if any.
    pub fn poll(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Whether the driver has anything to do: an action to take, or a timer to look at
    /// again ([`take_rescheduled`](Self::take_rescheduled)).
    pub(crate) fn has_work(&self) -> bool {
        !self.actions.is_empty() || self.rescheduled
    }

    /// The report, if the machine has ended and its [`Action::Finish`] is the one thing left
    /// for the driver (nothing to complain about, abort or re-time): the end a lifecycle's
    /// last session usually brings, which the driver then carries out without its general
    /// path. Takes that action; `None` (and nothing taken) otherwise.
    pub(crate) fn take_lone_finish(&mut self) -> Option<Report> {
        if self.actions.len() != 1 || self.rescheduled {
            return None;
        }
        let Phase::Ended(report) = &self.phase else {
            return None;
        };
        if !matches!(self.actions.front(), Some(Action::Finish)) {
            return None;
        }
        self.actions.pop_front();
        Some(report.clone())
    }

    /// The final report, once the machine is in a terminal state; `None` before.
    pub fn report(&self) -> Option<&Report> {
        match &self.phase {
            Phase::Ended(report) => Some(report),
            _ => None,
        }
    }

    /// For a nested lifecycle whose own service's run starts now (its gate opens): what was
    /// added before runs from now — its `ran` counts from now, and a start timeout asked for
    /// while the gate was shut starts now, not when the service was added.
    pub fn resume_starts(&mut self, now: Instant) {
        for entry in &mut self.services {
            if !entry.is_live() {
                continue;
            }
            entry.started = now;
            entry.run_started = now;
            if entry.ready_by.is_some() && !entry.ever_ready {
                entry.ready_by = entry
                    .options
                    .start_timeout_limit()
                    .and_then(|timeout| now.checked_add(timeout));
                self.rescheduled = true;
            }
        }
    }

    /// For a nested lifecycle whose own service never ran (its parent stopped first): stops
    /// it with [`StopCause::ParentStopping`] and ends every service not ended yet as
    /// [`ServiceOutcome::NotStarted`] — none was ever run, since the driver runs nothing of
    /// a nested lifecycle before its service runs. Its sessions drain as usual.
    pub fn cancel_unstarted(&mut self, now: Instant) {
        self.stop(now, StopCause::ParentStopping);
        if self.state() != State::Draining {
            return;
        }
        for entry in &mut self.services {
            if entry.ended.is_none() {
                entry.starting = false;
                entry.started = now;
                // Its run (if made) was never polled: no attempt.
                entry.attempts = 0;
                entry.ended = Some((now, ServiceOutcome::NotStarted));
            }
        }
        self.recount();
        self.actions.push_back(Action::Census);
    }

    /// Attaches the report of the lifecycle nested as service `id` to this machine's report,
    /// once it ended (a driver does this before it publishes the report). Ignored before
    /// the end.
    ///
    /// # Panics
    ///
    /// If `id` was not returned by this machine's [`add_service`](Self::add_service).
    pub fn attach_nested(&mut self, id: ServiceId, nested: Report) {
        assert!(
            id.0 < self.services.len(),
            "no service {id:?} in this machine"
        );
        if let Phase::Ended(report) = &mut self.phase {
            report.set_nested(id.0, nested);
        }
    }

    /// Ends the machine at `now` in `state`, on `census`, and writes the report; `abandon`:
    /// give up on whatever is still running.
    fn end(&mut self, now: Instant, state: State, census: SessionCensus, abandon: bool) {
        let Phase::Draining(d) = &self.phase else {
            return;
        };
        if abandon {
            self.actions.push_back(Action::Abandon);
            for (index, entry) in self.services.iter_mut().enumerate() {
                if entry.ended.is_none() && std::mem::take(&mut entry.starting) {
                    // Its restart was asked for but never made: no run to abandon; it ends
                    // as its last run did.
                    entry.ended = Some((now, ended_between_runs(entry.last_outcome.clone())));
                } else if entry.ended.is_none() {
                    entry.ended = Some((now, ServiceOutcome::Abandoned));
                    self.actions.push_back(Action::Complain {
                        service: ServiceId(index),
                        name: entry.name.clone(),
                        outcome: ServiceOutcome::Abandoned,
                    });
                }
            }
        }
        self.live = self.services.iter().filter(|s| s.is_live()).count();
        // No `collect` machinery for a lifecycle without services (sessions only).
        let services = if self.services.is_empty() {
            Vec::new()
        } else {
            self.services
                .iter()
                .map(|entry| {
                    let (at, outcome) = entry
                        .ended
                        .clone()
                        .expect("an ending machine has no running service");
                    ServiceReport::new(
                        entry.name.clone(),
                        outcome,
                        at.saturating_duration_since(entry.started),
                        entry.attempts,
                        entry.last_outcome.clone(),
                    )
                })
                .collect()
        };
        let lifetime = now.saturating_duration_since(self.started);
        let drained_in = lifetime.saturating_sub(d.stopped_after);
        let report = Report::new(
            state,
            Some(d.cause.clone()),
            d.forced,
            self.grace,
            drained_in,
            lifetime,
            services,
            census.into_report(abandon),
        );
        self.phase = Phase::Ended(report);
        self.actions.push_back(Action::Finish);
    }
}

/// A service name's hash for [`Machine`]'s name index.
fn name_hash(name: &str) -> u64 {
    use std::hash::BuildHasher;
    rustc_hash::FxBuildHasher.hash_one(name)
}

#[cfg(test)]
mod tests;
