//! Loom models of the ordered stop and readiness (issue 9); see `tests/loom/models.rs` for
//! how the loom models are built and run.
#![cfg(loom)]
