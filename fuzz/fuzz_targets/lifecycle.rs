//! The async shell — a `Lifecycle` on a `ManualClock`, its `wait()` on a
//! `futures::executor::LocalPool` — against the reference model and the design's invariants.
//!
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run lifecycle -- -max_total_time=600` (from the repository
//! root) searches longer.
#![no_main]

// The shared vocabulary, model and checker of tests/model.rs; this target uses the shell
// driver only.
#[allow(dead_code, reason = "the machine driver is for the other target")]
#[path = "../../tests/common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|schedule: common::op::Schedule| {
    if let Err(divergence) = common::check::run::<common::shell::Shell>(&schedule) {
        panic!("{divergence}\nschedule: {schedule:?}");
    }
});
