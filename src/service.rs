//! Services: long-lived futures, each handed a [`StopSignal`], run to completion under a
//! panic catcher that reports how they ended.

use std::any::Any;
use std::error::Error;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use pin_project_lite::pin_project;

use crate::complain::quietly;
use crate::loom::{Mutex, lock};
use crate::machine::{Exit, ServiceId, StopCause};
use crate::shared::Shared;

/// What a service's future may return: `()`, or `Result<(), E>` for any error that converts
/// into `Box<dyn Error + Send + Sync>` (every `std::error::Error`, `String`, `&str`,
/// `anyhow::Error`, …).
///
/// An error is recorded with its whole `source()` chain.
pub trait ServiceResult: Send + 'static {
    /// How the service ended.
    fn into_exit(self) -> Exit;
}

impl ServiceResult for () {
    fn into_exit(self) -> Exit {
        Exit::Ok
    }
}

impl<E> ServiceResult for Result<(), E>
where
    E: Into<Box<dyn Error + Send + Sync>> + Send + 'static,
{
    fn into_exit(self) -> Exit {
        match self {
            Ok(()) => Exit::Ok,
            Err(error) => Exit::Err(error_chain(&*error.into())),
        }
    }
}

/// The error and its sources, joined with `": "`.
fn error_chain(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The text of a panic payload: the message for `&str` and `String` payloads.
pub(crate) fn panic_text(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic payload of a non-string type".to_owned()
    }
}

/// A restartable service's run, as its factory makes it (the factory is `dyn`, so its runs
/// are boxed).
pub(crate) type Body = Pin<Box<dyn Future<Output = Exit> + Send>>;

/// Slots in the first segment of [`AbortSlots`]; each next segment holds twice as many as
/// the one before. Under loom, one: a model with a few services spans several segments, and
/// each slot's lock is a loom object.
const FIRST_SEGMENT: usize = if cfg!(loom) { 1 } else { 8 };

/// The abort state of one service: set when the lifecycle gives up on its current run
/// (`Action::GiveUp`) or abandons it (`Action::Abandon`); the run's task then ends
/// `Exit::Dropped` at its next poll, which the waker stored here brings about even if the
/// service never polls its stop signal.
///
/// The flag and the waker are under one lock, which a poll takes before it polls the run:
/// a poll that begins after an abort's critical section sees the flag and does not poll the
/// run; one that began before has its waker taken and woken by the abort. (A lone atomic
/// flag would let a poll read it stale after the abort, and poll the run after the end.)
#[derive(Debug)]
pub(crate) struct AbortSlot(Mutex<SlotState>);

#[derive(Debug, Default)]
struct SlotState {
    aborted: bool,
    /// The waker of the task's last poll, while its run is live.
    waker: Option<Waker>,
}

/// The abort slots of a lifecycle's services, by service index, in segments that are never
/// moved or freed while a task holds them: a service's slot costs no allocation of its own
/// (a segment every so many services: 8, then 16, 32, …), where a `futures` `AbortHandle`
/// cost one `Arc` per run. A restart reuses its service's slot ([`arm`](Self::arm)).
///
/// Kept under the lifecycle's lock (`Core`), which is what orders a slot's re-arming at a
/// new run against the aborts: both happen only under it or after it decided them, and no
/// run is made once the lifecycle stopped (the only time aborts are decided).
#[derive(Debug, Clone, Default)]
pub(crate) struct AbortSlots {
    segments: Vec<Arc<[AbortSlot]>>,
    /// Slots handed out: one per service added.
    len: usize,
}

/// The segment and the index in it of slot `index`: segment `k` holds
/// `FIRST_SEGMENT << k` slots, from `FIRST_SEGMENT * (2^k - 1)` on.
fn locate(index: usize) -> (usize, usize) {
    let segment = (index / FIRST_SEGMENT + 1).ilog2() as usize;
    let base = FIRST_SEGMENT * ((1 << segment) - 1);
    (segment, index - base)
}

impl AbortSlots {
    /// The slot of the service added next (its index is `len` before the call): a new
    /// segment when the last is full.
    pub(crate) fn push(&mut self) -> AbortRef {
        let index = self.len;
        let (segment, _) = locate(index);
        if segment == self.segments.len() {
            let size = FIRST_SEGMENT << segment;
            // One allocation: a `Range`'s map has an exact length.
            self.segments.push(
                (0..size)
                    .map(|_| AbortSlot(Mutex::new(SlotState::default())))
                    .collect(),
            );
        }
        self.len += 1;
        self.get(ServiceId(index))
    }

