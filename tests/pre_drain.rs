//! The pre-drain (issue 10, Kubernetes): after a requested stop the lifecycle keeps serving,
//! not ready, for a delay spent inside the grace. A `ManualClock` and a `LocalPool`.

use std::time::Duration;

use async_lifecycle::{
    FailurePolicy, Lifecycle, ManualClock, Refused, ServiceOutcome, State, StopCause,
};
use futures::executor::LocalPool;
use futures::task::LocalSpawnExt;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn lifecycle() -> (Lifecycle, ManualClock, LocalPool) {
    let clock = ManualClock::new();
    let lc = Lifecycle::builder()
        .grace(secs(30))
        .pre_drain(secs(5))
        .clock(clock.clone())
        .on_service_failure(FailurePolicy::StopAll)
        .build();
    (lc, clock, LocalPool::new())
}

#[test]
fn a_requested_stop_keeps_serving_not_ready_then_drains_within_the_same_grace() {
    let (lc, clock, mut pool) = lifecycle();
    lc.service("server", |stop| stop).unwrap();
    let slow = lc.session("GET /slow").unwrap();
    let wait = pool.spawner().spawn_local_with_handle(lc.wait()).unwrap();
    pool.run_until_stalled();
    assert!(lc.snapshot().is_ready());

    lc.stop("deploy");
    pool.run_until_stalled();
    let snapshot = lc.snapshot();
    assert_eq!(snapshot.state(), State::Running, "still serving");
    assert!(snapshot.is_stopping());
    assert!(!snapshot.is_ready(), "the readiness probe fails at once");
    assert_eq!(snapshot.cause(), Some(&StopCause::from("deploy")));
    assert!(!lc.is_stopped(), "stop signals have not fired");
    let late = lc
        .session("GET /late")
        .expect("still admitted in the pre-drain");
    lc.stop("second"); // nothing: the first request is kept
    clock.advance(Duration::from_millis(4_999));
    pool.run_until_stalled();
    assert_eq!(lc.state(), State::Running);
    drop(late);

    clock.advance(Duration::from_millis(1));
    pool.run_until_stalled();
    assert_eq!(
        lc.state(),
        State::Draining,
        "the drain begins after the pre-drain"
    );
    assert!(lc.is_stopped());
    assert_eq!(lc.session("GET /refused").unwrap_err(), Refused::Draining);
    // The deadline is 30 s after the request, not after the pre-drain.
    clock.advance(Duration::from_millis(24_999));
    pool.run_until_stalled();
    assert_eq!(lc.state(), State::Draining);
    clock.advance(Duration::from_millis(1));
    let report = pool.run_until(wait);
    assert_eq!(report.state(), State::Abandoned);
    assert_eq!(report.cause(), Some(&StopCause::from("deploy")));
    assert_eq!(report.drained_in(), secs(25), "{report}");
    assert_eq!(report.sessions().abandoned()[0].name(), "GET /slow");
    assert_eq!(
        report.service("server").unwrap().outcome(),
        &ServiceOutcome::Stopped
    );
    drop(slow);
}

#[test]
fn a_force_or_a_failure_ends_the_pre_drain_at_once_and_keeps_the_requested_cause() {
    let (lc, _clock, mut pool) = lifecycle();
    lc.service("server", |stop| stop).unwrap();
    let wait = pool.spawner().spawn_local_with_handle(lc.wait()).unwrap();
    pool.run_until_stalled();
    lc.stop("deploy");
    lc.force();
    let report = pool.run_until(wait);
    assert!(report.forced());
    assert_eq!(report.cause(), Some(&StopCause::from("deploy")));

    let (lc, _clock, mut pool) = lifecycle();
    let (tx, rx) = futures::channel::oneshot::channel::<()>();
    lc.service("worker", |_stop| async move {
        let _ = rx.await;
        Err::<(), _>("disk full")
    })
    .unwrap();
    let wait = pool.spawner().spawn_local_with_handle(lc.wait()).unwrap();
    pool.run_until_stalled();
    lc.stop("deploy");
    tx.send(()).unwrap();
    pool.run_until_stalled();
    assert_eq!(
        lc.state(),
        State::Terminated,
        "the failure drained it at once"
    );
    let report = pool.run_until(wait);
    assert_eq!(report.cause(), Some(&StopCause::from("deploy")), "{report}");
    assert_eq!(report.exit_code(), 1);
}

#[test]
fn a_pre_drain_longer_than_the_grace_is_capped_by_it() {
    let clock = ManualClock::new();
    let lc = Lifecycle::builder()
        .grace(secs(2))
        .pre_drain(secs(60))
        .clock(clock.clone())
        .build();
    let _session = lc.session("stuck").unwrap();
    let mut pool = LocalPool::new();
    let wait = pool.spawner().spawn_local_with_handle(lc.wait()).unwrap();
    lc.stop("deploy");
    clock.advance(secs(2));
    let report = pool.run_until(wait);
    assert_eq!(report.state(), State::Abandoned);
    assert_eq!(report.lifetime(), secs(2), "{report}");
}
