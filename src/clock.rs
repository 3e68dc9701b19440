//! Pluggable time: where the lifecycle gets "now" and how it sleeps until a deadline.
//!
//! Two clocks are provided:
//!
//! - [`SystemClock`] is real time with no runtime: [`Instant::now`] plus a
//!   [`futures_timer::Delay`], which is driven by its own helper thread, so it works under
//!   `futures::executor::block_on`, tokio, smol or any other executor.
//! - [`ManualClock`] is time that only moves when a test says so. Sleeps register with the
//!   clock and are woken by [`ManualClock::advance`], so every deadline can be driven
//!   deterministically without sleeping for real.
//!
//! # Coarse readings
//!
//! Besides [`Clock::now`], a clock offers [`Clock::coarse_now`]: a reading that may lag `now`
//! by a few milliseconds (never ahead of it, never backwards), for timestamps whose precision
//! does not matter, such as when a session began (its age is only looked at once it is at
//! least the grace). By default it is `now` itself, exact, which is what [`ManualClock`] and
//! other test clocks keep. [`SystemClock`]'s is one atomic load of a reading that a background
//! thread refreshes every millisecond while it is read (and that sleeps when it is not),
//! instead of a clock read.
//!
//! # Testing with a manual clock
//!
//! ```
//! use std::{task::Context, time::Duration};
//! use async_lifecycle::{Clock, ManualClock};
//! use futures::task::noop_waker;
//!
//! let clock = ManualClock::new();
//! let mut sleep = clock.sleep_until(clock.now() + Duration::from_secs(30));
//! let waker = noop_waker();
//! let mut cx = Context::from_waker(&waker);
//!
//! assert!(sleep.as_mut().poll(&mut cx).is_pending());
//! assert_eq!(clock.sleepers(), 1); // the deadline is armed
//!
//! clock.advance(Duration::from_secs(29));
//! assert!(sleep.as_mut().poll(&mut cx).is_pending());
//!
//! clock.advance(Duration::from_secs(1));
//! assert!(sleep.as_mut().poll(&mut cx).is_ready());
//! assert_eq!(clock.sleepers(), 0);
//! ```

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use crate::sync::{WakerSet, wakers::Key};

/// A boxed sleep future returned by [`Clock::sleep_until`].
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The lifecycle's source of time.
///
/// Grace deadlines are measured and awaited through this trait rather than through a runtime's
/// timer, so the crate runs on any executor and tests can swap in a [`ManualClock`] to drive
/// every deadline deterministically. The trait is object safe and is meant to be shared as
/// `Arc<dyn Clock>`.
///
/// The contract an implementation keeps: `now` never panics and never goes backwards (it is
/// read on the session and service paths, where a panic would lose an end), and a sleep
/// completes only once `now() >= deadline` (one that completes early makes `wait()` poll
/// again at once until `now` catches up). [`coarse_now`](Clock::coarse_now) never panics, never
/// goes backwards and is never ahead of `now`.
pub trait Clock: fmt::Debug + Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> Instant;

    /// The current instant, read cheaply: it may lag [`now`](Clock::now) by a few milliseconds,
    /// but is never ahead of a `now()` read after it and never goes backwards.
    ///
    /// For timestamps whose precision does not matter, such as when a named session began: a
    /// straggler's age is at least the grace, so a few milliseconds of error are noise there.
    /// Deadlines and sleeps always use [`now`](Clock::now).
    ///
    /// The default is `self.now()`, exact. Implementations whose `now` is cheap or must be
    /// exact ([`ManualClock`], a runtime's paused test time) keep it; [`SystemClock`] overrides
    /// it with a reading refreshed in the background. Because it has a default, adding this
    /// method broke no existing implementation.
    fn coarse_now(&self) -> Instant {
        self.now()
    }

    /// A future that completes once `now() >= deadline`.
    ///
    /// A deadline that has already been reached completes on the first poll.
    fn sleep_until(&self, deadline: Instant) -> Sleep;
}

