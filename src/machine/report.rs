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
/// | 1 | `Terminated`, but a service ended uncleanly (error, panic, early return, dropped), or a service failed to start ([`StopCause::StartFailed`]) |
/// | 2 | `Abandoned`: the grace period ran out, a service spent its stop budget, or the stop was forced with work still running |
///
/// A lifecycle with nested ones ([`Lifecycle::nest`](crate::Lifecycle::nest)) exits with the
/// highest code of its tree: a nested lifecycle that abandoned work makes its parent's
/// code 2.
///
/// Sessions that ended by a panic are complained about and reported
/// ([`SessionReport::panicked`]) but do not change the code: the program did stop as asked,
/// and a request handler's panic is not the process's exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Shared: every waiter gets the same report, and cloning it is one reference count.
    inner: Arc<Inner>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
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

    /// The service with this name, if any (names are unique within a lifecycle).
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
        self.code().into()
    }

    /// [`exit_code`](Self::exit_code) as a [`std::process::ExitCode`], for a `main` that
    /// returns it (destructors run, unlike `std::process::exit`). `Report` is also
    /// [`Termination`](std::process::Termination): `main` may return the report itself.
    pub fn exit_status(&self) -> std::process::ExitCode {
        std::process::ExitCode::from(self.code())
    }

    fn code(&self) -> u8 {
        let own = if self.inner.state == State::Abandoned {
            2
        } else if self.inner.services.iter().any(|s| !s.outcome.is_clean())
            || matches!(self.inner.cause, Some(StopCause::StartFailed { .. }))
        {
            1
        } else {
            0
        };
        self.inner
            .services
            .iter()
            .filter_map(|s| s.nested.as_ref())
            .map(Report::code)
            .fold(own, u8::max)
    }

    /// Attaches the report of the lifecycle nested as service `index`.
    pub(crate) fn set_nested(&mut self, index: usize, report: Report) {
        if let Some(service) = Arc::make_mut(&mut self.inner).services.get_mut(index) {
            service.nested = Some(report);
        }
    }
}

/// `main` may return the report: the process exits with [`Report::exit_code`] after every
/// destructor ran. Print the report first if you want it seen.
impl std::process::Termination for Report {
    fn report(self) -> std::process::ExitCode {
        self.exit_status()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lifecycle {}", self.inner.state)?;
        if self.inner.forced {
            f.write_str(" (forced)")?;
        }
        write!(f, " after draining for {:.3?}", self.inner.drained_in)?;
        if self.inner.grace == Duration::MAX {
            f.write_str(" (no grace limit)")?;
        } else {
            write!(f, " of {:.3?} grace", self.inner.grace)?;
        }
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
                .map(|s| shown(&s.name).chars().count())
                .max()
                .unwrap_or(0);
            for s in &self.inner.services {
                let mark = if s.outcome.is_clean() { "ok  " } else { "FAIL" };
                write!(
                    f,
                    "  {mark} {:width$}  {}  (ran {:.3?}",
                    shown(&s.name),
                    s.outcome,
                    s.ran
                )?;
                match (&s.last_failure, s.restarts()) {
                    (Some(last), n) if n > 0 && *last != s.outcome => {
                        writeln!(f, "; restarted {n}×, last: {last})")?
                    }
                    (_, n) if n > 0 => writeln!(f, "; restarted {n}×)")?,
                    _ => writeln!(f, ")")?,
                }
                if let Some(nested) = &s.nested {
                    // The nested report as a subtree, indented under its service.
                    for line in nested.to_string().lines() {
                        writeln!(f, "       | {line}")?;
                    }
                }
            }
        }
        let n = &self.inner.sessions;
        writeln!(
            f,
            "sessions: {} admitted, {} completed, {} refused, {} panicked, {} abandoned",
            n.admitted,
            n.completed(),
            n.refused,
            n.panicked_count,
            n.abandoned_count()
        )?;
        for s in &n.panicked {
            let name = shown(s.name().unwrap_or("(unnamed)"));
            match s.message() {
                Some(message) => writeln!(f, "  PANICKED {name}: {}", shown(message))?,
                None => writeln!(f, "  PANICKED {name}")?,
            }
        }
        if n.panicked_count > n.panicked.len() as u64 {
            writeln!(
                f,
                "  PANICKED {} more session(s)",
                n.panicked_count - n.panicked.len() as u64
            )?;
        }
        for s in &n.abandoned {
            match &s.parent {
                Some(parent) => writeln!(
                    f,
                    "  ABANDONED {}  (age {:.3?}, under {})",
                    shown(&s.name),
                    s.age,
                    shown(parent)
                )?,
                None => writeln!(f, "  ABANDONED {}  (age {:.3?})", shown(&s.name), s.age)?,
            }
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
    attempts: u32,
    last_failure: Option<ServiceOutcome>,
    nested: Option<Report>,
}

impl ServiceReport {
    pub(crate) fn new(
        name: Cow<'static, str>,
        outcome: ServiceOutcome,
        ran: Duration,
        attempts: u32,
        last_failure: Option<ServiceOutcome>,
    ) -> Self {
        ServiceReport {
            name,
            outcome,
            ran,
            attempts,
            last_failure,
            nested: None,
        }
    }

