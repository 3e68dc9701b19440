//! The lifecycle end to end, on a manual clock and a single-threaded executor: every edge
//! case of the foundation, deterministically (no sleeping, time moves only when told).

use std::time::Duration;

use async_lifecycle::{
    FailurePolicy, Lifecycle, ManualClock, Refused, Report, ServiceError, ServiceOutcome, State,
    StopCause,
};
use futures::executor::LocalPool;
use futures::future::{self, RemoteHandle};
use futures::task::LocalSpawnExt;
use std::future::Future as _;

const GRACE: Duration = Duration::from_secs(10);

struct Harness {
    clock: ManualClock,
    lc: Lifecycle,
    pool: LocalPool,
}

impl Harness {
    fn new(grace: Duration) -> Self {
        Self::with(grace, FailurePolicy::StopAll)
    }

    fn with(grace: Duration, policy: FailurePolicy) -> Self {
        let clock = ManualClock::new();
        let lc = Lifecycle::builder()
            .grace(grace)
            .clock(clock.clone())
            .on_service_failure(policy)
            .build();
        Harness {
            clock,
            lc,
            pool: LocalPool::new(),
        }
    }

    /// Starts a `wait()` on the pool and runs until nothing can make progress.
    fn wait(&mut self) -> RemoteHandle<Report> {
        let handle = self
            .pool
            .spawner()
            .spawn_local_with_handle(self.lc.wait())
            .unwrap();
        self.pool.run_until_stalled();
        handle
    }

    fn settle(&mut self) {
        self.pool.run_until_stalled();
    }

    /// The report, which must be ready without further time passing.
    fn report(&mut self, handle: RemoteHandle<Report>) -> Report {
        self.settle();
        futures::executor::block_on(future::poll_immediate(handle)).expect("the report is ready")
    }
}

fn well_behaved(lc: &Lifecycle, name: &'static str) {
    lc.service(name, |stop| async move {
        stop.await;
        Ok::<(), std::io::Error>(())
    })
    .unwrap();
}

fn deaf(lc: &Lifecycle, name: &'static str) {
    lc.service(name, |_stop| future::pending::<()>()).unwrap();
}

#[test]
fn waiting_on_an_empty_lifecycle_resolves_at_once() {
    let lc = Lifecycle::new();
    let report = futures::executor::block_on(lc.wait());
    assert_eq!(report.state(), State::Terminated);
    assert_eq!(report.cause(), Some(&StopCause::NothingToRun));
    assert_eq!(report.exit_code(), 0);

    // Stopped first, with nothing in flight: the first poll already has the report.
    let lc = Lifecycle::new();
    lc.stop("deploy");
    assert_eq!(lc.state(), State::Terminated);
    let report = futures::executor::block_on(future::poll_immediate(lc.wait())).unwrap();
    assert_eq!(report.cause(), Some(&StopCause::from("deploy")));
}

#[test]
fn a_clean_drain_terminates_with_exit_code_zero() {
    let mut h = Harness::new(GRACE);
    well_behaved(&h.lc, "worker");
    let session = h.lc.session("conn 10.0.0.7:5123").unwrap();
    let wait = h.wait();
    h.lc.stop("deploy");
    h.settle();
    assert_eq!(h.lc.state(), State::Draining, "the session is still live");
    assert_eq!(h.clock.sleepers(), 1, "the grace deadline is armed");
    drop(session);
    let report = h.report(wait);
    assert_eq!(report.state(), State::Terminated);
    assert_eq!(
        report.service("worker").unwrap().outcome(),
        &ServiceOutcome::Stopped
    );
    assert_eq!(report.sessions().admitted(), 1);
    assert_eq!(report.sessions().completed(), 1);
    assert_eq!(report.exit_code(), 0);
    assert!(report.is_clean());
}

#[test]
fn stop_twice_keeps_the_first_cause() {
    let mut h = Harness::new(GRACE);
    well_behaved(&h.lc, "worker");
    let wait = h.wait();
    h.lc.stop("first");
    h.lc.stop(StopCause::Signal("SIGTERM"));
    let report = h.report(wait);
    assert_eq!(report.cause(), Some(&StopCause::from("first")));
    assert_eq!(report.state(), State::Terminated);
}

