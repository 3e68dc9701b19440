//! The lifecycle handle, its builder, and the future that waits for (and drives) the end.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::future::AbortHandle;
use futures_util::stream::FuturesUnordered;

use crate::Refused;
use crate::clock::{Clock, Sleep, SystemClock};
use crate::loom::lock;
use crate::machine::{FailurePolicy, Machine, Report, State, StopCause};
use crate::service::{ServiceResult, ServiceTask, StopSignal};
use crate::session::{Session, refuse};
use crate::shared::{NamedSession, Shared, Spawner};
use crate::sync::QueueKey;

/// The grace period used when none is configured: 30 s, Kubernetes' default
/// `terminationGracePeriodSeconds`.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// Owns the program's services and sessions, decides when to stop, enforces the grace
/// deadline and writes the [`Report`].
///
/// `Lifecycle` is a cheap, cloneable handle: clone it into the tasks that start sessions or
/// request the stop. When every handle (and every [`Wait`]) is gone without a stop having
/// been requested, the lifecycle stops itself with [`StopCause::HandlesDropped`], so
/// services never outlive the last thing that could stop them.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use async_lifecycle::{Lifecycle, State};
///
/// let lc = Lifecycle::builder().grace(Duration::from_secs(5)).build();
/// lc.service("worker", |stop| async move {
///     stop.await; // a real worker would select between its work and the stop
///     Ok::<(), std::io::Error>(())
/// })
/// .unwrap();
///
/// let session = lc.session("request 1").unwrap();
/// lc.stop("demo over");
/// assert_eq!(lc.state(), State::Draining);
/// assert!(lc.session("request 2").is_err()); // refused while draining
/// drop(session);
///
/// let report = futures::executor::block_on(lc.wait());
/// assert_eq!(report.state(), State::Terminated);
/// assert_eq!(report.exit_code(), 0);
/// println!("{report}");
/// ```
#[derive(Clone)]
pub struct Lifecycle {
    owner: Arc<Owner>,
}

/// Its drop is the drop of the last `Lifecycle` handle.
struct Owner {
    shared: Arc<Shared>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.shared
            .apply(|m, now| m.stop(now, StopCause::HandlesDropped));
        // No one is left to drive the queued services: drop them, which reports them.
        self.shared.drop_queued_services();
    }
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle::new()
    }
}

impl Lifecycle {
    /// A lifecycle with the defaults: a [`DEFAULT_GRACE`] period, the [`SystemClock`],
    /// services driven by [`wait`](Lifecycle::wait), and [`FailurePolicy::StopAll`].
    pub fn new() -> Self {
        Builder::new().build()
    }

    /// A builder to configure the grace period, the clock, a spawner and the failure policy.
    pub fn builder() -> Builder {
        Builder::new()
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.owner.shared
    }

