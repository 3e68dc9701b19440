//! The scenario's handle on its run, and the environment task that injects faults.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::executor::{Core, JoinHandle, JoinSlot, State, spawner};
use crate::{
    Builder, Clock, Lifecycle, ManualClock, ServiceError, ServiceOptions, Sleep, StopCause,
};

/// A fault the environment injects into a run, at a moment the scheduler chooses.
///
/// Faults are queued with [`Env::fault`] and fire in the order they were queued. The
/// environment is one task among the others, and the run's choices decide when it fires
/// each: a number of steps from now (log-uniform below 256, zero included), at the next
/// quiescent point (when nothing else can run — and then perhaps only after the clock's next
/// deadline), or after some simulated time (log-uniform from 1 ms to about 65 s). When it
/// becomes ready to fire, the scheduler still decides when it runs among the others. So the
/// moment a signal lands is explored like any other interleaving, early and late, between
/// two polls of a task or after a timer.
///
/// A fault targets the lifecycles the environment watches ([`Env::lifecycle`],
/// [`Env::watch`]); one watched by none (or a panic of a service never wrapped) changes
/// nothing but the trace.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// [`Lifecycle::stop`] with this cause.
    Stop(StopCause),
    /// A SIGTERM, as the `signal` feature handles it: the first stops with
    /// [`StopCause::Signal`]`("SIGTERM")`, any later one forces.
    Signal,
    /// [`Lifecycle::force`].
    Force,
    /// The service future wrapped by [`Env::panicky`] with this name panics at its next poll
    /// (it is woken for it); armed now if it has not started yet.
    Panic(Cow<'static, str>),
    /// The clock moves forward by this much at once, waking every sleep that falls due (a
    /// stalled process, a suspended VM). A jump never takes the clock past
    /// [`Fault::CLOCK_HORIZON`] after the run's start: it stops there, so
    /// `ClockJump(Duration::MAX)` means "every timer within two centuries falls due", lands
    /// on the same simulated instant in every run, and leaves room for the deadlines
    /// computed after it.
    ClockJump(Duration),
}

impl Fault {
    /// How far past the run's start a [`Fault::ClockJump`] may take the simulated clock: 200
    /// years of 365 days. (A sleep may be set later; the clock still jumps to it when
    /// nothing else can run.)
    pub const CLOCK_HORIZON: Duration = Duration::from_secs(200 * 365 * 86_400);

    /// A [`Fault::Stop`] requested with `reason` ([`StopCause::Requested`]).
    pub fn stop(reason: impl Into<Cow<'static, str>>) -> Self {
        Fault::Stop(StopCause::Requested(reason.into()))
    }

    /// A [`Fault::Panic`] of the service wrapped as `service`.
    pub fn panic(service: impl Into<Cow<'static, str>>) -> Self {
        Fault::Panic(service.into())
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Stop(cause) => write!(f, "stop ({cause})"),
            Fault::Signal => f.write_str("SIGTERM"),
            Fault::Force => f.write_str("force"),
            Fault::Panic(service) => write!(f, "panic in service \"{service}\""),
            Fault::ClockJump(by) => write!(f, "clock jump of {by:?}"),
        }
    }
}

/// A queued fault.
pub(crate) struct PendingFault {
    fault: Fault,
}

/// What a scenario runs with: builds the run's lifecycles on the simulated clock and
/// spawner, spawns tasks, sleeps, queues faults and draws choices. Cheap to clone.
///
/// Everything it makes belongs to the current run: every task is dropped when the run ends.
/// Kept past its run (in a global, or a variable the scenario closure fills), it is refused:
/// used in a later run, that run fails as [out of reach](super#out-of-reach); used outside
/// any run, it panics.
#[derive(Clone)]
pub struct Env {
    pub(crate) core: Arc<Core>,
}

impl Env {
    /// A lifecycle builder on the run's simulated clock and spawner (each service, restart
    /// and stop trigger is a task the scheduler picks), seeded from the run's choices (for
    /// backoff jitter), and reporting its events into the run's trace. `configure` sets the
    /// rest (the grace, the policy…). The environment watches the lifecycle: faults target
    /// it, a deadlock report names its live services and sessions, and the run's trace ends
    /// with its snapshot.
    ///
    /// The environment holds a handle to it until the run ends, so it is not stopped for its
    /// handles being dropped ([`StopCause::HandlesDropped`]); build one with
    /// [`builder`](Self::builder) to test that. A `configure` that sets its own
    /// [`Builder::on_event`] hook replaces the trace's (the run stays deterministic, its hash
    /// covers less).
    pub fn lifecycle(&self, configure: impl FnOnce(Builder) -> Builder) -> Lifecycle {
        let lifecycle = configure(self.traced_builder("Env::lifecycle")).build();
        self.watch(&lifecycle);
        lifecycle
    }

