//! The single-thread executor of one simulated run: its tasks, its inbox of woken tasks, its
//! clock, and the loop that asks the scheduler which ready task runs next.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use async_task::Runnable;

use super::choice::Source;
use super::env::PendingFault;
use super::reach;
use super::report::{Deadlock, FailureKind, Trace};
use super::sched::{Picker, Ready};
use super::{FOREIGN_WAKE_WAIT, Outcome, Token};
use crate::{Clock, Lifecycle, ManualClock};

/// A task's number in its run, in spawn order: the environment is 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct TaskId(pub(crate) usize);

pub(crate) const ENVIRONMENT: TaskId = TaskId(0);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Ready for Runnable<TaskId> {
    fn task(&self) -> TaskId {
        *self.metadata()
    }
}

/// Where wakers put the tasks they wake, from any thread.
#[derive(Default)]
struct Inbox {
    woken: Vec<Runnable<TaskId>>,
    /// The first wake or spawn that came from another thread: out of reach.
    foreign: Option<Foreign>,
}

/// The inbox, and the condition a run that looks deadlocked waits on for a wake from another
/// thread.
#[derive(Default)]
struct Mailbox {
    inbox: Mutex<Inbox>,
    foreign: Condvar,
}

impl Mailbox {
    fn inbox(&self) -> MutexGuard<'_, Inbox> {
        lock(&self.inbox)
    }

    /// Records the first thing that came from another thread, and wakes a run waiting for it.
    fn foreign(&self, inbox: &mut Inbox, foreign: impl FnOnce() -> Foreign) {
        if inbox.foreign.is_none() {
            inbox.foreign = Some(foreign());
            self.foreign.notify_all();
        }
    }
}

/// Something that came from another thread than the run's.
enum Foreign {
    Woken { task: TaskId, thread: String },
    Spawned { name: String, thread: String },
}

/// Panics raised while a task's future was being dropped, by task.
type DropPanics = Arc<Mutex<Vec<(TaskId, String)>>>;

/// What the executor runs for each task: the task's future, dropped by the wrapper itself
/// under `catch_unwind`, and polled with a waker that notices a wake from another thread.
///
/// async-task drops a future it no longer polls (a cancelled task at the run's end, a
/// runnable never run) inside `abort_on_panic`, so a future that panics in its `Drop` (a
/// guard asserting that its job finished) would abort the whole process; here the panic is
/// caught and recorded, and the run reports it. And async-task folds a wake that lands while
/// its task is being polled into a reschedule on the polling thread, so the schedule
/// function cannot tell it came from elsewhere (another executor finishing a task the
/// scenario is awaiting); the watched waker can.
struct Guarded<F> {
    future: Option<Pin<Box<F>>>,
    task: TaskId,
    panics: DropPanics,
    /// Where a foreign wake is recorded: the run and its mailbox.
    run: u64,
    mailbox: Arc<Mailbox>,
    /// The task's own waker and the watched one around it (async-task's waker for a task is
    /// the same at every poll: made once).
    watched: Option<(Waker, Waker)>,
}

/// A task's waker that records a wake from another thread than the run's as out of reach,
/// then wakes the task.
struct Watched {
    inner: Waker,
    run: u64,
    task: TaskId,
    mailbox: Arc<Mailbox>,
}

impl Watched {
    fn check(&self) {
        if reach::current_run() != self.run {
            let mut inbox = self.mailbox.inbox();
            self.mailbox.foreign(&mut inbox, || Foreign::Woken {
                task: self.task,
                thread: thread_name(),
            });
        }
    }
}

impl Wake for Watched {
    fn wake(self: Arc<Self>) {
        self.check();
        self.inner.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.check();
        self.inner.wake_by_ref();
    }
}