    /// Adds a service: `f` receives the [`StopSignal`] and returns the service's future,
    /// which should run until that signal fires, then wrap up and return.
    ///
    /// The future is run by the lifecycle's spawner if one was configured, or else by
    /// whoever polls [`wait`](Lifecycle::wait). Panics inside it are caught and reported
    /// with their payload; returning before the stop (even `Ok`), failing or panicking is
    /// complained about loudly and, under [`FailurePolicy::StopAll`], stops the lifecycle.
    ///
    /// # Errors
    ///
    /// [`Refused`] once a stop was requested; `f` has then been called but its future is
    /// dropped without being polled.
    pub fn service<F, Fut>(&self, name: impl Into<Cow<'static, str>>, f: F) -> Result<(), Refused>
    where
        F: FnOnce(StopSignal) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: ServiceResult,
    {
        let shared = self.shared();
        let (abort, registration) = AbortHandle::new_pair();
        let body = f(StopSignal::new(shared.clone()));
        let mut task = ServiceTask::new(shared.clone(), body, registration);
        let id = shared.add_service(name.into(), abort)?;
        task.set_id(id);
        match &shared.spawner {
            Some(spawn) => spawn(Box::pin(task)),
            // Fails only once the lifecycle ended; the task is then dropped, and the machine
            // (final) keeps the service recorded as abandoned.
            None => drop(shared.queue.push(task)),
        }
        Ok(())
    }

    /// Begins a named session. The name appears in the report if the session is abandoned.
    ///
    /// Costs one clock read and an uncontended lock more than
    /// [`unnamed_session`](Lifecycle::unnamed_session); pass a `&'static str` or a `String`
    /// you already have, and nothing is allocated.
    ///
    /// # Errors
    ///
    /// [`Refused`] once a stop was requested: the caller should turn the work away politely.
    pub fn session(&self, name: impl Into<Cow<'static, str>>) -> Result<Session, Refused> {
        let shared = self.shared();
        let began = shared.clock.now();
        let name = name.into();
        let mut registry = lock(&shared.registry);
        match shared.gate.enter() {
            Ok(()) => {
                let key = registry.insert(NamedSession { name, began });
                drop(registry);
                Ok(Session::named(shared.clone(), key))
            }
            Err(_closed) => {
                drop(registry);
                Err(refuse(shared))
            }
        }
    }

    /// Begins a session without a name: two atomic operations and no allocation. If it is
    /// abandoned, the report counts it without naming it.
    ///
    /// # Errors
    ///
    /// [`Refused`] once a stop was requested.
    #[inline]
    pub fn unnamed_session(&self) -> Result<Session, Refused> {
        let shared = self.shared();
        match shared.gate.enter() {
            Ok(()) => Ok(Session::unnamed(shared.clone())),
            Err(_closed) => Err(refuse(shared)),
        }
    }

    /// Requests a graceful stop, from any thread or task, any number of times: the first
    /// cause is kept. New work is refused from now on, every [`StopSignal`] fires, and the
    /// grace deadline is armed.
    pub fn stop(&self, cause: impl Into<StopCause>) {
        let cause = cause.into();
        self.shared().apply(|m, now| m.stop(now, cause));
    }

    /// Forces the stop: whatever is still running now is abandoned at once and named in the
    /// report (a graceful stop is requested first, with [`StopCause::Forced`], if none was).
    pub fn force(&self) {
        self.shared().apply(|m, now| {
            m.force(now);
        });
        self.shared().timeout();
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.shared().state()
    }

    /// The first stop cause, once a stop was requested.
    pub fn cause(&self) -> Option<StopCause> {
        self.shared().cause()
    }

    /// A future that resolves when draining starts.
    pub fn stop_signal(&self) -> StopSignal {
        StopSignal::new(self.shared().clone())
    }

    /// A future that resolves once the lifecycle has ended (`Terminated` or `Abandoned`),
    /// without driving anything: for threads and tasks that must act at the end (the signal
    /// handler restores the signals' dispositions then).
    #[allow(dead_code)]
    pub(crate) fn ended(&self) -> Ended {
        Ended {
            shared: self.shared().clone(),
            key: None,
        }
    }

    /// The clock this lifecycle reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.shared().clock
    }

    /// Waits for the lifecycle to end and returns the [`Report`].
    ///
    /// The future drives every service that has no spawner, enforces the grace deadline
    /// with the lifecycle's clock, and resolves once the lifecycle is `Terminated` or
    /// `Abandoned`. Once a stop is requested, a lifecycle with nothing in flight ends at
    /// once. A lifecycle that has nothing to run when a `Wait` is first polled — no service
    /// was ever added and no session is live — is stopped by it with
    /// [`StopCause::NothingToRun`] rather than waited on forever. That is decided once per
    /// lifecycle, at the first poll of its first `Wait`, never later: whether it stops must
    /// not depend on when an executor happens to poll. Any number of `Wait`s may run at once; each service is driven by one of
    /// them, and dropping a `Wait` drops (and reports) the services it was driving.
    pub fn wait(&self) -> Wait {
        Wait {
            lifecycle: self.clone(),
            queue_key: None,
            services: FuturesUnordered::new(),
            sleep: None,
            stop_key: None,
            finished_key: None,
        }
    }
}

impl fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lifecycle")
            .field("state", &self.state())
            .field("live_sessions", &self.shared().gate.live())
            .finish_non_exhaustive()
    }
}

/// Configures a [`Lifecycle`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use async_lifecycle::{FailurePolicy, Lifecycle, ManualClock};
///
/// let clock = ManualClock::new();
/// let lc = Lifecycle::builder()
///     .grace(Duration::from_secs(10))
///     .clock(clock.clone())
///     .on_service_failure(FailurePolicy::ReportOnly)
///     .build();
/// # drop(lc);
/// ```
#[must_use = "a builder does nothing until .build() is called"]
pub struct Builder {
    grace: Duration,
    clock: Option<Arc<dyn Clock>>,
    spawner: Option<Spawner>,
    policy: FailurePolicy,
}