    /// A reference to service `id`'s slot.
    pub(crate) fn get(&self, id: ServiceId) -> AbortRef {
        let (segment, index) = locate(id.0);
        AbortRef {
            segment: self.segments[segment].clone(),
            index,
        }
    }

    /// Service `id`'s slot for a new run: cleared (a restart reuses the slot of the run
    /// before; no abort is decided while runs are made, so this clears nothing that matters
    /// to a live run, but a run never starts aborted by an earlier one's fate).
    pub(crate) fn arm(&self, id: ServiceId) -> AbortRef {
        let slot = self.get(id);
        lock(&slot.slot().0).aborted = false;
        slot
    }

    /// Aborts every service's current run (the lifecycle was abandoned). Wakers are woken
    /// here, so not under any lock of the lifecycle.
    pub(crate) fn abort_all(&self) {
        for (segment, slots) in self.segments.iter().enumerate() {
            let base = FIRST_SEGMENT * ((1 << segment) - 1);
            let live = self.len.saturating_sub(base).min(slots.len());
            for slot in &slots[..live] {
                abort(slot);
            }
        }
    }
}

/// Sets `slot`'s flag and takes the waker of the task it last parked, then wakes it
/// outside the lock, under `catch_unwind` (a waker is executor code).
fn abort(slot: &AbortSlot) {
    let waker = {
        let mut state = lock(&slot.0);
        state.aborted = true;
        state.waker.take()
    };
    if let Some(waker) = waker {
        quietly(|| waker.wake());
    }
}

/// A task's (or an effect's) hold on one service's abort slot: a clone of its segment's
/// `Arc` and the index in it.
#[derive(Debug, Clone)]
pub(crate) struct AbortRef {
    segment: Arc<[AbortSlot]>,
    index: usize,
}

impl AbortRef {
    fn slot(&self) -> &AbortSlot {
        &self.segment[self.index]
    }

    /// Aborts the run that holds this slot now (a give-up), waking it.
    pub(crate) fn abort(&self) {
        abort(self.slot());
    }

    /// Whether the run was aborted; if not, stores `cx`'s waker (unless it is stored
    /// already) for an abort to wake. Called before each poll of the run.
    fn aborted_else_register(&self, cx: &Context<'_>) -> bool {
        let replaced = {
            let mut state = lock(&self.slot().0);
            if state.aborted {
                return true;
            }
            match &state.waker {
                Some(stored) if stored.will_wake(cx.waker()) => None,
                _ => state.waker.replace(cx.waker().clone()),
            }
        };
        // Dropped outside the lock, and under `catch_unwind`: a waker's drop is executor
        // code, and one that panics must not end a healthy run (a review's finding).
        if let Some(replaced) = replaced {
            quietly(|| drop(replaced));
        }
        false
    }

    /// The run ended: its waker is not kept (a waker can keep the executor's task alive).
    /// Called before the end is reported, so before a restart can arm the slot anew.
    fn release(&self) {
        let waker = lock(&self.slot().0).waker.take();
        // Under `catch_unwind`: a waker whose drop panics must not keep the run's exit from
        // being reported, which follows (a review's finding: the service stayed live in the
        // machine, and was abandoned at the deadline instead of ending now).
        if let Some(waker) = waker {
            quietly(|| drop(waker));
        }
    }

    #[cfg(all(test, not(loom)))]
    fn is_aborted(&self) -> bool {
        lock(&self.slot().0).aborted
    }
}

pin_project! {
    /// A service's run as the lifecycle drives it: abortable, panic-catching, and reporting
    /// its exit exactly once — even when it is dropped unfinished. Generic over the run, so a
    /// service's future is stored inline (a spawner that takes it as it is, tokio's, makes
    /// one allocation per service: the executor's task).
    pub(crate) struct ServiceTask<F> {
        shared: Arc<Shared>,
        id: Option<ServiceId>,
        abort: AbortRef,
        // `None` once it completed: dropped at once (under `catch_unwind`), so what it owns
        // is released when it ends, whoever holds the task.
        #[pin]
        body: Option<F>,
    }

    impl<F> PinnedDrop for ServiceTask<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            finish(this.shared, this.id, this.abort, Exit::Dropped);
            drop_body(this.body);
        }
    }
}