/// Real time with no runtime.
///
/// `now` is [`Instant::now`] and sleeping uses a [`futures_timer::Delay`], which runs its own
/// helper thread, so it works under `block_on`, tokio, smol, anything.
///
/// [`coarse_now`](Clock::coarse_now) is one atomic load: a process-wide reading of
/// [`Instant::now`] that a background thread ("async-lifecycle-coarse-clock", started by the
/// first coarse read) refreshes every millisecond while anything reads it, and that parks
/// itself once 100 ms go by with no read. It lags `now` by at most a millisecond plus that
/// thread's scheduling delay; the first read after the thread parked takes [`Instant::now`]
/// itself (and wakes it), and where no thread can be spawned every read does.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl SystemClock {
    /// Creates the system clock.
    pub const fn new() -> Self {
        Self
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        #[cfg(feature = "sim")]
        crate::sim::out_of_reach("the system clock (`SystemClock::now`)");
        Instant::now()
    }

    #[inline]
    fn coarse_now(&self) -> Instant {
        #[cfg(feature = "sim")]
        crate::sim::out_of_reach("the system clock (`SystemClock::coarse_now`)");
        crate::coarse::now()
    }

    fn sleep_until(&self, deadline: Instant) -> Sleep {
        #[cfg(feature = "sim")]
        crate::sim::out_of_reach("a sleep on the system clock (`SystemClock::sleep_until`)");
        Box::pin(async move {
            // loop in case the timer fires a hair early relative to `Instant::now`
            loop {
                let now = Instant::now();
                if now >= deadline {
                    return;
                }
                futures_timer::Delay::new(deadline - now).await;
            }
        })
    }
}

/// Time that moves only when the test says so.
///
/// The clock starts at the [`Instant::now`] captured by [`ManualClock::new`] and stays frozen
/// until [`advance`](ManualClock::advance) or [`advance_to`](ManualClock::advance_to) moves it.
/// Clones share the same timeline and the same sleepers.
///
/// Its [`coarse_now`](Clock::coarse_now) is the default, `now` itself: under a manual clock
/// every timestamp, a session's begin time included, is exact.
#[derive(Debug, Clone)]
pub struct ManualClock {
    // guards the current instant and the registry of pending sleepers
    shared: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    now: Instant,
    // each sleeper's deadline and waker, under a generation-checked key, so a sleep that
    // still holds the key of an entry `advance_to` took cannot touch whoever reuses its slot;
    // invariant: an entry exists exactly while its sleep is registered and `now < deadline`,
    // because `advance_to` removes every entry it makes due
    sleepers: WakerSet<Instant>,
}

fn lock(shared: &Mutex<State>) -> MutexGuard<'_, State> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

impl ManualClock {
    /// Creates a clock frozen at the current instant.
    pub fn new() -> Self {
        let state = State {
            now: Instant::now(),
            sleepers: WakerSet::new(),
        };
        Self {
            shared: Arc::new(Mutex::new(state)),
        }
    }

    /// Moves time forward by `by` and wakes exactly the sleepers that are now due.
    ///
    /// # Panics
    ///
    /// Panics if the new instant overflows [`Instant`].
    pub fn advance(&self, by: Duration) {
        self.advance_with(|now| now.checked_add(by).expect("manual clock overflowed"));
    }

    /// Moves time forward to `to` and wakes exactly the sleepers that are now due.
    ///
    /// Time never goes backwards: a `to` earlier than the current instant is a no-op.
    pub fn advance_to(&self, to: Instant) {
        self.advance_with(|_| to);
    }

    fn advance_with(&self, target: impl FnOnce(Instant) -> Instant) {
        let mut due = {
            let mut state = lock(&self.shared);
            let to = target(state.now);
            if to <= state.now {
                return;
            }
            state.now = to;
            state.sleepers.take_where(|deadline| *deadline <= to)
        };
        // wake outside the lock: a waker may poll or drop a sleep right away
        for (_, waker) in due.drain() {
            // a waker is executor code: one that panics must not keep the others asleep
            crate::complain::quietly(|| waker.wake());
        }
        // hand the buffer back for the next advance
        if let Some(emptied) = due.emptied() {
            lock(&self.shared).sleepers.recycle(emptied);
        }
    }

