//! Dependencies, readiness, start timeouts, the ordered stop with per-service budgets inside
//! one deadline, and nested lifecycles — through the public API, on a `ManualClock` and a
//! `LocalPool`. Nothing sleeps.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_lifecycle::{
    ConfigError, Event, FailurePolicy, Lifecycle, ManualClock, Report, Restart, ServiceError,
    ServiceOptions, ServiceOutcome, State, StopCause, StopSignal,
};
use futures::executor::LocalPool;
use futures::future::RemoteHandle;
use futures::task::LocalSpawnExt;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

type Log = Arc<Mutex<Vec<String>>>;

struct Harness {
    clock: ManualClock,
    lc: Lifecycle,
    pool: LocalPool,
    log: Log,
    events: Log,
}

impl Harness {
    fn new(builder: async_lifecycle::Builder) -> Self {
        let clock = ManualClock::new();
        let events: Log = Arc::default();
        let sink = events.clone();
        let lc = builder
            .clock(clock.clone())
            .on_event(move |event| sink.lock().unwrap().push(event.to_string()))
            .build();
        Harness {
            clock,
            lc,
            pool: LocalPool::new(),
            log: Arc::default(),
            events,
        }
    }

    fn with_grace(grace: Duration) -> Self {
        Harness::new(Lifecycle::builder().grace(grace))
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

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }

    /// A service that logs "start NAME", declares itself ready if `ready`, waits for its
    /// stop signal, logs "stop NAME" and returns `Ok` — or, if `stalls`, never returns.
    fn add(&self, name: &'static str, options: ServiceOptions, ready: bool, stalls: bool) {
        let log = self.log.clone();
        self.lc
            .service_with(name, options, move |stop: StopSignal| {
                let log = log.clone();
                async move {
                    log.lock().unwrap().push(format!("start {name}"));
                    if ready {
                        assert!(stop.ready(), "{name}: the first ready() changes the state");
                        assert!(!stop.ready(), "{name}: a second ready() changes nothing");
                    }
                    stop.await;
                    log.lock().unwrap().push(format!("stop {name}"));
                    if stalls {
                        futures::future::pending::<()>().await;
                    }
                    Ok::<(), String>(())
                }
            })
            .unwrap();
    }
}

fn after(names: &[&'static str]) -> ServiceOptions {
    ServiceOptions::new().after(names.iter().copied())
}

#[test]
fn dependents_start_after_their_dependencies_are_ready_and_stop_before_them() {
    // db ← cache ← api, and db ← worker: a graph, not a list. db declares itself ready
    // once its gate opens.
    let mut h = Harness::with_grace(secs(30));
    let gate: Arc<Mutex<Option<futures::channel::oneshot::Sender<()>>>> = Arc::default();
    let (tx, rx) = futures::channel::oneshot::channel::<()>();
    *gate.lock().unwrap() = Some(tx);
    let mut rx = Some(rx);
    let log = h.log.clone();
    h.lc.service_with("db", ServiceOptions::new().declares_ready(), move |stop| {
        let rx = rx.take().expect("db runs once");
        let log = log.clone();
        async move {
            log.lock().unwrap().push("start db".into());
            let _ = rx.await;
            stop.ready();
            stop.await;
            log.lock().unwrap().push("stop db".into());
        }
    })
    .unwrap();
    h.add("cache", after(&["db"]), false, false);
    h.add("api", after(&["cache", "db"]), false, false);
    h.add("worker", after(&["db"]), false, false);
    let wait = h.wait();
    assert_eq!(h.log(), ["start db"], "nothing starts before db is ready");
    let snapshot = h.lc.snapshot();
    assert!(snapshot.services()[1].is_waiting());
    assert!(!snapshot.services()[0].is_ready());
    assert!(
        snapshot
            .to_string()
            .contains("waiting for its dependencies")
    );
    assert!(snapshot.to_string().contains("starting (not ready)"));
    assert!(
        !h.lc.stop_signal().ready(),
        "the lifecycle's signal is no service's"
    );
    gate.lock().unwrap().take().unwrap().send(()).unwrap();
    h.pool.run_until_stalled();
    let log = h.log();
    assert_eq!(log[0], "start db");
    let pos = |what: &str| {
        log.iter()
            .position(|l| l == what)
            .unwrap_or_else(|| panic!("{what} not in {log:?}"))
    };
    assert!(pos("start cache") < pos("start api"), "{log:?}");
    assert!(pos("start worker") > 0);
    assert!(h.lc.snapshot().services().iter().all(|s| s.is_ready()));

    h.log.lock().unwrap().clear();
    h.lc.stop("deploy");
    h.pool.run_until_stalled();
    let report = h.pool.run_until(wait);
    let log = h.log();
    let pos = |what: &str| log.iter().position(|l| l == what).unwrap();
    assert!(pos("stop api") < pos("stop cache"), "{log:?}");
    assert!(pos("stop cache") < pos("stop db"), "{log:?}");
    assert!(pos("stop worker") < pos("stop db"), "{log:?}");
    assert_eq!(report.state(), State::Terminated);
    assert_eq!(report.exit_code(), 0, "{report}");
    let events = h.events();
    assert!(
        events.contains(&"service \"db\" ready (run 1)".to_owned()),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("service \"db\" signalled to stop")),
        "{events:?}"
    );
}