impl<F> ServiceTask<F>
where
    F: Future<Output = Exit> + Send + 'static,
{
    /// Run `body` of service `id`, aborted through the slot `abort`.
    pub(crate) fn new(shared: Arc<Shared>, id: ServiceId, body: F, abort: AbortRef) -> Self {
        ServiceTask {
            shared,
            id: Some(id),
            abort,
            body: Some(body),
        }
    }
}

/// Drops the service's future, swallowing a panic from its drop: a future that panics
/// when dropped (by a `Wait`, an executor, the end of the lifecycle) must not take the
/// report or the other services with it. The panic hook has reported it.
fn drop_body<F>(mut body: Pin<&mut Option<F>>) {
    if body.is_some() {
        // A panicking drop still leaves `None` in place (the assignment completes while
        // unwinding), so the body is never dropped twice.
        quietly(|| body.set(None));
    }
}

/// Reports the run's exit, once (its slot's waker released first: after the report, a
/// restart may own the slot).
fn finish(shared: &Arc<Shared>, id: &mut Option<ServiceId>, abort: &AbortRef, exit: Exit) {
    if let Some(id) = id.take() {
        abort.release();
        shared.service_exited(id, exit);
    }
}

impl<F> fmt::Debug for ServiceTask<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceTask")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl<F> Future for ServiceTask<F>
where
    F: Future<Output = Exit>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        let Some(body) = this.body.as_mut().as_pin_mut() else {
            return Poll::Ready(());
        };
        // Aborted only once the lifecycle gave up on the run or was abandoned; the machine
        // already recorded it.
        let exit = if this.abort.aborted_else_register(cx) {
            Exit::Dropped
        } else {
            match std::panic::catch_unwind(AssertUnwindSafe(|| body.poll(cx))) {
                Ok(Poll::Ready(exit)) => exit,
                Ok(Poll::Pending) => return Poll::Pending,
                Err(payload) => Exit::Panic(panic_text(&*payload)),
            }
        };
        finish(this.shared, this.id, this.abort, exit);
        drop_body(this.body);
        Poll::Ready(())
    }
}

/// What a driver (a `Wait`, or the spawner) runs for the lifecycle: a service (boxed: it is
/// generic over its run; only the queue path, with no spawner or before a nested
/// lifecycle's gate opens, boxes it), or a stop trigger from
/// [`Lifecycle::stop_on`](crate::Lifecycle::stop_on).
pub(crate) enum Task {
    Service(Pin<Box<dyn Future<Output = ()> + Send>>),
    Trigger(Trigger),
}

impl Future for Task {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.get_mut() {
            Task::Service(task) => task.as_mut().poll(cx),
            Task::Trigger(trigger) => Pin::new(trigger).poll(cx),
        }
    }
}

impl fmt::Debug for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Task::Service(_) => f.write_str("Service"),
            Task::Trigger(_) => f.write_str("Trigger"),
        }
    }
}

/// A future that stops the lifecycle with its output as the cause; it gives up (and is
/// dropped) once the lifecycle stopped for another reason. It holds the shared state, not a
/// `Lifecycle` handle, so it keeps nothing alive.
pub(crate) struct Trigger {
    shared: Arc<Shared>,
    stop_key: Option<usize>,
    /// Dropped under `catch_unwind` (see `ServiceTask::drop_body`).
    fut: Option<Pin<Box<dyn Future<Output = StopCause> + Send>>>,
}

impl Trigger {
    pub(crate) fn new(
        shared: Arc<Shared>,
        fut: Pin<Box<dyn Future<Output = StopCause> + Send>>,
    ) -> Self {
        Trigger {
            shared,
            stop_key: None,
            fut: Some(fut),
        }
    }
}

impl Future for Trigger {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let Some(fut) = this.fut.as_mut() else {
            return Poll::Ready(());
        };
        if this
            .shared
            .stop
            .poll_wait(&mut this.stop_key, cx)
            .is_ready()
        {
            let fut = this.fut.take();
            quietly(|| drop(fut));
            return Poll::Ready(());
        }
        let cause = std::task::ready!(fut.as_mut().poll(cx));
        let fut = this.fut.take();
        quietly(|| drop(fut));
        this.shared.apply(|m, now| m.request_stop(now, cause));
        Poll::Ready(())
    }
}

