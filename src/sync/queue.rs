//! The queue of services waiting for a driver: pushed by `Lifecycle::service`, taken whole
//! by whichever `Wait` polls next.
//!
//! Services are added rarely, so this is a plain lock around a `Vec` and a [`WakerSet`] of
//! the drivers' wakers; its one job on the hot-ish path (the end of the lifecycle) is to
//! close cheaply. A push takes every driver out of the set (they re-register on their next
//! `take`), so a driver's key goes stale at each push; the set's keys are
//! generation-checked, so a stale key names no registration.
//!
//! # Invariants
//!
//! - Once closed, nothing is pushed: a push returns the item to the caller.
//! - Every driver registered when an item is pushed is woken (any one of them may take it).
//!
//! # Deadlock safety
//!
//! Wakers are woken, and dropped (a replaced or cancelled one included), and items returned
//! by `close` dropped, after the lock is released.

use std::mem;
use std::task::Context;

use super::{WakerSet, wakers};
use crate::loom::{Mutex, lock};

#[derive(Debug)]
struct Inner<T> {
    items: Vec<T>,
    closed: bool,
    drivers: WakerSet,
}

/// A driver's registration in the queue, `None` while not registered.
pub(crate) type Key = Option<wakers::Key>;

#[derive(Debug)]
pub(crate) struct Queue<T> {
    /// Guards the items, the closed flag and the drivers' wakers.
    inner: Mutex<Inner<T>>,
}

impl<T> Queue<T> {
    pub(crate) fn new() -> Self {
        Queue {
            inner: Mutex::new(Inner {
                items: Vec::new(),
                closed: false,
                drivers: WakerSet::new(),
            }),
        }
    }

    /// Pushes `item` and wakes the drivers, or hands it back if the queue is closed.
    pub(crate) fn push(&self, item: T) -> Result<(), T> {
        let mut inner = lock(&self.inner);
        if inner.closed {
            return Err(item);
        }
        inner.items.push(item);
        self.wake(inner);
        Ok(())
    }

    /// Wakes the registered drivers without pushing anything: something else they look at
    /// changed (a restart was scheduled, so the next timeout moved).
    pub(crate) fn wake_drivers(&self) {
        self.wake(lock(&self.inner));
    }

    fn wake(&self, mut inner: crate::loom::MutexGuard<'_, Inner<T>>) {
        let mut drivers = inner.drivers.take_all();
        drop(inner);
        for ((), waker) in drivers.drain() {
            // A waker is executor code: one that panics must not keep the others asleep.
            crate::complain::quietly(|| waker.wake());
        }
        // Only if a driver was taken: the set's storage, for the drivers' next registrations.
        if let Some(emptied) = drivers.emptied() {
            lock(&self.inner).drivers.recycle(emptied);
        }
    }

    /// Takes every queued item, and registers (or refreshes, under `key`) the caller's waker
    /// for the next push.
    pub(crate) fn take(&self, key: &mut Key, cx: &mut Context<'_>) -> Vec<T> {
        let mut inner = lock(&self.inner);
        let replaced = if inner.closed {
            None
        } else {
            inner.drivers.register(key, (), cx.waker())
        };
        let items = mem::take(&mut inner.items);
        drop(inner);
        drop(replaced);
        items
    }

    /// Registers (or refreshes, under `key`) the caller's waker for the next push or wake,
    /// taking nothing.
    pub(crate) fn register(&self, key: &mut Key, cx: &mut Context<'_>) {
        let mut inner = lock(&self.inner);
        let replaced = if inner.closed {
            None
        } else {
            inner.drivers.register(key, (), cx.waker())
        };
        drop(inner);
        drop(replaced);
    }

    /// Removes the waker registered under `key`, if it is still registered.
    pub(crate) fn cancel(&self, key: &mut Key) {
        if key.is_some() {
            let mut inner = lock(&self.inner);
            let old = inner.drivers.cancel(key);
            drop(inner);
            drop(old);
        }
    }