impl<F: Future<Output = ()>> Future for Guarded<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let Some(future) = this.future.as_mut() else {
            return Poll::Ready(());
        };
        if !matches!(&this.watched, Some((inner, _)) if inner.will_wake(cx.waker())) {
            let watched = Waker::from(Arc::new(Watched {
                inner: cx.waker().clone(),
                run: this.run,
                task: this.task,
                mailbox: Arc::clone(&this.mailbox),
            }));
            this.watched = Some((cx.waker().clone(), watched));
        }
        let waker = this.watched.as_ref().map(|(_, watched)| watched);
        let mut watched_cx = Context::from_waker(waker.unwrap_or(cx.waker()));
        if future.as_mut().poll(&mut watched_cx).is_pending() {
            return Poll::Pending;
        }
        // Dropped inside the poll: a panic in a drop at the end is the task's own panic.
        this.future = None;
        Poll::Ready(())
    }
}

impl<F> Drop for Guarded<F> {
    fn drop(&mut self) {
        let Some(future) = self.future.take() else {
            return;
        };
        if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(future))) {
            let mut message = crate::service::panic_text(&*payload);
            if let Some((_, location)) = reach::take_panic().filter(|(_, l)| !l.is_empty()) {
                message = format!("{message} (at {location})");
            }
            lock(&self.panics).push((self.task, message));
        }
    }
}

/// One run: shared by its tasks (through `Env`), its lifecycles' spawners (weakly) and the
/// loop that drives it.
pub(crate) struct Core {
    pub(crate) id: u64,
    mailbox: Arc<Mailbox>,
    pub(crate) state: Mutex<State>,
    pub(crate) clock: ManualClock,
    pub(crate) start: Instant,
    /// The scenario's output, once it returned.
    output: Mutex<Option<Outcome>>,
    /// Set when the run ended (before its cleanup): nothing more is spawned on it, and an
    /// `Env` of it used in a later run is refused.
    ended: AtomicBool,
    /// Panics raised by futures being dropped (at the run's end, mostly).
    drop_panics: DropPanics,
}

/// Everything the run's tasks and the loop share on the run's thread.
pub(crate) struct State {
    pub(crate) source: Source,
    picker: Picker,
    tasks: Vec<TaskEntry>,
    pub(crate) trace: Trace,
    /// Tasks waiting for the moment nothing else can run (the environment, parked).
    pub(crate) idle: Vec<Waker>,
    /// How many times the idle waiters were woken.
    pub(crate) idle_rounds: u64,
    /// Steps taken so far.
    pub(crate) steps: u64,
    /// A task to wake once `steps` reaches a count (the environment, waiting to fire).
    pub(crate) alarm: Option<(u64, Waker)>,
    /// The lifecycles the environment targets and the deadlock report names.
    pub(crate) lifecycles: Vec<Lifecycle>,
    /// Lifecycles only reported (a deadlock names them, the trace ends with their
    /// snapshots), not targeted by faults: nested ones (`Env::nest`).
    pub(crate) reported: Vec<Lifecycle>,
    /// The environment's faults, in the order they fire.
    pub(crate) faults: VecDeque<PendingFault>,
    pub(crate) env_waker: Option<Waker>,
    /// Signals fired so far (the second forces).
    pub(crate) signals: u32,
    /// Services wrapped by `Env::panicky`: name, armed, the last waker.
    pub(crate) panics: Vec<(String, bool, Option<Waker>)>,
    pub(crate) faults_fired: u64,
    pub(crate) jumps: u64,
}

struct TaskEntry {
    name: String,
    handle: Option<async_task::Task<(), TaskId>>,
}