#[test]
fn bad_dependencies_and_durations_are_typed_errors_at_add_time() {
    let h = Harness::with_grace(secs(10));
    h.add("db", ServiceOptions::new(), false, false);
    let add = |name: &'static str, options: ServiceOptions| {
        h.lc.service_with(name, options, |stop| stop).unwrap_err()
    };
    assert_eq!(
        add("api", after(&["dbb"])),
        ServiceError::UnknownDependency {
            service: "api".into(),
            dependency: "dbb".into()
        }
    );
    assert_eq!(
        add("api", after(&["api"])),
        ServiceError::DependencyCycle {
            service: "api".into()
        }
    );
    assert_eq!(
        add("api", ServiceOptions::new().start_timeout(Duration::ZERO)),
        ServiceError::Config(ConfigError::ZeroDuration {
            what: "start timeout"
        })
    );
    assert!(matches!(
        add("api", ServiceOptions::new().stop_budget(secs(2 * 86_400))),
        ServiceError::Config(ConfigError::TooLong {
            what: "stop budget",
            ..
        })
    ));
    h.lc.service_with(
        "cache",
        after(&["db"]).stop_budget(secs(6)),
        |stop: StopSignal| stop,
    )
    .unwrap();
    let err = add("api", after(&["cache"]).stop_budget(secs(5)));
    assert_eq!(
        err,
        ServiceError::BudgetsExceedGrace {
            service: "api".into(),
            total: secs(11),
            grace: secs(10)
        }
    );
    assert!(err.to_string().contains("more than the grace"), "{err}");
    assert!(
        add("api", after(&["dbb"]))
            .to_string()
            .contains("add dependencies first")
    );
    // None of the refused services exists; the lifecycle still runs and stops cleanly.
    assert_eq!(h.lc.snapshot().services().len(), 2);
    h.lc.stop("done");
    let report = futures::executor::block_on(h.lc.wait());
    assert_eq!(report.exit_code(), 0, "{report}");
}

#[test]
fn a_start_timeout_stops_what_started_in_reverse_and_never_starts_the_rest() {
    let mut h = Harness::with_grace(secs(30));
    h.add("db", ServiceOptions::new(), false, false);
    // Never declares itself ready.
    h.add(
        "migrations",
        after(&["db"]).declares_ready().start_timeout(secs(5)),
        false,
        false,
    );
    h.add("api", after(&["migrations"]), false, false);
    let wait = h.wait();
    assert_eq!(h.log(), ["start db", "start migrations"]);
    h.advance(secs(4));
    assert_eq!(h.lc.state(), State::Running);
    h.advance(secs(1));
    let report = h.pool.run_until(wait);
    assert_eq!(
        report.cause(),
        Some(&StopCause::StartFailed {
            service: "migrations".into(),
            timeout: Some(secs(5))
        })
    );
    let log = h.log();
    assert_eq!(
        &log[2..],
        ["stop migrations", "stop db"],
        "stopped in reverse: {log:?}"
    );
    assert_eq!(
        report.service("api").unwrap().outcome(),
        &ServiceOutcome::NotStarted
    );
    assert_eq!(report.service("api").unwrap().attempts(), 0);
    assert_eq!(
        report.exit_code(),
        1,
        "a failed start is a failure: {report}"
    );
    assert!(
        report.to_string().contains("was not ready within 5s"),
        "{report}"
    );
}