    /// The number of sleep futures currently registered and not yet due.
    pub fn sleepers(&self) -> usize {
        lock(&self.shared).sleepers.len()
    }

    /// The earliest deadline among the registered sleepers, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        lock(&self.shared).sleepers.iter().min().copied()
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        lock(&self.shared).now
    }

    fn sleep_until(&self, deadline: Instant) -> Sleep {
        Box::pin(ManualSleep {
            shared: Arc::clone(&self.shared),
            deadline,
            key: None,
        })
    }
}

/// The sleep future of a [`ManualClock`].
#[derive(Debug)]
struct ManualSleep {
    shared: Arc<Mutex<State>>,
    deadline: Instant,
    key: Option<Key>,
}

impl Future for ManualSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let mut state = lock(&this.shared);
        if state.now >= this.deadline {
            // if we were registered, `advance_to` already removed our entry
            this.key = None;
            return Poll::Ready(());
        }
        let replaced = state
            .sleepers
            .register(&mut this.key, this.deadline, cx.waker());
        // drop a replaced waker outside the lock, as dropping it may run arbitrary code
        drop(state);
        drop(replaced);
        Poll::Pending
    }
}

impl Drop for ManualSleep {
    fn drop(&mut self) {
        if self.key.is_some() {
            let mut state = lock(&self.shared);
            // once due, the entry is gone and the key is stale: it names no entry, even if
            // another sleep reuses the slot
            let removed = state.sleepers.cancel(&mut self.key);
            drop(state);
            drop(removed);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::task::{Wake, Waker};

    #[derive(Default)]
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    fn poll_with(sleep: &mut Sleep, counter: &Arc<Counter>) -> Poll<()> {
        let waker = Waker::from(Arc::clone(counter));
        sleep.as_mut().poll(&mut Context::from_waker(&waker))
    }

    /// A sleep `secs` seconds from now, polled once so it is registered.
    fn armed(clock: &ManualClock, secs: u64) -> (Sleep, Arc<Counter>) {
        let counter = Arc::default();
        let mut sleep = clock.sleep_until(clock.now() + Duration::from_secs(secs));
        assert!(poll_with(&mut sleep, &counter).is_pending());
        (sleep, counter)
    }

    fn wakes(counter: &Counter) -> usize {
        counter.0.load(SeqCst)
    }

    #[test]
    fn reached_deadline_is_ready_at_once() {
        fn assert_send<T: Send + 'static>(_: &T) {}
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new());
        let mut sleep = clock.sleep_until(clock.now());
        assert_send(&sleep);
        assert!(poll_with(&mut sleep, &Arc::default()).is_ready());
    }

    #[test]
    fn advance_wakes_exactly_the_due_sleepers() {
        let clock = ManualClock::new();
        let start = clock.now();
        let mut sleeps: Vec<_> = (1..=3).map(|n| armed(&clock, n)).collect();
        assert_eq!(clock.sleepers(), 3);

        clock.advance(Duration::from_secs(2));
        assert_eq!(clock.now(), start + Duration::from_secs(2));
        let counts: Vec<usize> = sleeps.iter().map(|(_, c)| wakes(c)).collect();
        assert_eq!(counts, [1, 1, 0]);
        assert_eq!(clock.sleepers(), 1);
        let polls: Vec<bool> = sleeps
            .iter_mut()
            .map(|(s, c)| poll_with(s, c).is_ready())
            .collect();
        assert_eq!(polls, [true, true, false]);

        clock.advance_to(start + Duration::from_secs(3));
        let (sleep, counter) = &mut sleeps[2];
        assert_eq!(wakes(counter), 1);
        assert!(poll_with(sleep, counter).is_ready());
        assert_eq!(clock.sleepers(), 0);
    }

    #[test]
    fn wakers_run_outside_the_lock() {
        struct Reentrant(ManualClock, AtomicUsize);
        impl Wake for Reentrant {
            fn wake(self: Arc<Self>) {
                // would deadlock if `advance` still held the lock
                self.1.store(self.0.sleepers() + 1, SeqCst);
            }
        }
        let clock = ManualClock::new();
        let reentrant = Arc::new(Reentrant(clock.clone(), AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&reentrant));
        let mut sleep = clock.sleep_until(clock.now() + Duration::from_secs(1));
        assert!(
            sleep
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        clock.advance(Duration::from_secs(1));
        assert_eq!(reentrant.1.load(SeqCst), 1);
    }

    #[test]
    fn a_panicking_waker_does_not_keep_the_others_asleep() {
        struct Panics;
        impl Wake for Panics {
            fn wake(self: Arc<Self>) {
                panic!("a waker that panics");
            }
        }
        let clock = ManualClock::new();
        let mut first = clock.sleep_until(clock.now() + Duration::from_secs(1));
        let waker = Waker::from(Arc::new(Panics));
        assert!(
            first
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        let (_second, counter) = armed(&clock, 1);
        clock.advance(Duration::from_secs(1));
        assert_eq!((wakes(&counter), clock.sleepers()), (1, 0));
    }

    #[test]
    fn advance_to_the_past_is_a_no_op() {
        let clock = ManualClock::new();
        let start = clock.now();
        clock.advance(Duration::from_secs(5));
        let (_sleep, counter) = armed(&clock, 1);
        clock.advance_to(start);
        assert_eq!(clock.now(), start + Duration::from_secs(5));
        assert_eq!((wakes(&counter), clock.sleepers()), (0, 1));
    }

    #[test]
    fn dropping_a_sleep_deregisters_it() {
        let clock = ManualClock::new();
        let (sleep, counter) = armed(&clock, 1);
        drop(sleep);
        assert_eq!(clock.sleepers(), 0);
        clock.advance(Duration::from_secs(1));
        assert_eq!(wakes(&counter), 0);

        // a woken sleep dropped unpolled must not evict whoever reused its slab key
        let (first, a) = armed(&clock, 1);
        clock.advance(Duration::from_secs(1));
        let (_second, b) = armed(&clock, 1);
        drop(first);
        assert_eq!(clock.sleepers(), 1);
        clock.advance(Duration::from_secs(1));
        assert_eq!((wakes(&a), wakes(&b)), (1, 1));
    }

    #[test]
    fn repolling_updates_the_waker_without_duplicating() {
        let clock = ManualClock::new();
        let (mut sleep, a) = armed(&clock, 1);
        let b = Arc::default();
        assert!(poll_with(&mut sleep, &b).is_pending());
        assert!(poll_with(&mut sleep, &b).is_pending());
        assert_eq!(clock.sleepers(), 1);
        clock.advance(Duration::from_secs(1));
        assert_eq!((wakes(&a), wakes(&b)), (0, 1));
    }

    #[test]
    fn next_deadline_reports_the_earliest() {
        let clock = ManualClock::new();
        assert_eq!(clock.next_deadline(), None);
        let start = clock.now();
        let _late = armed(&clock, 9);
        let _early = armed(&clock, 4);
        assert_eq!(clock.next_deadline(), Some(start + Duration::from_secs(4)));
        clock.advance_to(clock.next_deadline().unwrap());
        assert_eq!(clock.next_deadline(), Some(start + Duration::from_secs(9)));
    }

    #[test]
    fn clones_share_time_and_sleepers() {
        let clock = ManualClock::default();
        let other = clock.clone();
        let (_sleep, counter) = armed(&other, 2);
        assert_eq!(clock.sleepers(), 1);
        clock.advance(Duration::from_secs(2));
        assert_eq!(other.now(), clock.now());
        assert_eq!(wakes(&counter), 1);
    }

    #[test]
    fn system_clock_sleeps_under_block_on() {
        let clock = SystemClock::new();
        let past = clock.now();
        futures::executor::block_on(clock.sleep_until(past));
        let deadline = clock.now() + Duration::from_millis(1);
        futures::executor::block_on(clock.sleep_until(deadline));
        assert!(clock.now() >= deadline);
    }
}