    /// The report of the lifecycle nested as this service
    /// ([`Lifecycle::nest`](crate::Lifecycle::nest)), if it is one.
    pub fn nested(&self) -> Option<&Report> {
        self.nested.as_ref()
    }

    /// How many runs it had: 1, plus one per restart (0 for a supervised service stopped
    /// before its first run was made).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// How many times it was restarted.
    pub fn restarts(&self) -> u32 {
        self.attempts.saturating_sub(1)
    }

    /// How its last run that ended while the lifecycle was running ended, for a supervised
    /// service: the cause of its last restart — or of the restart refused by the
    /// intensity, or of the wait it was in at the stop. `None` if no run ended before the
    /// stop.
    pub fn last_failure(&self) -> Option<&ServiceOutcome> {
        self.last_failure.as_ref()
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

/// What became of the sessions: every admitted session completed, ended by a panic, or was
/// abandoned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionReport {
    admitted: u64,
    refused: u64,
    abandoned: Vec<NamedSession>,
    abandoned_unnamed: u64,
    panicked: Vec<PanickedSession>,
    panicked_count: u64,
}

impl SessionReport {
    pub(crate) fn new(
        admitted: u64,
        refused: u64,
        abandoned: Vec<NamedSession>,
        abandoned_unnamed: u64,
        panicked: Vec<PanickedSession>,
        panicked_count: u64,
    ) -> Self {
        SessionReport {
            admitted,
            refused,
            abandoned,
            abandoned_unnamed,
            panicked,
            panicked_count,
        }
    }

    /// Sessions admitted over the lifecycle's life.
    pub fn admitted(&self) -> u64 {
        self.admitted
    }

    /// Sessions that ended normally before the lifecycle did (neither by a panic nor
    /// abandoned).
    pub fn completed(&self) -> u64 {
        self.admitted
            .saturating_sub(self.abandoned_count())
            .saturating_sub(self.panicked_count)
    }

    /// Attempts refused from the stop until the lifecycle ended. The report is written at the
    /// end, so refusals after it are not here: [`Lifecycle::snapshot`](crate::Lifecycle::snapshot)
    /// counts every refusal, at any time.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// How many sessions ended by a panic (see [`Session`](crate::Session) for what is
    /// detected).
    pub fn panicked(&self) -> u64 {
        self.panicked_count
    }

    /// The sessions that ended by a panic, in the order they ended: the first
    /// [`PANICKED_KEPT`](super::PANICKED_KEPT); [`panicked`](Self::panicked) counts them all.
    pub fn panicked_sessions(&self) -> &[PanickedSession] {
        &self.panicked
    }

    /// The named sessions still live when the lifecycle gave up, oldest first.
    pub fn abandoned(&self) -> &[NamedSession] {
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

/// A named session and its age: in a [`SessionReport`], one still live when the lifecycle
/// gave up on it; in a census or a [`Snapshot`](crate::Snapshot), one live at that moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedSession {
    name: Cow<'static, str>,
    age: Duration,
    parent: Option<Cow<'static, str>>,
}

impl NamedSession {
    /// A session with this name, live for `age`.
    pub fn new(name: impl Into<Cow<'static, str>>, age: Duration) -> Self {
        NamedSession {
            name: name.into(),
            age,
            parent: None,
        }
    }

    /// The same session, begun under the named session `parent`
    /// ([`Session::child`](crate::Session::child)).
    pub fn with_parent(self, parent: impl Into<Cow<'static, str>>) -> Self {
        NamedSession {
            parent: Some(parent.into()),
            ..self
        }
    }

    /// The name of the session it was begun under, if that one was named.
    pub fn parent(&self) -> Option<&str> {
        self.parent.as_deref()
    }

    /// The name the session was started with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How long it had been live.
    pub fn age(&self) -> Duration {
        self.age
    }
}

/// A session that ended by a panic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PanickedSession {
    name: Option<Cow<'static, str>>,
    message: Option<String>,
}

impl PanickedSession {
    /// A session named `name` (if it had one) that panicked with `message` (if the payload
    /// was caught, as [`Session::run`](crate::Session::run) does).
    pub fn new(name: Option<Cow<'static, str>>, message: Option<String>) -> Self {
        PanickedSession { name, message }
    }

    /// The session's name, if it had one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The panic payload's text, when it was caught (by [`Session::run`](crate::Session::run));
    /// `None` when the panic was only seen unwinding through the session's guard.
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }
}

/// A name or message as a report line shows it: control characters (a newline, an ANSI
/// escape) are escaped, so a name cannot forge or recolour lines of the report.
pub(crate) fn shown(text: &str) -> Cow<'_, str> {
    if text.chars().any(char::is_control) {
        Cow::Owned(text.escape_debug().to_string())
    } else {
        Cow::Borrowed(text)
    }
}
