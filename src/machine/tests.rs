//! Transition tests for the pure machine: every row of the table in the module docs.

use std::time::{Duration, Instant};

use super::*;

const GRACE: Duration = Duration::from_secs(10);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn machine() -> (Machine, Instant) {
    let t0 = Instant::now();
    (Machine::new(t0, GRACE, FailurePolicy::StopAll), t0)
}

/// A census with nothing live.
fn empty() -> SessionCensus {
    SessionCensus::default()
}

/// A census with one named session live since `began` ago.
fn one_live(name: &'static str, age: Duration) -> SessionCensus {
    SessionCensus {
        admitted: 1,
        live: vec![NamedSession::new(name, age)],
        ..SessionCensus::default()
    }
}

/// Drains the actions, answering each `Census` with `census` at `now`; returns them all.
fn settle(m: &mut Machine, now: Instant, census: &SessionCensus) -> Vec<Action> {
    let mut seen = Vec::new();
    while let Some(action) = m.poll() {
        if action == Action::Census {
            m.handle_census(now, census.clone());
        }
        seen.push(action);
    }
    seen
}

#[test]
fn stop_starts_draining_closes_admission_and_asks_for_a_census() {
    let (mut m, t0) = machine();
    m.add_service(t0, "svc").unwrap();
    assert_eq!(m.poll_timeout(), None, "no deadline while running");
    assert!(m.stop(t0 + secs(1), "deploy".into()));
    assert_eq!(m.state(), State::Draining);
    assert_eq!(
        settle(&mut m, t0 + secs(1), &empty()),
        vec![Action::Drain, Action::Census]
    );
    // Half the grace first (the slow-to-stop warning), then the deadline.
    assert_eq!(m.poll_timeout(), Some(t0 + secs(6)));
    m.handle_timeout(t0 + secs(6));
    assert!(matches!(
        m.poll(),
        Some(Action::SlowToStop { name, elapsed, .. }) if name == "svc" && elapsed == secs(5)
    ));
    assert_eq!(m.poll(), None, "once");
    assert_eq!(m.poll_timeout(), Some(t0 + secs(11)));
    assert_eq!(m.state(), State::Draining, "the service still runs");
}

#[test]
fn the_first_stop_cause_is_kept() {
    let (mut m, t0) = machine();
    m.add_service(t0, "svc").unwrap();
    assert!(m.stop(t0, "first".into()));
    assert!(!m.stop(t0 + secs(1), "second".into()));
    assert_eq!(m.cause(), Some(&StopCause::from("first")));
    assert_eq!(
        settle(&mut m, t0, &empty()),
        vec![Action::Drain, Action::Census],
        "one drain only"
    );
    assert_eq!(
        m.poll_timeout(),
        Some(t0 + GRACE / 2),
        "the slow-to-stop timer did not move"
    );
    m.handle_timeout(t0 + GRACE / 2);
    assert_eq!(
        m.poll_timeout(),
        Some(t0 + GRACE),
        "the deadline did not move"
    );
}

#[test]
fn terminates_when_services_exit_and_sessions_drain_in_either_order() {
    for sessions_first in [true, false] {
        let (mut m, t0) = machine();
        let svc = m.add_service(t0, "svc").unwrap();
        m.stop(t0, "deploy".into());
        settle(&mut m, t0, &one_live("s", secs(0)));
        if sessions_first {
            m.handle_census(t0 + secs(1), empty());
            assert_eq!(m.state(), State::Draining);
            m.service_exited(t0 + secs(2), svc, Exit::Ok);
            assert_eq!(m.poll(), Some(Action::Census), "the last count");
            m.handle_census(t0 + secs(2), empty());
        } else {
            m.service_exited(t0 + secs(2), svc, Exit::Ok);
            assert_eq!(m.poll(), None, "a session is still live");
            assert_eq!(m.state(), State::Draining);
            m.handle_census(t0 + secs(2), empty());
        }
        assert_eq!(m.state(), State::Terminated);
        assert_eq!(m.poll(), Some(Action::Finish));
        let report = m.report().unwrap();
        assert_eq!(
            report.service("svc").unwrap().outcome(),
            &ServiceOutcome::Stopped
        );
        assert_eq!(report.service("svc").unwrap().ran(), secs(2));
        assert_eq!(report.drained_in(), secs(2));
        assert_eq!(report.exit_code(), 0);
    }
}

