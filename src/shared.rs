//! The state every handle shares, and the one place where machine actions are carried out.
//!
//! The shell decides nothing: it forwards what it observes (a stop, a service's exit, the
//! deadline, the first wait, the last session's end, a census) to the [`Machine`] and
//! carries out the actions the machine returns.
//!
//! # Lock order
//!
//! `core` → the sessions' `registry`. Nothing takes `core` while holding `registry`: a named
//! session ends under `registry`, releases it, and only then reports a drain through `core`.
//!
//! # What runs outside the lock, and in what order
//!
//! Everything that runs user code — wakers, complaints (subscribers), abort handles, dropping
//! service futures — runs after `core` is released, each step under `catch_unwind`: once the
//! machine has ended, the report is in it and `finished` fires whatever that code does, so
//! every `wait()` resolves with the report. Complaints come before `finished`, so a program
//! that prints the report and exits has already logged them.
//!
//! # Two short paths
//!
//! - An input that leaves the machine nothing for the driver (no action, no timer to look
//!   at again: a service's exit while others run, a service added) releases `core` and
//!   returns; there is nothing to settle or carry out.
//! - The usual end, the last session's exit after the services ended (nothing nested),
//!   leaves the machine one action, its finish: [`Shared::sessions_drained`] publishes the
//!   report directly ([`Shared::finish`], the tail of the general path), without building
//!   the general path's effects.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crate::ServiceError;
use crate::clock::Clock;
use crate::complain::{self, quietly};
use crate::event::{self, Event, Hook};
use crate::loom::{AtomicBool, AtomicU64, Mutex, Ordering, lock};
use crate::machine::{Action, Exit, Machine, Report, ServiceId, State, StopCause};
use crate::machine::{ServiceOptions, ServiceOutcome};
use crate::service::{AbortRef, AbortSlots, ServiceTask, StopSignal, Task, panic_text};
use crate::session::Sessions;
use crate::snapshot::{ServiceSnapshot, Snapshot};
use crate::sync::{Broadcast, Queue};

/// A boxed task, as [`Builder::spawner`](crate::Builder::spawner)'s function takes it.
pub(crate) type BoxedTask = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Hands a service's future to an executor: a user's function, which takes it boxed, or a
/// runtime's spawner, which takes the concrete task as it is (one allocation per service:
/// the executor's own task, where boxing it first made two).
#[derive(Clone)]
pub(crate) enum Spawner {
    /// [`Builder::spawner`](crate::Builder::spawner)'s function.
    Boxed(Arc<dyn Fn(BoxedTask) + Send + Sync>),
    /// `.tokio()`: tasks on this runtime.
    #[cfg(feature = "tokio")]
    Tokio(::tokio::runtime::Handle),
    /// `.smol(ex)`: detached tasks of this executor.
    #[cfg(feature = "async-io")]
    Smol(Arc<async_executor::Executor<'static>>),
}

impl Spawner {
    /// Spawns `task`, boxing it only for a user's function.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match self {
            Spawner::Boxed(spawn) => spawn(Box::pin(task)),
            #[cfg(feature = "tokio")]
            Spawner::Tokio(handle) => crate::tokio::spawn_on(handle, task),
            #[cfg(feature = "async-io")]
            Spawner::Smol(ex) => crate::async_io::spawn_on(ex, task),
        }
    }

    /// Spawns a task that is boxed already (taken from the queue), without boxing it again.
    fn spawn_boxed(&self, task: BoxedTask) {
        match self {
            Spawner::Boxed(spawn) => spawn(task),
            #[allow(unreachable_patterns, reason = "without the runtime features")]
            other => other.spawn(task),
        }
    }
}

/// Makes a restartable service's next run.
pub(crate) type Factory =
    Box<dyn FnMut(StopSignal) -> std::pin::Pin<Box<dyn Future<Output = Exit> + Send>> + Send>;

