//! The defects a hostile review found and the API gaps that ports of real servers hit, each
//! as a user would meet it. Time is a `ManualClock`; executors are `LocalPool` and
//! `block_on`; nothing sleeps.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_lifecycle::{
    Clock, Lifecycle, ManualClock, Refused, Report, ServiceError, ServiceOutcome, State, StopCause,
};
use futures::executor::{LocalPool, block_on};
use futures::task::LocalSpawnExt;

/// A `tracing` subscriber whose every event panics: a broken log pipeline.
struct Panicking;

impl tracing::Subscriber for Panicking {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {
        panic!("the log collector is gone");
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Sets a flag when dropped: tells whether a service's future was dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Panics when dropped.
struct PanicOnDrop;

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("a future that panics when dropped");
    }
}

/// Keeps expected panics (ours) off the test output.
fn quiet() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let text = info
                .payload()
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
                .unwrap_or("");
            let expected = [
                "the log collector is gone",
                "a future that panics when dropped",
                "planned",
                "handler bug",
            ];
            if !expected.iter().any(|e| text.contains(e)) {
                previous(info);
            }
        }));
    });
}

// ---- Defect 1: a panic while the lifecycle finishes ----

#[test]
fn a_panicking_subscriber_does_not_break_force_or_wait() {
    quiet();
    tracing::subscriber::with_default(Panicking, || {
        let lc = Lifecycle::new();
        let _held = lc.session("held").unwrap();
        // A queued service whose future panics when dropped (force drops it), and one that
        // must still be dropped after it.
        let dropped = Arc::new(AtomicBool::new(false));
        let bomb = PanicOnDrop;
        lc.service("bomb", move |_stop| async move {
            let _bomb = bomb;
            std::future::pending::<()>().await;
        })
        .unwrap();
        let flag = DropFlag(dropped.clone());
        lc.service("after", move |_stop| async move {
            let _flag = flag;
            std::future::pending::<()>().await;
        })
        .unwrap();

        // Complaints (two abandoned services, one abandoned session) all panic.
        let forced = catch_unwind(AssertUnwindSafe(|| lc.force()));
        assert!(forced.is_ok(), "force() must not panic");
        assert_eq!(lc.state(), State::Abandoned);
        assert!(
            dropped.load(Ordering::SeqCst),
            "the second queued service was dropped"
        );

        let report = block_on(lc.wait());
        assert_eq!(report.state(), State::Abandoned);
        assert_eq!(report.sessions().abandoned()[0].name(), "held");
        assert_eq!(report.exit_code(), 2);
    });
}

#[test]
fn a_panicking_subscriber_at_the_grace_deadline_still_resolves_every_wait() {
    quiet();
    tracing::subscriber::with_default(Panicking, || {
        let clock = ManualClock::new();
        let lc = Lifecycle::builder()
            .grace(Duration::from_secs(5))
            .clock(clock.clone())
            .build();
        lc.service("stubborn", |_stop| std::future::pending::<()>())
            .unwrap();
        let _held = lc.session("held").unwrap();
        let mut pool = LocalPool::new();
        let first = pool.spawner().spawn_local_with_handle(lc.wait()).unwrap();
        let second = pool.spawner().spawn_local_with_handle(lc.wait()).unwrap();
        pool.run_until_stalled();
        lc.stop("deploy");
        pool.run_until_stalled();
        clock.advance(Duration::from_secs(5));
        // The complaint panics inside the deadline's handling, inside a `wait()`.
        let first = pool.run_until(first);
        let second = pool.run_until(second);
        assert_eq!(first, second);
        assert_eq!(first.state(), State::Abandoned);
        assert_eq!(block_on(lc.wait()), first, "a later wait() resolves too");
    });
}

// ---- Defect 2: a queued service must not keep the lifecycle alive ----

#[test]
fn a_queued_service_holding_a_weak_handle_is_dropped_with_the_last_handle() {
    let dropped = Arc::new(AtomicBool::new(false));
    let lc = Lifecycle::new();
    let sessions = lc.downgrade();
    let watch = lc.stop_signal();
    let flag = DropFlag(dropped.clone());
    // The accept-loop pattern: the service begins a session per connection.
    lc.service("accept", move |stop| async move {
        let _listener = flag;
        let _conn = sessions.session("conn").expect("running");
        stop.await;
    })
    .unwrap();
    // An early `?` in main: no wait() was ever polled.
    drop(lc);
    assert!(
        dropped.load(Ordering::SeqCst),
        "the service (and its listener) was dropped"
    );
    assert_eq!(watch.cause(), Some(&StopCause::HandlesDropped));
}

