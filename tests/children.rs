//! Child sessions (issue 10): a request under its connection is admitted while draining,
//! counted and named under its parent, and refused only once the lifecycle ended. A
//! `ManualClock` and a `LocalPool`; nothing sleeps.

use std::time::Duration;

use async_lifecycle::{Lifecycle, ManualClock, Refused, State};
use futures::executor::LocalPool;
use futures::task::LocalSpawnExt;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn lifecycle(grace: Duration) -> (Lifecycle, ManualClock) {
    let clock = ManualClock::new();
    let lc = Lifecycle::builder()
        .grace(grace)
        .clock(clock.clone())
        .build();
    (lc, clock)
}

#[test]
fn a_child_is_admitted_while_draining_and_the_drain_waits_for_it() {
    let (lc, _clock) = lifecycle(secs(10));
    let conn = lc.session("conn 1").unwrap();
    let keepalive = lc.unnamed_session().unwrap();
    lc.stop("deploy");
    assert_eq!(lc.session("conn 2").unwrap_err(), Refused::Draining);
    let request = conn.child("GET /a").unwrap();
    let unnamed = keepalive.unnamed_child().unwrap();
    drop(conn); // the child outlives its parent
    drop(keepalive);
    assert_eq!(lc.state(), State::Draining, "two children are live");
    let snapshot = lc.snapshot();
    assert_eq!(snapshot.live_sessions(), 2);
    assert_eq!(snapshot.oldest_sessions()[0].name(), "GET /a");
    assert_eq!(snapshot.oldest_sessions()[0].parent(), Some("conn 1"));
    assert!(
        snapshot
            .to_string()
            .contains("GET /a (0.000ns, under conn 1)"),
        "{snapshot}"
    );
    drop(request);
    assert_eq!(lc.state(), State::Draining);
    drop(unnamed);
    assert_eq!(lc.state(), State::Terminated, "the last child drained it");
    let report = futures::executor::block_on(lc.wait());
    assert_eq!(report.sessions().admitted(), 4);
    assert_eq!(report.sessions().completed(), 4);
    assert_eq!(report.sessions().refused(), 1);
    assert_eq!(report.exit_code(), 0);
}

#[test]
fn an_abandoned_child_is_named_with_its_parent_and_a_child_after_the_end_is_refused() {
    let (lc, clock) = lifecycle(secs(10));
    let conn = lc.session("conn 1").unwrap();
    let mut pool = LocalPool::new();
    let wait = pool.spawner().spawn_local_with_handle(lc.wait()).unwrap();
    lc.stop("deploy");
    clock.advance(secs(2));
    let request = conn.child("GET /slow").unwrap();
    let grandchild = request.child("SELECT 1").unwrap();
    clock.advance(secs(8));
    let report = pool.run_until(wait);
    assert_eq!(report.state(), State::Abandoned);
    let abandoned = report.sessions().abandoned();
    assert_eq!(abandoned.len(), 3);
    let find = |name: &str| abandoned.iter().find(|s| s.name() == name).unwrap();
    assert_eq!(find("conn 1").parent(), None);
    assert_eq!(find("GET /slow").parent(), Some("conn 1"));
    assert_eq!(find("GET /slow").age(), secs(8));
    assert_eq!(find("SELECT 1").parent(), Some("GET /slow"));
    let text = report.to_string();
    assert!(
        text.contains("ABANDONED GET /slow  (age 8.000s, under conn 1)"),
        "{text}"
    );
    // After the end: refused, and counted as a refusal by the live view.
    assert_eq!(conn.child("GET /late").unwrap_err(), Refused::Ended);
    assert_eq!(conn.unnamed_child().unwrap_err(), Refused::Ended);
    assert_eq!(lc.snapshot().refused_sessions(), 2);
    drop((grandchild, request, conn));
}

#[test]
fn a_child_of_a_session_run_in_session_run_is_admitted() {
    // `Session::run` consumes the session; a child taken before it runs is independent.
    let lc = Lifecycle::new();
    let conn = lc.session("conn").unwrap();
    let child = conn.child("req").unwrap();
    lc.stop("deploy");
    let outcome = futures::executor::block_on(child.run(async { 7 }));
    assert_eq!(outcome.unwrap(), 7);
    drop(conn);
    let report = futures::executor::block_on(lc.wait());
    assert_eq!(report.sessions().completed(), 2);
}
