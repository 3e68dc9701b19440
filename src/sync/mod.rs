//! The concurrent primitives under the async shell. Each has a loom model in `tests/loom.rs`.
//!
//! - [`Gate`]: session admission — one atomic word packing "closed", the live count and the
//!   admitted count, so begin and end are one read-modify-write each.
//! - [`Broadcast`]: a one-shot, level-triggered notification with any number of waiters
//!   (the stop signal, the "finished" signal).
//! - [`Queue`]: services waiting for a driver (a `Wait`).

mod broadcast;
pub(crate) mod gate;
mod queue;

pub(crate) use broadcast::Broadcast;
pub(crate) use gate::Gate;
pub(crate) use queue::{Key as QueueKey, Queue};
