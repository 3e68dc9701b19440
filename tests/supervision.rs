//! Supervised services: restart policies, backoff on the lifecycle's clock, restart
//! intensity, and the stop during a backoff. A `ManualClock` and a `LocalPool`; nothing
//! sleeps.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_lifecycle::{
    Backoff, ConfigError, FailurePolicy, Lifecycle, ManualClock, Report, Restart, RestartIntensity,
    ServiceOptions, ServiceOutcome, State, StopCause,
};
use futures::executor::LocalPool;
use futures::future::RemoteHandle;
use futures::task::LocalSpawnExt;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A backoff of 1 s doubling to 8 s, no jitter (round numbers), reset after 60 s.
fn round_backoff() -> Backoff {
    Backoff::new(secs(1), secs(8)).unwrap().without_jitter()
}

struct Harness {
    clock: ManualClock,
    lc: Lifecycle,
    pool: LocalPool,
}

impl Harness {
    fn new(builder: async_lifecycle::Builder) -> Self {
        let clock = ManualClock::new();
        let lc = builder.grace(secs(30)).clock(clock.clone()).build();
        Harness {
            clock,
            lc,
            pool: LocalPool::new(),
        }
    }

    fn wait(&mut self) -> RemoteHandle<Report> {
        let wait = self
            .pool
            .spawner()
            .spawn_local_with_handle(self.lc.wait())
            .unwrap();
        self.pool.run_until_stalled();
        wait
    }

    fn advance(&mut self, by: Duration) {
        self.clock.advance(by);
        self.pool.run_until_stalled();
    }
}

/// A service whose runs are counted; each run fails at once with "connection refused".
fn failing(
    runs: &Arc<AtomicU32>,
) -> impl FnMut(async_lifecycle::StopSignal) -> futures::future::Ready<Result<(), &'static str>>
+ Send
+ 'static {
    let runs = runs.clone();
    move |_stop| {
        runs.fetch_add(1, Ordering::SeqCst);
        futures::future::ready(Err("connection refused"))
    }
}

#[test]
fn a_failing_service_is_restarted_after_each_backoff_then_trips_the_intensity() {
    let mut h = Harness::new(
        Lifecycle::builder().restart_intensity(RestartIntensity::new(3, secs(60)).unwrap()),
    );
    let runs = Arc::new(AtomicU32::new(0));
    let options = ServiceOptions::new()
        .restart(Restart::OnFailure)
        .backoff(round_backoff());
    h.lc.service_with("db-client", options, failing(&runs))
        .unwrap();
    let wait = h.wait();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let snap = h.lc.snapshot();
    assert_eq!(snap.services()[0].restart_in(), Some(secs(1)), "{snap}");
    assert_eq!(snap.state(), State::Running);

    // Not a moment early: 1 s, then 2 s, then 4 s.
    for wait_secs in [1, 2, 4] {
        h.advance(Duration::from_secs(wait_secs) - Duration::from_millis(1));
        let before = runs.load(Ordering::SeqCst);
        h.advance(Duration::from_millis(1));
        assert_eq!(
            runs.load(Ordering::SeqCst),
            before + 1,
            "restarted after {wait_secs}s"
        );
    }
    // The fourth restart would exceed 3 within 60 s.
    let report = h.pool.run_until(wait);
    assert_eq!(runs.load(Ordering::SeqCst), 4);
    assert_eq!(
        report.cause(),
        Some(&StopCause::RestartIntensity {
            service: "db-client".into(),
            restarts: 4,
            within: secs(60),
        })
    );
    let svc = report.service("db-client").unwrap();
    assert_eq!(
        svc.outcome(),
        &ServiceOutcome::Failed("connection refused".into())
    );
    assert_eq!((svc.attempts(), svc.restarts()), (4, 3));
    assert_eq!(report.exit_code(), 1);
    let text = report.to_string();
    assert!(
        text.contains(
            "restart intensity exceeded: 4 restarts within 60s, the last of service \"db-client\""
        ),
        "{text}"
    );
    assert!(
        text.contains("failed: connection refused  (ran 7.000s; restarted 3×)"),
        "the last failure is not repeated when it is the outcome: {text}"
    );
}