impl Core {
    pub(crate) fn new(id: u64, token: &Token) -> Arc<Core> {
        let mut source = token.choices.source();
        let picker = Picker::new(token.plan, &mut source);
        let clock = ManualClock::new();
        Arc::new(Core {
            id,
            mailbox: Arc::default(),
            state: Mutex::new(State {
                source,
                picker,
                tasks: Vec::new(),
                trace: Trace::new(),
                idle: Vec::new(),
                idle_rounds: 0,
                steps: 0,
                alarm: None,
                lifecycles: Vec::new(),
                reported: Vec::new(),
                faults: VecDeque::new(),
                env_waker: None,
                signals: 0,
                panics: Vec::new(),
                faults_fired: 0,
                jumps: 0,
            }),
            start: clock.now(),
            clock,
            output: Mutex::new(None),
            ended: AtomicBool::new(false),
            drop_panics: Arc::default(),
        })
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Simulated time since the run began.
    pub(crate) fn elapsed(&self) -> Duration {
        self.clock.now() - self.start
    }

    /// Whether the calling thread is the one driving this run.
    fn on_run_thread(&self) -> bool {
        reach::current_run() == self.id
    }

    /// Whether the run has ended (its cleanup begun, or done).
    pub(crate) fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Marks the run ended: from now on spawns are dropped, and its `Env` is stale for any
    /// other run.
    pub(crate) fn end(&self) {
        self.ended.store(true, Ordering::Release);
    }

    /// Refuses the use of a handle on this run (`what`) once it has ended, unless by its own
    /// cleanup: in a later run that run fails as out of reach, outside any run it panics.
    pub(crate) fn check_live(&self, what: &str) {
        if self.is_ended() && !self.on_run_thread() {
            reach::stale(what);
        }
    }

    /// Spawns `future` as a task of this run, scheduled at once; `None` from another thread
    /// (out of reach: recorded, and the future dropped) or once the run has ended (dropped).
    pub(crate) fn spawn<F>(&self, name: String, future: F) -> Option<TaskId>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if !self.on_run_thread() {
            if !self.is_ended() {
                let mut inbox = self.mailbox.inbox();
                self.mailbox.foreign(&mut inbox, || Foreign::Spawned {
                    name,
                    thread: thread_name(),
                });
            }
            // Not run: dropped here, on the thread that made it.
            return None;
        }
        if self.is_ended() {
            // Spawned by a drop during the run's own cleanup: nothing runs any more.
            return None;
        }
        let mut state = self.state();
        let id = TaskId(state.tasks.len());
        let mailbox = Arc::clone(&self.mailbox);
        let run = self.id;
        let schedule = move |runnable: Runnable<TaskId>| {
            let foreign = reach::current_run() != run;
            let mut inbox = mailbox.inbox();
            if foreign {
                let task = *runnable.metadata();
                mailbox.foreign(&mut inbox, || Foreign::Woken {
                    task,
                    thread: thread_name(),
                });
            }
            inbox.woken.push(runnable);
        };
        let future = Guarded {
            future: Some(Box::pin(future)),
            task: id,
            panics: Arc::clone(&self.drop_panics),
            run: self.id,
            mailbox: Arc::clone(&self.mailbox),
            watched: None,
        };
        let (runnable, handle) = async_task::Builder::new()
            .metadata(id)
            .spawn(move |_| future, schedule);
        state.tasks.push(TaskEntry {
            name,
            handle: Some(handle),
        });
        let State { picker, source, .. } = &mut *state;
        picker.spawned(id, source);
        drop(state);
        runnable.schedule();
        Some(id)
    }

    /// A task's name for reports: `name #id`.
    fn task_name(&self, id: TaskId) -> String {
        let state = self.state();
        match state.tasks.get(id.0) {
            Some(task) => format!("{} #{}", task.name, id.0),
            None => format!("#{}", id.0),
        }
    }

    pub(crate) fn set_output(&self, output: Outcome) {
        *lock(&self.output) = Some(output);
    }

