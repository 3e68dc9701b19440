//! The concurrent primitives under the async shell (the session gate is in `session.rs`,
//! with the rest of the session path). Each has a loom model in `tests/loom.rs`.
//!
//! - [`Broadcast`]: a one-shot, level-triggered notification with any number of waiters
//!   (the stop signal, the "finished" signal).
//! - [`Queue`]: services waiting for a driver (a `Wait`).
//!
//! Both keep their wakers in a [`WakerSet`] (module `wakers`), the crate's one waker
//! registry, which [`ManualClock`](crate::ManualClock) uses for its sleepers too: a plain
//! data structure under each user's own lock.

mod broadcast;
mod queue;
pub(crate) mod wakers;

pub(crate) use broadcast::Broadcast;
pub(crate) use queue::{Key as QueueKey, Queue};
pub(crate) use wakers::WakerSet;