    /// [`lifecycle.nest(name, options, builder)`](Lifecycle::nest) with a builder on the
    /// run's clock and spawner, configured by `configure`, whose events go into the run's
    /// trace. The nested lifecycle is reported, not targeted: a deadlock report names its
    /// live services and sessions and the trace ends with its snapshot, but faults go to the
    /// watched lifecycles only (its parent stops it, as in production). A lifecycle nested
    /// with `lc.nest(.., env.builder())` runs the same but is not reported (a spawner or
    /// builder cannot tell the simulator it was built).
    ///
    /// # Errors
    ///
    /// As [`Lifecycle::nest`].
    pub fn nest(
        &self,
        lifecycle: &Lifecycle,
        name: impl Into<Cow<'static, str>>,
        options: ServiceOptions,
        configure: impl FnOnce(Builder) -> Builder,
    ) -> Result<Lifecycle, ServiceError> {
        let builder = configure(self.traced_builder("Env::nest"));
        let nested = lifecycle.nest(name, options, builder)?;
        self.core.state().reported.push(nested.clone());
        Ok(nested)
    }

    /// A builder whose events go into the run's trace.
    fn traced_builder(&self, what: &str) -> Builder {
        let weak = Arc::downgrade(self.live(what));
        self.builder().on_event(move |event| {
            if let Some(core) = weak.upgrade() {
                core.state().trace.event(&event.to_string());
            }
        })
    }

    /// The run, refused once it has ended (a stale `Env`, kept past its run): see
    /// [`Core::check_live`].
    fn live(&self, what: &str) -> &Arc<Core> {
        self.core.check_live(&format!("an `Env` (`{what}`)"));
        &self.core
    }

    /// A lifecycle builder on the run's simulated clock and spawner, seeded from the run's
    /// choices, not watched by the environment (see [`lifecycle`](Self::lifecycle)). To nest a
    /// lifecycle that deadlock reports name, use [`nest`](Self::nest).
    pub fn builder(&self) -> Builder {
        let core = self.live("Env::builder");
        let seed = core.state().source.next_u64();
        Lifecycle::builder()
            .clock(core.clock.clone())
            .spawner(spawner(Arc::downgrade(core), core.id))
            .seed(seed)
    }

    /// Makes the environment watch `lifecycle` (built with [`builder`](Self::builder)): as
    /// for [`lifecycle`](Self::lifecycle), without the event trace.
    pub fn watch(&self, lifecycle: &Lifecycle) {
        self.live("Env::watch")
            .state()
            .lifecycles
            .push(lifecycle.clone());
    }

    /// The run's simulated clock: it moves only when nothing can run (to the next deadline)
    /// or when a [`Fault::ClockJump`] fires.
    pub fn clock(&self) -> ManualClock {
        self.live("Env::clock").clock.clone()
    }

    /// Simulated time since the run began.
    pub fn elapsed(&self) -> Duration {
        self.live("Env::elapsed").elapsed()
    }

    /// Sleeps `duration` on the simulated clock. A sleep whose deadline no [`Instant`] can
    /// hold (`Duration::MAX`) never ends, as it would not in a real process.
    pub fn sleep(&self, duration: Duration) -> Sleep {
        let clock = &self.live("Env::sleep").clock;
        match clock.now().checked_add(duration) {
            Some(deadline) => clock.sleep_until(deadline),
            None => Box::pin(std::future::pending()),
        }
    }

    /// Spawns `future` as a task of the run, named `name` in reports.
    ///
    /// Spawned while the run ends (by a drop during its cleanup), the future is dropped and
    /// the handle never resolves.
    ///
    /// # Panics
    ///
    /// When called from a thread other than the run's (the spawn is also reported as out of
    /// reach), or with an `Env` whose run has ended (in a later run, that run is also
    /// reported as out of reach).
    pub fn spawn<F>(&self, name: impl Into<String>, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let core = self.live("Env::spawn");
        let slot = Arc::new(Mutex::new(JoinSlot {
            value: None,
            done: false,
            waker: None,
        }));
        let result = Arc::clone(&slot);
        let task = async move {
            let value = future.await;
            let waker = {
                let mut slot = result.lock().unwrap_or_else(|e| e.into_inner());
                slot.value = Some(value);
                slot.done = true;
                slot.waker.take()
            };
            if let Some(waker) = waker {
                waker.wake();
            }
        };
        let spawned = core.spawn(name.into(), task).is_some();
        assert!(
            spawned || core.is_ended() || std::thread::panicking(),
            "async_lifecycle::sim: Env::spawn from another thread than the run's"
        );
        JoinHandle { slot }
    }

