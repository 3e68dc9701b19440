//! Readiness and liveness probes (issue 10, Kubernetes) in every state of a lifecycle. A
//! `ManualClock` and a `LocalPool`; nothing sleeps.

use std::time::Duration;

use async_lifecycle::{
    Backoff, FailurePolicy, Lifecycle, ManualClock, Restart, ServiceOptions, StopSignal,
};
use futures::executor::LocalPool;
use futures::task::LocalSpawnExt;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn a_probe_answers_in_every_state() {
    let clock = ManualClock::new();
    let lc = Lifecycle::builder()
        .grace(secs(10))
        .pre_drain(secs(2))
        .clock(clock.clone())
        .on_service_failure(FailurePolicy::ReportOnly)
        .build();
    let mut pool = LocalPool::new();
    let probe = |lc: &Lifecycle| {
        let snapshot = lc.snapshot();
        (
            snapshot.readiness().to_string(),
            snapshot.liveness().to_string(),
        )
    };
    let ok = ("200 ok".to_owned(), "200 ok".to_owned());

    // Nothing added yet: ready (nothing to wait for).
    assert_eq!(probe(&lc), ok);

    // A service that declares readiness, and one waiting for it.
    let db_signal = std::sync::Arc::new(std::sync::Mutex::new(None::<StopSignal>));
    let keep = db_signal.clone();
    lc.service_with("db", ServiceOptions::new().declares_ready(), move |stop| {
        *keep.lock().unwrap() = Some(stop.clone());
        stop
    })
    .unwrap();
    assert_eq!(probe(&lc).0, "503 service db: not ready yet");
    assert_eq!(probe(&lc).1, "200 ok", "alive while starting");
    lc.service_with("api", ServiceOptions::new().after(["db"]), |stop| stop)
        .unwrap();
    let wait = pool.spawner().spawn_local_with_handle(lc.wait()).unwrap();
    pool.run_until_stalled();
    assert!(db_signal.lock().unwrap().as_ref().unwrap().ready());
    pool.run_until_stalled();
    assert_eq!(probe(&lc), ok);

    // A service waiting for its restart: not ready.
    let options = ServiceOptions::new()
        .restart(Restart::Always)
        .backoff(Backoff::new(secs(1), secs(1)).unwrap().without_jitter());
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = runs.clone();
    lc.service_with("cron", options, move |stop| {
        let first = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
        async move {
            if !first {
                stop.await;
            }
        }
    })
    .unwrap();
    pool.run_until_stalled();
    assert_eq!(probe(&lc).0, "503 service cron: restarting");
    clock.advance(secs(1));
    pool.run_until_stalled();
    assert_eq!(probe(&lc), ok);

    // A service that ended (failures only reported): not ready.
    lc.service("once", |_stop| async { Err::<(), _>("boom") })
        .unwrap();
    pool.run_until_stalled();
    assert_eq!(probe(&lc).0, "503 service once: ended: failed: boom");

    // The pre-drain: running, not ready, alive.
    lc.stop("deploy");
    assert_eq!(
        probe(&lc),
        (
            "503 stopping: requested: deploy".to_owned(),
            "200 ok".to_owned()
        )
    );
    // Draining: not ready, alive.
    clock.advance(secs(2));
    pool.run_until_stalled();
    let report = pool.run_until(wait);
    // Ended: neither (the process should be exiting).
    assert_eq!(
        probe(&lc),
        (
            "503 ended: terminated".to_owned(),
            "503 ended: terminated".to_owned()
        ),
        "{report}"
    );
}

#[test]
fn draining_is_alive_and_not_ready() {
    let lc = Lifecycle::new();
    let _session = lc.session("conn").unwrap();
    lc.stop("deploy");
    let snapshot = lc.snapshot();
    assert_eq!(snapshot.readiness().status(), 503);
    assert!(!snapshot.readiness().is_ok());
    assert!(snapshot.liveness().is_ok());
    assert_eq!(snapshot.readiness().reason(), "stopping: requested: deploy");
}
