//! Generated shutdown schedules, run on the real lifecycle and on a naive reference model
//! side by side (`tests/common/`): state, cause, live sessions, the deadline and the whole
//! report are compared after every operation, and the design's invariants are checked.
//! A failure shrinks to a minimal schedule.
//!
//! 2,000 cases per property by default; `PROPTEST_CASES=100000 cargo test --release --test
//! model` runs a longer search.

mod common;

use common::check::{self, Driver};
use common::machine::PureMachine;
use common::op::{Config, Grace, How, Op, Schedule};
use common::shell::Shell;
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};

fn how() -> impl Strategy<Value = How> {
    prop_oneof![Just(How::Ok), Just(How::Err), Just(How::Panic)]
}

/// No pre-drain mostly; sometimes one shorter or longer than the grace.
fn pre_drain() -> impl Strategy<Value = u16> {
    prop_oneof![3 => Just(0u16), 1 => 1u16..400, 1 => 400u16..3000]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => any::<bool>().prop_map(|honours_stop| Op::AddService { honours_stop }),
        1 => (any::<bool>(), any::<bool>())
            .prop_map(|(honours_stop, always)| Op::AddRestartable { honours_stop, always }),
        4 => any::<bool>().prop_map(|named| Op::BeginSession { named }),
        1 => (any::<u8>(), any::<bool>()).prop_map(|(pick, named)| Op::BeginChild { pick, named }),
        3 => any::<u8>().prop_map(|pick| Op::EndSession { pick }),
        1 => any::<u8>().prop_map(|pick| Op::PanicSession { pick }),
        2 => (any::<u8>(), how()).prop_map(|(pick, how)| Op::ServiceExit { pick, how }),
        1 => dependent(),
        1 => any::<u8>().prop_map(|pick| Op::Ready { pick }),
        1 => any::<u8>().prop_map(|cause| Op::Stop { cause }),
        1 => Just(Op::Force),
        3 => (0u16..1000).prop_map(|millis| Op::Advance { millis }),
        2 => (0u16..100).prop_map(|millis| Op::Advance { millis }),
        3 => Just(Op::Drive),
    ]
}

fn config() -> impl Strategy<Value = Config> {
    let grace = prop_oneof![
        1 => Just(Grace::Zero),
        4 => (1u16..2000).prop_map(Grace::Millis),
        1 => Just(Grace::Unbounded),
    ];
    (grace, any::<bool>(), pre_drain()).prop_map(|(grace, report_only, pre_drain_ms)| Config {
        grace,
        report_only,
        pre_drain_ms,
    })
}

/// Most schedules begin by adding services and sessions: `wait()` stops a lifecycle that has
/// nothing to run at its first poll, which would end a schedule before it began.
fn setup() -> impl Strategy<Value = Vec<Op>> {
    let step = prop_oneof![
        any::<bool>().prop_map(|honours_stop| Op::AddService { honours_stop }),
        (any::<bool>(), any::<bool>()).prop_map(|(honours_stop, always)| Op::AddRestartable {
            honours_stop,
            always
        }),
        any::<bool>().prop_map(|named| Op::BeginSession { named }),
    ];
    prop_oneof![1 => Just(Vec::new()), 7 => prop::collection::vec(step, 1..5)]
}

fn schedule() -> impl Strategy<Value = Schedule> {
    let mixed = (config(), setup(), prop::collection::vec(op(), 0..48));
    let storm = (
        config(),
        storm_setup(),
        prop::collection::vec(storm_op(), 0..48),
    );
    let ordered = (
        ordered_config(),
        ordered_setup(),
        prop::collection::vec(ordered_op(), 0..40),
    );
    // One schedule in four is a restart storm: restartable services failing again and again
    // with short advances in between, so the backoff, the stable reset and the intensity are
    // reached (the mixed schedules reach them rarely). Three in eight are a dependency graph:
    // services declaring readiness, start timeouts, then a stop whose order, budgets and
    // give-ups the model times.
    prop_oneof![3 => mixed, 2 => storm, 3 => ordered].prop_map(|(config, setup, ops)| Schedule {
        config,
        ops: setup.into_iter().chain(ops).collect(),
    })
}