struct Core {
    machine: Machine,
    /// The abort slots of the services' current runs, by service index.
    aborts: AbortSlots,
    /// The factories of restartable services, by service index (`None`: run once, or taken
    /// out while it makes a run, outside this lock).
    factories: Vec<Option<Factory>>,
    /// The lifecycles nested as services ([`Lifecycle::nest`](crate::Lifecycle::nest)):
    /// their reports join this one's at the end.
    nested: Vec<(ServiceId, Arc<Shared>)>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("machine", &self.machine)
            .finish_non_exhaustive()
    }
}

/// The states of [`Shared::gate`].
const OPEN: u64 = 0;
const CLOSED: u64 = 1;
const CANCELLED: u64 = 2;

/// Ends a nested lifecycle's machine at `now` for its parent: stopped, then by its
/// deadline's census if the deadline has come, else forced.
fn end_now(m: &mut Machine, now: Instant) {
    // Its cause is its parent's stop, not a force, whichever way it ends.
    m.stop(now, StopCause::ParentStopping);
    if m.census_needs_names(now) {
        m.handle_timeout(now);
    } else {
        m.force(now);
    }
}

pub(crate) struct Shared {
    pub(crate) sessions: Sessions,
    /// Whether the first `Wait` poll was forwarded to the machine (it asks once).
    wait_seen: AtomicBool,
    /// A nested lifecycle's gate: [`OPEN`] (any other lifecycle, or its service's run has
    /// started), [`CLOSED`] (its tasks are queued, not spawned, and no `wait()` takes them),
    /// or [`CANCELLED`] (its parent stopped before its run started: nothing of it ever runs).
    gate: AtomicU64,
    /// The first stop cause, set once under `core` before `stop` fires: read without a lock.
    cause: OnceLock<StopCause>,
    /// Fires when the stop is requested (draining starts).
    pub(crate) stop: Broadcast,
    /// Set at the stop, before `stop` fires: by service index, the stop signal of each
    /// service that still had a dependent running then (`None`: signalled by `stop`).
    held: OnceLock<Vec<Option<Broadcast>>>,
    /// Fires when a final state is reached; [`report`](Self::report) is set by then.
    pub(crate) finished: Broadcast,
    /// The final report, set once just before `finished` fires: read without a lock.
    report: OnceLock<Report>,
    /// Guards the state machine and what hangs off its transitions.
    core: Mutex<Core>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) spawner: Option<Spawner>,
    /// Services (and stop triggers) waiting for a driver, when there is no spawner.
    pub(crate) queue: Queue<Task>,
    /// The hook of `Builder::on_event`.
    events: Option<Hook>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("sessions", &self.sessions)
            .field("clock", &self.clock)
            .field("spawner", &self.spawner.is_some())
            .finish_non_exhaustive()
    }
}

/// What to do once `core` is released.
#[derive(Default)]
struct Effects {
    fire_stop: bool,
    complaints: Vec<Action>,
    /// Services whose next run is due.
    starts: Vec<ServiceId>,
    /// The next timeout moved (a restart scheduled, a stop budget started): wake the
    /// drivers.
    rescheduled: bool,
    /// Services whose own stop signal fires now (their dependents are done).
    releases: Vec<(ServiceId, Option<String>)>,
    /// Runs given up on past their stop budget: cancel them (and end a nested lifecycle).
    give_ups: Vec<(AbortRef, Option<Arc<Shared>>)>,
    /// A service declared itself ready (its name and run), for the event: before the
    /// dependents that starts.
    ready: Option<(String, u32)>,
    /// Nested lifecycles whose service never ran, at the stop: cancelled.
    unstarted: Vec<Arc<Shared>>,
    /// Nested lifecycles ended with this one: their own effects.
    nested: Vec<(Arc<Shared>, Effects)>,
    /// The report, when the machine ended in this settle.
    finished: Option<Report>,
    /// The lifecycle was abandoned: every run is aborted.
    aborts: Option<AbortSlots>,
}

