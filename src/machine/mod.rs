//! The pure lifecycle state machine: no clock, no I/O, no locks, no async.
//!
//! [`Machine`] is the sans-IO heart of the crate, in the manner of `quinn-proto`: every input
//! is a method that takes `now` as an argument, and every output is either an [`Action`]
//! drained with [`Machine::poll`] or the next deadline from [`Machine::poll_timeout`]. The
//! async shell ([`Lifecycle`](crate::Lifecycle)) owns the clock, the services' futures and the
//! session gate, and feeds this machine; tests, proptest schedules and fuzz targets drive it
//! directly.
//!
//! # Call order
//!
//! After any `handle_*`/`add_service`/`stop`/`force` call, drain [`Machine::poll`] until it
//! returns `None` and act on each [`Action`]; then arm a timer for
//! [`Machine::poll_timeout`] and call [`Machine::handle_timeout`] when it fires (or at once,
//! if the deadline is not in the future).
//!
//! # Transitions
//!
//! | from       | input                                         | to           | actions                         |
//! |------------|-----------------------------------------------|--------------|---------------------------------|
//! | `Running`  | `stop(cause)`                                 | `Draining`   | `Drain`                         |
//! | `Running`  | a service exits (any way), policy `StopAll`   | `Draining`   | `Complain`, `Drain`             |
//! | `Running`  | a service exits (any way), policy `ReportOnly`| `Running`    | `Complain`                      |
//! | `Running`  | `force()`                                     | `Draining`, deadline = now | `Drain`           |
//! | `Draining` | last service exits / sessions drained         | `Terminated` | (`Complain` if unclean), `Finish` |
//! | `Draining` | `handle_timeout(now >= deadline)`, work left  | `Abandoned`  | `Abandon`, `Complain`×n, `Finish` |
//! | `Draining` | `force()`                                     | `Draining`, deadline = now | —                 |
//! | `Draining` | `stop(cause)`                                 | `Draining`   | — (the first cause is kept)     |
//! | terminal   | anything                                      | unchanged    | —                               |
//!
//! A service "exits" cleanly only by returning `Ok` after the stop was requested; returning
//! before that (even `Ok`), failing, panicking or being dropped is unclean and is complained
//! about.
//!
//! # Invariants
//!
//! - `Terminated` and `Abandoned` are final: no input changes the state, the cause or the
//!   services' outcomes afterwards.
//! - Nothing is admitted outside `Running`: [`Machine::add_service`] refuses with
//!   [`Refused`], and the shell's session gate is closed by the `Drain` action before any
//!   other effect of the stop is visible.
//! - The first stop cause is kept; later ones are ignored.
//! - `Terminated` is reached only when every service has exited and the sessions were
//!   reported drained; `Abandoned` only at or after the deadline (a forced stop moves the
//!   deadline to the moment it was forced).
//! - Every service ends exactly once in the report: with the outcome of its exit, or as
//!   [`ServiceOutcome::Abandoned`] if it was still running when the lifecycle gave up.

mod report;

pub use report::{AbandonedSession, Report, ServiceReport, SessionReport, SessionTally};

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use crate::error::Refused;

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
    /// The stop was forced before anyone asked for a graceful one.
    Forced,
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
    /// It was still running when the lifecycle gave up on it.
    Abandoned,
}

impl ServiceOutcome {
    /// Whether this is the one clean outcome, [`ServiceOutcome::Stopped`].
    pub fn is_clean(&self) -> bool {
        matches!(self, ServiceOutcome::Stopped)
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
        }
    }
}

/// What the machine asks its driver to do, drained with [`Machine::poll`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// The stop began: fire every stop signal, close session admission, and arm the timer
    /// for [`Machine::poll_timeout`]. Once admission is closed and no session is live,
    /// call [`Machine::handle_sessions_drained`].
    Drain,
    /// A service ended uncleanly: complain loudly.
    Complain {
        /// The service.
        service: ServiceId,
        /// Its name.
        name: Cow<'static, str>,
        /// How it ended.
        outcome: ServiceOutcome,
    },
    /// The lifecycle gave up: cancel the services still running and take a census of the
    /// sessions still live (they are abandoned).
    Abandon,
    /// A final state was reached; [`Machine::report`] is now available.
    Finish,
}