#[test]
fn a_dependency_that_ends_before_it_is_ready_fails_the_start_even_when_failures_are_only_reported()
{
    let mut h = Harness::new(
        Lifecycle::builder()
            .grace(secs(30))
            .on_service_failure(FailurePolicy::ReportOnly),
    );
    h.lc.service_with(
        "db",
        ServiceOptions::new().declares_ready(),
        |_stop| async { Err::<(), _>("no such database") },
    )
    .unwrap();
    h.add("api", after(&["db"]), false, false);
    let report = h.pool.run_until(h.lc.wait());
    assert_eq!(
        report.cause(),
        Some(&StopCause::StartFailed {
            service: "db".into(),
            timeout: None
        })
    );
    assert_eq!(
        report.service("api").unwrap().outcome(),
        &ServiceOutcome::NotStarted
    );
    assert_eq!(report.exit_code(), 1);
}

#[test]
fn a_stalled_dependent_is_given_up_at_its_budget_and_its_dependency_still_stops() {
    let mut h = Harness::with_grace(secs(30));
    h.add("db", ServiceOptions::new(), false, false);
    h.add("api", after(&["db"]).stop_budget(secs(4)), false, true);
    let wait = h.wait();
    h.lc.stop("deploy");
    h.pool.run_until_stalled();
    assert_eq!(h.log(), ["start db", "start api", "stop api"]);
    h.advance(secs(2));
    assert!(
        h.events()
            .iter()
            .any(|e| e == "service \"api\" still running 2s after the stop"),
        "slow to stop at half its budget: {:?}",
        h.events()
    );
    h.advance(secs(1));
    assert_eq!(
        h.log().len(),
        3,
        "db is not signalled before api's budget ends"
    );
    h.advance(secs(1));
    // api given up on at 4 s; db signalled then, and stops.
    let report = h.pool.run_until(wait);
    assert_eq!(h.log().last().unwrap(), "stop db");
    assert_eq!(
        report.service("api").unwrap().outcome(),
        &ServiceOutcome::Abandoned
    );
    assert_eq!(
        report.service("db").unwrap().outcome(),
        &ServiceOutcome::Stopped
    );
    assert_eq!(report.state(), State::Abandoned);
    assert_eq!(report.drained_in(), secs(4), "{report}");
    assert_eq!(report.exit_code(), 2);
}

#[test]
fn without_budgets_each_service_gets_half_the_time_left_while_its_dependencies_run() {
    let mut h = Harness::with_grace(secs(32));
    h.add("a", ServiceOptions::new(), false, true);
    h.add("b", after(&["a"]), false, true);
    h.add("c", after(&["b"]), false, true);
    let wait = h.wait();
    h.lc.stop("deploy");
    h.pool.run_until_stalled();
    assert_eq!(h.log().last().unwrap(), "stop c");
    // c: half the 32 s, while b runs.
    h.advance(Duration::from_millis(15_999));
    assert_eq!(h.log().last().unwrap(), "stop c");
    h.advance(Duration::from_millis(1));
    assert_eq!(h.log().last().unwrap(), "stop b");
    // b: half the 16 s left; then a, which depends on nothing: the last 8 s.
    h.advance(secs(8));
    assert_eq!(h.log().last().unwrap(), "stop a");
    h.advance(secs(8));
    let report = h.pool.run_until(wait);
    assert_eq!(report.state(), State::Abandoned);
    assert_eq!(report.drained_in(), secs(32));
    for name in ["a", "b", "c"] {
        assert_eq!(
            report.service(name).unwrap().outcome(),
            &ServiceOutcome::Abandoned,
            "{name} is named: {report}"
        );
    }
}