impl Shared {
    /// The lifecycle's state; `this` is the `Arc` it is being built in (`Arc::new_cyclic`),
    /// which its sessions report their drain to without keeping it alive.
    pub(crate) fn new(
        this: std::sync::Weak<Shared>,
        machine: Machine,
        clock: Arc<dyn Clock>,
        spawner: Option<Spawner>,
        events: Option<Hook>,
    ) -> Self {
        Shared {
            sessions: Sessions::new(this, clock.clone()),
            wait_seen: AtomicBool::new(false),
            gate: AtomicU64::new(OPEN),
            cause: OnceLock::new(),
            stop: Broadcast::new(),
            held: OnceLock::new(),
            finished: Broadcast::new(),
            report: OnceLock::new(),
            core: Mutex::new(Core {
                machine,
                aborts: AbortSlots::default(),
                factories: Vec::new(),
                nested: Vec::new(),
            }),
            clock,
            spawner,
            queue: Queue::new(),
            events,
        }
    }

    /// Emits `Event::Started` for a service's run that just started.
    pub(crate) fn started(&self, id: ServiceId) {
        if !event::wanted(self.events.as_ref()) {
            // Nobody listens: no lock, no copy of the name.
            return;
        }
        let (name, attempt) = {
            let core = lock(&self.core);
            let name = core.machine.service_name(id).to_owned();
            (name, core.machine.service_restarts(id).0)
        };
        event::emit(
            self.events.as_ref(),
            Event::Started {
                service: &name,
                attempt,
            },
        );
    }

    /// Applies `input` to the machine at the clock's `now`, then carries out every action.
    pub(crate) fn apply<R>(self: &Arc<Self>, input: impl FnOnce(&mut Machine, Instant) -> R) -> R {
        let now = self.clock.now();
        let mut core = lock(&self.core);
        let result = input(&mut core.machine, now);
        if !core.machine.has_work() {
            // Nothing for the driver (a service's exit while others run, most often): no
            // settle, no effects to build and carry out (issue 12: about 800 instructions
            // per service, started and stopped).
            return result;
        }
        let mut effects = Effects::default();
        self.settle(&mut core, now, &mut effects);
        drop(core);
        self.carry_out(effects);
        result
    }

    /// Registers a service; its abort slot (and the nested lifecycle it runs, if any) is
    /// made under the lock that assigned its id. Returns its id, whether the caller makes its
    /// first run now (a service with dependencies is started by the machine instead, when
    /// they are ready, maybe by this call), and its abort slot, for a first run made by the
    /// caller (`start_run` arms the slot again for the runs it makes).
    pub(crate) fn add_service(
        self: &Arc<Self>,
        name: Cow<'static, str>,
        options: ServiceOptions,
        factory: Option<Factory>,
        nested: Option<Arc<Shared>>,
    ) -> Result<(ServiceId, bool, AbortRef), ServiceError> {
        let now = self.clock.now();
        let ordered = options.dependencies().next().is_some();
        let mut core = lock(&self.core);
        let id = core.machine.add_service_with(now, name, options)?;
        // Under the same lock that assigned the id, so indices line up.
        let abort = core.aborts.push();
        if factory.is_some() && !ordered {
            // Made by `start_run`, outside this lock: counted when made.
            core.machine.first_run_pending(id);
        }
        core.factories.push(factory);
        if let Some(nested) = nested {
            core.nested.push((id, nested));
        }
        // Usually nothing for the driver (no dependency became startable): as in `apply`.
        if core.machine.has_work() {
            let mut effects = Effects::default();
            self.settle(&mut core, now, &mut effects);
            drop(core);
            self.carry_out(effects);
        }
        Ok((id, !ordered, abort))
    }

