//! The one vocabulary of every checker: the operations a schedule is made of, and the
//! configuration it runs under.
//!
//! The same `Schedule` drives the proptest model test (`tests/model.rs`), both fuzz targets
//! (`fuzz/fuzz_targets/`), and the scenarios of the loom models are written in its terms. Under
//! cargo-fuzz (`cfg(fuzzing)`) the types derive `arbitrary::Arbitrary`, so libFuzzer's bytes
//! decode straight into a schedule; nothing here is part of the library's public API.
//!
//! # What each operation means
//!
//! The semantics are those of a single-threaded program that owns a lifecycle on a manual
//! clock and runs its `wait()` on a local executor. Only [`Op::Drive`] and
//! [`Op::ServiceExit`] run that executor; every other operation is a plain call from outside
//! it (as a request handler or a signal thread would make).

use std::time::Duration;

/// How a service's future ends when told to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
pub(crate) enum How {
    /// It returns `Ok(())`.
    Ok,
    /// It returns `Err("planned failure")`.
    Err,
    /// It panics with `"planned panic"`.
    Panic,
}

/// One step of a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
pub(crate) enum Op {
    /// Adds service `svc{n}` (n counts the attempts). One that `honours_stop` returns
    /// `Ok(())` as soon as its stop signal fires; the others run until told to exit.
    AddService {
        /// Whether the service returns when its stop signal fires.
        honours_stop: bool,
    },
    /// Adds service `svc{n}` supervised with [`restart_policy`]`(always)` under
    /// [`backoff`]: each run ends when told to (or, if it `honours_stop`, when its stop
    /// fires); a run that ends while running is restarted after the backoff, unless that
    /// exceeds [`intensity`].
    AddRestartable {
        /// Whether each run returns when its stop signal fires.
        honours_stop: bool,
        /// `Restart::Always` (an early `Ok` restarts too), else `Restart::OnFailure`.
        always: bool,
    },
    /// Adds service `svc{n}` with options (`lc.service_with`): it starts after the services
    /// that `on` picks (see [`dependencies`]), may declare itself ready (see [`Op::Ready`]),
    /// may have the start timeout [`START_TIMEOUT`] and a stop budget of its own (see
    /// [`stop_budget`]), and may be restarted as [`Op::AddRestartable`] says. Waiting for its
    /// dependencies, it has no run; once they were all ready once, its first run is made.
    AddDependent {
        /// Bit `i` (of the low three): it depends on the `i + 1`th latest service added.
        on: u8,
        /// Whether it declares itself ready (else ready as soon as its run is made).
        declares_ready: bool,
        /// Whether it has the start timeout [`START_TIMEOUT`].
        start_timeout: bool,
        /// Its own stop budget (see [`stop_budget`]), if any.
        budget: Option<u8>,
        /// Whether each run returns when its own stop signal fires.
        honours_stop: bool,
        /// `None`: never restarted; `Some(always)`: as [`Op::AddRestartable`].
        restart: Option<bool>,
    },
    /// The current run of the service at index `pick` modulo the services added so far calls
    /// `stop.ready()` (nothing if it has no run: waiting, between runs, or ended).
    Ready {
        /// Which service.
        pick: u8,
    },
    /// Begins a session: named `s{n}` (n counts the attempts), or unnamed.
    BeginSession {
        /// Whether the session is named.
        named: bool,
    },
    /// Begins a child (`Session::child` / `unnamed_child`) of the live session at index
    /// `pick` modulo the number of live sessions, if any: named `s{n}` (n counts the session
    /// attempts) or unnamed; admitted while draining, refused once the lifecycle ended.
    BeginChild {
        /// Which live session is the parent.
        pick: u8,
        /// Whether the child is named.
        named: bool,
    },
    /// Ends the live session at index `pick` modulo the number of live sessions, if any.
    EndSession {
        /// Which live session.
        pick: u8,
    },
    /// Ends the live session at index `pick` by a panic (its guard is dropped while the
    /// thread unwinds), if any.
    PanicSession {
        /// Which live session.
        pick: u8,
    },
    /// Tells the service at index `pick` modulo the services added so far to end `how`,
    /// then runs the executor until it stalls (a service only ends when it is polled).
    ServiceExit {
        /// Which service.
        pick: u8,
        /// How it ends.
        how: How,
    },
    /// Requests a stop with cause number `cause` (see [`stop_cause`]).
    Stop {
        /// Which cause.
        cause: u8,
    },
    /// Forces the stop.
    Force,
    /// Moves the manual clock forward by `millis` milliseconds (waking due sleeps, which run
    /// at the next drive).
    Advance {
        /// How far.
        millis: u16,
    },
    /// Runs the executor until it stalls: `wait()` drives the services and the deadline.
    Drive,
}

/// The grace periods a schedule can run with: short ones that `Op::Advance` can reach, and
/// none at all (`Duration::MAX`, which only a force ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
pub(crate) enum Grace {
    /// `Duration::ZERO`: whatever is still running at the stop is abandoned by it.
    Zero,
    /// A grace of `millis` milliseconds.
    Millis(u16),
    /// `Duration::MAX`: no deadline.
    Unbounded,
}

impl Grace {
    /// The grace as the builder takes it.
    pub(crate) fn duration(self) -> Duration {
        match self {
            Grace::Zero => Duration::ZERO,
            Grace::Millis(ms) => Duration::from_millis(u64::from(ms)),
            Grace::Unbounded => Duration::MAX,
        }
    }