#[test]
fn the_stop_ends_a_backoff_at_once_and_nothing_restarts_after_it() {
    let mut h = Harness::new(Lifecycle::builder());
    let runs = Arc::new(AtomicU32::new(0));
    let options = ServiceOptions::new()
        .restart(Restart::OnFailure)
        .backoff(round_backoff());
    h.lc.service_with("flaky", options, failing(&runs)).unwrap();
    h.lc.service("steady", |stop| stop).unwrap();
    let wait = h.wait();
    assert_eq!(runs.load(Ordering::SeqCst), 1, "in its first backoff");
    h.lc.stop("deploy");
    h.pool.run_until_stalled();
    // Terminated at once: no waiting out the backoff, no grace spent.
    assert_eq!(h.lc.state(), State::Terminated);
    h.advance(secs(60));
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "never restarted after the stop"
    );
    let report = h.pool.run_until(wait);
    assert_eq!(
        report.service("flaky").unwrap().outcome(),
        &ServiceOutcome::Failed("connection refused".into()),
        "it ends as its last run did"
    );
    assert_eq!(
        report.service("steady").unwrap().outcome(),
        &ServiceOutcome::Stopped
    );
    assert_eq!(report.exit_code(), 1);
}

#[test]
fn restart_policies_differ_on_an_early_clean_return() {
    for (policy, restarted) in [(Restart::Always, true), (Restart::OnFailure, false)] {
        let mut h = Harness::new(Lifecycle::builder());
        let runs = Arc::new(AtomicU32::new(0));
        let counter = runs.clone();
        let options = ServiceOptions::new()
            .restart(policy)
            .backoff(round_backoff());
        h.lc.service_with("batch", options, move |_stop| {
            counter.fetch_add(1, Ordering::SeqCst);
            async {}
        })
        .unwrap();
        let _wait = h.wait();
        h.advance(secs(1));
        assert_eq!(
            runs.load(Ordering::SeqCst),
            if restarted { 2 } else { 1 },
            "{policy:?}"
        );
        if restarted {
            assert_eq!(h.lc.state(), State::Running);
        } else {
            // An early Ok, not restarted: an early end, which stops everything by default.
            assert_eq!(
                h.lc.cause(),
                Some(&StopCause::ServiceEnded {
                    service: "batch".into()
                })
            );
        }
    }
}

#[test]
fn a_stable_run_resets_the_backoff() {
    let mut h = Harness::new(Lifecycle::builder());
    let runs = Arc::new(AtomicU32::new(0));
    let counter = runs.clone();
    // Each run fails when told to; the test tells it.
    let (tx, rx) = async_channel::unbounded::<()>();
    let options = ServiceOptions::new()
        .restart(Restart::OnFailure)
        .backoff(round_backoff().stable_after(secs(10)).unwrap());
    h.lc.service_with("worker", options, move |_stop| {
        counter.fetch_add(1, Ordering::SeqCst);
        let rx = rx.clone();
        async move {
            let _ = rx.recv().await;
            Err::<(), _>("lost the lease")
        }
    })
    .unwrap();
    let _wait = h.wait();
    // Two quick failures: 1 s, then 2 s.
    tx.try_send(()).unwrap();
    h.pool.run_until_stalled();
    h.advance(secs(1));
    tx.try_send(()).unwrap();
    h.pool.run_until_stalled();
    assert_eq!(h.lc.snapshot().services()[0].restart_in(), Some(secs(2)));
    h.advance(secs(2));
    // A run of 10 s is stable: the next failure waits 1 s again.
    h.advance(secs(10));
    tx.try_send(()).unwrap();
    h.pool.run_until_stalled();
    assert_eq!(h.lc.snapshot().services()[0].restart_in(), Some(secs(1)));
    assert_eq!(runs.load(Ordering::SeqCst), 3);
}

