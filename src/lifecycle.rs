//! The lifecycle handle, its builder, and the future that waits for (and drives) the end.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use crate::clock::{Clock, Sleep, SystemClock};
use crate::machine::{
    Exit, FailurePolicy, Machine, Report, RestartIntensity, ServiceOptions, State, StopCause,
};
use crate::service::{ServiceResult, ServiceTask, StopSignal, Task, Trigger, panic_text};
use crate::session::{Session, refuse};
use crate::shared::{Shared, Spawner};
use crate::snapshot::Snapshot;
use crate::sync::QueueKey;
use crate::{Refused, ServiceError};

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
    /// `f` is called only once the service is admitted; if `f` itself panics, the service is
    /// recorded as panicked and the panic continues.
    ///
    /// Inside the service, begin sessions through a [`WeakLifecycle`] (see the type docs).
    ///
    /// # Errors
    ///
    /// [`ServiceError::Refused`] once a stop was requested, and
    /// [`ServiceError::DuplicateName`] when a service of that name was already added
    /// (names identify services in the report). `f` is not called then.
    pub fn service<F, Fut>(
        &self,
        name: impl Into<Cow<'static, str>>,
        f: F,
    ) -> Result<(), ServiceError>
    where
        F: FnOnce(StopSignal) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: ServiceResult,
    {
        let shared = self.shared();
        let (id, _, abort) =
            shared.add_service(name.into(), ServiceOptions::default(), None, None)?;
        let stop = StopSignal::for_service(shared.clone(), id, 1);
        let body = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(stop))) {
            Ok(body) => body,
            Err(payload) => {
                shared.service_exited(id, Exit::Panic(panic_text(&*payload)));
                std::panic::resume_unwind(payload);
            }
        };
        // Inline, not boxed: a `fn` item, no closure state.
        let body = futures_util::FutureExt::map(body, ServiceResult::into_exit);
        let task = ServiceTask::new(shared.clone(), id, body, abort);
        // Before it can run (on another thread) and end: `Started` comes first.
        shared.started(id);
        shared.run_service(task);
        Ok(())
    }

    /// Adds a supervised service: `factory` makes each run (it is called again for every
    /// restart), and `options` say when it is restarted and how long it waits first.
    ///
    /// A run that ends while the lifecycle is running is restarted as its
    /// [`Restart`](crate::Restart) policy says, after a [`Backoff`](crate::Backoff) wait
    /// timed on the lifecycle's clock, unless that restart
    /// would exceed the lifecycle's [`RestartIntensity`]: then the lifecycle stops with
    /// [`StopCause::RestartIntensity`] (exit status 1). Every unclean run is complained
    /// about. Once the stop is requested nothing is restarted, and a service waiting for its
    /// restart is stopped at once (it ends as its last run did). The report gives each
    /// service's [`attempts`](crate::ServiceReport::attempts) and
    /// [`last_failure`](crate::ServiceReport::last_failure).
    ///
    /// `options` also order it among the others: [`after`](ServiceOptions::after) names the
    /// services it starts after (once they are ready) and stops before (its dependencies'
    /// stop signals wait for it), [`declares_ready`](ServiceOptions::declares_ready) and
    /// [`start_timeout`](ServiceOptions::start_timeout) say when it is ready, and
    /// [`stop_budget`](ServiceOptions::stop_budget) how long its stop may take within the
    /// grace. A service with dependencies is made when they are ready, on the thread that
    /// made the last of them ready.
    ///
    /// The backoff waits are driven by [`wait`](Lifecycle::wait), like the grace deadline:
    /// poll it (on any executor) for restarts to happen.
    ///
    /// `factory` runs on the thread that makes the run: the caller of `service_with` for the
    /// first, the thread that drives the timer (the `wait()`) for each restart — keep it
    /// quick and let the run do the work. A factory that panics makes a run that ended by a
    /// panic (restarted as the policy says); a run made while a stop was being requested on
    /// another thread is dropped unpolled.
    ///
    /// # Errors
    ///
    /// As [`service`](Lifecycle::service), and the errors of a bad dependency or duration
    /// ([`ServiceError::UnknownDependency`], [`ServiceError::DependencyCycle`],
    /// [`ServiceError::Config`], [`ServiceError::BudgetsExceedGrace`]); `factory` is not
    /// called then.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use async_lifecycle::{Backoff, Lifecycle, ManualClock, Restart, ServiceOptions, StopCause};
    ///
    /// let clock = ManualClock::new();
    /// let lc = Lifecycle::builder().clock(clock.clone()).build();
    /// let options = ServiceOptions::new()
    ///     .restart(Restart::OnFailure)
    ///     .backoff(Backoff::new(Duration::from_secs(1), Duration::from_secs(8))?.without_jitter());
    /// lc.service_with("flaky", options, |_stop| async { Err::<(), _>("connection refused") })?;
    ///
    /// let mut pool = futures::executor::LocalPool::new();
    /// use futures::task::LocalSpawnExt;
    /// let wait = pool.spawner().spawn_local_with_handle(lc.wait()).unwrap();
    /// pool.run_until_stalled();
    /// for wait_secs in [1, 2, 4, 8, 8] {
    ///     clock.advance(Duration::from_secs(wait_secs)); // each restart fails at once
    ///     pool.run_until_stalled();
    /// }
    /// let report = pool.run_until(wait);
    /// assert!(matches!(report.cause(), Some(StopCause::RestartIntensity { restarts: 6, .. })));
    /// assert_eq!(report.service("flaky").unwrap().restarts(), 5);
    /// assert_eq!(report.exit_code(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn service_with<F, Fut>(
        &self,
        name: impl Into<Cow<'static, str>>,
        options: ServiceOptions,
        mut factory: F,
    ) -> Result<(), ServiceError>
    where
        F: FnMut(StopSignal) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: ServiceResult,
    {
        use futures_util::FutureExt;
        let shared = self.shared();
        let factory: crate::shared::Factory =
            Box::new(move |stop| Box::pin(factory(stop).map(ServiceResult::into_exit)));
        // Its runs are made (and their abort slot armed) by `start_run`.
        let (id, start_now, _) = shared.add_service(name.into(), options, Some(factory), None)?;
        if start_now {
            // The first run is made as every restart is: by the factory, outside the locks.
            shared.start_run(id);
        }
        Ok(())
    }

    /// Runs a lifecycle nested in this one, as its service `name`, and returns it: add its
    /// own services and sessions to it as to any lifecycle.
    ///
    /// The nested lifecycle is built from `builder`, with this one's clock, spawner and grace
    /// where `builder` sets none. It runs as long as its service does: when this lifecycle
    /// stops it (after the services that depend on it, as `options` says), it stops with
    /// [`StopCause::ParentStopping`] and a deadline that is the earlier of its own grace and
    /// what this one has left for it — so the whole tree ends within the outer grace. If it
    /// ends on its own (one of its services failed, or it was stopped directly), its
    /// service ends: cleanly if its report is (after the stop), else as a failure, which
    /// under [`FailurePolicy::StopAll`] stops this one too.
    ///
    /// Its report joins this one's ([`ServiceReport::nested`](crate::ServiceReport::nested)),
    /// the report's `Display` shows the tree, and this one's exit code is the highest of
    /// the tree's: a straggler abandoned at any depth is named, and makes the exit status 2.
    /// If this lifecycle ends first (its deadline, a force), the nested one is ended with it
    /// and its report is still attached.
    ///
    /// Nothing in it runs before its service does (after that service's dependencies are
    /// ready): its services are driven by the `wait()` inside that service's run, or, with a
    /// spawner, held in its queue until then. If this lifecycle stops first, the nested one
    /// stops with its services [`NotStarted`](crate::ServiceOutcome::NotStarted). Its parent
    /// drives it and holds its report: do not `wait()` on it elsewhere.
    ///
    /// The nested lifecycle is ready as soon as its run starts, after its dependencies (order
    /// services inside it with their own dependencies). Its own event hook, failure policy and intensity
    /// come from `builder`; none is inherited.
    ///
    /// # Errors
    ///
    /// As [`service_with`](Lifecycle::service_with), and [`ServiceError::Config`] with
    /// [`ConfigError::NotForNested`](crate::ConfigError::NotForNested) for a restart policy
    /// other than [`Restart::Never`](crate::Restart::Never) (a lifecycle runs once) or for
    /// [`declares_ready`](ServiceOptions::declares_ready) (it is ready when its run starts).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_lifecycle::{Lifecycle, ServiceOptions, State};
    ///
    /// let lc = Lifecycle::new();
    /// lc.service("db", |stop| stop)?;
    /// let workers = lc.nest("workers", ServiceOptions::new().after(["db"]), Lifecycle::builder())?;
    /// workers.service("worker 1", |stop| stop)?;
    /// workers.service("worker 2", |stop| stop)?;
    ///
    /// lc.stop("deploy");
    /// let report = futures::executor::block_on(lc.wait());
    /// let nested = report.service("workers").unwrap().nested().unwrap();
    /// assert_eq!(nested.state(), State::Terminated);
    /// assert_eq!(nested.services().len(), 2);
    /// assert_eq!(report.exit_code(), 0);
    /// println!("{report}"); // the tree
    /// # Ok::<(), async_lifecycle::ServiceError>(())
    /// ```
    pub fn nest(
        &self,
        name: impl Into<Cow<'static, str>>,
        options: ServiceOptions,
        builder: Builder,
    ) -> Result<Lifecycle, ServiceError> {
        use futures_util::FutureExt;
        if options.restart_policy() != crate::Restart::Never {
            return Err(crate::ConfigError::NotForNested {
                option: "a restart policy",
            }
            .into());
        }
        if options.is_declaring_ready() {
            return Err(crate::ConfigError::NotForNested {
                option: "declares_ready",
            }
            .into());
        }
        let parent = self.shared();
        let mut builder = builder;
        if builder.clock.is_none() && builder.runtime.is_none() {
            builder.clock = Some(parent.clock.clone());
        }
        if builder.spawner.is_none() && builder.runtime.as_ref().is_none_or(|r| r.2.is_none()) {
            builder.spawner = parent.spawner.clone();
        }
        if builder.grace.is_none() {
            builder.grace = Some(parent.grace());
        }
        let nested = builder.build();
        // Nothing in it runs before its own service does (after its dependencies are
        // ready): with a spawner, its tasks wait in its queue until then; without one, the
        // `wait()` inside its run is what drives them.
        nested.shared().close_gate();
        // Its parent will stop it: something to wait for, so its first `wait()` does not
        // stop it for having nothing to run yet.
        nested.shared().apply(|m, _| m.handle_stop_trigger());
        let mut handle = Some(nested.clone());
        let mut factory = move |stop: StopSignal| {
            let nested = handle.take();
            async move {
                let Some(nested) = nested else {
                    return Err("a nested lifecycle runs once".to_owned());
                };
                nested.shared().open_gate();
                let wait = nested.wait();
                let report = match futures_util::future::select(wait, stop.clone()).await {
                    futures_util::future::Either::Left((report, _)) => report,
                    futures_util::future::Either::Right(((), wait)) => {
                        // Its deadline: what this lifecycle has left for it.
                        let by = stop.deadline();
                        nested
                            .shared()
                            .apply(|m, now| m.stop_by(now, StopCause::ParentStopping, by));
                        wait.await
                    }
                };
                if report.exit_code() == 0 {
                    Ok(())
                } else {
                    Err(format!(
                        "nested lifecycle {} (exit code {})",
                        report.state(),
                        report.exit_code()
                    ))
                }
            }
        };
        let factory: crate::shared::Factory =
            Box::new(move |stop| Box::pin(factory(stop).map(ServiceResult::into_exit)));
        let nested_shared = nested.shared().clone();
        let (id, start_now, _) =
            parent.add_service(name.into(), options, Some(factory), Some(nested_shared))?;
        if start_now {
            parent.start_run(id);
        }
        Ok(nested)
    }

    /// Stops the lifecycle when `trigger` resolves, with its output as the cause: for a
    /// server whose API is `run(listener, shutdown: impl Future)`, a `ctrl_c()` future, a
    /// message on a channel. The trigger is run by the spawner, or by [`wait`](Lifecycle::wait);
    /// it is dropped unfinished once the lifecycle stops for another reason. It counts as
    /// something to run: the first `wait()` does not stop a lifecycle that has a trigger
    /// with [`StopCause::NothingToRun`]. It holds no
    /// `Lifecycle` handle, so it keeps nothing alive. A trigger that panics stops the
    /// lifecycle too, with a cause that carries the panic's message.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_lifecycle::{Lifecycle, StopCause};
    ///
    /// let lc = Lifecycle::new();
    /// lc.service("worker", |stop| stop).unwrap();
    /// let (tx, rx) = futures::channel::oneshot::channel::<()>();
    /// lc.stop_on(async move {
    ///     let _ = rx.await;
    ///     "admin asked"
    /// });
    /// tx.send(()).unwrap();
    /// let report = futures::executor::block_on(lc.wait());
    /// assert_eq!(report.cause(), Some(&StopCause::from("admin asked")));
    /// assert_eq!(report.exit_code(), 0);
    /// ```
    pub fn stop_on<F>(&self, trigger: F)
    where
        F: Future + Send + 'static,
        F::Output: Into<StopCause>,
    {
        use futures_util::FutureExt;
        let fut =
            std::panic::AssertUnwindSafe(trigger)
                .catch_unwind()
                .map(|outcome| match outcome {
                    Ok(cause) => cause.into(),
                    Err(payload) => StopCause::Requested(Cow::Owned(format!(
                        "stop trigger panicked: {}",
                        panic_text(&*payload)
                    ))),
                });
        let shared = self.shared();
        // Something to wait for: the first `wait()` does not stop a lifecycle that has one.
        shared.apply(|m, _now| m.handle_stop_trigger());
        shared.run(Task::Trigger(Trigger::new(shared.clone(), Box::pin(fut))));
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
        session(self.shared(), name.into())
    }

    /// Begins a session without a name: one compare-and-swap and no allocation. If it is
    /// abandoned, the report counts it without naming it.
    ///
    /// # Errors
    ///
    /// [`Refused`] once a stop was requested.
    #[inline]
    pub fn unnamed_session(&self) -> Result<Session, Refused> {
        unnamed_session(self.shared())
    }

    /// Requests a graceful stop, from any thread or task, any number of times: the first
    /// cause is kept. New work is refused from now on, every [`StopSignal`] fires, and the
    /// grace deadline is armed.
    pub fn stop(&self, cause: impl Into<StopCause>) {
        let cause = cause.into();
        self.shared().apply(|m, now| m.request_stop(now, cause));
    }

    /// Forces the stop: whatever is still running now is abandoned at once and named in the
    /// report (a graceful stop is requested first, with [`StopCause::Forced`], if none was).
    pub fn force(&self) {
        self.shared().apply(Machine::force);
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.shared().state()
    }

    /// Whether the stop was requested: the lifecycle is draining or has ended. One atomic
    /// load. True once any `stop` (or `force`) call has returned, whichever thread began the
    /// drain.
    pub fn is_stopped(&self) -> bool {
        self.shared().sessions.is_stopped()
    }

    /// The first stop cause, once a stop was requested.
    pub fn cause(&self) -> Option<&StopCause> {
        self.shared().cause()
    }

    /// A future that resolves when the stop is requested (draining starts).
    pub fn stop_signal(&self) -> StopSignal {
        StopSignal::new(self.shared().clone())
    }

    /// The live view: state, cause, the session counts so far (refusals after the end
    /// included), the [`Snapshot::OLDEST`] oldest live named sessions with their ages, and
    /// each service with its status and uptime. For health endpoints, logs and tests.
    pub fn snapshot(&self) -> Snapshot {
        self.shared().snapshot(Snapshot::OLDEST)
    }

    /// A handle that begins sessions and requests stops like this one, but does not keep the
    /// lifecycle alive: the handle for services (see the [type docs](Lifecycle)).
    pub fn downgrade(&self) -> WeakLifecycle {
        WeakLifecycle {
            shared: self.shared().clone(),
        }
    }

    /// A future that resolves once the lifecycle has ended (`Terminated` or `Abandoned`),
    /// without driving anything: for threads and tasks that must act at the end (the signal
    /// handler restores the signals' dispositions then).
    #[cfg_attr(not(all(feature = "signal", unix)), allow(dead_code))]
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
    /// lifecycle, at the first poll of its first `Wait`, never later (a stop trigger from
    /// [`stop_on`](Lifecycle::stop_on) counts as something to run). Add services before a
    /// `Wait` can be polled: a `Wait` spawned on another thread first may see nothing yet. Any number of `Wait`s may run at
    /// once; each service is driven by one of them, and dropping a `Wait` drops (and reports)
    /// the services it was driving.
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