impl Drop for Trigger {
    fn drop(&mut self) {
        self.shared.stop.cancel(&mut self.stop_key);
        let fut = self.fut.take();
        quietly(|| drop(fut));
    }
}

/// Resolves when it is time to stop: for a service, when its dependents are done (at once,
/// for a service nothing running depends on); for everyone else, when the lifecycle starts
/// draining. The moment to stop taking new work and wrap up what is in flight.
///
/// Every service is handed one; [`Session::stop_signal`](crate::Session::stop_signal) and
/// [`Lifecycle::stop_signal`](crate::Lifecycle::stop_signal) give more. It is level-triggered:
/// once it fired, it is ready at every poll, so it can sit in a `select!` loop (a service's
/// own signal also fires when the lifecycle ends, released or not).
/// Cloning it is cheap; each clone waits on its own.
///
/// The signal a service's run receives is also how that run declares itself ready
/// ([`ready`](StopSignal::ready)), for a service added with
/// [`ServiceOptions::declares_ready`](crate::ServiceOptions::declares_ready).
///
/// # Examples
///
/// ```
/// use async_lifecycle::Lifecycle;
///
/// let lc = Lifecycle::new();
/// let stop = lc.stop_signal();
/// assert!(!stop.is_stopped());
/// lc.stop("deploy");
/// futures::executor::block_on(stop.clone());
/// assert!(stop.is_stopped());
/// assert_eq!(stop.cause().unwrap().to_string(), "requested: deploy");
/// ```
#[must_use = "futures do nothing unless you .await or poll them"]
pub struct StopSignal {
    shared: Arc<Shared>,
    /// The service run it was handed to, and which run: its own signal, and its readiness.
    service: Option<(ServiceId, u32)>,
    key: Option<usize>,
    /// Its registration with the service's own signal, once the lifecycle's fired.
    held_key: Option<usize>,
}

impl StopSignal {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        StopSignal {
            shared,
            service: None,
            key: None,
            held_key: None,
        }
    }

    /// The signal of run `attempt` of service `id`.
    pub(crate) fn for_service(shared: Arc<Shared>, id: ServiceId, attempt: u32) -> Self {
        StopSignal {
            shared,
            service: Some((id, attempt)),
            key: None,
            held_key: None,
        }
    }

    /// Whether it fired: the stop was requested and, for a service's signal, its dependents
    /// are done.
    pub fn is_stopped(&self) -> bool {
        self.shared.stop.is_fired()
            && self
                .service
                .and_then(|(id, _)| self.shared.held(id))
                .is_none_or(|held| held.is_fired())
    }

    /// Why the lifecycle stopped, once it did.
    pub fn cause(&self) -> Option<&StopCause> {
        self.shared.cause()
    }

    /// Declares the service run this signal was handed to ready: its dependents
    /// ([`ServiceOptions::after`](crate::ServiceOptions::after)) may start, its start timeout
    /// no longer runs, and the live view shows it ready. Returns whether this call changed
    /// that: `false` when it was ready already, when the lifecycle is stopping, for the
    /// signal of an earlier run, or for a signal that was not handed to a service
    /// (a session's or the lifecycle's).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_lifecycle::{Lifecycle, ServiceOptions};
    ///
    /// let lc = Lifecycle::new();
    /// lc.service_with("db", ServiceOptions::new().declares_ready(), |stop| async move {
    ///     // … open the pool …
    ///     stop.ready();
    ///     stop.await;
    /// })?;
    /// lc.service_with("api", ServiceOptions::new().after(["db"]), |stop| stop)?;
    /// lc.stop("demo");
    /// let report = futures::executor::block_on(lc.wait());
    /// assert_eq!(report.exit_code(), 0);
    /// # Ok::<(), async_lifecycle::ServiceError>(())
    /// ```
    pub fn ready(&self) -> bool {
        match self.service {
            Some((id, attempt)) => self.shared.ready(id, attempt),
            None => false,
        }
    }

    /// The instant by which this service must have stopped (its stop budget's end, else the
    /// lifecycle's deadline), once its signal fired.
    pub(crate) fn deadline(&self) -> Option<std::time::Instant> {
        let (id, _) = self.service?;
        self.shared.service_deadline(id)
    }
}