#[test]
fn a_deep_chain_of_quick_services_stops_cleanly_and_starts_without_recursion() {
    // 5,000 deep: the starts its root's readiness sets off are a loop, not a recursion (a
    // test thread's stack held about 400 before), and halving budgets leave the top
    // services most of the grace.
    let lc = Lifecycle::builder().grace(secs(30)).build();
    let root = Arc::new(Mutex::new(None::<StopSignal>));
    let keep = root.clone();
    lc.service_with("s0", ServiceOptions::new().declares_ready(), move |stop| {
        *keep.lock().unwrap() = Some(stop.clone());
        stop
    })
    .unwrap();
    for i in 1..5_000 {
        lc.service_with(format!("s{i}"), after_owned(format!("s{}", i - 1)), |s| s)
            .unwrap();
    }
    assert!(root.lock().unwrap().as_ref().unwrap().ready());
    assert!(lc.snapshot().services().iter().all(|s| !s.is_waiting()));
    lc.stop("deploy");
    let report = futures::executor::block_on(lc.wait());
    assert_eq!(report.exit_code(), 0, "{}", report.state());
}

fn after_owned(name: String) -> ServiceOptions {
    ServiceOptions::new().after([name])
}

#[test]
fn a_restarted_run_is_not_ready_until_it_says_so_and_a_stale_signal_cannot_say_it() {
    let mut h = Harness::with_grace(secs(30));
    let runs: Arc<Mutex<Vec<StopSignal>>> = Arc::default();
    let kept = runs.clone();
    let options = ServiceOptions::new()
        .declares_ready()
        .restart(Restart::Always)
        .backoff(
            async_lifecycle::Backoff::new(secs(1), secs(1))
                .unwrap()
                .without_jitter(),
        );
    h.lc.service_with("db", options, move |stop: StopSignal| {
        kept.lock().unwrap().push(stop.clone());
        let n = kept.lock().unwrap().len();
        async move {
            if n == 1 {
                stop.ready();
                return Ok(()); // an early end: restarted
            }
            stop.await;
            Ok::<(), String>(())
        }
    })
    .unwrap();
    let wait = h.wait();
    h.advance(secs(1));
    let first = runs.lock().unwrap()[0].clone();
    assert_eq!(runs.lock().unwrap().len(), 2);
    assert!(!h.lc.snapshot().services()[0].is_ready());
    assert!(
        !first.ready(),
        "the first run's signal cannot make the second ready"
    );
    assert!(!h.lc.snapshot().services()[0].is_ready());
    let second = runs.lock().unwrap()[1].clone();
    assert!(second.ready());
    assert!(h.lc.snapshot().services()[0].is_ready());
    h.lc.stop("done");
    let report = h.pool.run_until(wait);
    assert_eq!(report.exit_code(), 0, "{report}");
}

#[test]
fn a_nested_lifecycle_stops_after_its_dependents_within_what_the_parent_has_left() {
    let mut h = Harness::with_grace(secs(30));
    h.add("db", ServiceOptions::new(), false, false);
    let workers =
        h.lc.nest(
            "workers",
            after(&["db"]),
            Lifecycle::builder().grace(secs(60)),
        )
        .unwrap();
    h.add(
        "api",
        after(&["workers"]).stop_budget(secs(10)),
        false,
        false,
    );
    let log = h.log.clone();
    workers
        .service("worker 1", move |stop| async move {
            stop.await;
            log.lock().unwrap().push("stop worker 1".into());
        })
        .unwrap();
    // A straggler inside the nested lifecycle.
    let _stuck = workers.session("job 42").unwrap();
    let wait = h.wait();
    h.lc.stop("deploy");
    h.pool.run_until_stalled();
    let log = h.log();
    let pos = |what: &str| log.iter().position(|l| l == what).unwrap();
    assert!(pos("stop api") < pos("stop worker 1"), "{log:?}");
    assert!(
        !log.contains(&"stop db".to_owned()),
        "db waits for workers: {log:?}"
    );
    assert_eq!(workers.state(), State::Draining);
    assert_eq!(
        workers.cause(),
        Some(&StopCause::ParentStopping),
        "the nested lifecycle is stopped by its parent"
    );
    // workers' default budget: the 30 s left / 2 (db below it) = 15 s, not its own 60 s.
    h.advance(Duration::from_millis(14_999));
    assert_eq!(workers.state(), State::Draining);
    h.advance(Duration::from_millis(1));
    let report = h.pool.run_until(wait);
    // Its service ended at its budget's end, with the nested lifecycle's own deadline: too
    // late, whichever of the two timers ran first.
    assert_eq!(
        report.service("workers").unwrap().outcome(),
        &ServiceOutcome::Abandoned
    );
    let nested = report.service("workers").unwrap().nested().unwrap();
    assert_eq!(nested.state(), State::Abandoned);
    assert_eq!(nested.sessions().abandoned()[0].name(), "job 42");
    assert_eq!(h.log().last().unwrap(), "stop db");
    assert_eq!(
        report.exit_code(),
        2,
        "a straggler at depth 1 makes the tree's code 2"
    );
    let text = report.to_string();
    assert!(text.contains("       | lifecycle abandoned"), "{text}");
    assert!(text.contains("       |   ABANDONED job 42"), "{text}");
}