#[test]
fn jitter_is_random_below_the_ceiling_and_repeats_with_the_seed() {
    let delays = |seed: u64| {
        let mut h = Harness::new(
            Lifecycle::builder()
                .seed(seed)
                .restart_intensity(RestartIntensity::new(100, secs(1)).unwrap()),
        );
        let runs = Arc::new(AtomicU32::new(0));
        let options = ServiceOptions::new()
            .restart(Restart::OnFailure)
            .backoff(Backoff::new(secs(1), secs(8)).unwrap());
        h.lc.service_with("flaky", options, failing(&runs)).unwrap();
        let _wait = h.wait();
        let mut seen = Vec::new();
        for n in 1..=5u32 {
            let due = h.lc.snapshot().services()[0].restart_in().unwrap();
            assert!(due <= round_backoff().ceiling(n), "restart {n}: {due:?}");
            seen.push(due);
            h.advance(due);
            assert_eq!(runs.load(Ordering::SeqCst), n + 1);
        }
        seen
    };
    assert_eq!(delays(7), delays(7), "the same seed, the same waits");
    assert_ne!(delays(7), delays(8));
}

#[test]
fn a_factory_that_panics_is_a_panicked_run_and_is_restarted() {
    let mut h = Harness::new(Lifecycle::builder().on_service_failure(FailurePolicy::ReportOnly));
    let runs = Arc::new(AtomicU32::new(0));
    let counter = runs.clone();
    let options = ServiceOptions::new()
        .restart(Restart::OnFailure)
        .backoff(round_backoff());
    h.lc.service_with("picky", options, move |stop| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        if n == 1 {
            panic!("planned: the second run cannot be made");
        }
        async move {
            if n == 0 {
                return Err("first run fails");
            }
            stop.await;
            Ok(())
        }
    })
    .unwrap();
    let wait = h.wait();
    h.advance(secs(1)); // second run: the factory panics
    h.advance(secs(2)); // third run: runs until the stop
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    h.lc.stop("deploy");
    let report = h.pool.run_until(wait);
    let svc = report.service("picky").unwrap();
    assert_eq!(svc.outcome(), &ServiceOutcome::Stopped);
    assert_eq!(svc.restarts(), 2);
    assert_eq!(
        svc.last_failure(),
        Some(&ServiceOutcome::Panicked(
            "planned: the second run cannot be made".into()
        ))
    );
    assert_eq!(report.exit_code(), 0, "it stopped cleanly when asked");
}

#[test]
fn restarts_run_on_tokio_with_a_spawner() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let report = rt.block_on(async {
        use async_lifecycle::tokio::BuilderExt;
        let lc = Lifecycle::builder()
            .tokio()
            .restart_intensity(RestartIntensity::new(2, secs(60)).unwrap())
            .build();
        let runs = Arc::new(AtomicU32::new(0));
        let options = ServiceOptions::new()
            .restart(Restart::OnFailure)
            .backoff(round_backoff());
        lc.service_with("remote", options, failing(&runs)).unwrap();
        // tokio's paused time jumps through the backoffs; the intensity stops it.
        lc.wait().await
    });
    assert!(
        matches!(
            report.cause(),
            Some(StopCause::RestartIntensity { restarts: 3, .. })
        ),
        "{report}"
    );
}

#[test]
fn bad_supervision_settings_are_typed_errors() {
    assert_eq!(
        Backoff::new(Duration::ZERO, secs(1)).unwrap_err(),
        ConfigError::ZeroBackoff
    );
    assert!(matches!(
        Backoff::new(secs(10), secs(1)),
        Err(ConfigError::BackoffInverted { .. })
    ));
    assert!(matches!(
        Backoff::new(secs(1), secs(365 * 24 * 3600)),
        Err(ConfigError::BackoffTooLong { .. })
    ));
    assert_eq!(
        RestartIntensity::new(0, secs(1)).unwrap_err(),
        ConfigError::ZeroIntensity
    );
}