    /// Yields once: the task goes back among the ready ones and the scheduler picks again.
    /// A scheduling point for code that has no await where an interleaving matters.
    pub fn yield_now(&self) -> YieldNow {
        yield_now()
    }

    /// Queues `fault` for the environment task, after those already queued; see [`Fault`].
    pub fn fault(&self, fault: Fault) {
        let waker = {
            let mut state = self.live("Env::fault").state();
            state.faults.push_back(PendingFault { fault });
            state.env_waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Wraps a service's future so that [`Fault::Panic`]`(service)` makes it panic at its next
    /// poll: `lc.service("db", |stop| env.panicky("db", run_db(stop)))`. The lifecycle catches
    /// the panic and reports the service as panicked, as it would a real one.
    pub fn panicky<F: Future>(&self, service: impl Into<String>, future: F) -> Panicky<F> {
        Panicky {
            name: service.into(),
            core: Arc::downgrade(self.live("Env::panicky")),
            future: Box::pin(future),
        }
    }

    /// A choice in `0..n` from the run's choices (0 when `n <= 1`): for a scenario that varies
    /// its own shape (how many jobs, which client disconnects) in a replayable way.
    pub fn choose(&self, n: usize) -> usize {
        self.live("Env::choose").state().source.choose(n)
    }

    /// The environment task: fires the queued faults, one at a time, when its choices say.
    pub(crate) fn task(&self) -> EnvTask {
        EnvTask {
            core: Arc::clone(&self.core),
            mode: Mode::Deciding,
        }
    }
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Env")
            .field("elapsed", &self.core.elapsed())
            .field("ended", &self.core.is_ended())
            .finish_non_exhaustive()
    }
}

/// `by` after the clock's now, or the furthest instant the platform can represent.
pub(crate) fn later(clock: &ManualClock, by: Duration) -> Instant {
    let now = clock.now();
    if let Some(at) = now.checked_add(by) {
        return at;
    }
    // The largest representable step, by bisection on nanoseconds (about 100 rounds).
    let (mut fits, mut overflows) = (0u128, by.as_nanos());
    let duration = |nanos: u128| {
        Duration::new(
            u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX),
            (nanos % 1_000_000_000) as u32,
        )
    };
    while overflows - fits > 1 {
        let mid = fits + (overflows - fits) / 2;
        if now.checked_add(duration(mid)).is_some() {
            fits = mid;
        } else {
            overflows = mid;
        }
    }
    now + duration(fits)
}

pub(crate) fn yield_now() -> YieldNow {
    YieldNow { yielded: false }
}

/// Yields once; see [`Env::yield_now`].
#[derive(Debug)]
#[must_use = "futures do nothing unless you .await or poll them"]
pub struct YieldNow {
    yielded: bool,
}

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// A service future that panics when its [`Fault::Panic`] fires; see [`Env::panicky`].
#[must_use = "futures do nothing unless you .await or poll them"]
pub struct Panicky<F> {
    name: String,
    core: Weak<Core>,
    future: Pin<Box<F>>,
}

impl<F: Future> Future for Panicky<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        if let Some(core) = self.core.upgrade() {
            let mut state = core.state();
            let index = match state.panics.iter().position(|(n, ..)| *n == self.name) {
                Some(index) => index,
                None => {
                    state.panics.push((self.name.clone(), false, None));
                    state.panics.len() - 1
                }
            };
            let entry = &mut state.panics[index];
            if entry.1 {
                entry.1 = false;
                drop(state);
                panic!(
                    "injected panic in service \"{}\" (sim::Fault::Panic)",
                    self.name
                );
            }
            entry.2 = Some(cx.waker().clone());
        }
        self.future.as_mut().poll(cx)
    }
}

impl<F> fmt::Debug for Panicky<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Panicky")
            .field("service", &self.name)
            .finish_non_exhaustive()
    }
}

/// Where the environment task is in deciding when its next fault fires.
enum Mode {
    /// About to choose when the next fault fires.
    Deciding,
    /// Waiting for the executor's step count to reach `at` (or for nothing else to be able
    /// to run first: `round` is the idle round when it began waiting).
    Alarm { at: u64, round: u64 },
    /// Waiting until nothing else can run (the idle round when it parked).
    Parked(u64),
    /// Letting time pass: asleep until a deadline, then firing (`fire`) or deciding again.
    Sleeping { sleep: Sleep, fire: bool },
}

pub(crate) struct EnvTask {
    core: Arc<Core>,
    mode: Mode,
}

/// How far ahead a fault may be put, in steps: delays are drawn log-uniformly below
/// 2^this, so a fault is as likely to land within 2 steps as within 100 to 200, whatever the
/// run's length, and no estimate of it has to be part of the replay token.
const MAX_DELAY_BITS: usize = 8;
/// The same in simulated time, in milliseconds: from 1 ms to about 65 s.
const MAX_TIME_BITS: usize = 16;