fn session(shared: &Arc<Shared>, name: Cow<'static, str>) -> Result<Session, Refused> {
    // Stamped with a coarse reading (see `Sessions::begin_named`).
    match shared.sessions.begin_named(name) {
        Ok((shard, key)) => Ok(Session::named(shard, key)),
        Err(_closed) => Err(refuse(shared)),
    }
}

#[inline]
fn unnamed_session(shared: &Arc<Shared>) -> Result<Session, Refused> {
    match shared.sessions.begin_unnamed() {
        Ok(shard) => Ok(Session::unnamed(shard)),
        Err(_closed) => Err(refuse(shared)),
    }
}

impl Shared {
    /// Hands a task to the spawner, or queues it for a `Wait`. A task queued after the end
    /// is dropped at once (a service then stays recorded as it ended or was abandoned).
    pub(crate) fn run(&self, task: Task) {
        match &self.spawner {
            // A nested lifecycle whose service has not run yet keeps its tasks queued.
            Some(spawn) if !self.gated() => spawn.spawn(task),
            _ => self.queue_task(task),
        }
    }

    /// [`run`](Self::run) for a service's run: spawned as it is (a runtime's spawner takes
    /// it without a box), boxed only for a user's spawner function or for the queue.
    pub(crate) fn run_service<F>(&self, task: ServiceTask<F>)
    where
        F: Future<Output = Exit> + Send + 'static,
    {
        match &self.spawner {
            Some(spawn) if !self.gated() => spawn.spawn(task),
            _ => self.queue_task(Task::Service(Box::pin(task))),
        }
    }