#[test]
fn nothing_is_admitted_outside_running_and_names_are_unique() {
    let (mut m, t0) = machine();
    let svc = m.add_service(t0, "svc").unwrap();
    assert_eq!(
        m.add_service(t0, "svc"),
        Err(ServiceError::DuplicateName("svc".into()))
    );
    m.stop(t0, "deploy".into());
    settle(&mut m, t0, &empty());
    assert_eq!(
        m.add_service(t0, "late"),
        Err(ServiceError::Refused(Refused::Draining))
    );
    m.service_exited(t0, svc, Exit::Ok);
    settle(&mut m, t0, &empty());
    assert_eq!(m.state(), State::Terminated);
    assert_eq!(
        m.add_service(t0, "later"),
        Err(ServiceError::Refused(Refused::Ended))
    );
    assert_eq!(m.services(), 1);
}

#[test]
fn the_deadline_asks_for_a_census_and_abandons_whatever_is_still_running() {
    let (mut m, t0) = machine();
    let done = m.add_service(t0, "done").unwrap();
    m.add_service(t0, "stuck").unwrap();
    m.stop(t0, "deploy".into());
    settle(&mut m, t0, &one_live("conn", secs(0)));
    m.service_exited(t0 + secs(1), done, Exit::Ok);
    m.handle_timeout(t0 + secs(9));
    assert!(
        matches!(m.poll(), Some(Action::SlowToStop { name, .. }) if name == "stuck"),
        "only the running service is slow"
    );
    assert_eq!(m.poll(), None, "before the deadline nothing else happens");
    m.handle_timeout(t0 + secs(10));
    assert_eq!(m.poll(), Some(Action::Census), "at the deadline exactly");
    m.handle_census(t0 + secs(10), one_live("conn", secs(10)));
    assert_eq!(m.state(), State::Abandoned);
    let actions: Vec<Action> = std::iter::from_fn(|| m.poll()).collect();
    assert_eq!(actions[0], Action::Abandon);
    assert!(
        matches!(&actions[1], Action::Complain { name, outcome: ServiceOutcome::Abandoned, .. } if name == "stuck")
    );
    assert_eq!(actions[2], Action::Finish);
    let report = m.report().unwrap();
    assert_eq!(
        report.service("stuck").unwrap().outcome(),
        &ServiceOutcome::Abandoned
    );
    assert_eq!(report.service("stuck").unwrap().ran(), secs(10));
    assert_eq!(report.sessions().abandoned()[0].name(), "conn");
    assert_eq!(report.exit_code(), 2);
}

#[test]
fn the_last_sessions_end_is_a_lone_finish_with_the_drain_timed_from_the_stop() {
    let (mut m, t0) = machine();
    let svc = m.add_service(t0, "svc").unwrap();
    m.stop(t0 + secs(2), "deploy".into());
    settle(&mut m, t0 + secs(2), &one_live("conn", secs(0)));
    m.service_exited(t0 + secs(3), svc, Exit::Ok);
    assert_eq!(m.take_lone_finish(), None, "not ended: a session is live");
    settle(&mut m, t0 + secs(3), &one_live("conn", secs(1)));
    m.handle_census(t0 + secs(5), empty());
    let report = m
        .take_lone_finish()
        .expect("the finish is all there is to do");
    assert_eq!(m.poll(), None, "taken");
    assert_eq!(m.take_lone_finish(), None, "once");
    assert_eq!(Some(&report), m.report());
    assert_eq!(report.state(), State::Terminated);
    assert_eq!(report.drained_in(), secs(3));
    assert_eq!(report.lifetime(), secs(5));
}

