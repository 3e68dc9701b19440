//! The final report: how every service ended and what became of the sessions.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::{ServiceOutcome, State, StopCause};

/// What a lifecycle did, written once it reaches a final state.
///
/// It names every service with how it ended and how long it ran, counts the sessions, and
/// names each abandoned one with its age. Its [`Display`](fmt::Display) is meant for a
/// terminal; [`exit_code`](Report::exit_code) is meant for `std::process::exit`.
///
/// # Exit codes
///
/// | code | meaning |
/// |------|---------|
/// | 0 | `Terminated` and every service stopped cleanly |
/// | 1 | `Terminated`, but a service ended uncleanly (error, panic, early return, dropped) |
/// | 2 | `Abandoned`: the grace period ran out or the stop was forced with work still running |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Shared: every waiter gets the same report, and cloning it is one reference count.
    inner: Arc<Inner>,
}

#[derive(Debug, PartialEq, Eq)]
struct Inner {
    state: State,
    cause: Option<StopCause>,
    forced: bool,
    grace: Duration,
    drained_in: Duration,
    lifetime: Duration,
    services: Vec<ServiceReport>,
    sessions: SessionReport,
}

impl Report {
    #[allow(clippy::too_many_arguments)] // reason: crate-internal constructor, one call site
    pub(crate) fn new(
        state: State,
        cause: Option<StopCause>,
        forced: bool,
        grace: Duration,
        drained_in: Duration,
        lifetime: Duration,
        services: Vec<ServiceReport>,
        sessions: SessionReport,
    ) -> Self {
        Report {
            inner: Arc::new(Inner {
                state,
                cause,
                forced,
                grace,
                drained_in,
                lifetime,
                services,
                sessions,
            }),
        }
    }

    /// The final state: [`State::Terminated`] or [`State::Abandoned`].
    pub fn state(&self) -> State {
        self.inner.state
    }

    /// The first stop cause.
    pub fn cause(&self) -> Option<&StopCause> {
        self.inner.cause.as_ref()
    }

    /// Whether the stop was forced (for instance by a second signal).
    pub fn forced(&self) -> bool {
        self.inner.forced
    }

    /// The grace period that was allowed.
    pub fn grace(&self) -> Duration {
        self.inner.grace
    }

    /// The time from the stop request to the final state.
    pub fn drained_in(&self) -> Duration {
        self.inner.drained_in
    }

    /// The time from the lifecycle's creation to its final state.
    pub fn lifetime(&self) -> Duration {
        self.inner.lifetime
    }

    /// Every service, in the order they were added.
    pub fn services(&self) -> &[ServiceReport] {
        &self.inner.services
    }

    /// The service with this name, if any (the first, if several share it).
    pub fn service(&self, name: &str) -> Option<&ServiceReport> {
        self.inner.services.iter().find(|s| s.name == name)
    }

    /// What became of the sessions.
    pub fn sessions(&self) -> &SessionReport {
        &self.inner.sessions
    }

    /// Whether everything ended cleanly: `Terminated`, and every service stopped when asked.
    pub fn is_clean(&self) -> bool {
        self.exit_code() == 0
    }