// ---- Defect 5: refusals after the end ----

#[test]
fn refusals_after_the_end_are_counted_by_the_live_view_not_the_final_report() {
    let lc = Lifecycle::new();
    lc.stop("deploy"); // nothing in flight: it ends at once
    assert_eq!(lc.state(), State::Terminated);
    assert_eq!(lc.session("late").unwrap_err(), Refused::Ended);
    assert_eq!(lc.unnamed_session().unwrap_err(), Refused::Ended);
    let report = block_on(lc.wait());
    assert_eq!(
        report.sessions().refused(),
        0,
        "the report is final at the end"
    );
    assert_eq!(lc.snapshot().refused_sessions(), 2);
}

// ---- The live view ----

#[test]
fn the_snapshot_shows_state_cause_sessions_and_services() {
    let clock = ManualClock::new();
    let lc = Lifecycle::builder()
        .grace(Duration::from_secs(30))
        .clock(clock.clone())
        .build();
    lc.service("worker", |stop| stop).unwrap();
    lc.service("quitter", |_stop| async {}).unwrap();
    assert!(!lc.is_stopped());
    let old = lc.session("old").unwrap();
    clock.advance(Duration::from_secs(3));
    let young = lc.session("young").unwrap();
    let unnamed = lc.unnamed_session().unwrap();
    drop(lc.session("brief").unwrap());
    clock.advance(Duration::from_secs(2));

    let snap = lc.snapshot();
    assert_eq!(snap.state(), State::Running);
    assert_eq!(snap.cause(), None);
    assert_eq!(
        (
            snap.live_sessions(),
            snap.admitted_sessions(),
            snap.completed_sessions()
        ),
        (3, 4, 1)
    );
    let oldest: Vec<(&str, Duration)> = snap
        .oldest_sessions()
        .iter()
        .map(|s| (s.name(), s.age()))
        .collect();
    assert_eq!(
        oldest,
        [
            ("old", Duration::from_secs(5)),
            ("young", Duration::from_secs(2))
        ]
    );
    assert!(snap.services().iter().all(|s| s.is_running()));
    assert_eq!(snap.services()[0].uptime(), Duration::from_secs(5));

    // Driving the services: "quitter" returns at once, which stops everything.
    let mut pool = LocalPool::new();
    let wait = pool.spawner().spawn_local_with_handle(lc.wait()).unwrap();
    pool.run_until_stalled();
    assert!(lc.is_stopped());
    let snap = lc.snapshot();
    assert_eq!(snap.state(), State::Draining);
    assert!(snap.is_stopped());
    assert_eq!(
        snap.cause(),
        Some(&StopCause::ServiceEnded {
            service: "quitter".into()
        })
    );
    assert_eq!(
        snap.services()[1].outcome(),
        Some(&ServiceOutcome::EndedEarly)
    );
    assert_eq!(snap.services()[0].outcome(), Some(&ServiceOutcome::Stopped));
    assert!(snap.to_string().contains("old (5.000s)"), "{snap}");
    drop((old, young, unnamed));
    let report = pool.run_until(wait);
    assert_eq!(report.exit_code(), 1);
}

// ---- Sessions that panic ----

#[test]
fn a_session_guard_dropped_while_unwinding_counts_as_panicked() {
    quiet();
    let lc = Lifecycle::new();
    let named = lc.session("GET /boom").unwrap();
    let unnamed = lc.unnamed_session().unwrap();
    let fine = lc.session("GET /").unwrap();
    let unwound = catch_unwind(AssertUnwindSafe(move || {
        let _named = named;
        let _unnamed = unnamed;
        panic!("handler bug");
    }));
    assert!(unwound.is_err());
    drop(fine);
    assert_eq!(lc.snapshot().panicked_sessions(), 2);
    lc.stop("deploy");
    let report = block_on(lc.wait());
    let s = report.sessions();
    assert_eq!((s.admitted(), s.completed(), s.panicked()), (3, 1, 2));
    let names: Vec<Option<&str>> = s.panicked_sessions().iter().map(|p| p.name()).collect();
    assert!(
        names.contains(&Some("GET /boom")) && names.contains(&None),
        "{names:?}"
    );
    assert!(
        report.to_string().contains("PANICKED GET /boom"),
        "{report}"
    );
}