#[test]
fn an_abandoning_end_is_not_a_lone_finish() {
    let (mut m, t0) = machine();
    m.add_service(t0, "stuck").unwrap();
    m.stop(t0, "deploy".into());
    settle(&mut m, t0, &one_live("conn", secs(0)));
    m.handle_timeout(t0 + GRACE);
    // Past the slow-to-stop warning, to the deadline's census.
    while m.poll().is_some_and(|action| action != Action::Census) {}
    m.handle_census(t0 + GRACE, one_live("conn", GRACE));
    assert_eq!(m.state(), State::Abandoned);
    assert_eq!(
        m.take_lone_finish(),
        None,
        "the abort and the complaint come first"
    );
    assert_eq!(m.poll(), Some(Action::Abandon), "nothing was taken");
}

#[test]
fn a_census_at_the_deadline_with_nothing_left_terminates() {
    // The last session ended just before the deadline; its own report is still on its way.
    let (mut m, t0) = machine();
    m.stop(t0, "deploy".into());
    settle(&mut m, t0, &one_live("conn", secs(0)));
    m.handle_timeout(t0 + GRACE);
    settle(&mut m, t0 + GRACE, &empty());
    assert_eq!(m.state(), State::Terminated);
    assert_eq!(m.report().unwrap().exit_code(), 0);
}

#[test]
fn a_clock_jump_far_past_the_deadline_abandons_once() {
    let (mut m, t0) = machine();
    m.add_service(t0, "stuck").unwrap();
    m.stop(t0, "deploy".into());
    settle(&mut m, t0, &empty());
    m.handle_timeout(t0 + secs(3600));
    settle(&mut m, t0 + secs(3600), &empty());
    assert_eq!(m.state(), State::Abandoned);
    let report = m.report().unwrap().clone();
    assert_eq!(report.drained_in(), secs(3600));
    m.handle_timeout(t0 + secs(7200));
    m.handle_census(t0 + secs(7200), one_live("late", secs(1)));
    assert_eq!(m.poll(), None);
    assert_eq!(m.report().unwrap(), &report, "final is final");
}

#[test]
fn unclean_exits_while_running_stop_everything_by_default() {
    let (mut m, t0) = machine();
    let a = m.add_service(t0, "a").unwrap();
    m.add_service(t0, "b").unwrap();
    m.service_exited(t0 + secs(1), a, Exit::Err("disk full: io error".into()));
    assert_eq!(m.state(), State::Draining);
    assert_eq!(
        m.cause(),
        Some(&StopCause::ServiceEnded {
            service: "a".into()
        })
    );
    let actions = settle(&mut m, t0 + secs(1), &empty());
    assert!(
        matches!(&actions[0], Action::Complain { outcome: ServiceOutcome::Failed(e), .. } if e == "disk full: io error")
    );
    assert_eq!(actions[1..], [Action::Drain, Action::Census]);
}

#[test]
fn an_ok_return_before_stop_is_an_early_end() {
    let (mut m, t0) = machine();
    let a = m.add_service(t0, "a").unwrap();
    m.service_exited(t0, a, Exit::Ok);
    assert_eq!(m.state(), State::Draining);
    settle(&mut m, t0, &empty());
    let report = m.report().unwrap();
    assert_eq!(
        report.service("a").unwrap().outcome(),
        &ServiceOutcome::EndedEarly
    );
    assert_eq!(report.exit_code(), 1, "terminated, but not cleanly");
}

#[test]
fn report_only_keeps_running_after_a_failure() {
    let t0 = Instant::now();
    let mut m = Machine::new(t0, GRACE, FailurePolicy::ReportOnly);
    let a = m.add_service(t0, "a").unwrap();
    let b = m.add_service(t0, "b").unwrap();
    m.service_exited(t0, a, Exit::Panic("boom".into()));
    assert_eq!(m.state(), State::Running);
    assert!(matches!(m.poll(), Some(Action::Complain { .. })));
    assert_eq!(m.poll(), None);
    m.stop(t0, "deploy".into());
    settle(&mut m, t0, &empty());
    m.service_exited(t0, b, Exit::Ok);
    settle(&mut m, t0, &empty());
    let report = m.report().unwrap();
    assert_eq!(report.state(), State::Terminated);
    assert_eq!(
        report.service("a").unwrap().outcome(),
        &ServiceOutcome::Panicked("boom".into())
    );
    assert_eq!(report.exit_code(), 1);
}

