//! The pure `async_lifecycle::machine::Machine`, behind the smallest driver that gives it
//! the semantics of `Op`, against the reference model and the design's invariants.
//!
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run machine -- -max_total_time=600` (from the repository
//! root) searches longer.
#![no_main]

// The shared vocabulary, model and checker of tests/model.rs; this target uses the machine
// driver only.
#[allow(dead_code, reason = "the shell driver is for the other target")]
#[path = "../../tests/common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|schedule: common::op::Schedule| {
    if let Err(divergence) = common::check::run::<common::machine::PureMachine>(&schedule) {
        panic!("{divergence}\nschedule: {schedule:?}");
    }
});