    /// Runs until the scenario (task `scenario`) returns or the run fails.
    pub(crate) fn drive(self: &Arc<Self>, scenario: TaskId, max_steps: u64) -> Drive {
        let mut ready: Vec<Runnable<TaskId>> = Vec::new();
        let mut steps = 0;
        let result = loop {
            {
                let mut inbox = self.mailbox.inbox();
                if let Some(foreign) = inbox.foreign.take() {
                    drop(inbox);
                    break Err(FailureKind::OutOfReach(self.foreign_message(foreign)));
                }
                ready.append(&mut inbox.woken);
            }
            if let Some(message) = reach::take_violation() {
                break Err(FailureKind::OutOfReach(message));
            }
            if let Some(output) = lock(&self.output).take() {
                break Ok(output);
            }
            if ready.is_empty() {
                let idle = {
                    let mut state = self.state();
                    if !state.idle.is_empty() {
                        state.idle_rounds += 1;
                    }
                    std::mem::take(&mut state.idle)
                };
                if !idle.is_empty() {
                    idle.into_iter().for_each(Waker::wake);
                    continue;
                }
                if let Some(deadline) = self.clock.next_deadline() {
                    let mut state = self.state();
                    state.jumps += 1;
                    let at = deadline.saturating_duration_since(self.start);
                    state.trace.jump(at);
                    drop(state);
                    self.clock.advance_to(deadline);
                    continue;
                }
                // Nothing in the simulation can move. A real timer, a real socket or
                // another executor may still wake a task from another thread: give it a
                // moment (real time, spent only on a run that is failing anyway).
                if let Some(foreign) = self.await_foreign() {
                    break Err(FailureKind::OutOfReach(self.foreign_message(foreign)));
                }
                break Err(FailureKind::Deadlock(self.deadlock()));
            }
            if steps >= max_steps {
                break Err(FailureKind::StepLimit { steps });
            }
            steps += 1;
            let (pick, alarm) = {
                let mut state = self.state();
                let State {
                    picker,
                    source,
                    trace,
                    ..
                } = &mut *state;
                let pick = picker.pick(&ready, steps, source);
                trace.step(ready[pick].task());
                state.steps = steps;
                let due = state.alarm.as_ref().is_some_and(|(at, _)| *at <= steps);
                (pick, if due { state.alarm.take() } else { None })
            };
            if let Some((_, waker)) = alarm {
                // Ready from the next step on, among the others.
                waker.wake();
            }
            let runnable = ready.swap_remove(pick);
            let id = runnable.task();
            match catch_unwind(AssertUnwindSafe(|| runnable.run())) {
                // `true`: it woke itself while it ran, it yielded.
                Ok(yielded) => self.state().picker.ran(id, yielded),
                Err(payload) => {
                    let culprit = if id == scenario {
                        Culprit::Scenario
                    } else {
                        Culprit::Task(id)
                    };
                    break Err(self.classify(culprit, &*payload));
                }
            }
        };
        // Not run again: dropped with the rest at the cleanup.
        self.mailbox.inbox().woken.append(&mut ready);
        Drive { result, steps }
    }

    /// Waits, up to [`FOREIGN_WAKE_WAIT`] of real time, for a wake or spawn from another
    /// thread.
    fn await_foreign(&self) -> Option<Foreign> {
        let inbox = self.mailbox.inbox();
        let (mut inbox, _) = self
            .mailbox
            .foreign
            .wait_timeout_while(inbox, FOREIGN_WAKE_WAIT, |inbox| inbox.foreign.is_none())
            .unwrap_or_else(|e| e.into_inner());
        inbox.foreign.take()
    }

    /// What a wake or spawn from another thread is, for the out-of-reach report.
    fn foreign_message(&self, foreign: Foreign) -> String {
        match foreign {
            Foreign::Woken { task, thread } => format!(
                "task `{}` was woken from another thread ({thread}): a real timer, a real \
                 socket or another executor inside a simulated run. Sleep on the simulated \
                 clock (`Env::sleep`, or the lifecycle's clock), connect simulated tasks with \
                 channels, and spawn with `Env::spawn`",
                self.task_name(task)
            ),
            Foreign::Spawned { name, thread } => format!(
                "task `{name}` was spawned from another thread ({thread}): a spawn from \
                 another executor or a real thread inside a simulated run"
            ),
        }
    }

    /// What a panic that escaped `culprit` means.
    pub(crate) fn classify(
        &self,
        culprit: Culprit,
        payload: &(dyn std::any::Any + Send),
    ) -> FailureKind {
        if let Some(message) = reach::take_violation() {
            return FailureKind::OutOfReach(message);
        }
        let message = crate::service::panic_text(payload);
        let location = reach::take_panic()
            .map(|(_, location)| location)
            .filter(|l| !l.is_empty());
        if let Some(kind) = tokio_out_of_reach(&message) {
            return kind;
        }
        let message = match location {
            Some(location) => format!("{message} (at {location})"),
            None => message,
        };
        match culprit {
            Culprit::Closure => FailureKind::Check(format!(
                "the scenario panicked before its first await: {message}"
            )),
            Culprit::Scenario => FailureKind::Check(format!("the scenario panicked: {message}")),
            Culprit::Task(id) => FailureKind::Panic {
                task: self.task_name(id),
                message,
            },
        }
    }