impl Future for EnvTask {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let mut state = this.core.state();
        if state.faults.is_empty() {
            state.env_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let idle_woken = |round: u64, state: &State| state.idle_rounds > round;
        let fire = match &mut this.mode {
            Mode::Deciding => match state.source.choose(3) {
                // A number of steps from now.
                0 => {
                    let bits = state.source.choose(MAX_DELAY_BITS + 1);
                    let delay = state.source.choose(1 << bits) as u64;
                    if delay == 0 {
                        true
                    } else {
                        let (at, round) = (state.steps + delay, state.idle_rounds);
                        state.alarm = Some((at, cx.waker().clone()));
                        state.idle.push(cx.waker().clone());
                        this.mode = Mode::Alarm { at, round };
                        false
                    }
                }
                // At the next moment nothing else can run: a quiescent point (the worker
                // waiting, the queue empty).
                1 => {
                    this.mode = Mode::Parked(state.idle_rounds);
                    state.idle.push(cx.waker().clone());
                    false
                }
                // After some simulated time (the signal that comes at 14:03).
                _ => {
                    let bits = state.source.choose(MAX_TIME_BITS + 1);
                    let millis = 1 + state.source.choose(1 << bits) as u64;
                    drop(state);
                    let clock = &this.core.clock;
                    let sleep = clock.sleep_until(later(clock, Duration::from_millis(millis)));
                    this.mode = Mode::Sleeping { sleep, fire: true };
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            },
            Mode::Alarm { at, .. } if state.steps >= *at => {
                state.alarm = None;
                true
            }
            Mode::Alarm { round, .. } | Mode::Parked(round) if !idle_woken(*round, &state) => {
                // Woken for another reason (a fault queued): still waiting.
                state.idle.push(cx.waker().clone());
                false
            }
            Mode::Alarm { .. } | Mode::Parked(_) => {
                // Nothing else can run: fire now, or let time pass to the next deadline.
                state.alarm = None;
                match this.core.clock.next_deadline() {
                    Some(deadline) if state.source.choose(2) == 1 => {
                        drop(state);
                        let sleep = this.core.clock.sleep_until(deadline);
                        this.mode = Mode::Sleeping { sleep, fire: false };
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    _ => true,
                }
            }
            Mode::Sleeping { sleep, fire } => {
                drop(state);
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                if !*fire {
                    this.mode = Mode::Deciding;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                state = this.core.state();
                true
            }
        };
        if !fire {
            return Poll::Pending;
        }
        this.mode = Mode::Deciding;
        let Some(PendingFault { fault }) = state.faults.pop_front() else {
            return Poll::Pending;
        };
        state.faults_fired += 1;
        state.trace.fault(&fault.to_string());
        let first_signal = matches!(fault, Fault::Signal) && {
            state.signals += 1;
            state.signals == 1
        };
        let targets = state.lifecycles.clone();
        let panicked = match &fault {
            Fault::Panic(name) => {
                let index = match state.panics.iter().position(|(n, ..)| n == name) {
                    Some(index) => index,
                    None => {
                        state.panics.push((name.to_string(), false, None));
                        state.panics.len() - 1
                    }
                };
                state.panics[index].1 = true;
                state.panics[index].2.take()
            }
            _ => None,
        };
        drop(state);
        // Outside the lock: the lifecycles call back into the run (events, wakes).
        match fault {
            Fault::Stop(cause) => targets.iter().for_each(|lc| lc.stop(cause.clone())),
            Fault::Signal if first_signal => targets
                .iter()
                .for_each(|lc| lc.stop(StopCause::Signal("SIGTERM"))),
            Fault::Signal | Fault::Force => targets.iter().for_each(Lifecycle::force),
            Fault::Panic(_) => {
                if let Some(waker) = panicked {
                    waker.wake();
                }
            }
            Fault::ClockJump(by) => {
                let clock = &this.core.clock;
                let start = this.core.start;
                // Within the horizon (the same instant in every run); past it only on a
                // platform whose `Instant` cannot hold the horizon.
                let now = clock.now();
                let to = match start.checked_add(Fault::CLOCK_HORIZON) {
                    Some(horizon) => now.checked_add(by).unwrap_or(horizon).min(horizon),
                    None => later(clock, by),
                }
                .max(now);
                let mut state = this.core.state();
                state.jumps += 1;
                state
                    .trace
                    .jump(to.saturating_duration_since(this.core.start));
                drop(state);
                clock.advance_to(to);
            }
        }
        drop(targets);
        // Yield after each fault, so its effects interleave with the next decision.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