#[test]
fn a_panic_while_draining_is_reported_and_still_terminates() {
    let (mut m, t0) = machine();
    let a = m.add_service(t0, "a").unwrap();
    m.stop(t0, "deploy".into());
    settle(&mut m, t0, &empty());
    m.service_exited(t0, a, Exit::Panic("oops".into()));
    settle(&mut m, t0, &empty());
    assert_eq!(m.state(), State::Terminated);
    let report = m.report().unwrap();
    assert_eq!(
        report.service("a").unwrap().outcome(),
        &ServiceOutcome::Panicked("oops".into())
    );
    assert_eq!(report.exit_code(), 1);
}

#[test]
fn force_decides_on_its_own_census() {
    let (mut m, t0) = machine();
    m.add_service(t0, "stuck").unwrap();
    m.force(t0 + secs(1));
    assert_eq!(m.state(), State::Draining);
    assert_eq!(m.cause(), Some(&StopCause::Forced));
    assert_eq!(m.poll_timeout(), Some(t0 + secs(1)));
    settle(&mut m, t0 + secs(1), &empty());
    let report = m.report().unwrap();
    assert!(report.forced());
    assert_eq!(report.state(), State::Abandoned);
}

#[test]
fn force_while_draining_keeps_the_cause() {
    let (mut m, t0) = machine();
    m.add_service(t0, "stuck").unwrap();
    m.stop(t0, "SIGTERM".into());
    settle(&mut m, t0, &empty());
    m.force(t0 + secs(2));
    assert_eq!(m.poll_timeout(), Some(t0 + secs(2)));
    assert_eq!(settle(&mut m, t0 + secs(2), &empty())[0], Action::Census);
    assert_eq!(m.state(), State::Abandoned);
    assert_eq!(m.cause(), Some(&StopCause::from("SIGTERM")));
}

#[test]
fn zero_grace_decides_at_the_stop_whatever_runs_the_services() {
    let t0 = Instant::now();
    let mut m = Machine::new(t0, Duration::ZERO, FailurePolicy::StopAll);
    m.stop(t0, "now".into());
    settle(&mut m, t0, &empty());
    assert_eq!(m.state(), State::Terminated, "nothing was running");

    // A service that would return as soon as it sees its stop has not seen it yet: the
    // stop's own census is the deadline's, so it is abandoned on every executor.
    let mut m = Machine::new(t0, Duration::ZERO, FailurePolicy::StopAll);
    let svc = m.add_service(t0, "svc").unwrap();
    m.stop(t0, "now".into());
    settle(&mut m, t0, &empty());
    assert_eq!(m.state(), State::Abandoned);
    m.service_exited(t0, svc, Exit::Ok);
    assert_eq!(
        m.report().unwrap().service("svc").unwrap().outcome(),
        &ServiceOutcome::Abandoned
    );
}

#[test]
fn an_unrepresentable_grace_means_no_deadline() {
    let t0 = Instant::now();
    let mut m = Machine::new(t0, Duration::MAX, FailurePolicy::StopAll);
    m.add_service(t0, "svc").unwrap();
    m.stop(t0, "deploy".into());
    settle(&mut m, t0, &empty());
    assert_eq!(m.poll_timeout(), None);
    m.force(t0 + secs(5));
    assert_eq!(m.poll_timeout(), Some(t0 + secs(5)), "force still works");
}