#[test]
fn session_run_catches_the_panic_with_its_payload_on_tokio() {
    quiet();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let report = rt.block_on(async {
        let lc = Lifecycle::new();
        let session = lc.session("job 7").unwrap();
        let outcome = tokio::spawn(session.run(async {
            tokio::task::yield_now().await;
            if true {
                panic!("planned: job 7 is malformed");
            }
        }))
        .await
        .expect("the task itself did not panic");
        let panic = outcome.unwrap_err();
        assert_eq!(panic.message(), "planned: job 7 is malformed");
        assert!(panic.into_payload().downcast_ref::<&str>().is_some());
        // A session that completes returns its output.
        let ok = lc.session("job 8").unwrap().run(async { 8 }).await;
        assert_eq!(ok.unwrap(), 8);
        lc.stop("deploy");
        lc.wait().await
    });
    let s = report.sessions();
    assert_eq!((s.completed(), s.panicked()), (1, 1));
    assert_eq!(s.panicked_sessions()[0].name(), Some("job 7"));
    assert_eq!(
        s.panicked_sessions()[0].message(),
        Some("planned: job 7 is malformed")
    );
}

// ---- Stop when a future resolves ----

#[test]
fn stop_on_stops_with_the_futures_output_and_holds_nothing() {
    let lc = Lifecycle::new();
    lc.service("server", |stop| stop).unwrap();
    let (tx, rx) = futures::channel::oneshot::channel::<&'static str>();
    lc.stop_on(async move { rx.await.unwrap_or("sender gone") });
    let mut pool = LocalPool::new();
    let wait = pool.spawner().spawn_local_with_handle(lc.wait()).unwrap();
    pool.run_until_stalled();
    assert_eq!(lc.state(), State::Running);
    tx.send("shutdown endpoint called").unwrap();
    let report = pool.run_until(wait);
    assert_eq!(
        report.cause(),
        Some(&StopCause::from("shutdown endpoint called"))
    );
    assert_eq!(report.exit_code(), 0);
}

#[test]
fn a_stop_trigger_is_dropped_when_the_lifecycle_stops_otherwise() {
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = DropFlag(dropped.clone());
    let dropped = &dropped;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let lc = Lifecycle::builder()
            .spawner(|f| {
                tokio::spawn(f);
            })
            .build();
        lc.service("server", |stop| stop).unwrap();
        lc.stop_on(async move {
            let _flag = flag;
            std::future::pending::<&'static str>().await
        });
        lc.stop("deploy");
        let report = lc.wait().await;
        assert_eq!(report.cause(), Some(&StopCause::from("deploy")));
        // The stop woke the spawned trigger; on a current-thread runtime it runs (sees the
        // stop, ends, is dropped) before this task is polled again.
        tokio::task::yield_now().await;
        assert!(
            dropped.load(Ordering::SeqCst),
            "dropped before the runtime is"
        );
    });
}

#[test]
fn a_panicking_stop_trigger_stops_the_lifecycle_with_its_message() {
    quiet();
    let lc = Lifecycle::new();
    lc.service("server", |stop| stop).unwrap();
    lc.stop_on(async {
        if true {
            panic!("planned trigger failure");
        }
        "unreachable"
    });
    let report = block_on(lc.wait());
    assert_eq!(
        report.cause().unwrap().to_string(),
        "requested: stop trigger panicked: planned trigger failure"
    );
}

// ---- main returns the outcome ----

#[test]
fn the_report_is_a_termination_value() {
    use std::process::{ExitCode, Termination};
    let lc = Lifecycle::builder().grace(Duration::ZERO).build();
    let _held = lc.session("held").unwrap();
    lc.stop("deploy");
    let report: Report = block_on(lc.wait());
    assert_eq!(report.exit_code(), 2);
    assert_eq!(
        format!("{:?}", report.exit_status()),
        format!("{:?}", ExitCode::from(2))
    );
    assert_eq!(
        format!("{:?}", report.report()),
        format!("{:?}", ExitCode::from(2))
    );
}

