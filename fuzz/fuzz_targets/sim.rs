//! The simulator driven by the fuzzer's bytes: the scenarios of `examples/basic.rs` and
//! `examples/echo.rs` (tests/scenarios/), each schedule's every choice — which task runs,
//! when the signal lands, which fault follows — read from the input, the first byte picking
//! the scheduler (random, PCT 1, 2 or 3). A failure panics with the run's replay token.
//!
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run sim -- -max_total_time=600` (from the repository root)
//! searches longer.
#![no_main]

#[path = "../../tests/scenarios/mod.rs"]
mod scenarios;

use async_lifecycle::sim::{Choices, Config, Token};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let choices = Choices::bytes(rest);
    let token = match first % 4 {
        0 => Token::random(choices),
        depth => Token::pct(depth, 64, choices),
    };
    // The determinism check re-runs only failures: every input is one run.
    let config = Config::new();
    if let Err(failure) = config.run(&token, scenarios::basic) {
        panic!("basic: {failure}");
    }
    if let Err(failure) = config.run(&token, scenarios::echo) {
        panic!("echo: {failure}");
    }
});