#[test]
fn exits_after_the_end_and_double_exits_are_ignored() {
    let (mut m, t0) = machine();
    let a = m.add_service(t0, "a").unwrap();
    m.stop(t0, "deploy".into());
    settle(&mut m, t0, &empty());
    m.handle_timeout(t0 + GRACE);
    settle(&mut m, t0 + GRACE, &empty());
    m.service_exited(t0 + GRACE + secs(1), a, Exit::Ok);
    assert_eq!(
        m.report().unwrap().service("a").unwrap().outcome(),
        &ServiceOutcome::Abandoned
    );

    let (mut m, t0) = machine();
    let a = m.add_service(t0, "a").unwrap();
    m.add_service(t0, "b").unwrap();
    m.stop(t0, "deploy".into());
    m.service_exited(t0, a, Exit::Ok);
    m.service_exited(t0, a, Exit::Dropped);
    assert_eq!(
        m.running_services(),
        1,
        "a second exit is not counted twice"
    );
}

#[test]
fn the_first_wait_stops_a_lifecycle_with_nothing_to_run_once() {
    let (mut m, t0) = machine();
    m.handle_wait_started(t0);
    assert_eq!(m.poll(), Some(Action::Census));
    m.handle_census(t0, one_live("early", secs(0)));
    assert_eq!(
        m.state(),
        State::Running,
        "a live session is something to run"
    );
    m.handle_wait_started(t0);
    assert_eq!(m.poll(), None, "asked once per machine");

    let (mut m, t0) = machine();
    m.handle_wait_started(t0);
    settle(&mut m, t0, &empty());
    assert_eq!(m.state(), State::Terminated);
    assert_eq!(m.cause(), Some(&StopCause::NothingToRun));

    let (mut m, t0) = machine();
    m.add_service(t0, "svc").unwrap();
    m.handle_wait_started(t0);
    assert_eq!(m.poll(), None, "a service is something to run");
}

#[test]
fn the_report_counts_sessions_and_orders_stragglers_oldest_first() {
    let (mut m, t0) = machine();
    m.stop(t0, "deploy".into());
    let census = SessionCensus {
        admitted: 10,
        refused: 3,
        live: vec![
            NamedSession::new("young", secs(11)),
            NamedSession::new("old", secs(60)),
        ],
        live_unnamed: 1,
        panicked: vec![PanickedSession::new(
            Some("GET /boom".into()),
            Some("index out of bounds".into()),
        )],
        panicked_count: 2,
    };
    settle(&mut m, t0, &census);
    m.handle_timeout(t0 + GRACE);
    settle(&mut m, t0 + GRACE, &census);
    let report = m.report().unwrap();
    let s = report.sessions();
    assert_eq!(
        (
            s.admitted(),
            s.completed(),
            s.refused(),
            s.panicked(),
            s.abandoned_count()
        ),
        (10, 5, 3, 2, 3)
    );
    assert_eq!(s.abandoned()[0].name(), "old");
    let text = report.to_string();
    assert!(text.contains("ABANDONED old  (age 60.000s)"), "{text}");
    assert!(text.contains("ABANDONED 1 unnamed session(s)"), "{text}");
    assert!(
        text.contains("PANICKED GET /boom: index out of bounds"),
        "{text}"
    );
    assert!(text.contains("PANICKED 1 more session(s)"), "{text}");
    assert!(text.contains("stop cause: requested: deploy"), "{text}");
    assert!(text.ends_with("exit code: 2"), "{text}");
}

#[test]
fn no_report_before_a_final_state() {
    let (mut m, t0) = machine();
    assert!(m.report().is_none());
    m.stop(t0, "deploy".into());
    assert!(m.report().is_none());
}

#[test]
fn a_service_exit_at_or_after_the_deadline_is_too_late() {
    let (mut m, t0) = machine();
    let svc = m.add_service(t0, "svc").unwrap();
    m.stop(t0, "deploy".into());
    settle(&mut m, t0, &empty());
    // The timer has not been handled yet, but the clock is past the deadline: the exit is
    // late whichever of the two the executor ran first.
    m.service_exited(t0 + GRACE, svc, Exit::Ok);
    assert_eq!(settle(&mut m, t0 + GRACE, &empty())[0], Action::Census);
    assert_eq!(m.state(), State::Abandoned);
    assert_eq!(
        m.report().unwrap().service("svc").unwrap().outcome(),
        &ServiceOutcome::Abandoned
    );
}