    /// Nothing can run, no timer is set, and the scenario has not returned.
    fn deadlock(&self) -> Deadlock {
        let (lifecycles, waiting) = {
            let state = self.state();
            let waiting: Vec<String> = state
                .tasks
                .iter()
                .enumerate()
                .filter(|(i, task)| {
                    *i != ENVIRONMENT.0 && task.handle.as_ref().is_some_and(|h| !h.is_finished())
                })
                .map(|(i, task)| format!("{} #{i}", task.name))
                .collect();
            let lifecycles: Vec<Lifecycle> = state
                .lifecycles
                .iter()
                .chain(&state.reported)
                .cloned()
                .collect();
            (lifecycles, waiting)
        };
        let mut services = Vec::new();
        let mut sessions = Vec::new();
        let mut more_sessions = 0;
        for lc in &lifecycles {
            let snapshot = lc.snapshot();
            services.extend(
                snapshot
                    .services()
                    .iter()
                    .filter(|s| s.is_running())
                    .map(|s| (s.name().to_owned(), s.uptime())),
            );
            let named = snapshot.oldest_sessions();
            sessions.extend(named.iter().map(|s| (s.name().to_owned(), s.age())));
            more_sessions += snapshot.live_sessions().saturating_sub(named.len() as u64);
        }
        Deadlock {
            elapsed: self.elapsed(),
            tasks: waiting,
            services,
            sessions,
            more_sessions,
        }
    }

    /// The snapshots of the watched and reported lifecycles, for the trace's end.
    pub(crate) fn final_snapshots(&self) -> Vec<String> {
        let lifecycles: Vec<Lifecycle> = {
            let state = self.state();
            state
                .lifecycles
                .iter()
                .chain(&state.reported)
                .cloned()
                .collect()
        };
        lifecycles
            .iter()
            .map(|lc| lc.snapshot().to_string())
            .collect()
    }

    /// Cancels every task and drops every future, so nothing of the run outlives it (its
    /// lifecycles, which the environment holds, included). Called on the run's thread, after
    /// [`end`](Self::end). Returns the panics raised by futures as they were dropped: the
    /// task's name and the panic's message.
    pub(crate) fn cleanup(&self) -> Vec<(String, String)> {
        let (handles, lifecycles, faults, idle, env_waker, panics, alarm) = {
            let mut state = self.state();
            let handles: Vec<_> = state
                .tasks
                .iter_mut()
                .filter_map(|t| t.handle.take())
                .collect();
            let mut lifecycles = std::mem::take(&mut state.lifecycles);
            lifecycles.append(&mut state.reported);
            (
                handles,
                lifecycles,
                std::mem::take(&mut state.faults),
                std::mem::take(&mut state.idle),
                state.env_waker.take(),
                std::mem::take(&mut state.panics),
                state.alarm.take(),
            )
        };
        // Each of these may run arbitrary drop code (a service's, a session's): outside the
        // lock, and a panic in one does not keep the others from being dropped. (A task's
        // future is dropped by its `Guarded` wrapper, which catches and records a panic.)
        let quietly = |f: &mut dyn FnMut()| {
            let _ = catch_unwind(AssertUnwindSafe(f));
        };
        for handle in handles {
            // Cancelling an idle task schedules it, so its future is dropped below.
            let mut handle = Some(handle);
            quietly(&mut || drop(handle.take()));
        }
        let mut rest = Some((faults, idle, env_waker, panics, alarm));
        quietly(&mut || drop(rest.take()));
        loop {
            let woken = std::mem::take(&mut self.mailbox.inbox().woken);
            if woken.is_empty() {
                break;
            }
            for runnable in woken {
                // A cancelled task's `run` only drops its future.
                let mut runnable = Some(runnable);
                quietly(&mut || {
                    if let Some(r) = runnable.take() {
                        r.run();
                    }
                });
            }
        }
        // Last: the lifecycles' own drop (a stop for handles dropped) wakes nothing left.
        let mut lifecycles = Some(lifecycles);
        quietly(&mut || drop(lifecycles.take()));
        let woken = std::mem::take(&mut self.mailbox.inbox().woken);
        let mut woken = Some(woken);
        quietly(&mut || drop(woken.take()));
        self.mailbox.inbox().foreign = None;
        reach::take_violation();
        reach::take_panic();
        let panics = std::mem::take(&mut *lock(&self.drop_panics));
        panics
            .into_iter()
            .map(|(task, message)| (self.task_name(task), message))
            .collect()
    }
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Core")
            .field("id", &self.id)
            .field("elapsed", &self.elapsed())
            .finish_non_exhaustive()
    }
}