#[test]
fn events_tell_the_story_of_a_restart_and_a_panicking_hook_breaks_nothing() {
    use std::sync::Mutex;
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    let mut h = Harness::new(Lifecycle::builder().on_event(move |event| {
        log.lock().unwrap().push(event.to_string());
        if matches!(event, async_lifecycle::Event::Restarting { .. }) {
            panic!("planned: a hook that panics");
        }
    }));
    let runs = Arc::new(AtomicU32::new(0));
    let counter = runs.clone();
    let options = ServiceOptions::new()
        .restart(Restart::OnFailure)
        .backoff(round_backoff());
    h.lc.service_with("cache", options, move |stop| {
        let first = counter.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            if first {
                return Err("cold start");
            }
            stop.await;
            Ok(())
        }
    })
    .unwrap();
    let wait = h.wait();
    h.advance(secs(1));
    h.lc.stop("deploy");
    let report = h.pool.run_until(wait);
    assert_eq!(report.exit_code(), 0);
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "service \"cache\" started (run 1)",
            "service \"cache\" failed: cold start",
            "service \"cache\" restarting in 1s (restart 1)",
            "service \"cache\" started (run 2)",
            "stop requested: requested: deploy",
            "lifecycle terminated (exit code 0)",
        ]
    );
}

// ---- Found by the hostile review of supervision ----

#[test]
fn a_factory_that_panics_on_its_first_call_makes_a_panicked_run_not_a_ghost() {
    let mut h = Harness::new(
        Lifecycle::builder().restart_intensity(RestartIntensity::new(2, secs(60)).unwrap()),
    );
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let options = ServiceOptions::new()
        .restart(Restart::OnFailure)
        .backoff(round_backoff());
    // No panic reaches the caller: the run ended by a panic, and is restarted.
    h.lc.service_with(
        "ghost",
        options,
        move |_stop| -> futures::future::Ready<()> {
            counter.fetch_add(1, Ordering::SeqCst);
            panic!("planned: cannot make a run")
        },
    )
    .unwrap();
    let wait = h.wait();
    assert_eq!(h.lc.snapshot().services()[0].restart_in(), Some(secs(1)));
    h.advance(secs(1));
    h.advance(secs(2));
    let report = h.pool.run_until(wait);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let svc = report.service("ghost").unwrap();
    assert_eq!(svc.attempts(), 3, "one attempt per factory call");
    assert_eq!(
        svc.outcome(),
        &ServiceOutcome::Panicked("planned: cannot make a run".into())
    );
    assert!(matches!(
        report.cause(),
        Some(StopCause::RestartIntensity { .. })
    ));
}

#[test]
fn no_run_is_made_once_a_stop_was_requested_even_by_another_services_factory() {
    let mut h = Harness::new(Lifecycle::builder());
    let weak = h.lc.downgrade();
    let (a_calls, b_calls) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let options = ServiceOptions::new()
        .restart(Restart::OnFailure)
        .backoff(round_backoff());
    let a = a_calls.clone();
    h.lc.service_with("a", options.clone(), move |_stop| {
        if a.fetch_add(1, Ordering::SeqCst) == 1 {
            weak.stop("a's second run stops everything");
        }
        futures::future::ready(Err::<(), _>("fails"))
    })
    .unwrap();
    let b = b_calls.clone();
    h.lc.service_with("b", options, move |_stop| {
        b.fetch_add(1, Ordering::SeqCst);
        futures::future::ready(Err::<(), _>("fails"))
    })
    .unwrap();
    let wait = h.wait();
    // Both restarts fall due at the same instant; a's factory stops the lifecycle first.
    h.advance(secs(1));
    let report = h.pool.run_until(wait);
    assert_eq!(a_calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        b_calls.load(Ordering::SeqCst),
        1,
        "b's factory not called after the stop"
    );
    assert_eq!(
        report.service("b").unwrap().attempts(),
        1,
        "a cancelled start is not an attempt"
    );
    assert_eq!(
        report.service("b").unwrap().outcome(),
        &ServiceOutcome::Failed("fails".into()),
        "it ends as its last run did"
    );
}