#[test]
fn a_stop_trigger_is_something_to_run() {
    let (mut m, t0) = machine();
    m.handle_stop_trigger();
    m.handle_wait_started(t0);
    assert_eq!(m.poll(), None, "no census: nothing to decide");
    assert_eq!(m.state(), State::Running);
}

#[test]
fn the_report_escapes_names_and_says_when_there_is_no_grace_limit() {
    let t0 = Instant::now();
    let mut m = Machine::new(t0, Duration::MAX, FailurePolicy::StopAll);
    m.add_service(t0, "evil\n  ok   forged 0").unwrap();
    m.stop(t0, "deploy".into());
    let census = one_live("conn\u{1b}[31m", secs(1));
    settle(&mut m, t0, &census);
    m.force(t0);
    settle(&mut m, t0, &census);
    let text = m.report().unwrap().to_string();
    assert!(text.contains("(no grace limit)"), "{text}");
    assert!(text.contains("evil\\n  ok"), "{text}");
    assert!(text.contains("conn\\u{1b}[31m"), "{text}");
    assert!(!text.contains('\u{1b}'), "{text}");
}

#[test]
fn a_first_run_made_later_counts_when_made_and_a_stop_before_it_is_clean() {
    let (mut m, t0) = machine();
    let made = m.add_service(t0, "made").unwrap();
    let never = m.add_service(t0, "never").unwrap();
    m.first_run_pending(made);
    m.first_run_pending(never);
    assert_eq!(m.service_restarts(made).0, 0, "not an attempt until made");
    m.run_made(t0, made);
    assert_eq!(m.service_restarts(made).0, 1);
    m.stop(t0, "deploy".into());
    settle(&mut m, t0, &empty());
    m.service_exited(t0, made, Exit::Ok);
    settle(&mut m, t0, &empty());
    let report = m.report().unwrap();
    let never = report.service("never").unwrap();
    assert_eq!(
        never.outcome(),
        &ServiceOutcome::NotStarted,
        "stopped before it started"
    );
    assert_eq!(never.attempts(), 0);
    assert_eq!(report.exit_code(), 0);
}