    /// The run `attempt` of service `id` declared itself ready. Returns whether that changed
    /// anything (a stale signal of an earlier run changes nothing).
    pub(crate) fn ready(self: &Arc<Self>, id: ServiceId, attempt: u32) -> bool {
        let now = self.clock.now();
        let mut effects = Effects::default();
        let ready = {
            let mut core = lock(&self.core);
            let ready = core.machine.run_ready(now, id, attempt);
            // Declared from inside its factory: the event comes when the run is made.
            let made = core.machine.service_restarts(id).0 == attempt;
            if ready && made && event::wanted(self.events.as_ref()) {
                effects.ready = Some((core.machine.service_name(id).to_owned(), attempt));
            }
            self.settle(&mut core, now, &mut effects);
            ready
        };
        self.carry_out(effects);
        ready
    }

    /// The stop signal of a service that had a dependent running at the stop; `None` for
    /// the others (and before the stop).
    pub(crate) fn held(&self, id: ServiceId) -> Option<&Broadcast> {
        self.held.get()?.get(id.0)?.as_ref()
    }

    /// The instant a service's stop must be over (its budget's end, else the deadline).
    pub(crate) fn service_deadline(&self, id: ServiceId) -> Option<Instant> {
        lock(&self.core).machine.service_deadline(id)
    }

    /// Ends this (nested) lifecycle now, for a parent that gave up on it: at its deadline
    /// if that has come (it is abandoned as its own deadline says), else by forcing it.
    pub(crate) fn end_nested(self: &Arc<Self>) {
        self.apply(end_now);
    }