#[test]
fn a_restart_cancelled_by_a_stop_is_not_announced_and_periodic_jobs_stop_cleanly() {
    use std::sync::Mutex;
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    let stopper: Arc<Mutex<Option<async_lifecycle::WeakLifecycle>>> = Arc::default();
    let hook_stopper = stopper.clone();
    let mut h = Harness::new(Lifecycle::builder().on_event(move |event| {
        log.lock().unwrap().push(event.to_string());
        if matches!(event, async_lifecycle::Event::Failed { .. }) {
            if let Some(weak) = &*hook_stopper.lock().unwrap() {
                weak.stop("the hook stops on the first failure");
            }
        }
    }));
    *stopper.lock().unwrap() = Some(h.lc.downgrade());
    let options = ServiceOptions::new()
        .restart(Restart::OnFailure)
        .backoff(round_backoff());
    h.lc.service_with("boom", options, |_stop| {
        futures::future::ready(Err::<(), _>("boom"))
    })
    .unwrap();
    let report = h.pool.run_until(h.lc.wait());
    assert_eq!(report.exit_code(), 1);
    let seen = seen.lock().unwrap();
    assert!(!seen.iter().any(|e| e.contains("restarting")), "{seen:?}");

    // A periodic job (Always, returns Ok each time) stopped while it waits between runs
    // stopped cleanly, and its Ok returns are not failures.
    let mut h = Harness::new(Lifecycle::builder());
    let options = ServiceOptions::new()
        .restart(Restart::Always)
        .backoff(round_backoff());
    h.lc.service_with("tick", options, |_stop| async {})
        .unwrap();
    let wait = h.wait();
    h.lc.stop("deploy");
    let report = h.pool.run_until(wait);
    assert_eq!(
        report.service("tick").unwrap().outcome(),
        &ServiceOutcome::Stopped
    );
    assert_eq!(report.exit_code(), 0);
}

#[test]
fn the_intensity_is_bounded_and_its_message_reads_well() {
    assert!(matches!(
        RestartIntensity::new(u32::MAX, secs(1)),
        Err(ConfigError::IntensityTooLarge { .. })
    ));
    let cause = StopCause::RestartIntensity {
        service: "db".into(),
        restarts: 2,
        within: secs(60),
    };
    assert_eq!(
        cause.to_string(),
        "restart intensity exceeded: 2 restarts within 60s, the last of service \"db\""
    );
}

#[test]
fn a_service_slow_to_stop_is_announced_at_half_the_grace_before_it_is_abandoned() {
    use std::sync::Mutex;
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    let clock = ManualClock::new();
    let lc = Lifecycle::builder()
        .grace(secs(10))
        .clock(clock.clone())
        .on_event(move |event| log.lock().unwrap().push(event.to_string()))
        .build();
    lc.service("stubborn", |_stop| std::future::pending::<()>())
        .unwrap();
    lc.service("prompt", |stop| stop).unwrap();
    let mut pool = LocalPool::new();
    let wait = pool.spawner().spawn_local_with_handle(lc.wait()).unwrap();
    pool.run_until_stalled();
    lc.stop("deploy");
    pool.run_until_stalled();
    clock.advance(Duration::from_millis(4_999));
    pool.run_until_stalled();
    assert!(
        !seen
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.contains("still running"))
    );
    clock.advance(Duration::from_millis(1));
    pool.run_until_stalled();
    assert_eq!(
        seen.lock().unwrap().last().unwrap(),
        "service \"stubborn\" still running 5s after the stop",
        "only the service that has not stopped"
    );
    clock.advance(secs(5));
    let report = pool.run_until(wait);
    assert_eq!(report.state(), State::Abandoned);
    assert!(
        seen.lock()
            .unwrap()
            .contains(&"service \"stubborn\" abandoned".to_owned())
    );
}