// ---- The builder ----

#[test]
fn an_explicit_clock_wins_over_a_runtime_whatever_the_order() {
    use async_lifecycle::tokio::BuilderExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for clock_first in [true, false] {
            let manual = ManualClock::new();
            let builder = Lifecycle::builder().grace(Duration::from_secs(60));
            let builder = if clock_first {
                builder.clock(manual.clone()).tokio()
            } else {
                builder.tokio().clock(manual.clone())
            };
            let lc = builder.build();
            manual.advance(Duration::from_secs(3600));
            assert_eq!(lc.clock().now(), manual.now(), "clock first: {clock_first}");
            // The grace deadline follows the manual clock: advancing it abandons.
            lc.service("stubborn", |_stop| std::future::pending::<()>())
                .unwrap();
            lc.stop("test");
            let wait = tokio::spawn(lc.wait());
            tokio::task::yield_now().await;
            manual.advance(Duration::from_secs(60));
            let report = wait.await.unwrap();
            assert_eq!(report.state(), State::Abandoned);
            assert_eq!(report.drained_in(), Duration::from_secs(60));
        }
    });
}

#[test]
fn two_runtimes_on_one_builder_are_rejected_by_name() {
    use async_lifecycle::async_io::BuilderExt as _;
    use async_lifecycle::tokio::BuilderExt as _;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let _enter = rt.enter();
    let result = catch_unwind(|| Lifecycle::builder().tokio().async_io());
    let payload = result.unwrap_err();
    let message = payload.downcast_ref::<String>().unwrap();
    assert!(
        message.contains("`.async_io()` after `.tokio()`"),
        "{message}"
    );
}

// ---- Services ----

#[test]
fn duplicate_service_names_are_refused_and_their_closure_not_called() {
    let lc = Lifecycle::new();
    lc.service("db", |stop| stop).unwrap();
    let called = Arc::new(AtomicBool::new(false));
    let seen = called.clone();
    let err = lc
        .service("db", move |stop| {
            seen.store(true, Ordering::SeqCst);
            stop
        })
        .unwrap_err();
    assert_eq!(err, ServiceError::DuplicateName("db".into()));
    assert!(!called.load(Ordering::SeqCst));
    lc.stop("done");
    let report = block_on(lc.wait());
    assert_eq!(report.services().len(), 1);
}

#[test]
fn a_refused_service_closure_is_never_called() {
    let lc = Lifecycle::new();
    let _held = lc.session("held").unwrap();
    lc.stop("deploy");
    let called = Arc::new(AtomicBool::new(false));
    let seen = called.clone();
    let err = lc
        .service("late", move |stop| {
            seen.store(true, Ordering::SeqCst);
            stop
        })
        .unwrap_err();
    assert_eq!(err, ServiceError::Refused(Refused::Draining));
    assert!(
        !called.load(Ordering::SeqCst),
        "its side effects must not happen"
    );
}

#[test]
fn a_service_closure_that_panics_is_recorded_and_the_panic_continues() {
    quiet();
    let lc = Lifecycle::builder()
        .on_service_failure(async_lifecycle::FailurePolicy::ReportOnly)
        .build();
    let result = catch_unwind(AssertUnwindSafe(|| {
        lc.service("setup", |_stop| -> std::future::Ready<()> {
            panic!("planned setup failure")
        })
    }));
    assert!(result.is_err());
    lc.stop("done");
    let report = block_on(lc.wait());
    assert_eq!(
        report.service("setup").unwrap().outcome(),
        &ServiceOutcome::Panicked("planned setup failure".into())
    );
}

// ---- Found by the hostile review ----

