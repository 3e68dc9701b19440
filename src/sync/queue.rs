//! The queue of services waiting for a driver: pushed by `Lifecycle::service`, taken whole
//! by whichever `Wait` polls next.
//!
//! Services are added rarely, so this is a plain lock around a `Vec` and the wakers of the
//! drivers; its one job on the hot-ish path (the end of the lifecycle) is to close cheaply.
//!
//! # Invariants
//!
//! - Once closed, nothing is pushed: a push returns the item to the caller.
//! - Every driver registered when an item is pushed is woken (any one of them may take it).
//!
//! # Deadlock safety
//!
//! Wakers are woken, and items returned by `close` dropped, after the lock is released.

use std::mem;
use std::task::{Context, Waker};

use slab::Slab;

use crate::loom::{Mutex, lock};

#[derive(Debug)]
struct Inner<T> {
    items: Vec<T>,
    closed: bool,
    drivers: Slab<Waker>,
    /// Bumped whenever `drivers` is emptied, so a key from before names no slot.
    generation: u64,
}

/// A driver's registration: the generation of `drivers` it was made in, and its slot.
pub(crate) type Key = Option<(u64, usize)>;

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
                drivers: Slab::new(),
                generation: 0,
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
        let drivers = mem::take(&mut inner.drivers);
        inner.generation += 1;
        drop(inner);
        for (_, waker) in drivers {
            waker.wake();
        }
        Ok(())
    }

    /// Takes every queued item, and registers (or refreshes, under `key`) the caller's waker
    /// for the next push.
    pub(crate) fn take(&self, key: &mut Key, cx: &mut Context<'_>) -> Vec<T> {
        let mut inner = lock(&self.inner);
        if !inner.closed {
            let generation = inner.generation;
            match *key {
                Some((g, slot)) if g == generation => {
                    let registered = &mut inner.drivers[slot];
                    if !registered.will_wake(cx.waker()) {
                        *registered = cx.waker().clone();
                    }
                }
                _ => {
                    let slot = inner.drivers.insert(cx.waker().clone());
                    *key = Some((generation, slot));
                }
            }
        }
        mem::take(&mut inner.items)
    }

    /// Removes the waker registered under `key`, if it is still registered.
    pub(crate) fn cancel(&self, key: &mut Key) {
        if let Some((g, slot)) = key.take() {
            let mut inner = lock(&self.inner);
            if g == inner.generation && !inner.closed {
                let old = inner.drivers.try_remove(slot);
                drop(inner);
                drop(old);
            }
        }
    }

    /// Closes the queue and returns what was still in it (drop it outside any lock).
    pub(crate) fn close(&self) -> Vec<T> {
        let mut inner = lock(&self.inner);
        inner.closed = true;
        let drivers = mem::take(&mut inner.drivers);
        inner.generation += 1;
        let items = mem::take(&mut inner.items);
        drop(inner);
        drop(drivers);
        items
    }
}