/// Who raised a panic that reached the executor.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Culprit {
    /// The scenario closure, before it returned its future.
    Closure,
    /// The scenario's task.
    Scenario,
    /// Another task.
    Task(TaskId),
}

/// How `drive` ended.
pub(crate) struct Drive {
    pub(crate) result: Result<Outcome, FailureKind>,
    pub(crate) steps: u64,
}

fn thread_name() -> String {
    let thread = std::thread::current();
    match thread.name() {
        Some(name) => format!("thread `{name}`"),
        None => format!("{:?}", thread.id()),
    }
}

/// tokio's panics outside a runtime, named for what they are here.
fn tokio_out_of_reach(message: &str) -> Option<FailureKind> {
    let tokio = message.contains("Tokio 1.x")
        || message.contains("no reactor running")
        || message.contains("timers are disabled");
    tokio.then(|| {
        FailureKind::OutOfReach(format!(
            "tokio was used inside a simulated run (it panicked: {message:?}): a tokio timer, \
             socket or spawn runs on tokio's runtime, not on the simulator, and could not be \
             replayed. Sleep on the simulated clock (`Env::sleep`, or the lifecycle's clock) \
             and spawn with `Env::spawn`"
        ))
    })
}

/// A task's result, for its [`JoinHandle`].
pub(crate) struct JoinSlot<T> {
    pub(crate) value: Option<T>,
    pub(crate) done: bool,
    pub(crate) waker: Option<Waker>,
}

/// Resolves with the output of a task spawned by [`Env::spawn`](super::Env::spawn).
///
/// Dropping it detaches the task, which runs on; every task of a run is dropped when the run
/// ends (when the scenario returns or the run fails).
pub struct JoinHandle<T> {
    pub(crate) slot: Arc<Mutex<JoinSlot<T>>>,
}

impl<T> JoinHandle<T> {
    /// Whether the task has returned.
    pub fn is_finished(&self) -> bool {
        lock(&self.slot).done
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut slot = lock(&self.slot);
        match slot.value.take() {
            Some(value) => Poll::Ready(value),
            None => {
                assert!(!slot.done, "a sim::JoinHandle polled after it resolved");
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// The spawner a simulated lifecycle runs its services with: each is a task of the run
/// (named `lifecycle task`: a spawner is not told which service it runs). Holds the run
/// weakly: a lifecycle kept past its run drops what it spawns, and used in a later run it
/// fails that run as out of reach (a stale lifecycle).
pub(crate) fn spawner(
    core: Weak<Core>,
    run: u64,
) -> impl Fn(Pin<Box<dyn Future<Output = ()> + Send>>) + Send + Sync + 'static {
    move |future| match core.upgrade() {
        Some(core) if !core.is_ended() => {
            core.spawn("lifecycle task".to_owned(), future);
        }
        _ => {
            let current = reach::current_run();
            if current != 0 && current != run {
                reach::stale("a lifecycle built by an `Env`");
            }
            // Else the run is over (its cleanup, or after it): dropped, never run.
        }
    }
}