#[test]
fn a_nested_lifecycle_that_fails_on_its_own_stops_the_parent() {
    let h = Harness::with_grace(secs(30));
    h.add("db", ServiceOptions::new(), false, false);
    let workers =
        h.lc.nest("workers", ServiceOptions::new(), Lifecycle::builder())
            .unwrap();
    workers
        .service("worker 1", |_stop| async { Err::<(), _>("disk full") })
        .unwrap();
    let report = futures::executor::block_on(h.lc.wait());
    assert_eq!(
        report.cause(),
        Some(&StopCause::ServiceEnded {
            service: "workers".into()
        })
    );
    let nested = report.service("workers").unwrap().nested().unwrap();
    assert_eq!(
        nested.service("worker 1").unwrap().outcome(),
        &ServiceOutcome::Failed("disk full".into())
    );
    assert_eq!(report.exit_code(), 1, "{report}");
}

#[test]
fn a_parent_that_is_forced_ends_its_nested_lifecycles_and_still_reports_them() {
    let mut h = Harness::with_grace(secs(30));
    let workers =
        h.lc.nest("workers", ServiceOptions::new(), Lifecycle::builder())
            .unwrap();
    workers
        .service("stuck", |_stop| futures::future::pending::<()>())
        .unwrap();
    let wait = h.wait();
    h.lc.force();
    let report = h.pool.run_until(wait);
    let nested = report.service("workers").unwrap().nested().unwrap();
    assert!(nested.state().is_terminal());
    assert_eq!(
        nested.service("stuck").unwrap().outcome(),
        &ServiceOutcome::Abandoned
    );
    assert_eq!(report.exit_code(), 2);
}

