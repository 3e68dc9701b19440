//! The live view of a lifecycle, for health endpoints, logs and tests.

use std::fmt;
use std::time::Duration;

use crate::machine::{NamedSession, ServiceOutcome, State, StopCause, shown};
use crate::session::Counts;

/// What a lifecycle is doing now: its state and cause, the sessions so far, the oldest live
/// named sessions, and each service. From [`Lifecycle::snapshot`](crate::Lifecycle::snapshot).
///
/// Unlike the [`Report`](crate::Report), which is written once at the end, a snapshot can be
/// taken at any time, before and after the end: refusals after the end are counted here.
/// Taking one locks the machine and the named-session registry briefly; the session hot path
/// pays nothing for its existence.
///
/// # Examples
///
/// ```
/// use async_lifecycle::{Lifecycle, State};
///
/// let lc = Lifecycle::new();
/// lc.service("worker", |stop| stop).unwrap();
/// let _conn = lc.session("conn 10.0.0.7:5123").unwrap();
/// let snap = lc.snapshot();
/// assert_eq!(snap.state(), State::Running);
/// assert_eq!(snap.live_sessions(), 1);
/// assert_eq!(snap.oldest_sessions()[0].name(), "conn 10.0.0.7:5123");
/// assert_eq!(snap.services()[0].name(), "worker");
/// assert!(snap.services()[0].is_running());
/// # lc.stop("done");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    state: State,
    cause: Option<StopCause>,
    live: u64,
    admitted: u64,
    refused: u64,
    panicked: u64,
    oldest: Vec<NamedSession>,
    services: Vec<ServiceSnapshot>,
    /// A requested stop is in its pre-drain ([`Builder::pre_drain`](crate::Builder::pre_drain)).
    stopping: bool,
}

impl Snapshot {
    /// How many of the oldest live named sessions a snapshot names.
    pub const OLDEST: usize = 10;

    pub(crate) fn new(
        state: State,
        cause: Option<StopCause>,
        counts: Counts,
        services: Vec<ServiceSnapshot>,
        stopping: bool,
    ) -> Self {
        Snapshot {
            stopping,
            state,
            cause,
            live: counts.live,
            admitted: counts.admitted,
            refused: counts.refused,
            panicked: counts.panicked,
            oldest: counts.oldest,
            services,
        }
    }

    /// The state now.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether the lifecycle is ready to serve: running (not stopping: not ready the instant
    /// a stop is requested, pre-drain included), and every service started and ready — none waiting for its
    /// dependencies, none declaring readiness that has not declared it yet, none waiting for
    /// a restart, none ended. For a readiness probe (Kubernetes) or `READY=1` (systemd).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_lifecycle::{Lifecycle, ServiceOptions};
    ///
    /// let lc = Lifecycle::new();
    /// lc.service("worker", |stop| stop)?;
    /// assert!(lc.snapshot().is_ready());
    /// lc.service_with("db", ServiceOptions::new().declares_ready(), |stop| stop)?;
    /// assert!(!lc.snapshot().is_ready(), "db has not said it is ready");
    /// lc.stop("deploy");
    /// assert!(!lc.snapshot().is_ready());
    /// # Ok::<(), async_lifecycle::ServiceError>(())
    /// ```
    pub fn is_ready(&self) -> bool {
        self.state == State::Running
            && !self.stopping
            && self.services.iter().all(ServiceSnapshot::is_ready)
    }

    /// The answer to a readiness probe (Kubernetes `readinessProbe`, a load balancer's
    /// health check): 200 when [`is_ready`](Self::is_ready), else 503 with the first reason
    /// it is not — stopping (with the cause), ended, or the first service not ready (waiting
    /// for its dependencies, not ready yet, restarting, ended).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_lifecycle::{Lifecycle, ServiceOptions};
    ///
    /// let lc = Lifecycle::new();
    /// lc.service_with("db", ServiceOptions::new().declares_ready(), |stop| stop)?;
    /// let probe = lc.snapshot().readiness();
    /// assert_eq!((probe.status(), probe.reason()), (503, "service db: not ready yet"));
    /// lc.stop("deploy");
    /// assert_eq!(lc.snapshot().readiness().reason(), "stopping: requested: deploy");
    /// # Ok::<(), async_lifecycle::ServiceError>(())
    /// ```
    pub fn readiness(&self) -> Probe {
        if self.is_ready() {
            return Probe::ok();
        }
        if self.state.is_terminal() {
            return Probe::unavailable(format!("ended: {}", self.state));
        }
        if self.stopping || self.state != State::Running {
            return Probe::unavailable(match &self.cause {
                Some(cause) => format!("stopping: {cause}"),
                None => "stopping".to_owned(),
            });
        }
        let why = self.services.iter().find(|s| !s.is_ready()).map(|s| {
            let state = match &s.outcome {
                Some(outcome) => format!("ended: {outcome}"),
                None if s.waiting => "waiting for its dependencies".to_owned(),
                None if s.restart_in.is_some() => "restarting".to_owned(),
                None => "not ready yet".to_owned(),
            };
            format!("service {}: {state}", shown(&s.name))
        });
        Probe::unavailable(why.unwrap_or_else(|| "not ready".to_owned()))
    }

    /// The answer to a liveness probe: 200 while the lifecycle runs or drains — a drain is
    /// not a reason to be killed — and 503 once it has ended (the process should be exiting;
    /// one that does not is wedged).
    pub fn liveness(&self) -> Probe {
        if self.state.is_terminal() {
            Probe::unavailable(format!("ended: {}", self.state))
        } else {
            Probe::ok()
        }
    }