    /// Makes and starts a restartable service's run (its first, or a restart) with its
    /// factory, called outside every lock. A run is made only while the lifecycle runs:
    /// checked before the factory is called and again after (a stop on another thread may
    /// come in between: the run made then is dropped unpolled). A run not made is cancelled
    /// in the machine, which ends the service as its last run did.
    pub(crate) fn start_run(self: &Arc<Self>, id: ServiceId) {
        let (factory, attempt) = {
            let mut core = lock(&self.core);
            let attempt = core.machine.service_restarts(id).0.saturating_add(1);
            if core.machine.state() == State::Running {
                (core.factories[id.0].take(), attempt)
            } else {
                (None, attempt)
            }
        };
        let Some(mut factory) = factory else {
            self.apply(|m, now| m.cancel_start(now, id));
            return;
        };
        let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            factory(StopSignal::for_service(self.clone(), id, attempt))
        }));
        let now = self.clock.now();
        enum Made {
            /// With the service's abort slot, armed for it.
            Run(crate::service::Body, AbortRef),
            /// Made while a stop came: dropped unpolled, outside the lock.
            Late(crate::service::Body),
            Panicked,
        }
        let mut effects = Effects::default();
        let made = {
            let mut core = lock(&self.core);
            core.factories[id.0] = Some(factory);
            // Counted as an attempt under the same lock that saw it may run.
            let made = match made {
                Ok(body) if core.machine.state() == State::Running => {
                    if core.machine.run_made(now, id) && event::wanted(self.events.as_ref()) {
                        let name = core.machine.service_name(id).to_owned();
                        effects.ready = Some((name, attempt));
                    }
                    // Under the lock that saw it may run: no abort is decided while running.
                    Made::Run(body, core.aborts.arm(id))
                }
                Ok(body) => Made::Late(body),
                // The factory itself panicked: that run ended by a panic (maybe restarted),
                // and was never ready.
                Err(payload) => {
                    let exit = Exit::Panic(panic_text(&*payload));
                    core.machine.run_failed(now, id, exit);
                    Made::Panicked
                }
            };
            self.settle(&mut core, now, &mut effects);
            made
        };
        match made {
            Made::Run(body, abort) => {
                self.started(id);
                self.run_service(ServiceTask::new(self.clone(), id, body, abort));
                // After it: the dependents its readiness started, if any.
                self.carry_out(effects);
            }
            Made::Late(body) => {
                self.carry_out(effects);
                quietly(|| drop(body));
                self.apply(|m, now| m.cancel_start(now, id));
            }
            Made::Panicked => self.carry_out(effects),
        }
    }

    /// Whether tasks are held in the queue rather than spawned or driven (a nested lifecycle
    /// whose service has not run yet, or never will).
    pub(crate) fn gated(&self) -> bool {
        self.gate.load(Ordering::Acquire) != OPEN
    }

    /// Holds this (nested) lifecycle's tasks in its queue until [`open_gate`](Self::open_gate).
    pub(crate) fn close_gate(&self) {
        self.gate.store(CLOSED, Ordering::Release);
    }

    /// For its parent's stop: if this (nested) lifecycle's service never started its run,
    /// its gate stays shut for good and `true` is returned (again at later calls) — nothing
    /// of it ever ran, nor will. One atomic step, so a run starting at that moment either opened the gate first
    /// (then `false`) or finds it cancelled and runs nothing.
    pub(crate) fn cancel_gate(&self) -> bool {
        match self
            .gate
            .compare_exchange(CLOSED, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) | Err(CANCELLED) => true,
            Err(_) => false,
        }
    }

    /// Its service runs: hands the tasks queued so far to the spawner, if there is one (a
    /// task queued in a race with this is driven by the `wait()` inside the service's run).
    /// Nothing if the gate was cancelled.
    pub(crate) fn open_gate(self: &Arc<Self>) {
        if self
            .gate
            .compare_exchange(CLOSED, OPEN, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        // What was added while the gate was shut starts now: its start timeouts too.
        self.apply(Machine::resume_starts);
        let Some(spawn) = &self.spawner else {
            // The `wait()`s hold off while the gate is closed: they may take the tasks now.
            self.queue.wake_drivers();
            return;
        };
        {
            let mut key = None;
            let mut cx = std::task::Context::from_waker(futures_util::task::noop_waker_ref());
            let tasks = self.queue.take(&mut key, &mut cx);
            self.queue.cancel(&mut key);
            for task in tasks {
                match task {
                    Task::Service(task) => spawn.spawn_boxed(task),
                    task @ Task::Trigger(_) => spawn.spawn(task),
                }
            }
        }
    }

    /// Starts the runs of `ids`, and of whatever their readiness starts, as a work list on
    /// this thread: a run made ready at once starts its dependents, whose runs start theirs;
    /// done by recursion, a long chain would overflow the stack.
    fn start_runs(self: &Arc<Self>, ids: Vec<ServiceId>) {
        type Pending = std::collections::VecDeque<(Arc<Shared>, ServiceId)>;
        thread_local! {
            static PENDING: std::cell::RefCell<Option<Pending>> =
                const { std::cell::RefCell::new(None) };
        }
        if ids.is_empty() {
            return;
        }
        let outermost = PENDING.with(|pending| {
            let mut pending = pending.borrow_mut();
            let outermost = pending.is_none();
            pending
                .get_or_insert_with(Pending::new)
                .extend(ids.into_iter().map(|id| (self.clone(), id)));
            outermost
        });
        if !outermost {
            // The loop below, further up this thread's stack, starts them.
            return;
        }
        /// Clears the work list however the loop ends (a panic from a spawner included).
        struct Reset;
        impl Drop for Reset {
            fn drop(&mut self) {
                PENDING.with(|pending| pending.borrow_mut().take());
            }
        }
        let _reset = Reset;
        loop {
            let next = PENDING.with(|pending| {
                let mut pending = pending.borrow_mut();
                let list = pending.as_mut()?;
                list.pop_front()
            });
            let Some((shared, id)) = next else {
                break;
            };
            shared.start_run(id);
        }
    }

    /// Whether a stop was requested: draining or ended, or in its pre-drain.
    #[cfg_attr(not(all(feature = "systemd", unix)), allow(dead_code))]
    pub(crate) fn stop_requested(&self) -> bool {
        self.stop.is_fired() || lock(&self.core).machine.stop_pending().is_some()
    }

    /// Whether requested stops have a pre-drain.
    #[cfg_attr(not(all(feature = "systemd", unix)), allow(dead_code))]
    pub(crate) fn has_pre_drain(&self) -> bool {
        lock(&self.core).machine.has_pre_drain()
    }

    /// The grace this lifecycle allows.
    pub(crate) fn grace(&self) -> std::time::Duration {
        lock(&self.core).machine.grace()
    }

    pub(crate) fn state(&self) -> State {
        lock(&self.core).machine.state()
    }

    pub(crate) fn cause(&self) -> Option<&StopCause> {
        self.cause.get()
    }

    pub(crate) fn report(&self) -> Option<Report> {
        self.report.get().cloned()
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        lock(&self.core).machine.poll_timeout()
    }

    /// The lifecycle's deadline once a stop was requested; see [`Machine::deadline`].
    #[allow(dead_code, reason = "used by the `systemd` feature")]
    pub(crate) fn stop_deadline(&self) -> Option<Instant> {
        lock(&self.core).machine.deadline()
    }

    /// Forwards the first poll of the first `Wait` (the machine asks "anything to run?" once).
    pub(crate) fn wait_started(self: &Arc<Self>) {
        // Relaxed: only this flag's own value matters, and `swap` is atomic on it. The load
        // first keeps every later poll free of a read-modify-write.
        if !self.wait_seen.load(Ordering::Relaxed) && !self.wait_seen.swap(true, Ordering::Relaxed)
        {
            self.apply(Machine::handle_wait_started);
        }
    }

    pub(crate) fn timeout(self: &Arc<Self>) {
        self.apply(Machine::handle_timeout);
    }

    pub(crate) fn service_exited(self: &Arc<Self>, id: ServiceId, exit: Exit) {
        self.apply(|m, now| m.service_exited(now, id, exit));
    }

    /// Called by whoever saw the last session end after admission closed: forwards a census.
    ///
    /// When that ends the lifecycle with nothing else to do (its services had all ended, no
    /// nested lifecycle to join: the usual last session), the report is published straight
    /// away, without the general settle and its effects (issue 12: this is the drain's
    /// completion path).
    #[cold]
    pub(crate) fn sessions_drained(self: &Arc<Self>) {
        let now = self.clock.now();
        let mut core = lock(&self.core);
        let census = self
            .sessions
            .census(now, core.machine.census_needs_names(now));
        core.machine.handle_census(now, census);
        if core.nested.is_empty() {
            if let Some(report) = core.machine.take_lone_finish() {
                drop(core);
                self.finish(report, None);
                return;
            }
        }
        let mut effects = Effects::default();
        self.settle(&mut core, now, &mut effects);
        drop(core);
        self.carry_out(effects);
    }

    /// The live view; see [`Lifecycle::snapshot`](crate::Lifecycle::snapshot).
    pub(crate) fn snapshot(&self, oldest: usize) -> Snapshot {
        let now = self.clock.now();
        let (state, services) = {
            let core = lock(&self.core);
            let m = &core.machine;
            let services = (0..m.services())
                .map(|index| {
                    let id = ServiceId(index);
                    let (started, ended) = m.service_status(id);
                    let until = ended.map_or(now, |(at, _)| *at);
                    let (attempts, due) = m.service_restarts(id);
                    ServiceSnapshot::new(
                        m.service_name(id).to_owned(),
                        ended.map(|(_, outcome)| outcome.clone()),
                        until.saturating_duration_since(started),
                        attempts.saturating_sub(1),
                        due.map(|due| due.saturating_duration_since(now)),
                        m.service_readiness(id),
                    )
                })
                .collect();
            let pending = m.stop_pending().cloned();
            (m.state(), (services, pending))
        };
        let (services, pending) = services;
        let counts = self.sessions.counts(now, oldest);
        // In a pre-drain, the requested stop's cause (the stop signals have not fired yet).
        let cause = self.cause().cloned().or(pending.clone());
        Snapshot::new(state, cause, counts, services, pending.is_some())
    }

    fn settle(&self, core: &mut Core, now: Instant, effects: &mut Effects) {
        self.settle_actions(core, now, effects);
        effects.rescheduled |= core.machine.take_rescheduled();
    }

    fn settle_actions(&self, core: &mut Core, now: Instant, effects: &mut Effects) {
        while let Some(action) = core.machine.poll() {
            match action {
                Action::Drain => {
                    if let Some(cause) = core.machine.cause() {
                        // Before `stop` fires, so a fired stop signal always has its cause.
                        let _ = self.cause.set(cause.clone());
                    }
                    // Before `stop` fires too: a service's signal looks here once it fired.
                    let mut held: Vec<Option<Broadcast>> = Vec::new();
                    for id in core.machine.held() {
                        held.resize_with(id.0 + 1, || None);
                        held[id.0] = Some(Broadcast::new());
                    }
                    let _ = self.held.set(held);
                    // A nested lifecycle whose service was never run: nothing of it ran.
                    for (_, nested) in &core.nested {
                        if nested.cancel_gate() {
                            effects.unstarted.push(nested.clone());
                        }
                    }
                    // Admission closes before anything else of the stop is visible. Whether
                    // that drained it is the machine's question: the census that follows.
                    self.sessions.close();
                    self.sessions.mark_stopped(core.machine.cause());
                    effects.fire_stop = true;
                }
                Action::Census => {
                    let names = core.machine.census_needs_names(now);
                    let census = self.sessions.census(now, names);
                    core.machine.handle_census(now, census);
                }
                Action::Complain { .. } => effects.complaints.push(action),
                Action::Restarting { .. } => effects.complaints.push(action),
                Action::Start { service } => effects.starts.push(service),
                Action::Release { service } => {
                    // The name only for someone listening for the event.
                    let name = event::wanted(self.events.as_ref())
                        .then(|| core.machine.service_name(service).to_owned());
                    effects.releases.push((service, name));
                }
                Action::GiveUp { service } => {
                    let nested = core
                        .nested
                        .iter()
                        .find(|(id, _)| *id == service)
                        .map(|(_, nested)| nested.clone());
                    effects.give_ups.push((core.aborts.get(service), nested));
                }
                Action::SlowToStop { .. } => effects.complaints.push(action),
                Action::Abandon => effects.aborts = Some(core.aborts.clone()),
                Action::Finish => {
                    self.join_nested(core, effects);
                    effects.finished = core.machine.report().cloned();
                }
            }
        }
    }

    /// At this lifecycle's end, ends every nested one still running (each under its own
    /// lock: parent → child is the lock order; their effects are carried out after ours)
    /// and attaches their reports to this one's, so every straggler is named at every depth.
    fn join_nested(&self, core: &mut Core, effects: &mut Effects) {
        for (id, nested) in &core.nested {
            let mut child = lock(&nested.core);
            if !child.machine.state().is_terminal() {
                let now = nested.clock.now();
                let mut child_effects = Effects::default();
                if nested.cancel_gate() {
                    child.machine.cancel_unstarted(now);
                    nested.settle(&mut child, now, &mut child_effects);
                }
                if !child.machine.state().is_terminal() {
                    end_now(&mut child.machine, now);
                    nested.settle(&mut child, now, &mut child_effects);
                }
                effects.nested.push((nested.clone(), child_effects));
            }
            if let Some(report) = child.machine.report() {
                core.machine.attach_nested(*id, report.clone());
            }
        }
    }

    /// Carries out what a settle decided, outside `core`; see the module docs for the order.
    fn carry_out(self: &Arc<Self>, effects: Effects) {
        let hook = self.events.as_ref();
        if let Some((name, attempt)) = &effects.ready {
            event::emit(
                hook,
                Event::Ready {
                    service: name,
                    attempt: *attempt,
                },
            );
        }
        if effects.fire_stop {
            self.stop.fire();
        }
        for nested in effects.unstarted {
            nested.apply(Machine::cancel_unstarted);
        }
        for (abort, nested) in effects.give_ups {
            // Its waker under `catch_unwind`, in `abort`.
            abort.abort();
            if let Some(nested) = nested {
                nested.end_nested();
            }
        }
        for (nested, nested_effects) in effects.nested {
            nested.carry_out(nested_effects);
        }
        for action in &effects.complaints {
            match action {
                Action::Complain { name, outcome, .. } => {
                    complain::service(name, outcome);
                    let event = if *outcome == ServiceOutcome::Abandoned {
                        Event::Abandoned { service: name }
                    } else {
                        Event::Failed {
                            service: name,
                            outcome,
                        }
                    };
                    event::emit(hook, event);
                }
                Action::Restarting {
                    name,
                    outcome,
                    attempt,
                    after,
                    ..
                } => {
                    // An early `Ok` under `Restart::Always` is a periodic job's normal end,
                    // not a failure: restarted quietly.
                    if *outcome != ServiceOutcome::EndedEarly {
                        complain::restarting(name, outcome, *attempt, *after);
                        event::emit(
                            hook,
                            Event::Failed {
                                service: name,
                                outcome,
                            },
                        );
                    }
                    // Announced only while it will still happen: a stop since (a hook, another
                    // thread) cancelled it.
                    if !self.stop.is_fired() {
                        event::emit(
                            hook,
                            Event::Restarting {
                                service: name,
                                attempt: *attempt,
                                after: *after,
                            },
                        );
                    }
                }
                Action::SlowToStop { name, elapsed, .. } => {
                    complain::slow_to_stop(name, *elapsed);
                    event::emit(
                        hook,
                        Event::SlowToStop {
                            service: name,
                            elapsed: *elapsed,
                        },
                    );
                }
                _ => {}
            }
        }
        // After the failure that caused it, if one did.
        if effects.fire_stop {
            if let Some(cause) = self.cause() {
                event::emit(hook, Event::StopRequested { cause });
            }
        }
        // After the exits and give-ups that released them.
        for (id, name) in &effects.releases {
            if let Some(signal) = self.held(*id) {
                signal.fire();
            }
            if let Some(name) = name {
                event::emit(hook, Event::Stopping { service: name });
            }
        }
        self.start_runs(effects.starts);
        if effects.rescheduled {
            // A `Wait` arms its timer for the earliest due restart: wake it to look again.
            self.queue.wake_drivers();
        }
        if let Some(report) = effects.finished {
            self.finish(report, effects.aborts);
        }
    }

    /// Publishes the report of the machine's end, outside `core`: complains about the
    /// sessions, aborts every run if the lifecycle was abandoned, fires what still waits,
    /// and drops the services no driver picked up.
    fn finish(&self, report: Report, aborts: Option<AbortSlots>) {
        let hook = self.events.as_ref();
        complain::sessions(report.sessions());
        if let Some(aborts) = aborts {
            // Each waker under `catch_unwind`, in `abort_all`.
            aborts.abort_all();
        }
        // A service still held at the end (forced, the deadline) was never released: its
        // signal fires now, so no clone of it waits forever.
        if let Some(held) = self.held.get() {
            for signal in held.iter().flatten() {
                signal.fire();
            }
        }
        let (state, exit_code) = (report.state(), report.exit_code());
        // Before `finished` fires: a waiter that sees it fired reads the report.
        let _ = self.report.set(report);
        self.finished.fire();
        // After `finished`: a hook that blocks cannot keep a waiter from its report.
        event::emit(hook, Event::Ended { state, exit_code });
        // Services never picked up by a driver will never run now. Each reports itself
        // (ignored by an ended machine) and is dropped on its own, so one whose drop panics
        // does not keep the others alive.
        self.drop_queued_services();
    }

    /// Closes the queue of tasks waiting for a driver and drops what is in it, each under
    /// `catch_unwind`. This also breaks the cycle queue → task → shared. Must not be called
    /// with `core` held.
    pub(crate) fn drop_queued_services(&self) {
        let queued = self.queue.close();
        if queued.is_empty() {
            return;
        }
        for task in queued {
            quietly(|| drop(task));
        }
    }
}