    /// The process exit status that tells an orchestrator what happened: 0 only for a clean
    /// `Terminated`, 1 when a service ended uncleanly, 2 when work was abandoned. See the
    /// [type docs](Report#exit-codes).
    pub fn exit_code(&self) -> i32 {
        if self.inner.state == State::Abandoned {
            2
        } else if self.inner.services.iter().any(|s| !s.outcome.is_clean()) {
            1
        } else {
            0
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lifecycle {}", self.inner.state)?;
        if self.inner.forced {
            f.write_str(" (forced)")?;
        }
        write!(
            f,
            " after draining for {:.3?} of {:.3?} grace",
            self.inner.drained_in, self.inner.grace
        )?;
        if let Some(cause) = &self.inner.cause {
            write!(f, "; stop cause: {cause}")?;
        }
        writeln!(f)?;
        if self.inner.services.is_empty() {
            writeln!(f, "services: none")?;
        } else {
            writeln!(f, "services:")?;
            let width = self
                .inner
                .services
                .iter()
                .map(|s| s.name.len())
                .max()
                .unwrap_or(0);
            for s in &self.inner.services {
                let mark = if s.outcome.is_clean() { "ok  " } else { "FAIL" };
                writeln!(
                    f,
                    "  {mark} {:width$}  {}  (ran {:.3?})",
                    s.name, s.outcome, s.ran
                )?;
            }
        }
        let n = &self.inner.sessions;
        writeln!(
            f,
            "sessions: {} admitted, {} completed, {} refused, {} abandoned",
            n.admitted,
            n.completed,
            n.refused,
            n.abandoned_count()
        )?;
        for s in &n.abandoned {
            writeln!(f, "  ABANDONED {}  (age {:.3?})", s.name, s.age)?;
        }
        if n.abandoned_unnamed > 0 {
            writeln!(f, "  ABANDONED {} unnamed session(s)", n.abandoned_unnamed)?;
        }
        write!(f, "exit code: {}", self.exit_code())
    }
}

/// How one service ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceReport {
    name: Cow<'static, str>,
    outcome: ServiceOutcome,
    ran: Duration,
}

impl ServiceReport {
    pub(crate) fn new(name: Cow<'static, str>, outcome: ServiceOutcome, ran: Duration) -> Self {
        ServiceReport { name, outcome, ran }
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How it ended.
    pub fn outcome(&self) -> &ServiceOutcome {
        &self.outcome
    }

    /// How long it ran, from being added to ending (or being abandoned).
    pub fn ran(&self) -> Duration {
        self.ran
    }
}

/// What became of the sessions: every admitted session either completed or was abandoned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionReport {
    admitted: u64,
    completed: u64,
    refused: u64,
    abandoned: Vec<AbandonedSession>,
    abandoned_unnamed: u64,
}

impl SessionReport {
    /// Sessions admitted over the lifecycle's life.
    pub fn admitted(&self) -> u64 {
        self.admitted
    }

    /// Sessions that ended before the lifecycle did.
    pub fn completed(&self) -> u64 {
        self.completed
    }

    /// Sessions refused because the lifecycle was draining or had ended.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// The named sessions still live when the lifecycle gave up, oldest first.
    pub fn abandoned(&self) -> &[AbandonedSession] {
        &self.abandoned
    }

    /// How many unnamed sessions were still live when the lifecycle gave up.
    pub fn abandoned_unnamed(&self) -> u64 {
        self.abandoned_unnamed
    }

    /// How many sessions were abandoned, named or not.
    pub fn abandoned_count(&self) -> u64 {
        self.abandoned.len() as u64 + self.abandoned_unnamed
    }
}

/// A session that was still live when the lifecycle gave up on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbandonedSession {
    name: Cow<'static, str>,
    age: Duration,
}

impl AbandonedSession {
    /// A session with this name, live for `age` when abandoned.
    pub fn new(name: impl Into<Cow<'static, str>>, age: Duration) -> Self {
        AbandonedSession {
            name: name.into(),
            age,
        }
    }

    /// The name the session was started with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How long it had been live when it was abandoned.
    pub fn age(&self) -> Duration {
        self.age
    }
}

/// The driver's census of sessions, handed to [`Machine::report`](super::Machine::report).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionTally {
    /// Sessions admitted over the lifecycle's life.
    pub admitted: u64,
    /// Sessions refused.
    pub refused: u64,
    /// Named sessions live when the lifecycle was abandoned.
    pub abandoned: Vec<AbandonedSession>,
    /// Unnamed sessions live when the lifecycle was abandoned.
    pub abandoned_unnamed: u64,
}

impl SessionTally {
    pub(crate) fn into_report(mut self) -> SessionReport {
        self.abandoned.sort_by_key(|s| std::cmp::Reverse(s.age));
        let abandoned = self.abandoned.len() as u64 + self.abandoned_unnamed;
        SessionReport {
            admitted: self.admitted,
            completed: self.admitted.saturating_sub(abandoned),
            refused: self.refused,
            abandoned: self.abandoned,
            abandoned_unnamed: self.abandoned_unnamed,
        }
    }
}