impl Builder {
    fn new() -> Self {
        Builder {
            grace: DEFAULT_GRACE,
            clock: None,
            spawner: None,
            policy: FailurePolicy::default(),
        }
    }

    /// How long draining may take before what is still running is abandoned. Zero abandons
    /// whatever has not ended by the time the stop is processed; `Duration::MAX` never
    /// abandons (only [`Lifecycle::force`] does).
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The clock for the grace deadline and session ages; use a
    /// [`ManualClock`](crate::ManualClock) in tests.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Runs each service's future through `spawn` (for example `|f| { tokio::spawn(f); }`)
    /// instead of inside [`Lifecycle::wait`], so services use the executor's threads.
    pub fn spawner(
        mut self,
        spawn: impl Fn(Pin<Box<dyn Future<Output = ()> + Send>>) + Send + Sync + 'static,
    ) -> Self {
        self.spawner = Some(Arc::new(spawn));
        self
    }

    /// What a service ending uncleanly while running does (stop everything, by default).
    pub fn on_service_failure(mut self, policy: FailurePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Builds the lifecycle, in [`State::Running`].
    pub fn build(self) -> Lifecycle {
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock::new()));
        let machine = Machine::new(clock.now(), self.grace, self.policy);
        let shared = Arc::new(Shared::new(machine, clock, self.spawner));
        Lifecycle {
            owner: Arc::new(Owner { shared }),
        }
    }
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("grace", &self.grace)
            .field("clock", &self.clock)
            .field("spawner", &self.spawner.is_some())
            .field("policy", &self.policy)
            .finish()
    }
}

/// Resolves with the [`Report`] when the lifecycle ends; see [`Lifecycle::wait`].
#[must_use = "futures do nothing unless you .await or poll them"]
pub struct Wait {
    lifecycle: Lifecycle,
    queue_key: QueueKey,
    services: FuturesUnordered<ServiceTask>,
    sleep: Option<(Instant, Sleep)>,
    stop_key: Option<usize>,
    finished_key: Option<usize>,
}

impl Future for Wait {
    type Output = Report;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Report> {
        let this = &mut *self;
        let shared = this.lifecycle.shared().clone();
        loop {
            // The report first: once it exists, nothing else matters.
            if shared
                .finished
                .poll_wait(&mut this.finished_key, cx)
                .is_ready()
            {
                return Poll::Ready(shared.report().expect("finished implies a report"));
            }
            this.services
                .extend(shared.queue.take(&mut this.queue_key, cx));
            // Services first: with a zero grace, what ends on its first poll after the stop
            // still counts as ended in time.
            while let Poll::Ready(Some(())) = this.services.poll_next_unpin(cx) {}
            if shared.finished.is_fired() {
                continue;
            }
            // Register before looking at the deadline, so a stop in between is not missed.
            let draining = shared.stop.poll_wait(&mut this.stop_key, cx).is_ready();
            if let (true, Some(deadline)) = (draining, shared.deadline()) {
                let sleep = match &mut this.sleep {
                    Some((armed, sleep)) if *armed == deadline => sleep,
                    slot => {
                        &mut slot
                            .insert((deadline, shared.clock.sleep_until(deadline)))
                            .1
                    }
                };
                if sleep.as_mut().poll(cx).is_ready() {
                    this.sleep = None;
                    shared.timeout();
                    if shared.deadline() == Some(deadline) {
                        // The clock's sleep ended before its `now` reached the deadline:
                        // yield and sleep again on the next poll rather than spin here.
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    continue;
                }
            }
            if !draining && shared.stop_if_empty() {
                continue;
            }
            return Poll::Pending;
        }
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        let shared = self.lifecycle.shared();
        shared.stop.cancel(&mut self.stop_key);
        shared.finished.cancel(&mut self.finished_key);
        shared.queue.cancel(&mut self.queue_key);
    }
}

impl fmt::Debug for Wait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wait")
            .field("services", &self.services.len())
            .field("deadline_armed", &self.sleep.is_some())
            .finish_non_exhaustive()
    }
}

/// Resolves once the lifecycle has ended; see `Lifecycle::ended`.
pub(crate) struct Ended {
    shared: Arc<Shared>,
    key: Option<usize>,
}

impl Future for Ended {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        this.shared.finished.poll_wait(&mut this.key, cx)
    }
}

impl Drop for Ended {
    fn drop(&mut self) {
        self.shared.finished.cancel(&mut self.key);
    }
}
