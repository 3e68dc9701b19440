//! The sync shim: `std` normally, `loom` under `cfg(loom)`, so the concurrent primitives can
//! be model-checked without changing a line of them.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
#[cfg(loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
#[cfg(not(loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, ignoring poisoning: every critical section in this crate leaves its data
/// consistent before anything in it can panic, so a poisoned lock holds valid data.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A spin lock, for the shards' registries of named sessions: taking it is one
/// compare-and-swap and releasing it a plain store (a futex mutex's release is a swap), so a
/// named session's begin and end cost one read-modify-write each for their lock. Its
/// critical sections are a slab insert or remove; a waiter backs off (pause, then yields its
/// time slice), so a holder that was preempted gets the core back. Under loom, loom's mutex:
/// the models check the same mutual exclusion and ordering.
#[cfg(not(loom))]
pub(crate) type SpinLock<T> = spin::mutex::SpinMutex<T>;
/// The guard of a [`SpinLock`].
#[cfg(not(loom))]
pub(crate) type SpinGuard<'a, T> = spin::mutex::SpinMutexGuard<'a, T>;
#[cfg(loom)]
pub(crate) type SpinLock<T> = loom::sync::Mutex<T>;
#[cfg(loom)]
pub(crate) type SpinGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

/// Takes `spin` if it is free, at once.
#[cfg(not(loom))]
#[inline]
pub(crate) fn try_spin<T>(spin: &SpinLock<T>) -> Option<SpinGuard<'_, T>> {
    spin.try_lock()
}

/// Takes `spin`, waiting for it: a few rounds of exponential pause, then yielding the time
/// slice between tries.
#[cfg(not(loom))]
#[inline]
pub(crate) fn spin_lock<T>(spin: &SpinLock<T>) -> SpinGuard<'_, T> {
    match spin.try_lock() {
        Some(guard) => guard,
        None => spin_lock_contended(spin),
    }
}

#[cfg(not(loom))]
#[cold]
fn spin_lock_contended<T>(spin: &SpinLock<T>) -> SpinGuard<'_, T> {
    let mut step = 0u32;
    loop {
        if !spin.is_locked() {
            if let Some(guard) = spin.try_lock() {
                return guard;
            }
        }
        if step < 7 {
            for _ in 0..1u32 << step {
                std::hint::spin_loop();
            }
            step += 1;
        } else {
            std::thread::yield_now();
        }
    }
}

#[cfg(loom)]
pub(crate) fn try_spin<T>(spin: &SpinLock<T>) -> Option<SpinGuard<'_, T>> {
    spin.try_lock().ok()
}

#[cfg(loom)]
pub(crate) fn spin_lock<T>(spin: &SpinLock<T>) -> SpinGuard<'_, T> {
    lock(spin)
}