#[test]
fn a_nested_lifecycle_cannot_be_restarted() {
    let lc = Lifecycle::new();
    let err = lc
        .nest(
            "workers",
            ServiceOptions::new().restart(Restart::OnFailure),
            Lifecycle::builder(),
        )
        .unwrap_err();
    assert_eq!(
        err,
        ServiceError::Config(ConfigError::NotForNested {
            option: "a restart policy"
        })
    );
    let err = lc
        .nest(
            "workers",
            ServiceOptions::new().declares_ready(),
            Lifecycle::builder(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("declares_ready"), "{err}");
    assert!(lc.snapshot().services().is_empty());
    lc.stop("done");
}

#[test]
fn events_name_readiness_and_the_ordered_stop() {
    let mut h = Harness::with_grace(secs(30));
    h.add("db", ServiceOptions::new().declares_ready(), true, false);
    h.add("api", after(&["db"]), false, false);
    let wait = h.wait();
    h.lc.stop("deploy");
    let _ = h.pool.run_until(wait);
    let events = h.events();
    let pos = |what: &str| {
        events
            .iter()
            .position(|e| e.starts_with(what))
            .unwrap_or_else(|| panic!("no {what:?} in {events:?}"))
    };
    assert!(pos("service \"db\" ready") < pos("service \"api\" started"));
    assert!(pos("stop requested") < pos("service \"db\" signalled to stop"));
    let _ = Event::Ready {
        service: "db",
        attempt: 1,
    };
}

#[test]
fn a_nested_lifecycle_stopped_before_its_service_ran_ran_nothing_and_ends_cleanly() {
    let h = Harness::with_grace(secs(30));
    h.lc.service_with("db", ServiceOptions::new().declares_ready(), |stop| stop)
        .unwrap();
    let workers =
        h.lc.nest("workers", after(&["db"]), Lifecycle::builder())
            .unwrap();
    let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = ran.clone();
    workers
        .service("worker 1", move |stop| async move {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            stop.await;
        })
        .unwrap();
    // db never becomes ready: the stop comes first.
    h.lc.stop("deploy");
    assert_eq!(workers.cause(), Some(&StopCause::ParentStopping));
    let report = futures::executor::block_on(h.lc.wait());
    assert!(
        !ran.load(std::sync::atomic::Ordering::SeqCst),
        "nothing in it ran"
    );
    let nested = report.service("workers").unwrap().nested().unwrap();
    assert_eq!(nested.state(), State::Terminated, "{report}");
    assert!(!nested.forced());
    assert_eq!(
        nested.service("worker 1").unwrap().outcome(),
        &ServiceOutcome::NotStarted
    );
    assert_eq!(report.exit_code(), 0, "{report}");
}

#[test]
fn with_a_spawner_nothing_in_a_nested_lifecycle_runs_before_its_dependencies_are_ready() {
    let spawned: Arc<Mutex<Vec<futures::future::BoxFuture<'static, ()>>>> = Arc::default();
    let queue = spawned.clone();
    let mut h = Harness::new(
        Lifecycle::builder()
            .grace(secs(30))
            .spawner(move |task| queue.lock().unwrap().push(task)),
    );
    let gate = Arc::new(Mutex::new(None::<StopSignal>));
    let keep = gate.clone();
    h.lc.service_with("db", ServiceOptions::new().declares_ready(), move |stop| {
        *keep.lock().unwrap() = Some(stop.clone());
        stop
    })
    .unwrap();
    let workers =
        h.lc.nest("workers", after(&["db"]), Lifecycle::builder())
            .unwrap();
    workers.service("worker 1", |stop| stop).unwrap();
    assert_eq!(spawned.lock().unwrap().len(), 1, "only db was spawned");
    // db ready: the nested lifecycle's run is spawned; once it runs, so is its worker.
    assert!(gate.lock().unwrap().as_ref().unwrap().ready());
    assert_eq!(spawned.lock().unwrap().len(), 2);
    let run = spawned.lock().unwrap().pop().unwrap();
    let spawner = h.pool.spawner();
    spawner.spawn_local(run).unwrap();
    h.pool.run_until_stalled();
    assert_eq!(
        spawned.lock().unwrap().len(),
        2,
        "worker 1 spawned when workers ran"
    );
    for task in spawned.lock().unwrap().drain(..) {
        spawner.spawn_local(task).unwrap();
    }
    let wait = h.wait();
    h.lc.stop("deploy");
    let report = h.pool.run_until(wait);
    assert_eq!(report.exit_code(), 0, "{report}");
    let nested = report.service("workers").unwrap().nested().unwrap();
    assert_eq!(
        nested.service("worker 1").unwrap().outcome(),
        &ServiceOutcome::Stopped
    );
}

// Regressions from the hostile review.

#[test]
fn a_held_services_signal_fires_when_the_lifecycle_gives_up() {
    for end in ["force", "deadline", "zero grace"] {
        let grace = if end == "zero grace" {
            Duration::ZERO
        } else {
            secs(30)
        };
        let mut h = Harness::with_grace(grace);
        let kept: Arc<Mutex<Option<StopSignal>>> = Arc::default();
        let keep = kept.clone();
        h.lc.service_with("db", ServiceOptions::new(), move |stop: StopSignal| {
            *keep.lock().unwrap() = Some(stop.clone());
            stop
        })
        .unwrap();
        h.add("api", after(&["db"]), false, true); // stalls: db stays held
        let wait = h.wait();
        h.lc.stop("deploy");
        h.pool.run_until_stalled();
        match end {
            "force" => h.lc.force(),
            "deadline" => h.advance(secs(30)),
            _ => {}
        }
        let report = h.pool.run_until(wait);
        let signal = kept.lock().unwrap().take().unwrap();
        assert!(signal.is_stopped(), "{end}: {report}");
        futures::executor::block_on(signal); // resolves: no clone waits forever
    }
}

#[test]
fn a_nested_lifecycle_two_levels_below_a_parent_that_never_ran_ends_clean() {
    let lc = Lifecycle::builder().grace(secs(30)).build();
    lc.service_with("db", ServiceOptions::new().declares_ready(), |stop| stop)
        .unwrap(); // never ready
    let l1 = lc.nest("l1", after(&["db"]), Lifecycle::builder()).unwrap();
    let l2 = l1
        .nest("l2", ServiceOptions::new(), Lifecycle::builder())
        .unwrap();
    l2.service("w", |stop| stop).unwrap();
    lc.stop("deploy");
    let report = futures::executor::block_on(lc.wait());
    assert_eq!(report.exit_code(), 0, "{report}");
    let l2_report = report.service("l1").unwrap().nested().unwrap();
    let l2_report = l2_report.service("l2").unwrap().nested().unwrap();
    assert_eq!(
        l2_report.service("w").unwrap().outcome(),
        &ServiceOutcome::NotStarted
    );
}

#[test]
fn waiting_on_a_nested_lifecycle_yourself_does_not_run_it_early() {
    let mut h = Harness::with_grace(secs(30));
    h.lc.service_with("db", ServiceOptions::new().declares_ready(), |s| s)
        .unwrap(); // never ready
    let n =
        h.lc.nest("n", after(&["db"]), Lifecycle::builder())
            .unwrap();
    let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = ran.clone();
    n.service("w", move |stop| async move {
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
        stop.await;
    })
    .unwrap();
    let nested_wait = h.pool.spawner().spawn_local_with_handle(n.wait()).unwrap();
    let wait = h.wait();
    assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
    h.lc.stop("end");
    let report = h.pool.run_until(wait);
    let _ = h.pool.run_until(nested_wait);
    assert!(!ran.load(std::sync::atomic::Ordering::SeqCst), "{report}");
    assert_eq!(report.exit_code(), 0, "{report}");
}

#[test]
fn a_dependency_that_already_ended_is_refused() {
    let mut h = Harness::new(
        Lifecycle::builder()
            .grace(secs(30))
            .on_service_failure(FailurePolicy::ReportOnly),
    );
    h.lc.service_with("db", ServiceOptions::new().declares_ready(), |_s| async {
        Err::<(), _>("no db")
    })
    .unwrap();
    let wait = h.wait();
    let err = h.lc.service_with("api", after(&["db"]), |s| s).unwrap_err();
    assert_eq!(
        err,
        ServiceError::DependencyEnded {
            service: "api".into(),
            dependency: "db".into()
        }
    );
    assert!(err.to_string().contains("already ended"), "{err}");
    h.lc.stop("end");
    let _ = h.pool.run_until(wait);
}

#[test]
fn ready_declared_inside_the_factory_counts_once_the_run_is_made() {
    let mut h = Harness::with_grace(secs(30));
    let answer = Arc::new(Mutex::new(None));
    let keep = answer.clone();
    h.lc.service_with(
        "db",
        ServiceOptions::new()
            .declares_ready()
            .start_timeout(secs(5)),
        move |stop: StopSignal| {
            *keep.lock().unwrap() = Some(stop.ready());
            stop
        },
    )
    .unwrap();
    h.add("api", after(&["db"]), false, false);
    let wait = h.wait();
    assert_eq!(*answer.lock().unwrap(), Some(true));
    assert_eq!(h.log(), ["start api"], "api started once db's run was made");
    h.advance(secs(6)); // no start timeout: db was ready
    assert_eq!(h.lc.state(), State::Running);
    h.lc.stop("end");
    let report = h.pool.run_until(wait);
    assert_eq!(report.exit_code(), 0, "{report}");
    let events = h.events();
    let pos = |what: &str| events.iter().position(|e| e.starts_with(what)).unwrap();
    assert!(pos("service \"db\" started") < pos("service \"db\" ready"));
}

#[test]
fn a_nested_lifecycle_ended_with_its_parent_says_its_parent_stopped_it() {
    let h = Harness::with_grace(Duration::ZERO);
    let n =
        h.lc.nest("n", ServiceOptions::new(), Lifecycle::builder())
            .unwrap();
    n.service("w", |s| s).unwrap();
    h.lc.stop("deploy");
    let report = futures::executor::block_on(h.lc.wait());
    let nested = report.service("n").unwrap().nested().unwrap();
    assert_eq!(nested.cause(), Some(&StopCause::ParentStopping), "{report}");
}

// Regressions from the second review.

#[test]
fn a_nested_services_start_timeout_counts_from_when_its_lifecycle_runs() {
    let mut h = Harness::with_grace(secs(30));
    let db: Arc<Mutex<Option<StopSignal>>> = Arc::default();
    let keep = db.clone();
    h.lc.service_with("db", ServiceOptions::new().declares_ready(), move |stop| {
        *keep.lock().unwrap() = Some(stop.clone());
        stop
    })
    .unwrap();
    let n =
        h.lc.nest("n", after(&["db"]), Lifecycle::builder())
            .unwrap();
    let ready: Arc<Mutex<Option<StopSignal>>> = Arc::default();
    let keep = ready.clone();
    n.service_with(
        "w",
        ServiceOptions::new()
            .declares_ready()
            .start_timeout(secs(5)),
        move |stop| {
            *keep.lock().unwrap() = Some(stop.clone());
            stop
        },
    )
    .unwrap();
    let wait = h.wait();
    h.advance(secs(10)); // longer than w's start timeout, while n waits for db
    assert!(db.lock().unwrap().as_ref().unwrap().ready());
    h.pool.run_until_stalled();
    h.advance(secs(4));
    assert!(ready.lock().unwrap().as_ref().unwrap().ready());
    h.advance(secs(2));
    assert_eq!(n.state(), State::Running, "w was ready 4 s after its run");
    h.lc.stop("end");
    let report = h.pool.run_until(wait);
    assert_eq!(report.exit_code(), 0, "{report}");
    let nested = report.service("n").unwrap().nested().unwrap();
    assert_eq!(nested.service("w").unwrap().ran(), secs(6), "{report}");
}

#[test]
fn a_waiting_dependent_is_never_started_once_a_dependency_ended() {
    let mut h = Harness::new(
        Lifecycle::builder()
            .grace(secs(30))
            .on_service_failure(FailurePolicy::ReportOnly),
    );
    let (tx, rx) = futures::channel::oneshot::channel::<()>();
    let mut rx = Some(rx);
    h.lc.service_with("a", ServiceOptions::new(), move |_stop| {
        let rx = rx.take().expect("a runs once");
        async move {
            let _ = rx.await;
            Err::<(), _>("crashed")
        }
    })
    .unwrap();
    h.lc.service_with("b", ServiceOptions::new().declares_ready(), |stop| stop)
        .unwrap();
    h.add("c", after(&["a", "b"]), false, false);
    let wait = h.wait();
    tx.send(()).unwrap();
    let report = h.pool.run_until(wait);
    assert_eq!(
        report.cause(),
        Some(&StopCause::StartFailed {
            service: "a".into(),
            timeout: None
        })
    );
    assert_eq!(
        report.service("c").unwrap().outcome(),
        &ServiceOutcome::NotStarted
    );
    assert!(h.log().is_empty(), "c never ran: {:?}", h.log());
}

#[test]
fn ready_inside_the_factory_of_a_service_that_does_not_declare_it_is_false() {
    let h = Harness::with_grace(secs(30));
    let answer = Arc::new(Mutex::new(None));
    let keep = answer.clone();
    h.lc.service_with("x", ServiceOptions::new(), move |stop: StopSignal| {
        *keep.lock().unwrap() = Some(stop.ready());
        stop
    })
    .unwrap();
    assert_eq!(*answer.lock().unwrap(), Some(false), "ready when made");
    assert!(
        h.events().iter().all(|e| !e.contains("ready")),
        "{:?}",
        h.events()
    );
    h.lc.stop("end");
}