fn storm_setup() -> impl Strategy<Value = Vec<Op>> {
    let restartable =
        (any::<bool>(), any::<bool>()).prop_map(|(honours_stop, always)| Op::AddRestartable {
            honours_stop,
            always,
        });
    prop::collection::vec(restartable, 1..3)
}

fn storm_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<u8>(), how()).prop_map(|(pick, how)| Op::ServiceExit { pick, how }),
        4 => (0u16..120).prop_map(|millis| Op::Advance { millis }),
        4 => Just(Op::Drive),
        1 => (0u16..400).prop_map(|millis| Op::Advance { millis }),
        1 => any::<bool>().prop_map(|named| Op::BeginSession { named }),
        1 => any::<u8>().prop_map(|pick| Op::EndSession { pick }),
        1 => any::<u8>().prop_map(|cause| Op::Stop { cause }),
    ]
}

/// A service with options: dependencies on up to three of the latest, readiness declared
/// often, sometimes a start timeout or a budget of its own, sometimes restarted.
fn dependent() -> impl Strategy<Value = Op> {
    let restart = prop_oneof![5 => Just(None), 1 => any::<bool>().prop_map(Some)];
    (
        0u8..8,
        prop::bool::weighted(0.4),
        prop::bool::weighted(0.3),
        prop::option::weighted(0.35, any::<u8>()),
        prop::bool::weighted(0.75),
        restart,
    )
        .prop_map(
            |(on, declares_ready, start_timeout, budget, honours_stop, restart)| Op::AddDependent {
                on,
                declares_ready,
                start_timeout,
                budget,
                honours_stop,
                restart,
            },
        )
}

/// Graces the budgets (10 ms to 320 ms each) mostly fit in, and a few they do not.
fn ordered_config() -> impl Strategy<Value = Config> {
    let grace = prop_oneof![
        1 => Just(Grace::Zero),
        8 => (50u16..1500).prop_map(Grace::Millis),
        1 => Just(Grace::Unbounded),
    ];
    (grace, prop::bool::weighted(0.3)).prop_map(|(grace, report_only)| Config {
        grace,
        report_only,
        pre_drain_ms: 0,
    })
}

/// A graph first: a root or two, then services depending on them.
fn ordered_setup() -> impl Strategy<Value = Vec<Op>> {
    let step = prop_oneof![
        1 => any::<bool>().prop_map(|honours_stop| Op::AddService { honours_stop }),
        4 => dependent(),
        1 => any::<bool>().prop_map(|named| Op::BeginSession { named }),
    ];
    prop::collection::vec(step, 1..7)
}

fn ordered_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => any::<u8>().prop_map(|pick| Op::Ready { pick }),
        2 => dependent(),
        3 => (any::<u8>(), how()).prop_map(|(pick, how)| Op::ServiceExit { pick, how }),
        4 => (0u16..120).prop_map(|millis| Op::Advance { millis }),
        // Past the start timeout (150 ms) now and then.
        2 => (100u16..600).prop_map(|millis| Op::Advance { millis }),
        5 => Just(Op::Drive),
        1 => any::<u8>().prop_map(|pick| Op::EndSession { pick }),
        1 => (any::<u8>(), any::<bool>()).prop_map(|(pick, named)| Op::BeginChild { pick, named }),
        3 => any::<u8>().prop_map(|cause| Op::Stop { cause }),
    ]
}

/// At least 2,000 cases; `PROPTEST_CASES` raises (or lowers) it.
fn runner() -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(2_000);
    TestRunner::new(RunnerConfig {
        cases,
        // Failures are reported with their shrunk schedule; no regression file in the tree.
        failure_persistence: None,
        ..RunnerConfig::default()
    })
}

