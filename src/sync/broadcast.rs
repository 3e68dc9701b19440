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
        let wakers = mem::take(&mut waiters.wakers);
        drop(waiters);
        for (_, waker) in wakers {
            waker.wake();
        }
        true
    }

    /// The number of registered waiters (for tests).
    #[cfg(test)]
    pub(crate) fn waiters(&self) -> usize {
        lock(&self.waiters).wakers.len()
    }
}