    fn queue_task(&self, task: Task) {
        if let Err(task) = self.queue.push(task) {
            crate::complain::quietly(|| drop(task));
        }
    }
}

/// A [`Lifecycle`] handle that does not keep the lifecycle alive: it begins sessions and
/// requests stops, and that is all. The handle a service should hold (from
/// [`Lifecycle::downgrade`]): once every `Lifecycle` handle is gone, the lifecycle stops with
/// [`StopCause::HandlesDropped`] and the service with it, whether or not a driver ever ran it.
///
/// # Examples
///
/// The accept-loop pattern: the service begins a session per connection.
///
/// ```
/// use async_lifecycle::Lifecycle;
///
/// let lc = Lifecycle::new();
/// let sessions = lc.downgrade();
/// let watch = lc.downgrade();
/// lc.service("accept", move |stop| async move {
///     let _conn = sessions.session("conn 1").expect("running");
///     stop.await;
/// })
/// .unwrap();
/// // An early `?` in main: nothing could start the service now. It is dropped (with
/// // whatever it owns) and the lifecycle stops.
/// drop(lc);
/// assert!(watch.is_stopped());
/// assert!(watch.session("late").is_err());
/// ```
#[derive(Clone)]
pub struct WeakLifecycle {
    shared: Arc<Shared>,
}