/// Options for a service that starts after `on`.
fn after(on: &[&'static str]) -> ServiceOptions {
    ServiceOptions::new().after(on.iter().copied())
}

#[test]
fn a_dependent_is_started_once_its_dependency_declares_itself_ready() {
    let (mut m, t0) = machine();
    let db = m
        .add_service_with(t0, "db", ServiceOptions::new().declares_ready())
        .unwrap();
    let api = m.add_service_with(t0, "api", after(&["db"])).unwrap();
    assert_eq!(m.poll(), None, "api waits for db");
    assert_eq!(m.service_readiness(api), (true, false));
    assert!(m.service_ready(t0 + secs(1), db));
    assert!(!m.service_ready(t0 + secs(1), db), "once");
    assert_eq!(m.poll(), Some(Action::Start { service: api }));
    m.run_made(t0 + secs(1), api);
    assert_eq!(m.service_readiness(api), (false, true));
    assert_eq!(m.service_restarts(api).0, 1);
    // A dependent added after its dependency was ready starts at once.
    let late = m
        .add_service_with(t0, "late", after(&["db", "api"]))
        .unwrap();
    assert_eq!(m.poll(), Some(Action::Start { service: late }));
}

#[test]
fn a_start_timeout_is_a_timer_and_fails_the_start() {
    let (mut m, t0) = machine();
    let options = ServiceOptions::new()
        .declares_ready()
        .start_timeout(secs(3));
    m.add_service_with(t0, "db", options).unwrap();
    let api = m.add_service_with(t0, "api", after(&["db"])).unwrap();
    assert_eq!(m.poll_timeout(), Some(t0 + secs(3)));
    m.handle_timeout(t0 + secs(3));
    assert_eq!(
        m.cause(),
        Some(&StopCause::StartFailed {
            service: "db".into(),
            timeout: Some(secs(3))
        })
    );
    assert_eq!(
        m.service_status(api).1,
        Some(&(t0 + secs(3), ServiceOutcome::NotStarted))
    );
}

#[test]
fn the_stop_signals_services_in_reverse_order_with_budgets_halving_down_the_chain() {
    let (mut m, t0) = machine(); // 10 s of grace
    let a = m.add_service(t0, "a").unwrap();
    let b = m.add_service_with(t0, "b", after(&["a"])).unwrap();
    let c = m.add_service_with(t0, "c", after(&["b"])).unwrap();
    for id in [b, c] {
        assert_eq!(m.poll(), Some(Action::Start { service: id }));
        m.run_made(t0, id);
    }
    m.stop(t0, "deploy".into());
    assert_eq!(m.held().collect::<Vec<_>>(), [a, b], "only c is signalled");
    assert_eq!(
        settle(&mut m, t0, &empty()),
        [Action::Drain, Action::Census]
    );
    // c: half the 10 s (b still runs below it); its warning at half of that.
    assert_eq!(m.poll_timeout(), Some(t0 + Duration::from_millis(2_500)));
    m.service_exited(t0 + secs(1), c, Exit::Ok);
    assert_eq!(m.poll(), Some(Action::Release { service: b }));
    assert_eq!(m.held().collect::<Vec<_>>(), [a]);
    // b: the 9 s left / 2 = 4.5 s, until 5.5 s: past it, given up on, and a released.
    assert_eq!(
        m.service_deadline(b),
        Some(t0 + Duration::from_millis(5_500))
    );
    m.handle_timeout(t0 + Duration::from_millis(5_500));
    let actions = settle(&mut m, t0 + Duration::from_millis(5_500), &empty());
    assert!(
        actions.contains(&Action::GiveUp { service: b }),
        "{actions:?}"
    );
    assert!(
        actions.contains(&Action::Release { service: a }),
        "{actions:?}"
    );
    // a: the rest, to the deadline.
    assert_eq!(m.service_deadline(a), Some(t0 + secs(10)));
    m.service_exited(t0 + secs(6), a, Exit::Ok);
    settle(&mut m, t0 + secs(6), &empty());
    let report = m.report().expect("ended");
    assert_eq!(report.state(), State::Abandoned, "b was given up on");
    assert_eq!(report.exit_code(), 2);
    assert_eq!(report.services()[1].outcome(), &ServiceOutcome::Abandoned);
    assert_eq!(report.services()[0].outcome(), &ServiceOutcome::Stopped);
}

#[test]
fn an_exit_at_its_budget_end_is_too_late_whatever_ran_first() {
    let (mut m, t0) = machine();
    m.add_service(t0, "a").unwrap();
    let b = m
        .add_service_with(t0, "b", after(&["a"]).stop_budget(secs(2)))
        .unwrap();
    assert_eq!(m.poll(), Some(Action::Start { service: b }));
    m.run_made(t0, b);
    m.stop(t0, "deploy".into());
    settle(&mut m, t0, &empty());
    m.service_exited(t0 + secs(2), b, Exit::Ok);
    let actions = settle(&mut m, t0 + secs(2), &empty());
    assert!(
        actions.contains(&Action::GiveUp { service: b }),
        "{actions:?}"
    );
    assert_eq!(
        m.service_status(b).1,
        Some(&(t0 + secs(2), ServiceOutcome::Abandoned))
    );
}

#[test]
fn budgets_that_cannot_fit_in_the_grace_are_refused_when_added() {
    let (mut m, t0) = machine(); // 10 s
    m.add_service_with(t0, "a", ServiceOptions::new().stop_budget(secs(4)))
        .unwrap();
    m.add_service_with(t0, "b", after(&["a"]).stop_budget(secs(6)))
        .unwrap();
    assert_eq!(
        m.add_service_with(t0, "c", after(&["b"]).stop_budget(secs(1))),
        Err(ServiceError::BudgetsExceedGrace {
            service: "c".into(),
            total: secs(11),
            grace: GRACE
        })
    );
    // A sibling chain that fits is fine: budgets add along a chain, not across branches.
    m.add_service_with(t0, "d", after(&["a"]).stop_budget(secs(6)))
        .unwrap();
}