#[derive(Debug)]
struct ServiceEntry {
    name: Cow<'static, str>,
    started: Instant,
    ended: Option<(Instant, ServiceOutcome)>,
}

/// The lifecycle's state machine. See the [module docs](self) for the transition table.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use async_lifecycle::machine::{Action, Exit, FailurePolicy, Machine, SessionTally};
/// use async_lifecycle::State;
///
/// let t0 = Instant::now();
/// let mut m = Machine::new(t0, Duration::from_secs(10), FailurePolicy::StopAll);
/// let worker = m.add_service(t0, "worker").unwrap();
/// m.stop(t0, "deploy".into());
/// assert_eq!(m.poll(), Some(Action::Drain));
/// assert_eq!(m.poll_timeout(), Some(t0 + Duration::from_secs(10)));
/// m.handle_sessions_drained(t0);
/// m.service_exited(t0 + Duration::from_secs(1), worker, Exit::Ok);
/// assert_eq!(m.state(), State::Terminated);
/// assert_eq!(m.poll(), Some(Action::Finish));
/// let report = m.report(SessionTally::default()).unwrap();
/// assert_eq!(report.exit_code(), 0);
/// ```
#[derive(Debug)]
pub struct Machine {
    state: State,
    grace: Duration,
    policy: FailurePolicy,
    cause: Option<StopCause>,
    forced: bool,
    started: Instant,
    stopped: Option<Instant>,
    deadline: Option<Instant>,
    ended: Option<Instant>,
    services: Vec<ServiceEntry>,
    running_services: usize,
    sessions_drained: bool,
    actions: VecDeque<Action>,
}

impl Machine {
    /// A machine in `Running`, created at `now`, that will allow `grace` for draining.
    ///
    /// A `grace` too large to add to an instant (such as `Duration::MAX`) means "no
    /// deadline": draining then waits as long as it takes, unless forced.
    pub fn new(now: Instant, grace: Duration, policy: FailurePolicy) -> Self {
        Machine {
            state: State::Running,
            grace,
            policy,
            cause: None,
            forced: false,
            started: now,
            stopped: None,
            deadline: None,
            ended: None,
            services: Vec::new(),
            running_services: 0,
            sessions_drained: false,
            actions: VecDeque::new(),
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The first stop cause, once a stop was requested.
    pub fn cause(&self) -> Option<&StopCause> {
        self.cause.as_ref()
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
        self.running_services
    }

    /// The name a service was added with.
    ///
    /// # Panics
    ///
    /// If `id` was not returned by this machine's [`add_service`](Self::add_service).
    pub fn service_name(&self, id: ServiceId) -> &str {
        &self.services[id.0].name
    }

    /// Registers a service that starts running at `now`.
    ///
    /// # Errors
    ///
    /// [`Refused`] once the machine has left `Running`: a service cannot be started while
    /// the program is stopping.
    pub fn add_service(
        &mut self,
        now: Instant,
        name: impl Into<Cow<'static, str>>,
    ) -> Result<ServiceId, Refused> {
        match self.state {
            State::Running => {}
            State::Draining => return Err(Refused::Draining),
            State::Terminated | State::Abandoned => return Err(Refused::Terminated),
        }
        let id = ServiceId(self.services.len());
        self.services.push(ServiceEntry {
            name: name.into(),
            started: now,
            ended: None,
        });
        self.running_services += 1;
        Ok(id)
    }

    /// Requests a graceful stop. Returns whether this call started the drain; a stop while
    /// already draining or ended changes nothing (the first cause is kept).
    pub fn stop(&mut self, now: Instant, cause: StopCause) -> bool {
        if self.state != State::Running {
            return false;
        }
        self.state = State::Draining;
        self.cause = Some(cause);
        self.stopped = Some(now);
        self.deadline = now.checked_add(self.grace);
        self.actions.push_back(Action::Drain);
        self.settle(now);
        true
    }

    /// Forces the stop: the deadline becomes `now`, so the next
    /// [`handle_timeout`](Self::handle_timeout) abandons whatever is still running. Starts the
    /// drain first (with [`StopCause::Forced`]) if no stop was requested yet.
    pub fn force(&mut self, now: Instant) {
        if self.state == State::Running {
            self.stop(now, StopCause::Forced);
        }
        if self.state == State::Draining {
            self.forced = true;
            self.deadline = Some(self.deadline.map_or(now, |d| d.min(now)));
        }
    }

    /// Reports that session admission is closed and no session is live. Idempotent.
    pub fn handle_sessions_drained(&mut self, now: Instant) {
        if self.state == State::Draining {
            self.sessions_drained = true;
            self.settle(now);
        }
    }

    /// Reports that a service's future ended at `now`, and how.
    ///
    /// Exits reported after the machine ended (the service was already recorded as
    /// abandoned) and second exits of the same service are ignored.
    ///
    /// # Panics
    ///
    /// If `id` was not returned by this machine's [`add_service`](Self::add_service).
    pub fn service_exited(&mut self, now: Instant, id: ServiceId, exit: Exit) {
        if self.state.is_terminal() || self.services[id.0].ended.is_some() {
            return;
        }
        let outcome = match (exit, self.state) {
            (Exit::Ok, State::Running) => ServiceOutcome::EndedEarly,
            (Exit::Ok, _) => ServiceOutcome::Stopped,
            (Exit::Err(error), _) => ServiceOutcome::Failed(error),
            (Exit::Panic(payload), _) => ServiceOutcome::Panicked(payload),
            (Exit::Dropped, _) => ServiceOutcome::Dropped,
        };
        let entry = &mut self.services[id.0];
        entry.ended = Some((now, outcome.clone()));
        self.running_services -= 1;
        if !outcome.is_clean() {
            self.actions.push_back(Action::Complain {
                service: id,
                name: entry.name.clone(),
                outcome,
            });
            if self.state == State::Running && self.policy == FailurePolicy::StopAll {
                let service = entry.name.clone();
                self.stop(now, StopCause::ServiceEnded { service });
            }
        }
        self.settle(now);
    }

    /// The next instant at which [`handle_timeout`](Self::handle_timeout) must be called:
    /// the grace deadline while draining, `None` otherwise.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Draining => self.deadline,
            _ => None,
        }
    }