impl Clone for StopSignal {
    fn clone(&self) -> Self {
        StopSignal {
            shared: self.shared.clone(),
            service: self.service,
            key: None,
            held_key: None,
        }
    }
}

impl Future for StopSignal {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        std::task::ready!(this.shared.stop.poll_wait(&mut this.key, cx));
        // Set before `stop` fired: a service that had a dependent running waits for its own.
        match this.service.and_then(|(id, _)| this.shared.held(id)) {
            Some(held) => held.poll_wait(&mut this.held_key, cx),
            None => Poll::Ready(()),
        }
    }
}

impl Drop for StopSignal {
    fn drop(&mut self) {
        self.shared.stop.cancel(&mut self.key);
        if let Some(held) = self.service.and_then(|(id, _)| self.shared.held(id)) {
            held.cancel(&mut self.held_key);
        }
    }
}

impl fmt::Debug for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StopSignal")
            .field("stopped", &self.is_stopped())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn slots_are_located_in_doubling_segments() {
        assert_eq!(locate(0), (0, 0));
        assert_eq!(locate(7), (0, 7));
        assert_eq!(locate(8), (1, 0));
        assert_eq!(locate(23), (1, 15));
        assert_eq!(locate(24), (2, 0));
        assert_eq!(locate(55), (2, 31));
        assert_eq!(locate(56), (3, 0));
        // Every index once, in order, each within its segment.
        let mut next = (0, 0);
        for index in 0..10_000 {
            let (segment, at) = locate(index);
            assert_eq!((segment, at), next, "index {index}");
            assert!(at < FIRST_SEGMENT << segment);
            next = if at + 1 == FIRST_SEGMENT << segment {
                (segment + 1, 0)
            } else {
                (segment, at + 1)
            };
        }
    }

    #[test]
    fn a_segment_is_allocated_only_when_the_last_is_full() {
        let mut slots = AbortSlots::default();
        let refs: Vec<AbortRef> = (0..25).map(|_| slots.push()).collect();
        assert_eq!(slots.segments.len(), 3);
        assert_eq!(
            slots.segments.iter().map(|s| s.len()).collect::<Vec<_>>(),
            [8, 16, 32]
        );
        // Each service its own slot; `get` names the slot `push` handed out.
        for (index, slot) in refs.iter().enumerate() {
            let again = slots.get(ServiceId(index));
            assert!(std::ptr::eq(slot.slot(), again.slot()));
        }
    }

    #[test]
    fn abort_all_aborts_the_slots_handed_out_and_arm_clears_one() {
        let mut slots = AbortSlots::default();
        let refs: Vec<AbortRef> = (0..10).map(|_| slots.push()).collect();
        slots.abort_all();
        assert!(refs.iter().all(AbortRef::is_aborted));
        // The rest of the second segment was never handed out: untouched.
        assert!(!lock(&slots.segments[1][2].0).aborted);
        let again = slots.arm(ServiceId(3));
        assert!(!again.is_aborted());
        assert!(!refs[3].is_aborted(), "the same slot");
        assert!(refs[4].is_aborted());
    }

    #[test]
    fn an_abort_wakes_the_stored_waker_once_and_a_later_register_sees_the_flag() {
        use std::sync::atomic::AtomicUsize;
        struct Count(AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut slots = AbortSlots::default();
        let slot = slots.push();
        let cx = Context::from_waker(&waker);
        assert!(!slot.aborted_else_register(&cx));
        // The same waker again: kept, not cloned anew.
        assert!(!slot.aborted_else_register(&cx));
        assert_eq!(
            Arc::strong_count(&count),
            3,
            "ours, `waker` and the stored one"
        );
        slot.abort();
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        slot.abort();
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(
            slot.aborted_else_register(&cx),
            "polled after the abort: sees it"
        );
        assert_eq!(Arc::strong_count(&count), 2, "not stored again");
    }

    #[test]
    fn a_finished_run_keeps_no_waker() {
        struct Noop;
        impl std::task::Wake for Noop {
            fn wake(self: Arc<Self>) {}
        }
        let noop = Arc::new(Noop);
        let waker = Waker::from(noop.clone());
        let mut slots = AbortSlots::default();
        let slot = slots.push();
        assert!(!slot.aborted_else_register(&Context::from_waker(&waker)));
        assert_eq!(Arc::strong_count(&noop), 3);
        slot.release();
        assert_eq!(Arc::strong_count(&noop), 2);
    }
}