    /// The grace as a deadline offset, `None` when there is no deadline.
    pub(crate) fn bound(self) -> Option<Duration> {
        match self {
            Grace::Unbounded => None,
            other => Some(other.duration()),
        }
    }
}

/// What a schedule runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
pub(crate) struct Config {
    /// The grace period.
    pub(crate) grace: Grace,
    /// `true` for `FailurePolicy::ReportOnly`, `false` for the default `StopAll`.
    pub(crate) report_only: bool,
    /// `Builder::pre_drain`, in milliseconds (0: none): a requested stop keeps running, not
    /// ready, that long before its drain begins.
    pub(crate) pre_drain_ms: u16,
}

impl Config {
    /// The pre-drain.
    pub(crate) fn pre_drain(self) -> Duration {
        Duration::from_millis(u64::from(self.pre_drain_ms))
    }

    /// The failure policy as the builder takes it.
    pub(crate) fn policy(self) -> async_lifecycle::FailurePolicy {
        if self.report_only {
            async_lifecycle::FailurePolicy::ReportOnly
        } else {
            async_lifecycle::FailurePolicy::StopAll
        }
    }
}

/// A whole run: a configuration and the operations, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
pub(crate) struct Schedule {
    /// What it runs under.
    pub(crate) config: Config,
    /// What happens.
    pub(crate) ops: Vec<Op>,
}

/// The stop cause of `Op::Stop { cause }`: a signal for multiples of four, else a request
/// that carries the number (so "the first cause is kept" is checkable).
pub(crate) fn stop_cause(cause: u8) -> async_lifecycle::StopCause {
    if cause % 4 == 0 {
        async_lifecycle::StopCause::Signal("SIGTERM")
    } else {
        async_lifecycle::StopCause::Requested(format!("request {cause}").into())
    }
}

/// What an operation answered, where it answers: a session's admission, a service's
/// addition, or `stop.ready()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// `BeginSession`.
    Session(Result<(), async_lifecycle::Refused>),
    /// `AddService`, `AddRestartable` or `AddDependent`.
    Service(Result<(), async_lifecycle::ServiceError>),
    /// `Ready`: whether the call changed anything.
    Ready(bool),
}

impl Answer {
    /// Whether it admitted something (a session or a service).
    pub(crate) fn admitted(&self) -> bool {
        matches!(self, Answer::Session(Ok(())) | Answer::Service(Ok(())))
    }
}

/// The indices (among the `added` services admitted so far) that `Op::AddDependent { on }`
/// depends on, in the order `after` names them: bit `i` picks the `i + 1`th latest.
pub(crate) fn dependencies(on: u8, added: usize) -> Vec<usize> {
    (0..3)
        .filter(|bit| on & (1 << bit) != 0 && *bit < added)
        .map(|bit| added - 1 - bit)
        .collect()
}

/// The start timeout of `Op::AddDependent { start_timeout: true, .. }`.
pub(crate) const START_TIMEOUT: Duration = Duration::from_millis(150);

/// The stop budget of `Op::AddDependent { budget: Some(b), .. }`: 10 ms to 320 ms.
/// The options of an `Op::AddDependent`, depending on the services named `after`.
pub(crate) fn dependent_options(
    after: impl IntoIterator<Item = String>,
    restart: Option<bool>,
    declares_ready: bool,
    start_timeout: bool,
    budget: Option<u8>,
) -> async_lifecycle::ServiceOptions {
    let mut options = async_lifecycle::ServiceOptions::new().after(after);
    if let Some(always) = restart {
        options = options.restart(restart_policy(always)).backoff(backoff());
    }
    if declares_ready {
        options = options.declares_ready();
    }
    if start_timeout {
        options = options.start_timeout(START_TIMEOUT);
    }
    if let Some(budget) = budget {
        options = options.stop_budget(stop_budget(budget));
    }
    options
}

pub(crate) fn stop_budget(b: u8) -> Duration {
    Duration::from_millis(10 * (u64::from(b % 32) + 1))
}

/// The name of the `n`th service attempt.
pub(crate) fn service_name(n: usize) -> String {
    format!("svc{n}")
}

/// The name of the `n`th named session attempt.
pub(crate) fn session_name(n: usize) -> String {
    format!("s{n}")
}

/// What a planned failure reports.
pub(crate) const FAILURE: &str = "planned failure";
/// What a planned panic reports.
pub(crate) const PANIC: &str = "planned panic";

/// The restart policy of `Op::AddRestartable { always, .. }`.
pub(crate) fn restart_policy(always: bool) -> async_lifecycle::Restart {
    if always {
        async_lifecycle::Restart::Always
    } else {
        async_lifecycle::Restart::OnFailure
    }
}

/// The backoff of every restartable service: 10 ms doubling to 80 ms, no jitter (the model
/// computes the same round numbers), a run of 200 ms is stable.
pub(crate) fn backoff() -> async_lifecycle::Backoff {
    async_lifecycle::Backoff::new(Duration::from_millis(10), Duration::from_millis(80))
        .and_then(|b| b.stable_after(Duration::from_millis(200)))
        .expect("a valid backoff")
        .without_jitter()
}

/// The restart intensity of every schedule: more than 3 restarts within 1 s stop it.
pub(crate) fn intensity() -> async_lifecycle::RestartIntensity {
    async_lifecycle::RestartIntensity::new(3, Duration::from_secs(1)).expect("a valid intensity")
}
