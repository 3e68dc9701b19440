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

fn drain(m: &mut Machine) -> Vec<Action> {
    std::iter::from_fn(|| m.poll()).collect()
}

#[test]
fn stop_starts_draining_and_arms_the_deadline() {
    let (mut m, t0) = machine();
    assert_eq!(m.poll_timeout(), None, "no deadline while running");
    assert!(m.stop(t0 + secs(1), "deploy".into()));
    assert_eq!(m.state(), State::Draining);
    assert_eq!(drain(&mut m), vec![Action::Drain]);
    assert_eq!(m.poll_timeout(), Some(t0 + secs(11)));
}

#[test]
fn the_first_stop_cause_is_kept() {
    let (mut m, t0) = machine();
    m.add_service(t0, "svc").unwrap();
    assert!(m.stop(t0, "first".into()));
    assert!(!m.stop(t0 + secs(1), "second".into()));
    assert_eq!(m.cause(), Some(&StopCause::from("first")));
    assert_eq!(drain(&mut m), vec![Action::Drain], "one drain only");
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
        if sessions_first {
            m.handle_sessions_drained(t0);
            assert_eq!(m.state(), State::Draining);
            m.service_exited(t0 + secs(2), svc, Exit::Ok);
        } else {
            m.service_exited(t0 + secs(2), svc, Exit::Ok);
            assert_eq!(m.state(), State::Draining, "a session may still be live");
            m.handle_sessions_drained(t0 + secs(2));
        }
        assert_eq!(m.state(), State::Terminated);
        assert_eq!(drain(&mut m), vec![Action::Drain, Action::Finish]);
        let report = m.report(SessionTally::default()).unwrap();
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
fn nothing_is_admitted_outside_running() {
    let (mut m, t0) = machine();
    let svc = m.add_service(t0, "svc").unwrap();
    m.stop(t0, "deploy".into());
    assert_eq!(m.add_service(t0, "late"), Err(Refused::Draining));
    m.handle_sessions_drained(t0);
    m.service_exited(t0, svc, Exit::Ok);
    assert_eq!(m.add_service(t0, "later"), Err(Refused::Terminated));
    assert_eq!(m.services(), 1);
}

#[test]
fn the_deadline_abandons_whatever_is_still_running() {
    let (mut m, t0) = machine();
    let done = m.add_service(t0, "done").unwrap();
    m.add_service(t0, "stuck").unwrap();
    m.stop(t0, "deploy".into());
    m.handle_sessions_drained(t0);
    m.service_exited(t0 + secs(1), done, Exit::Ok);
    m.handle_timeout(t0 + secs(9));
    assert_eq!(
        m.state(),
        State::Draining,
        "before the deadline nothing happens"
    );
    m.handle_timeout(t0 + secs(10));
    assert_eq!(
        m.state(),
        State::Abandoned,
        "at the deadline exactly it gives up"
    );
    let actions = drain(&mut m);
    assert_eq!(actions[0], Action::Drain);
    assert_eq!(actions[1], Action::Abandon);
    assert!(
        matches!(&actions[2], Action::Complain { name, outcome: ServiceOutcome::Abandoned, .. } if name == "stuck")
    );
    assert_eq!(actions[3], Action::Finish);
    let report = m.report(SessionTally::default()).unwrap();
    assert_eq!(
        report.service("stuck").unwrap().outcome(),
        &ServiceOutcome::Abandoned
    );
    assert_eq!(report.service("stuck").unwrap().ran(), secs(10));
    assert_eq!(report.exit_code(), 2);
}

#[test]
fn a_clock_jump_far_past_the_deadline_abandons_once() {
    let (mut m, t0) = machine();
    m.add_service(t0, "stuck").unwrap();
    m.stop(t0, "deploy".into());
    m.handle_timeout(t0 + secs(3600));
    assert_eq!(m.state(), State::Abandoned);
    let report = m.report(SessionTally::default()).unwrap();
    assert_eq!(report.drained_in(), secs(3600));
    m.handle_timeout(t0 + secs(7200));
    assert_eq!(
        m.report(SessionTally::default()).unwrap(),
        report,
        "final is final"
    );
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
    let actions = drain(&mut m);
    assert!(
        matches!(&actions[0], Action::Complain { outcome: ServiceOutcome::Failed(e), .. } if e == "disk full: io error")
    );
    assert_eq!(actions[1], Action::Drain);
}

#[test]
fn an_ok_return_before_stop_is_an_early_end() {
    let (mut m, t0) = machine();
    let a = m.add_service(t0, "a").unwrap();
    m.service_exited(t0, a, Exit::Ok);
    assert_eq!(m.state(), State::Draining);
    m.handle_sessions_drained(t0);
    let report = m.report(SessionTally::default()).unwrap();
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
    m.handle_sessions_drained(t0);
    m.service_exited(t0, b, Exit::Ok);
    let report = m.report(SessionTally::default()).unwrap();
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
    m.handle_sessions_drained(t0);
    m.service_exited(t0, a, Exit::Panic("oops".into()));
    assert_eq!(m.state(), State::Terminated);
    let report = m.report(SessionTally::default()).unwrap();
    assert_eq!(
        report.service("a").unwrap().outcome(),
        &ServiceOutcome::Panicked("oops".into())
    );
    assert_eq!(report.exit_code(), 1);
}

#[test]
fn force_moves_the_deadline_to_now() {
    let (mut m, t0) = machine();
    m.add_service(t0, "stuck").unwrap();
    m.force(t0 + secs(1));
    assert_eq!(m.state(), State::Draining);
    assert_eq!(m.cause(), Some(&StopCause::Forced));
    assert_eq!(m.poll_timeout(), Some(t0 + secs(1)));
    m.handle_timeout(t0 + secs(1));
    let report = m.report(SessionTally::default()).unwrap();
    assert!(report.forced());
    assert_eq!(report.state(), State::Abandoned);
}

#[test]
fn force_while_draining_keeps_the_cause() {
    let (mut m, t0) = machine();
    m.add_service(t0, "stuck").unwrap();
    m.stop(t0, "SIGTERM".into());
    m.force(t0 + secs(2));
    assert_eq!(m.poll_timeout(), Some(t0 + secs(2)));
    m.handle_timeout(t0 + secs(2));
    assert_eq!(m.state(), State::Abandoned);
    assert_eq!(m.cause(), Some(&StopCause::from("SIGTERM")));
}

#[test]
fn zero_grace_abandons_at_the_stop_unless_everything_already_ended() {
    let t0 = Instant::now();
    let mut m = Machine::new(t0, Duration::ZERO, FailurePolicy::StopAll);
    m.stop(t0, "now".into());
    m.handle_sessions_drained(t0);
    assert_eq!(m.state(), State::Terminated, "nothing was running");

    let mut m = Machine::new(t0, Duration::ZERO, FailurePolicy::StopAll);
    m.add_service(t0, "svc").unwrap();
    m.stop(t0, "now".into());
    assert_eq!(m.poll_timeout(), Some(t0));
    m.handle_timeout(t0);
    assert_eq!(m.state(), State::Abandoned);
}

#[test]
fn an_unrepresentable_grace_means_no_deadline() {
    let t0 = Instant::now();
    let mut m = Machine::new(t0, Duration::MAX, FailurePolicy::StopAll);
    m.add_service(t0, "svc").unwrap();
    m.stop(t0, "deploy".into());
    assert_eq!(m.poll_timeout(), None);
    m.force(t0 + secs(5));
    assert_eq!(m.poll_timeout(), Some(t0 + secs(5)), "force still works");
}

#[test]
fn exits_after_the_end_and_double_exits_are_ignored() {
    let (mut m, t0) = machine();
    let a = m.add_service(t0, "a").unwrap();
    m.stop(t0, "deploy".into());
    m.handle_timeout(t0 + GRACE);
    m.service_exited(t0 + GRACE + secs(1), a, Exit::Ok);
    assert_eq!(
        m.report(SessionTally::default())
            .unwrap()
            .service("a")
            .unwrap()
            .outcome(),
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
fn the_report_counts_sessions_and_orders_stragglers_oldest_first() {
    let (mut m, t0) = machine();
    m.stop(t0, "deploy".into());
    m.handle_timeout(t0 + GRACE);
    let report = m
        .report(SessionTally {
            admitted: 10,
            refused: 3,
            abandoned: vec![
                AbandonedSession::new("young", secs(11)),
                AbandonedSession::new("old", secs(60)),
            ],
            abandoned_unnamed: 1,
        })
        .unwrap();
    let s = report.sessions();
    assert_eq!(
        (
            s.admitted(),
            s.completed(),
            s.refused(),
            s.abandoned_count()
        ),
        (10, 7, 3, 3)
    );
    assert_eq!(s.abandoned()[0].name(), "old");
    let text = report.to_string();
    assert!(text.contains("ABANDONED old  (age 60.000s)"), "{text}");
    assert!(text.contains("ABANDONED 1 unnamed session(s)"), "{text}");
    assert!(text.contains("stop cause: requested: deploy"), "{text}");
    assert!(text.ends_with("exit code: 2"), "{text}");
}

#[test]
fn no_report_before_a_final_state() {
    let (mut m, t0) = machine();
    assert!(m.report(SessionTally::default()).is_none());
    m.stop(t0, "deploy".into());
    assert!(m.report(SessionTally::default()).is_none());
}