    /// Whether a requested stop is in its pre-drain
    /// ([`Builder::pre_drain`](crate::Builder::pre_drain)): still running and admitting,
    /// but not ready; [`cause`](Self::cause) gives the request.
    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    /// Whether the lifecycle is draining or has ended. (In a pre-drain it still runs: use
    /// [`is_ready`](Self::is_ready) or [`readiness`](Self::readiness) for a probe.)
    pub fn is_stopped(&self) -> bool {
        self.state != State::Running
    }

    /// The first stop cause, once a stop was requested.
    pub fn cause(&self) -> Option<&StopCause> {
        self.cause.as_ref()
    }

    /// Sessions live now.
    pub fn live_sessions(&self) -> u64 {
        self.live
    }

    /// Sessions admitted so far.
    pub fn admitted_sessions(&self) -> u64 {
        self.admitted
    }

    /// Sessions that ended normally so far (neither live nor ended by a panic). After an
    /// abandonment, the abandoned sessions are still live here: nothing ended them.
    pub fn completed_sessions(&self) -> u64 {
        self.admitted
            .saturating_sub(self.live)
            .saturating_sub(self.panicked)
    }

    /// Attempts refused so far, including after the end.
    pub fn refused_sessions(&self) -> u64 {
        self.refused
    }

    /// Sessions that ended by a panic so far.
    pub fn panicked_sessions(&self) -> u64 {
        self.panicked
    }

    /// The oldest live named sessions, oldest first, with their ages: at most
    /// [`Snapshot::OLDEST`].
    pub fn oldest_sessions(&self) -> &[NamedSession] {
        &self.oldest
    }

    /// Every service, in the order they were added.
    pub fn services(&self) -> &[ServiceSnapshot] {
        &self.services
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lifecycle {}", self.state)?;
        if let Some(cause) = &self.cause {
            write!(f, " ({cause})")?;
        }
        write!(
            f,
            "; sessions: {} live, {} admitted, {} completed, {} refused, {} panicked",
            self.live,
            self.admitted,
            self.completed_sessions(),
            self.refused,
            self.panicked
        )?;
        for s in &self.oldest {
            write!(f, "; {} ({:.3?}", shown(s.name()), s.age())?;
            match s.parent() {
                Some(parent) => write!(f, ", under {})", shown(parent))?,
                None => f.write_str(")")?,
            }
        }
        for s in &self.services {
            match &s.outcome {
                None if s.waiting => write!(
                    f,
                    "; service {} waiting for its dependencies",
                    shown(&s.name)
                )?,
                None if s.restart_in.is_some() => write!(
                    f,
                    "; service {} restarting in {:.3?} (restart {})",
                    shown(&s.name),
                    s.restart_in.unwrap_or_default(),
                    s.restarts + 1
                )?,
                None if !s.ready => write!(
                    f,
                    "; service {} starting (not ready) for {:.3?}",
                    shown(&s.name),
                    s.uptime
                )?,
                None => write!(
                    f,
                    "; service {} running for {:.3?}",
                    shown(&s.name),
                    s.uptime
                )?,
                Some(outcome) => write!(f, "; service {} {outcome}", shown(&s.name))?,
            }
        }
        Ok(())
    }
}

/// One service in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSnapshot {
    name: String,
    outcome: Option<ServiceOutcome>,
    uptime: Duration,
    restarts: u32,
    restart_in: Option<Duration>,
    waiting: bool,
    ready: bool,
}

impl ServiceSnapshot {
    pub(crate) fn new(
        name: String,
        outcome: Option<ServiceOutcome>,
        uptime: Duration,
        restarts: u32,
        restart_in: Option<Duration>,
        (waiting, ready): (bool, bool),
    ) -> Self {
        ServiceSnapshot {
            name,
            outcome,
            uptime,
            restarts,
            restart_in,
            waiting,
            ready,
        }
    }

    /// Whether it waits for its dependencies to be ready: not started yet.
    pub fn is_waiting(&self) -> bool {
        self.waiting
    }

    /// Whether its current run is ready: it does not
    /// [declare readiness](crate::ServiceOptions::declares_ready), or declared it. `false`
    /// while it waits for its dependencies, waits for a restart, or after it ended.
    pub fn is_ready(&self) -> bool {
        self.ready && self.outcome.is_none() && self.restart_in.is_none()
    }

    /// How many times it was restarted so far.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// While it waits for a restart (in backoff): how long until it starts again. Zero when
    /// it is due but not started yet: restarts are started by a polled `wait()`.
    pub fn restart_in(&self) -> Option<Duration> {
        self.restart_in
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether it has not ended: running, or waiting for a restart.
    pub fn is_running(&self) -> bool {
        self.outcome.is_none()
    }

    /// How it ended, once it did.
    pub fn outcome(&self) -> Option<&ServiceOutcome> {
        self.outcome.as_ref()
    }

    /// How long it has run (until now, or until it ended).
    pub fn uptime(&self) -> Duration {
        self.uptime
    }
}

/// A probe's answer ([`Snapshot::readiness`], [`Snapshot::liveness`]): an HTTP status code
/// (200 or 503) and a one-line reason, for whatever server answers the probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    status: u16,
    reason: String,
}

impl Probe {
    fn ok() -> Self {
        Probe {
            status: 200,
            reason: "ok".to_owned(),
        }
    }

    fn unavailable(reason: String) -> Self {
        Probe {
            status: 503,
            reason,
        }
    }

    /// 200 or 503.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Whether the probe passes (200).
    pub fn is_ok(&self) -> bool {
        self.status == 200
    }

    /// Why, in one line: `ok`, or what is not ready.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.reason)
    }
}
