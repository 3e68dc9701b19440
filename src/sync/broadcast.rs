//! A one-shot, level-triggered broadcast: once fired, every waiter (past and future) is ready.
//!
//! The waiters' wakers are in a [`WakerSet`] under the lock; each waiter keeps the slot of
//! its registration, so re-polling refreshes it in place and dropping a waiter removes it: no
//! allocation per waiter once the set has grown. Firing takes every registration out of the
//! set in O(1) under the lock, wakes them outside it, and hands the emptied storage back; a
//! single registration (the usual `finished` waiter) is taken out in place instead.
//!
//! # Invariants
//!
//! - `fired` (the atomic) is set only while the lock is held and `Waiters::fired` is set,
//!   so "atomic says fired" implies "no waker will be registered any more".
//! - A waiter's slot never goes stale while it matters: until the broadcast fires, a
//!   registration leaves the set only by its own waiter's `cancel` (which forgets the slot),
//!   and firing empties the set for good, after which every key is ignored and nothing is
//!   registered. So looking the registration up by slot alone ([`WakerSet::key_at`]) is
//!   sound here; the waiters' keys are `Option<usize>` (slot numbers) in `lifecycle.rs` and
//!   `service.rs`.
//!
//! # Deadlock safety
//!
//! Wakers are woken, and dropped (a replaced or cancelled one included), after the lock is
//! released.

use std::task::{Context, Poll};

use super::WakerSet;
use super::wakers::Key;
use crate::loom::{AtomicBool, Mutex, Ordering, lock};

#[derive(Debug, Default)]
struct Waiters {
    fired: bool,
    wakers: WakerSet,
}

#[derive(Debug)]
pub(crate) struct Broadcast {
    /// Fast path for `is_fired`, mirrors `Waiters::fired`.
    fired: AtomicBool,
    /// Guards the registered wakers and the authoritative fired flag.
    waiters: Mutex<Waiters>,
}

impl Broadcast {
    pub(crate) fn new() -> Self {
        Broadcast {
            fired: AtomicBool::new(false),
            waiters: Mutex::new(Waiters::default()),
        }
    }

    pub(crate) fn is_fired(&self) -> bool {
        // Acquire: pairs with the Release in `fire`, so what the firer did before is visible.
        self.fired.load(Ordering::Acquire)
    }

    /// Ready once fired; otherwise registers (or refreshes) the waker under `key`.
    pub(crate) fn poll_wait(&self, key: &mut Option<usize>, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_fired() {
            *key = None;
            return Poll::Ready(());
        }
        let mut waiters = lock(&self.waiters);
        if waiters.fired {
            *key = None;
            return Poll::Ready(());
        }
        // By slot: see the invariants.
        let mut registration = key.and_then(|slot| waiters.wakers.key_at(slot));
        let replaced = waiters.wakers.register(&mut registration, (), cx.waker());
        *key = registration.map(Key::slot);
        drop(waiters);
        drop(replaced);
        Poll::Pending
    }

    /// Removes the waker registered under `key`, if any.
    pub(crate) fn cancel(&self, key: &mut Option<usize>) {
        if let Some(slot) = key.take() {
            let mut waiters = lock(&self.waiters);
            // Once fired the set is empty: no registration, nothing removed.
            let mut registration = waiters.wakers.key_at(slot);
            let old = waiters.wakers.cancel(&mut registration);
            drop(waiters);
            drop(old);
        }
    }

    /// Fires, waking every registered waiter. Returns whether this call fired it.
    pub(crate) fn fire(&self) -> bool {
        let mut waiters = lock(&self.waiters);
        if waiters.fired {
            return false;
        }
        waiters.fired = true;
        // Release: pairs with the Acquire in `is_fired`.
        self.fired.store(true, Ordering::Release);
        // The usual case, one waiter (a lifecycle's `Wait`): taken in place, so the waking
        // path neither moves the buffer out nor takes the lock again to hand it back.
        if let Some(((), waker)) = waiters.wakers.take_single() {
            drop(waiters);
            crate::complain::quietly(|| waker.wake());
            return true;
        }
        let mut woken = waiters.wakers.take_all();
        drop(waiters);
        for ((), waker) in woken.drain() {
            // A waker is executor code: one that panics must not keep the others asleep.
            crate::complain::quietly(|| waker.wake());
        }
        // Hand the emptied storage back (nothing registers once fired), so freeing it is
        // not on the stop path: with 100,000 waiters that free made the allocator trim the
        // heap while the woken tasks ran.
        if let Some(emptied) = woken.emptied() {
            lock(&self.waiters).wakers.recycle(emptied);
        }
        true
    }

    /// The number of registered waiters (for tests).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn waiters(&self) -> usize {
        lock(&self.waiters).wakers.len()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::sync::wakers::tests::counting;

    #[test]
    fn fire_wakes_every_waiter_once_and_stays_fired() {
        let b = Broadcast::new();
        let (count, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        let mut keys = [None; 3];
        for key in &mut keys {
            assert!(b.poll_wait(key, &mut cx).is_pending());
        }
        // Re-polling refreshes in place instead of registering again.
        assert!(b.poll_wait(&mut keys[0], &mut cx).is_pending());
        assert_eq!(b.waiters(), 3);
        assert!(b.fire());
        assert!(!b.fire(), "a second fire is a no-op");
        assert_eq!(count.0.load(Ordering::SeqCst), 3);
        for key in &mut keys {
            assert!(b.poll_wait(key, &mut cx).is_ready());
            assert_eq!(*key, None);
        }
        let mut fresh = None;
        assert!(
            b.poll_wait(&mut fresh, &mut cx).is_ready(),
            "late waiters are ready at once"
        );
    }

    #[test]
    fn a_single_waiter_is_taken_in_place_and_woken_once() {
        let b = Broadcast::new();
        let (count, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        let mut key = None;
        assert!(b.poll_wait(&mut key, &mut cx).is_pending());
        assert!(
            b.poll_wait(&mut key, &mut cx).is_pending(),
            "refreshed in place"
        );
        assert_eq!(b.waiters(), 1);
        assert!(b.fire());
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(b.waiters(), 0, "nothing left registered");
        assert!(!b.fire());
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "woken once");
        assert!(b.poll_wait(&mut key, &mut cx).is_ready());
        assert_eq!(key, None);
        b.cancel(&mut key);
    }

    #[test]
    fn a_cancelled_waiter_is_not_woken() {
        let b = Broadcast::new();
        let (count, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        let (mut kept, mut gone) = (None, None);
        assert!(b.poll_wait(&mut kept, &mut cx).is_pending());
        assert!(b.poll_wait(&mut gone, &mut cx).is_pending());
        b.cancel(&mut gone);
        assert_eq!(b.waiters(), 1);
        b.fire();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        b.cancel(&mut kept); // after firing: a no-op, not a panic
    }
}