    /// Tells the machine the time is `now`. At or past the deadline, with work still running,
    /// the lifecycle is abandoned: every running service is recorded as
    /// [`ServiceOutcome::Abandoned`].
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state != State::Draining || self.deadline.is_none_or(|d| now < d) {
            return;
        }
        self.state = State::Abandoned;
        self.ended = Some(now);
        self.actions.push_back(Action::Abandon);
        for (index, entry) in self.services.iter_mut().enumerate() {
            if entry.ended.is_none() {
                entry.ended = Some((now, ServiceOutcome::Abandoned));
                self.actions.push_back(Action::Complain {
                    service: ServiceId(index),
                    name: entry.name.clone(),
                    outcome: ServiceOutcome::Abandoned,
                });
            }
        }
        self.running_services = 0;
        self.actions.push_back(Action::Finish);
    }

    /// The next action for the driver, if any.
    pub fn poll(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The final report, once the machine is in a terminal state; `None` before.
    ///
    /// `sessions` is the driver's census of sessions: in `Terminated` its abandoned lists
    /// must be empty (no session was live), in `Abandoned` they hold the sessions that were
    /// live when [`Action::Abandon`] was handled.
    pub fn report(&self, sessions: SessionTally) -> Option<Report> {
        let ended = self.ended?;
        let services = self
            .services
            .iter()
            .map(|entry| {
                let (at, outcome) = entry
                    .ended
                    .clone()
                    .expect("a terminal machine has no running service");
                ServiceReport::new(
                    entry.name.clone(),
                    outcome,
                    at.saturating_duration_since(entry.started),
                )
            })
            .collect();
        let stopped = self.stopped.unwrap_or(ended);
        Some(Report::new(
            self.state,
            self.cause.clone(),
            self.forced,
            self.grace,
            ended.saturating_duration_since(stopped),
            ended.saturating_duration_since(self.started),
            services,
            sessions.into_report(),
        ))
    }

    fn settle(&mut self, now: Instant) {
        if self.state == State::Draining && self.running_services == 0 && self.sessions_drained {
            self.state = State::Terminated;
            self.ended = Some(now);
            self.actions.push_back(Action::Finish);
        }
    }
}

#[cfg(test)]
mod tests;