impl WeakLifecycle {
    /// The lifecycle's deadline once a stop was requested (`None` before, without one, and
    /// once ended).
    #[allow(dead_code, reason = "used by the `systemd` feature")]
    pub(crate) fn stop_deadline(&self) -> Option<std::time::Instant> {
        self.shared.stop_deadline()
    }

    /// Begins a named session; see [`Lifecycle::session`].
    ///
    /// # Errors
    ///
    /// [`Refused`] once a stop was requested (every `Lifecycle` handle being dropped is one).
    pub fn session(&self, name: impl Into<Cow<'static, str>>) -> Result<Session, Refused> {
        session(&self.shared, name.into())
    }

    /// Begins an unnamed session; see [`Lifecycle::unnamed_session`].
    ///
    /// # Errors
    ///
    /// [`Refused`] once a stop was requested.
    #[inline]
    pub fn unnamed_session(&self) -> Result<Session, Refused> {
        unnamed_session(&self.shared)
    }

    /// Requests a graceful stop; see [`Lifecycle::stop`].
    pub fn stop(&self, cause: impl Into<StopCause>) {
        let cause = cause.into();
        self.shared.apply(|m, now| m.request_stop(now, cause));
    }

    /// Whether the stop was requested.
    pub fn is_stopped(&self) -> bool {
        self.shared.sessions.is_stopped()
    }