fn against_model<D: Driver>() {
    let result = runner().run(&schedule(), |schedule| {
        check::run::<D>(&schedule).map_err(TestCaseError::fail)
    });
    if let Err(error) = result {
        panic!("{error}");
    }
}

#[test]
fn async_shell_matches_the_model() {
    against_model::<Shell>();
}

#[test]
fn pure_machine_matches_the_model() {
    against_model::<PureMachine>();
}

/// The checker itself: schedules written by hand whose outcome is known, so a model that
/// silently agreed with anything would fail here.
#[test]
fn known_schedules_pass_and_their_reports_are_checked() {
    use async_lifecycle::State;
    let config = Config {
        grace: Grace::Millis(1000),
        report_only: false,
        pre_drain_ms: 0,
    };
    let straggler = Schedule {
        config,
        ops: vec![
            Op::AddService { honours_stop: true },
            Op::BeginSession { named: true },
            Op::Drive,
            Op::Stop { cause: 1 },
            Op::Drive,
            Op::Advance { millis: 1000 },
            Op::Drive,
        ],
    };
    check::run::<Shell>(&straggler).unwrap();
    check::run::<PureMachine>(&straggler).unwrap();
    let mut model = common::model::Model::new(config);
    for op in &straggler.ops {
        model.apply(*op);
    }
    let report = model.report().expect("abandoned at the deadline");
    assert_eq!(report.state, State::Abandoned);
    assert_eq!(
        report.abandoned,
        [("s0".to_owned(), std::time::Duration::from_secs(1))]
    );
    assert_eq!(report.exit_code, 2);
}

/// The generator reaches restarts: over the default number of cases, some schedules restart a
/// service, and some trip the restart intensity (else the restart logic would go unchecked).
#[test]
fn generated_schedules_reach_restarts_and_the_intensity() {
    use async_lifecycle::StopCause;
    use proptest::strategy::ValueTree;
    // A fixed seed: the figures describe the generator, not the luck of one run.
    let mut runner = TestRunner::deterministic();
    let (mut restarted, mut tripped, mut total) = (0, 0, 0);
    for _ in 0..2_000 {
        let schedule = schedule().new_tree(&mut runner).unwrap().current();
        let mut model = common::model::Model::new(schedule.config);
        for op in schedule.ops.iter().chain(check::EPILOGUE.iter()) {
            model.apply(*op);
        }
        let report = model.report().expect("the epilogue ends every schedule");
        total += 1;
        if report.services.iter().any(|s| s.3 > 1) {
            restarted += 1;
        }
        if matches!(report.cause, Some(StopCause::RestartIntensity { .. })) {
            tripped += 1;
        }
    }
    assert!(
        restarted * 100 >= total * 5,
        "only {restarted} of {total} schedules restart"
    );
    assert!(
        tripped * 100 >= total,
        "only {tripped} of {total} schedules trip the intensity"
    );
    eprintln!("{restarted} of {total} schedules restart a service, {tripped} trip the intensity");
}

