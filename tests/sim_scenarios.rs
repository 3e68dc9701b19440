//! The crate's own scenarios under the simulator (issue 11, item 7): the logic of
//! `examples/basic.rs` (a job queue: a worker that honours its stop, a producer that ignores
//! it and holds a batch session) and of `examples/echo.rs` (an accept loop as a service, a
//! session per connection; connections are channels here, clients are tasks), each searched
//! over hundreds of schedules with the stop — a SIGTERM, a second one, a clock jump — landing
//! wherever the scheduler puts it. Every schedule must keep the examples' contract: nothing
//! admitted is lost (every session ends, or is named abandoned in the report), the exit
//! status says what happened, and a client is either served in full, turned away, or named.
#![cfg(feature = "sim")]

mod scenarios;

use async_lifecycle::sim::{Choices, Config, Token};
use proptest::prelude::*;

/// Schedules per scenario: enough for the portfolio to cover random and PCT 1 to 3 many
/// times over, fast enough for CI's debug build.
const RUNS: u64 = 2000;

#[test]
fn the_basic_example_keeps_its_contract_under_every_schedule() {
    let stats = Config::new()
        .runs(RUNS)
        .search(scenarios::basic)
        .unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(stats.runs(), RUNS);
    // The stop landed at many different points: the searches reached faults and jumps.
    assert!(stats.faults() >= RUNS, "{stats:?}");
}

#[test]
fn the_echo_example_keeps_its_contract_under_every_schedule() {
    let stats = Config::new()
        .runs(RUNS)
        .search(scenarios::echo)
        .unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(stats.runs(), RUNS);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The same contracts with the schedule drawn by proptest: a failing list of choices
    /// shrinks toward the smallest schedule that still fails.
    #[test]
    fn the_examples_keep_their_contracts_under_proptest_schedules(
        choices in proptest::collection::vec(any::<u32>(), 0..64),
        pct in 0u8..4,
    ) {
        let choices = Choices::list(choices);
        let token = match pct {
            0 => Token::random(choices),
            depth => Token::pct(depth, 64, choices),
        };
        let config = Config::new();
        if let Err(failure) = config.run(&token, scenarios::basic) {
            panic!("basic: {failure}");
        }
        if let Err(failure) = config.run(&token, scenarios::echo) {
            panic!("echo: {failure}");
        }
    }
}