    /// Whether a stop was requested, including one still in its pre-drain
    /// ([`Builder::pre_drain`]); takes the lifecycle's lock.
    #[cfg_attr(not(all(feature = "systemd", unix)), allow(dead_code))]
    pub(crate) fn stop_requested(&self) -> bool {
        self.shared.stop_requested()
    }

    /// Whether requested stops have a pre-drain.
    #[cfg_attr(not(all(feature = "systemd", unix)), allow(dead_code))]
    pub(crate) fn has_pre_drain(&self) -> bool {
        self.shared.has_pre_drain()
    }

    /// A future that resolves when the stop is requested.
    pub fn stop_signal(&self) -> StopSignal {
        StopSignal::new(self.shared.clone())
    }

    /// The current state; see [`Lifecycle::state`].
    pub fn state(&self) -> State {
        self.shared.state()
    }

    /// The first stop cause; see [`Lifecycle::cause`].
    pub fn cause(&self) -> Option<&StopCause> {
        self.shared.cause()
    }

    /// The live view, for a health endpoint inside a service; see [`Lifecycle::snapshot`].
    pub fn snapshot(&self) -> Snapshot {
        self.shared.snapshot(Snapshot::OLDEST)
    }
}

impl fmt::Debug for WeakLifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakLifecycle")
            .field("stopped", &self.is_stopped())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lifecycle")
            .field("state", &self.state())
            .field("live_sessions", &self.shared().sessions.live())
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
    /// `None`: [`DEFAULT_GRACE`] (or, nested, the parent's).
    grace: Option<Duration>,
    clock: Option<Arc<dyn Clock>>,
    spawner: Option<Spawner>,
    /// A runtime chosen by `.tokio()`, `.smol(..)` or `.async_io()`: its name, clock and
    /// spawner, used where `.clock(..)` / `.spawner(..)` did not choose.
    runtime: Option<(&'static str, Arc<dyn Clock>, Option<Spawner>)>,
    policy: FailurePolicy,
    intensity: RestartIntensity,
    seed: Option<u64>,
    events: Option<crate::event::Hook>,
    pre_drain: Duration,
}