/// The generator reaches the ordered stop: over the default number of cases, schedules
/// start services after their dependencies, stop with services still waiting (`NotStarted`),
/// release held services in order, give up on one past its budget, and fail a start both
/// ways, and some configure budgets the grace cannot hold.
#[test]
fn generated_schedules_reach_order_budgets_and_start_failures() {
    use async_lifecycle::{ServiceOutcome, State, StopCause};
    use proptest::strategy::ValueTree;
    let mut runner = TestRunner::deterministic();
    let (mut not_started, mut released, mut gave_up, mut timed_out, mut ended_unready) =
        (0, 0, 0, 0, 0);
    let (mut refused_budgets, mut total) = (0, 0);
    for _ in 0..2_000 {
        let schedule = schedule().new_tree(&mut runner).unwrap().current();
        let mut model = common::model::Model::new(schedule.config);
        for op in schedule.ops.iter().chain(check::EPILOGUE.iter()) {
            let answer = model.apply(*op);
            if let Some(common::op::Answer::Service(Err(
                async_lifecycle::ServiceError::BudgetsExceedGrace { .. },
            ))) = answer
            {
                refused_budgets += 1;
            }
        }
        let report = model.report().expect("the epilogue ends every schedule");
        total += 1;
        let outcome = |o: &ServiceOutcome| report.services.iter().any(|s| s.1 == *o);
        not_started += usize::from(outcome(&ServiceOutcome::NotStarted));
        released += usize::from(!model.releases().is_empty());
        // Abandoned though nothing was forced nor late: a service was given up on.
        gave_up += usize::from(
            report.state == State::Abandoned
                && !report.forced
                && schedule
                    .config
                    .grace
                    .bound()
                    .is_none_or(|g| report.drained_in < g),
        );
        match &report.cause {
            Some(StopCause::StartFailed {
                timeout: Some(_), ..
            }) => timed_out += 1,
            Some(StopCause::StartFailed { timeout: None, .. }) => ended_unready += 1,
            _ => {}
        }
    }
    eprintln!(
        "of {total}: {not_started} not started, {released} release held services, {gave_up} \
         give up past a budget, {timed_out} start timeouts, {ended_unready} end unready, \
         {refused_budgets} budgets refused"
    );
    for (what, count, percent) in [
        ("leave a service not started", not_started, 5),
        ("release held services", released, 8),
        ("give up on a service past its budget", gave_up, 1),
        ("time out a start", timed_out, 1),
    ] {
        assert!(
            count * 100 >= total * percent,
            "only {count} of {total} schedules {what}"
        );
    }
    assert!(
        ended_unready > 0,
        "no schedule ends a service before it was ready"
    );
    assert!(
        refused_budgets > 0,
        "no schedule configures budgets past the grace"
    );
}

/// A regression found by the model: under `ReportOnly`, a service with a start timeout that
/// ended before it was ever ready, with no dependent waiting, left its start timeout in the
/// machine's timer, and once the clock passed it `wait()` spun (both drivers' busy-loop
/// guards panic then).
#[test]
fn a_start_timeout_outlives_its_service() {
    let schedule = Schedule {
        config: Config {
            grace: Grace::Millis(270),
            report_only: true,
            pre_drain_ms: 0,
        },
        ops: vec![
            Op::AddService {
                honours_stop: false,
            },
            Op::AddDependent {
                on: 0,
                declares_ready: true,
                start_timeout: true,
                budget: None,
                honours_stop: false,
                restart: None,
            },
            Op::Drive,
            Op::ServiceExit {
                pick: 1,
                how: How::Ok,
            },
            Op::Advance { millis: 200 },
            Op::Drive,
        ],
    };
    let mut shell = Shell::new(schedule.config);
    for op in &schedule.ops {
        shell.apply(*op);
    }
    let mut machine = PureMachine::new(schedule.config);
    for op in &schedule.ops {
        machine.apply(*op);
    }
}

/// A regression found by the model: with no deadline (an unbounded grace), a service's own
/// stop budget was never timed — `poll_timeout` left budget ends out — so a stalled service
/// was never given up on past it.
#[test]
fn a_budget_without_a_deadline_is_timed() {
    use std::time::{Duration, Instant};
    let t0 = Instant::now();
    let mut m = async_lifecycle::machine::Machine::new(
        t0,
        Duration::MAX,
        async_lifecycle::FailurePolicy::StopAll,
    );
    let options = async_lifecycle::ServiceOptions::new().stop_budget(Duration::from_millis(80));
    m.add_service_with(t0, "svc0", options).unwrap();
    m.stop(t0, "stop".into());
    while m.poll().is_some() {}
    assert_eq!(
        m.poll_timeout(),
        Some(t0 + Duration::from_millis(40)),
        "slow to stop"
    );
    m.handle_timeout(t0 + Duration::from_millis(40));
    assert_eq!(
        m.poll_timeout(),
        Some(t0 + Duration::from_millis(80)),
        "the budget's end"
    );
}