    /// Closes the queue and returns what was still in it (drop it outside any lock).
    ///
    /// The drivers' registrations stay where they are: nothing will wake them (nothing is
    /// pushed any more) and each leaves with its own driver's `cancel` (a `Wait`'s drop) or
    /// with the queue. Taking them out here put a free of their buffer on the lifecycle's
    /// end, the drain's completion path (issue 12).
    pub(crate) fn close(&self) -> Vec<T> {
        let mut inner = lock(&self.inner);
        inner.closed = true;
        mem::take(&mut inner.items)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    use super::*;

    struct Count(AtomicUsize, bool);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
            assert!(!self.1, "a waker that panics");
        }
    }

    fn counting(panics: bool) -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0), panics));
        (count.clone(), Waker::from(count))
    }

    fn wakes(count: &Count) -> usize {
        count.0.load(Ordering::SeqCst)
    }

    #[test]
    fn a_push_wakes_every_driver_once_even_past_a_panicking_waker() {
        let queue = Queue::new();
        let (panicky, panicky_waker) = counting(true);
        let (count, waker) = counting(false);
        let (mut first, mut second) = (None, None);
        assert!(
            queue
                .take(&mut first, &mut Context::from_waker(&panicky_waker))
                .is_empty()
        );
        assert!(
            queue
                .take(&mut second, &mut Context::from_waker(&waker))
                .is_empty()
        );
        // Re-taking refreshes in place.
        assert!(
            queue
                .take(&mut second, &mut Context::from_waker(&waker))
                .is_empty()
        );
        queue.push(1).unwrap();
        assert_eq!((wakes(&panicky), wakes(&count)), (1, 1));
        // Both keys are stale now: a second push wakes nobody.
        queue.push(2).unwrap();
        assert_eq!((wakes(&panicky), wakes(&count)), (1, 1));
        assert_eq!(
            queue.take(&mut second, &mut Context::from_waker(&waker)),
            [1, 2]
        );
        queue.cancel(&mut first); // stale: a no-op
        queue.push(3).unwrap();
        assert_eq!((wakes(&panicky), wakes(&count)), (1, 2));
    }

    #[test]
    fn a_cancelled_driver_is_not_woken_and_close_refuses() {
        let queue = Queue::new();
        let (count, waker) = counting(false);
        let mut key = None;
        assert!(
            queue
                .take(&mut key, &mut Context::from_waker(&waker))
                .is_empty()
        );
        queue.cancel(&mut key);
        assert_eq!(key, None);
        queue.push(1).unwrap();
        assert_eq!(wakes(&count), 0);
        assert!(queue.take(&mut key, &mut Context::from_waker(&waker)) == [1]);
        assert_eq!(queue.close(), Vec::<i32>::new());
        assert_eq!(
            wakes(&count),
            0,
            "closing drops the drivers' wakers unwoken"
        );
        assert_eq!(queue.push(2), Err(2));
        assert!(
            queue
                .take(&mut key, &mut Context::from_waker(&waker))
                .is_empty()
        );
        queue.cancel(&mut key);
    }

    #[test]
    fn close_leaves_a_drivers_registration_for_its_own_cancel() {
        let queue = Queue::new();
        let (count, waker) = counting(false);
        let mut key = None;
        assert!(
            queue
                .take(&mut key, &mut Context::from_waker(&waker))
                .is_empty()
        );
        queue.push(1).unwrap();
        assert_eq!(queue.take(&mut key, &mut Context::from_waker(&waker)), [1]);
        assert_eq!(lock(&queue.inner).drivers.len(), 1);
        queue.push(2).unwrap();
        assert_eq!(wakes(&count), 2, "the take registered again");
        assert_eq!(queue.close(), [2], "what was queued comes back");
        assert_eq!(wakes(&count), 2, "the close wakes nobody");
        // The push took the registration (its key is stale); a closed queue registers
        // nothing new.
        assert!(
            queue
                .take(&mut key, &mut Context::from_waker(&waker))
                .is_empty()
        );
        assert_eq!(lock(&queue.inner).drivers.len(), 0);
        let mut fresh = None;
        queue.register(&mut fresh, &mut Context::from_waker(&waker));
        assert_eq!(fresh, None, "closed: nothing registers");
        assert_eq!(queue.push(3), Err(3));
        assert_eq!(wakes(&count), 2);
    }

    #[test]
    fn a_registration_kept_past_the_close_leaves_with_its_cancel() {
        let queue: Queue<i32> = Queue::new();
        let (count, waker) = counting(false);
        let mut key = None;
        queue.register(&mut key, &mut Context::from_waker(&waker));
        assert!(queue.close().is_empty());
        assert_eq!(lock(&queue.inner).drivers.len(), 1);
        // The set holds a clone: the waker's count shows it.
        assert_eq!(Arc::strong_count(&count), 3);
        queue.cancel(&mut key);
        assert_eq!(lock(&queue.inner).drivers.len(), 0);
        assert_eq!(Arc::strong_count(&count), 2);
        assert_eq!(wakes(&count), 0);
    }
}