impl Builder {
    fn new() -> Self {
        Builder {
            grace: None,
            clock: None,
            spawner: None,
            runtime: None,
            policy: FailurePolicy::default(),
            intensity: RestartIntensity::DEFAULT,
            seed: None,
            events: None,
            pre_drain: Duration::ZERO,
        }
    }

    /// Calls `hook` with every [`Event`](crate::Event) — a service started, failed, is
    /// restarting or was abandoned; the stop was requested; the lifecycle ended — on the
    /// thread that caused it, outside the crate's locks. A hook that panics is ignored; one
    /// that blocks delays only the thread that called into the lifecycle (never a `wait()`'s
    /// report: `Ended` comes after it is published).
    pub fn on_event(mut self, hook: impl Fn(&crate::Event<'_>) + Send + Sync + 'static) -> Self {
        self.events = Some(Arc::new(hook));
        self
    }

    /// How many restarts of supervised services ([`Lifecycle::service_with`]) the lifecycle
    /// tolerates within a window before it stops with [`StopCause::RestartIntensity`]
    /// (default [`RestartIntensity::DEFAULT`]: more than 5 within 60 s).
    pub fn restart_intensity(mut self, intensity: RestartIntensity) -> Self {
        self.intensity = intensity;
        self
    }

    /// Seeds the random source of the restart backoffs' jitter, for runs that repeat
    /// exactly (with a [`ManualClock`](crate::ManualClock)). Without it the seed comes from
    /// the standard library's per-process hashing keys.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Chooses a runtime's clock and spawner (for the runtime extension traits). An explicit
    /// `.clock(..)` or `.spawner(..)` wins whatever the order of the calls.
    ///
    /// # Panics
    ///
    /// When a runtime was already chosen: a lifecycle runs on one.
    #[allow(dead_code)] // reason: used only by the runtime features
    pub(crate) fn runtime(
        mut self,
        name: &'static str,
        clock: Arc<dyn Clock>,
        spawner: Option<Spawner>,
    ) -> Self {
        if let Some((first, ..)) = &self.runtime {
            panic!(
                "async_lifecycle::Builder: `.{name}()` after `.{first}()`: a lifecycle runs on \
                 one runtime; choose one (and use `.clock(..)` / `.spawner(..)` to mix)"
            );
        }
        self.runtime = Some((name, clock, spawner));
        self
    }

    /// How long draining may take before what is still running is abandoned, measured on
    /// the lifecycle's clock from the stop. Zero makes the stop its own deadline: whatever
    /// is still running when the stop is requested is abandoned by that call, on every
    /// executor (a service has had no chance to see its stop yet). `Duration::MAX` never
    /// abandons (only [`Lifecycle::force`] does).
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = Some(grace);
        self
    }