#[test]
fn a_service_future_that_panics_when_dropped_by_wait_does_not_lose_the_report() {
    quiet();
    let clock = ManualClock::new();
    let lc = Lifecycle::builder()
        .grace(Duration::from_secs(1))
        .clock(clock.clone())
        .build();
    lc.service("bomb", |_stop| async {
        let _bomb = PanicOnDrop;
        std::future::pending::<()>().await;
    })
    .unwrap();
    let mut pool = LocalPool::new();
    let wait = pool.spawner().spawn_local_with_handle(lc.wait()).unwrap();
    pool.run_until_stalled();
    lc.stop("deploy");
    pool.run_until_stalled();
    clock.advance(Duration::from_secs(1));
    // The abandoned future is dropped by the `Wait` that drove it.
    let report = pool.run_until(wait);
    assert_eq!(report.state(), State::Abandoned);
    assert_eq!(
        report.service("bomb").unwrap().outcome(),
        &ServiceOutcome::Abandoned
    );
}

#[test]
fn a_dropped_wait_drops_and_reports_every_service_it_drove_even_after_a_panicking_drop() {
    quiet();
    let lc = Lifecycle::new();
    let dropped = Arc::new(AtomicBool::new(false));
    lc.service("bomb", |_stop| async {
        let _bomb = PanicOnDrop;
        std::future::pending::<()>().await;
    })
    .unwrap();
    let flag = DropFlag(dropped.clone());
    lc.service("normal", move |_stop| async move {
        let _flag = flag;
        std::future::pending::<()>().await;
    })
    .unwrap();
    let mut wait = Box::pin(lc.wait());
    let waker = futures::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    assert!(wait.as_mut().poll(&mut cx).is_pending());
    drop(wait); // as `timeout(d, lc.wait())` would
    assert!(
        dropped.load(Ordering::SeqCst),
        "the other service was dropped too"
    );
    let snap = lc.snapshot();
    assert!(snap.services().iter().all(|s| !s.is_running()), "{snap}");
}

#[test]
fn a_stop_trigger_alone_is_something_to_wait_for() {
    let lc = Lifecycle::new();
    let (tx, rx) = futures::channel::oneshot::channel::<()>();
    lc.stop_on(async move {
        let _ = rx.await;
        "triggered"
    });
    let mut pool = LocalPool::new();
    let wait = pool.spawner().spawn_local_with_handle(lc.wait()).unwrap();
    pool.run_until_stalled();
    assert_eq!(lc.state(), State::Running, "not stopped for nothing to run");
    tx.send(()).unwrap();
    let report = pool.run_until(wait);
    assert_eq!(report.cause(), Some(&StopCause::from("triggered")));
}

#[test]
fn a_weak_handle_gives_the_live_view_to_a_health_endpoint_inside_a_service() {
    let lc = Lifecycle::new();
    let weak = lc.downgrade();
    let _conn = weak.session("conn").unwrap();
    assert_eq!(weak.state(), State::Running);
    assert_eq!(weak.snapshot().live_sessions(), 1);
    lc.stop("deploy");
    assert_eq!(weak.cause(), Some(&StopCause::from("deploy")));
    assert!(weak.snapshot().is_stopped());
}

#[test]
fn a_tiny_grace_depends_on_the_clock_not_on_the_executor() {
    // A service that returns as soon as it sees its stop ends a few hundred nanoseconds
    // after it, later than a 1 ns deadline: abandoned on every executor, whichever of the
    // timer and the service runs first.
    fn check(report: &Report) {
        assert_eq!(
            report.service("prompt").unwrap().outcome(),
            &ServiceOutcome::Abandoned,
            "{report}"
        );
    }
    async fn scenario(builder: async_lifecycle::Builder) -> Report {
        let lc = builder.grace(Duration::from_nanos(1)).build();
        let (tx, rx) = futures::channel::oneshot::channel();
        lc.service("prompt", move |stop| async move {
            tx.send(()).unwrap();
            stop.await;
        })
        .unwrap();
        let report = lc.wait();
        let stopper = async {
            rx.await.unwrap();
            lc.stop("now");
        };
        futures::join!(report, stopper).0
    }
    check(&block_on(scenario(Lifecycle::builder())));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    check(&rt.block_on(scenario(Lifecycle::builder().spawner(|f| {
        tokio::spawn(f);
    }))));
    check(&rt.block_on(async {
        use async_lifecycle::tokio::BuilderExt;
        scenario(Lifecycle::builder().tokio()).await
    }));
    let ex = Arc::new(smol::Executor::new());
    check(&smol::block_on(ex.run(scenario({
        use async_lifecycle::async_io::BuilderExt;
        Lifecycle::builder().smol(ex.clone())
    }))));
}