#[test]
fn a_session_asked_for_after_stop_is_refused_and_counted() {
    let mut h = Harness::new(GRACE);
    let live = h.lc.session("in flight").unwrap();
    let wait = h.wait();
    h.lc.stop("deploy");
    assert_eq!(h.lc.session("late").unwrap_err(), Refused::Draining);
    assert_eq!(h.lc.unnamed_session().unwrap_err(), Refused::Draining);
    assert_eq!(
        h.lc.service("late service", |_| async {}),
        Err(ServiceError::Refused(Refused::Draining))
    );
    drop(live);
    let report = h.report(wait);
    assert_eq!(h.lc.session("too late").unwrap_err(), Refused::Ended);
    assert_eq!(
        report.sessions().refused(),
        2,
        "refusals before the end are counted"
    );
    assert_eq!(report.sessions().admitted(), 1);
    assert!(
        report.services().is_empty(),
        "the refused service was never added"
    );
}

#[test]
fn a_service_that_ignores_stop_is_abandoned_at_the_deadline_and_named() {
    let mut h = Harness::new(GRACE);
    well_behaved(&h.lc, "worker");
    deaf(&h.lc, "producer");
    let wait = h.wait();
    h.lc.stop("deploy");
    h.settle();
    h.clock.advance(GRACE - Duration::from_nanos(1));
    h.settle();
    assert_eq!(h.lc.state(), State::Draining, "not a nanosecond early");
    h.clock.advance(Duration::from_nanos(1));
    let report = h.report(wait);
    assert_eq!(report.state(), State::Abandoned);
    assert_eq!(
        report.service("worker").unwrap().outcome(),
        &ServiceOutcome::Stopped
    );
    let producer = report.service("producer").unwrap();
    assert_eq!(producer.outcome(), &ServiceOutcome::Abandoned);
    assert_eq!(producer.ran(), GRACE);
    assert_eq!(report.exit_code(), 2);
    let text = report.to_string();
    assert!(text.contains("FAIL producer  abandoned"), "{text}");
}

#[test]
fn stragglers_are_named_with_their_age() {
    let mut h = Harness::new(GRACE);
    let old = h.lc.session("conn 10.0.0.7:5123").unwrap();
    h.clock.advance(Duration::from_secs(5));
    let young = h.lc.session("conn 10.0.0.9:40001").unwrap();
    let unnamed = h.lc.unnamed_session().unwrap();
    let finished = h.lc.session("finished").unwrap();
    drop(finished);
    let wait = h.wait();
    h.lc.stop("deploy");
    h.clock.advance(GRACE);
    let report = h.report(wait);
    let sessions = report.sessions();
    assert_eq!(sessions.admitted(), 4);
    assert_eq!(sessions.completed(), 1);
    assert_eq!(sessions.abandoned_count(), 3);
    assert_eq!(sessions.abandoned_unnamed(), 1);
    let named: Vec<_> = sessions
        .abandoned()
        .iter()
        .map(|s| (s.name(), s.age()))
        .collect();
    assert_eq!(
        named,
        [
            ("conn 10.0.0.7:5123", Duration::from_secs(15)),
            ("conn 10.0.0.9:40001", GRACE)
        ]
    );
    // Ending after the abandonment changes nothing in the report, and does not panic.
    drop((old, young, unnamed));
    assert_eq!(futures::executor::block_on(h.lc.wait()), report);
}

#[test]
fn zero_grace_abandons_at_the_stop_whatever_is_still_running() {
    // The stop is its own deadline: a service that would return as soon as it sees the stop
    // has not run yet, so it is abandoned — the same on every executor (tests/executors.rs).
    let mut h = Harness::new(Duration::ZERO);
    well_behaved(&h.lc, "worker");
    let session = h.lc.session("slow").unwrap();
    let wait = h.wait();
    h.lc.stop("now");
    assert_eq!(h.lc.state(), State::Abandoned, "decided inside stop()");
    let report = h.report(wait);
    assert_eq!(
        report.service("worker").unwrap().outcome(),
        &ServiceOutcome::Abandoned
    );
    assert_eq!(report.sessions().abandoned()[0].name(), "slow");
    drop(session);

    // What already ended before the stop is reported as it ended.
    let mut h = Harness::new(Duration::ZERO);
    let session = h.lc.session("quick").unwrap();
    drop(session);
    let wait = h.wait();
    h.lc.stop("now");
    let report = h.report(wait);
    assert_eq!(
        report.state(),
        State::Terminated,
        "nothing was left running"
    );
    assert_eq!(report.sessions().completed(), 1);
}

