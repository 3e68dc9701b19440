//! The concurrent primitives under the async shell (the session gate is in `session.rs`,
//! with the rest of the session path). Each has a loom model in `tests/loom.rs`.
//!
//! - [`Broadcast`]: a one-shot, level-triggered notification with any number of waiters
//!   (the stop signal, the "finished" signal).
//! - [`Queue`]: services waiting for a driver (a `Wait`).

mod broadcast;
mod queue;

pub(crate) use broadcast::Broadcast;
pub(crate) use queue::{Key as QueueKey, Queue};
