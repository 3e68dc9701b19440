//! A one-shot, level-triggered broadcast: once fired, every waiter (past and future) is ready.
//!
//! Waiters keep a slab key to their registered waker, so re-polling updates in place and
//! dropping a waiter removes it: no allocation per waiter once the slab has grown, and
//! firing takes the whole slab out under the lock and wakes outside it.
//!
//! # Invariants
//!
//! - `fired` (the atomic) is set only while the lock is held and `Waiters::fired` is set,
//!   so "atomic says fired" implies "no waker will be registered any more".
//! - A key is valid only while not fired: firing empties the slab, and no insertion happens
//!   afterwards, so a stale key is never reused.
//!
//! # Deadlock safety
//!
//! Wakers are woken, and dropped, after the lock is released.

use std::mem;
use std::task::{Context, Poll, Waker};

use slab::Slab;

use crate::loom::{AtomicBool, Mutex, Ordering, lock};

#[derive(Debug, Default)]
struct Waiters {
    fired: bool,
    wakers: Slab<Waker>,
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
        match key.and_then(|k| waiters.wakers.get_mut(k)) {
            Some(registered) => {
                if !registered.will_wake(cx.waker()) {
                    let old = mem::replace(registered, cx.waker().clone());
                    drop(waiters);
                    drop(old);
                }
            }
            None => *key = Some(waiters.wakers.insert(cx.waker().clone())),
        }
        Poll::Pending
    }

    /// Removes the waker registered under `key`, if any.
    pub(crate) fn cancel(&self, key: &mut Option<usize>) {
        if let Some(k) = key.take() {
            let mut waiters = lock(&self.waiters);
            if !waiters.fired {
                let old = waiters.wakers.try_remove(k);
                drop(waiters);
                drop(old);
            }
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
        let mut wakers = mem::take(&mut waiters.wakers);
        drop(waiters);
        for waker in wakers.drain() {
            // A waker is executor code: one that panics must not keep the others asleep.
            crate::complain::quietly(|| waker.wake());
        }
        // Hand the emptied storage back (nothing registers once fired), so freeing it is
        // not on the stop path: with 100,000 waiters that free made the allocator trim the
        // heap while the woken tasks ran.
        lock(&self.waiters).wakers = wakers;
        true
    }

    /// The number of registered waiters (for tests).
    #[cfg(test)]
    pub(crate) fn waiters(&self) -> usize {
        lock(&self.waiters).wakers.len()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use super::*;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (count.clone(), Waker::from(count))
    }

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