#[test]
fn a_panic_during_draining_is_reported_with_its_payload() {
    let mut h = Harness::new(GRACE);
    h.lc.service("flaky", |stop| async move {
        stop.await;
        let code = 42;
        if code == 42 {
            panic!("flush failed: {code}");
        }
    })
    .unwrap();
    let wait = h.wait();
    h.lc.stop("deploy");
    let report = h.report(wait);
    assert_eq!(report.state(), State::Terminated);
    assert_eq!(
        report.service("flaky").unwrap().outcome(),
        &ServiceOutcome::Panicked("flush failed: 42".into())
    );
    assert_eq!(report.exit_code(), 1);
}

#[test]
fn a_failing_service_stops_everything_with_its_error_chain() {
    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("consumer lost its queue")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    let mut h = Harness::new(GRACE);
    well_behaved(&h.lc, "worker");
    let (fail, failed) = futures::channel::oneshot::channel::<()>();
    h.lc.service("consumer", |_stop| async move {
        failed.await.ok();
        Err(Outer(std::io::Error::other("connection reset")))
    })
    .unwrap();
    let wait = h.wait();
    assert_eq!(h.lc.state(), State::Running);
    fail.send(()).unwrap();
    let report = h.report(wait);
    assert_eq!(
        report.cause(),
        Some(&StopCause::ServiceEnded {
            service: "consumer".into()
        })
    );
    assert_eq!(
        report.service("consumer").unwrap().outcome(),
        &ServiceOutcome::Failed("consumer lost its queue: connection reset".into())
    );
    assert_eq!(
        report.service("worker").unwrap().outcome(),
        &ServiceOutcome::Stopped
    );
    assert_eq!(report.exit_code(), 1);
}

#[test]
fn report_only_policy_keeps_the_others_running() {
    let mut h = Harness::with(GRACE, FailurePolicy::ReportOnly);
    well_behaved(&h.lc, "worker");
    h.lc.service("one-shot", |_stop| async {}).unwrap();
    let wait = h.wait();
    assert_eq!(
        h.lc.state(),
        State::Running,
        "an early end is only reported"
    );
    h.lc.stop("deploy");
    let report = h.report(wait);
    assert_eq!(
        report.service("one-shot").unwrap().outcome(),
        &ServiceOutcome::EndedEarly
    );
    assert_eq!(
        report.service("worker").unwrap().outcome(),
        &ServiceOutcome::Stopped
    );
    assert_eq!(report.exit_code(), 1);
}

#[test]
fn the_clock_jumping_far_past_the_deadline_abandons_with_true_ages() {
    let mut h = Harness::new(GRACE);
    deaf(&h.lc, "producer");
    let session = h.lc.session("long poll").unwrap();
    let wait = h.wait();
    h.lc.stop("deploy");
    h.settle();
    h.clock.advance(Duration::from_secs(3600));
    let report = h.report(wait);
    assert_eq!(report.state(), State::Abandoned);
    assert_eq!(report.drained_in(), Duration::from_secs(3600));
    assert_eq!(
        report.sessions().abandoned()[0].age(),
        Duration::from_secs(3600)
    );
    drop(session);
}

#[test]
fn force_abandons_at_once_and_names_what_was_live() {
    let mut h = Harness::new(GRACE);
    deaf(&h.lc, "producer");
    let session = h.lc.session("upload 7").unwrap();
    let wait = h.wait();
    h.lc.stop(StopCause::Signal("SIGTERM"));
    h.settle();
    h.lc.force();
    assert_eq!(
        h.lc.state(),
        State::Abandoned,
        "no need to wait for the clock"
    );
    let report = h.report(wait);
    assert!(report.forced());
    assert_eq!(report.cause(), Some(&StopCause::Signal("SIGTERM")));
    assert_eq!(report.sessions().abandoned()[0].name(), "upload 7");
    assert_eq!(
        report.service("producer").unwrap().outcome(),
        &ServiceOutcome::Abandoned
    );
    drop(session);
}

#[test]
fn sessions_learn_that_draining_started() {
    let mut h = Harness::new(GRACE);
    let session = h.lc.session("sse stream").unwrap();
    let draining = session.stop_signal();
    // The session wraps up as soon as draining starts, like an SSE stream closing politely.
    let closed = h
        .pool
        .spawner()
        .spawn_local_with_handle(async move {
            draining.await;
            drop(session);
        })
        .unwrap();
    let wait = h.wait();
    h.lc.stop("deploy");
    let report = h.report(wait);
    assert_eq!(report.state(), State::Terminated);
    assert_eq!(report.sessions().completed(), 1);
    futures::executor::block_on(closed);
}