    /// The clock for the grace deadline and session ages; use a
    /// [`ManualClock`](crate::ManualClock) in tests. It wins over a runtime's clock
    /// (`.tokio()`, `.smol(..)`), in whatever order the two are called.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Runs each service's future through `spawn` (for example `|f| { tokio::spawn(f); }`)
    /// instead of inside [`Lifecycle::wait`], so services use the executor's threads. It
    /// wins over a runtime's spawner, in whatever order the two are called.
    ///
    /// `spawn` must not panic: if it does, the panic reaches the caller of
    /// [`Lifecycle::service`] (or [`Lifecycle::stop_on`]), and the service, never run, is
    /// recorded as dropped — which, under [`FailurePolicy::StopAll`], stops the lifecycle.
    pub fn spawner(
        mut self,
        spawn: impl Fn(Pin<Box<dyn Future<Output = ()> + Send>>) + Send + Sync + 'static,
    ) -> Self {
        self.spawner = Some(Spawner::Boxed(Arc::new(spawn)));
        self
    }

    /// Keeps serving for `delay` after a stop is requested ([`Lifecycle::stop`], a signal, a
    /// [`stop_on`](Lifecycle::stop_on) trigger) before the drain begins: the lifecycle stays
    /// running and keeps admitting, but [`Snapshot::is_ready`] turns false at once, so a
    /// readiness probe fails and load balancers take the backend out before it refuses
    /// anything (the endpoint-removal race, kubernetes#89263). The delay is spent inside
    /// the grace — the deadline stays `grace` after the request, so the stop costs
    /// max(delay, drain), never their sum — and is capped by it: the drain then has the
    /// grace minus the delay (a delay as long as the grace leaves it none, and whatever is
    /// still running is abandoned at once). A failure, a force or a
    /// second signal (which forces) ends the pre-drain at once; the first cause is kept.
    ///
    /// Kubernetes: a preStop sleep plus this lifecycle's grace plus a margin must fit in
    /// `terminationGracePeriodSeconds`.
    pub fn pre_drain(mut self, delay: Duration) -> Self {
        self.pre_drain = delay;
        self
    }