#[test]
fn dropping_every_handle_while_sessions_are_alive_stops_and_nothing_panics() {
    let lc = Lifecycle::builder().clock(ManualClock::new()).build();
    let named = lc.session("conn a").unwrap();
    let unnamed = lc.unnamed_session().unwrap();
    let stop = lc.stop_signal();
    drop(lc);
    assert!(
        stop.is_stopped(),
        "the last handle's drop requests the stop"
    );
    assert_eq!(stop.cause(), Some(&StopCause::HandlesDropped));
    assert!(named.is_stopped());
    assert_eq!(named.name().as_deref(), Some("conn a"));
    drop(named);
    drop(unnamed);
    futures::executor::block_on(stop);
}

#[test]
fn every_waiter_gets_the_same_report() {
    let mut h = Harness::new(GRACE);
    well_behaved(&h.lc, "worker");
    let first = h.wait();
    let second = h.wait();
    h.lc.stop("deploy");
    let (a, b) = (h.report(first), h.report(second));
    assert_eq!(a, b);
    assert_eq!(
        a.service("worker").unwrap().outcome(),
        &ServiceOutcome::Stopped
    );
}

#[test]
fn dropping_the_driver_reports_its_services_as_dropped() {
    let mut h = Harness::new(GRACE);
    well_behaved(&h.lc, "worker");
    let wait = h.wait(); // picks up and drives the worker
    drop(wait);
    h.settle();
    // The dropped service stopped everything, and with nothing else running that is the end.
    assert_eq!(h.lc.state(), State::Terminated);
    let report = futures::executor::block_on(h.lc.wait());
    assert_eq!(
        report.service("worker").unwrap().outcome(),
        &ServiceOutcome::Dropped
    );
    assert_eq!(report.exit_code(), 1);
}

#[test]
fn sessions_from_many_threads_are_all_counted() {
    let lc = Lifecycle::builder().clock(ManualClock::new()).build();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let lc = lc.clone();
            std::thread::spawn(move || {
                for i in 0..1000 {
                    let named = (i % 2 == 0).then(|| lc.session(format!("t{t} job {i}")).unwrap());
                    let unnamed = lc.unnamed_session().unwrap();
                    drop((named, unnamed));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    lc.stop("done");
    let report = futures::executor::block_on(lc.wait());
    assert_eq!(report.state(), State::Terminated);
    assert_eq!(report.sessions().admitted(), 4 * 1500);
    assert_eq!(report.sessions().completed(), 4 * 1500);
}

#[test]
fn nothing_to_run_is_decided_at_the_first_poll_only() {
    // A sessions-only program: the session is live when wait() is first polled, so the
    // lifecycle keeps running, however often wait() is polled after that session ends.
    let mut h = Harness::new(GRACE);
    let session = h.lc.session("job").unwrap();
    let wait = h.wait();
    drop(session);
    h.settle();
    let spurious = h.pool.spawner().spawn_local_with_handle(h.lc.wait());
    h.settle();
    assert_eq!(
        h.lc.state(),
        State::Running,
        "a later poll must not decide it"
    );
    h.lc.stop("done");
    let report = h.report(wait);
    assert_eq!(report.cause(), Some(&StopCause::from("done")));
    drop(spurious);
}

/// A clock whose sleeps end at once while its time never moves: a misbehaving clock.
#[derive(Debug)]
struct ImpatientClock(std::time::Instant);

impl async_lifecycle::Clock for ImpatientClock {
    fn now(&self) -> std::time::Instant {
        self.0
    }
    fn sleep_until(&self, _deadline: std::time::Instant) -> async_lifecycle::Sleep {
        Box::pin(future::ready(()))
    }
}

#[test]
fn a_sleep_that_ends_early_does_not_abandon_or_spin() {
    let lc = Lifecycle::builder()
        .grace(GRACE)
        .clock(ImpatientClock(std::time::Instant::now()))
        .build();
    let session = lc.session("in flight").unwrap();
    lc.stop("deploy");
    let mut wait = lc.wait();
    let waker = futures::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    for _ in 0..3 {
        // Each poll returns (it yields instead of looping on the early sleep).
        assert!(std::pin::Pin::new(&mut wait).poll(&mut cx).is_pending());
    }
    assert_eq!(
        lc.state(),
        State::Draining,
        "time has not reached the deadline"
    );
    drop(session);
    assert_eq!(lc.state(), State::Terminated);
}