    /// What a service ending uncleanly while running does (stop everything, by default).
    pub fn on_service_failure(mut self, policy: FailurePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Builds the lifecycle, in [`State::Running`].
    pub fn build(self) -> Lifecycle {
        let (runtime_clock, runtime_spawner) = match self.runtime {
            Some((_, clock, spawner)) => (Some(clock), spawner),
            None => (None, None),
        };
        let chosen = self.clock.or(runtime_clock);
        let default_clock = chosen.is_none();
        let clock = chosen.unwrap_or_else(|| Arc::new(SystemClock::new()));
        let spawner = self.spawner.or(runtime_spawner);
        let grace = self.grace.unwrap_or(DEFAULT_GRACE);
        let mut machine = Machine::new(clock.now(), grace, self.policy);
        machine.set_restart_intensity(self.intensity);
        machine.set_pre_drain(self.pre_drain);
        machine.set_seed(self.seed.unwrap_or_else(|| {
            use std::hash::{BuildHasher, RandomState};
            RandomState::new().hash_one(0x5EED_u64)
        }));
        let shared =
            Arc::new_cyclic(|weak| Shared::new(weak.clone(), machine, clock, spawner, self.events));
        if default_clock {
            shared.sessions.use_process_coarse_clock();
        }
        Lifecycle {
            owner: Arc::new(Owner { shared }),
        }
    }
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("grace", &self.grace.unwrap_or(DEFAULT_GRACE))
            .field("clock", &self.clock)
            .field(
                "spawner",
                &(self.spawner.is_some()
                    || self.runtime.as_ref().is_some_and(|(_, _, s)| s.is_some())),
            )
            .field("runtime", &self.runtime.as_ref().map(|(name, ..)| *name))
            .field("policy", &self.policy)
            .field("intensity", &self.intensity)
            .field("seed", &self.seed)
            .field("on_event", &self.events.is_some())
            .finish()
    }
}

/// Resolves with the [`Report`] when the lifecycle ends; see [`Lifecycle::wait`].
#[must_use = "futures do nothing unless you .await or poll them"]
pub struct Wait {
    lifecycle: Lifecycle,
    queue_key: QueueKey,
    services: FuturesUnordered<Task>,
    sleep: Option<(Instant, Sleep)>,
    stop_key: Option<usize>,
    finished_key: Option<usize>,
}

impl Future for Wait {
    type Output = Report;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Report> {
        let this = &mut *self;
        // Borrowed, not cloned: two reference-count writes per poll saved (the drain's
        // completion polls this once).
        let shared = this.lifecycle.shared();
        loop {
            // The report first: once it exists, nothing else matters.
            if shared
                .finished
                .poll_wait(&mut this.finished_key, cx)
                .is_ready()
            {
                return Poll::Ready(shared.report().expect("finished implies a report"));
            }
            shared.wait_started();
            // A nested lifecycle's tasks wait for its service's run (which opens the gate
            // and wakes this `Wait`), whoever else waits on it.
            if shared.gated() {
                shared.queue.register(&mut this.queue_key, cx);
            }
            // Looked at again after registering: a gate opened in between is not missed.
            if !shared.gated() {
                this.services
                    .extend(shared.queue.take(&mut this.queue_key, cx));
            }
            while let Poll::Ready(Some(())) = this.services.poll_next_unpin(cx) {}
            if shared.finished.is_fired() {
                continue;
            }
            // Register before looking at the next timeout, so a stop in between (which arms
            // the deadline) is not missed; a restart scheduled in between wakes the queue's
            // drivers, registered above.
            let _ = shared.stop.poll_wait(&mut this.stop_key, cx);
            // The grace deadline while draining, the earliest due restart while running.
            if let Some(deadline) = shared.deadline() {
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
            } else {
                // Nothing to time (a restart started, or a stop with no deadline): no stale
                // sleep stays registered with the clock.
                this.sleep = None;
            }
            if shared.finished.is_fired() {
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
