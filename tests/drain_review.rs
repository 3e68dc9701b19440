//! A hostile review of 9c1ed11 ("the last session's end publishes the report without the
//! general settle") and fbb8cf8 ("a machine input that leaves the driver nothing to do takes
//! no settle and no effects"): the drain's completion fast path (`Shared::sessions_drained`
//! with `Machine::take_lone_finish`), the report in a `OnceLock`, `Broadcast::fire`'s single
//! waiter taken in place, `Queue::close` leaving the drivers' registrations in place, the
//! lock-free census skipping `panicked` until `any_panicked`, and `apply`/`add_service`
//! skipping the settle when `!has_work()`.
//!
//! No defect was found: every test documents behaviour that holds (the fast path's end,
//! events and report against the general path's; races with a force, the deadline, many
//! threads and a panic; nested, held, restarting and spawned services). Time comes from a
//! `ManualClock`; waits are bounded (a test fails rather than hangs), and nothing sleeps in
//! place of synchronisation.

mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, mpsc};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use async_lifecycle::Clock as _;
use async_lifecycle::tokio::BuilderExt as _;
use async_lifecycle::{
    Backoff, Event, Lifecycle, ManualClock, Report, Restart, ServiceOptions, Session, State,
};
use futures::executor::block_on;
use support::{DropFlag, quiet_probe_panics};

// ---- helpers ----

/// How long any one step may take before the test fails (a bound on failure, never a wait).
const PATIENCE: Duration = Duration::from_secs(30);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Spins (yielding) until `cond` holds, failing after `PATIENCE`.
fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "never: {what}");
        thread::yield_now();
    }
}

/// An event, owned, for the record a hook keeps.
fn describe(event: &Event<'_>) -> String {
    match event {
        Event::Started { service, attempt } => format!("started {service} {attempt}"),
        Event::Ready { service, attempt } => format!("ready {service} {attempt}"),
        Event::Stopping { service } => format!("stopping {service}"),
        Event::Failed { service, .. } => format!("failed {service}"),
        Event::Restarting {
            service, attempt, ..
        } => format!("restarting {service} {attempt}"),
        Event::StopRequested { .. } => "stop".to_owned(),
        Event::SlowToStop { service, .. } => format!("slow {service}"),
        Event::Abandoned { service } => format!("abandoned {service}"),
        Event::Ended { state, exit_code } => format!("ended {state:?} {exit_code}"),
        _ => "other".to_owned(),
    }
}

type Events = Arc<Mutex<Vec<String>>>;

/// A builder on `clock` whose hook records every event.
fn recorded(clock: &ManualClock) -> (async_lifecycle::Builder, Events) {
    let events: Events = Arc::default();
    let record = events.clone();
    let builder = Lifecycle::builder()
        .clock(clock.clone())
        .on_event(move |event| record.lock().unwrap().push(describe(event)));
    (builder, events)
}

fn ended_count(events: &Events) -> usize {
    events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.starts_with("ended"))
        .count()
}

/// A task of a hand-made executor: its future lives in the task, which its wakers keep
/// alive; waking it only counts (the executor that would poll it again is gone).
struct LeakyTask {
    future: Mutex<Option<Pin<Box<dyn Future<Output = Report> + Send>>>>,
    woken: AtomicUsize,
}

impl Wake for LeakyTask {
    fn wake(self: Arc<Self>) {
        self.woken.fetch_add(1, Ordering::SeqCst);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.fetch_add(1, Ordering::SeqCst);
    }
}

impl LeakyTask {
    fn spawn(future: impl Future<Output = Report> + Send + 'static) -> Arc<Self> {
        Arc::new(LeakyTask {
            future: Mutex::new(Some(Box::pin(future))),
            woken: AtomicUsize::new(0),
        })
    }

    /// Polls the future once; a finished future is dropped, as an executor does.
    fn poll(self: &Arc<Self>) -> Poll<Report> {
        let waker = Waker::from(self.clone());
        let mut cx = Context::from_waker(&waker);
        let mut slot = self.future.lock().unwrap();
        let poll = slot.as_mut().expect("not finished").as_mut().poll(&mut cx);
        if poll.is_ready() {
            *slot = None;
        }
        poll
    }
}

/// A builder whose hook owns a flag set when the lifecycle's shared state is freed (the hook
/// lives as long as that state).
fn freed_flag(clock: &ManualClock) -> (async_lifecycle::Builder, Arc<AtomicBool>) {
    let freed = Arc::new(AtomicBool::new(false));
    let flag = DropFlag(freed.clone());
    let builder = Lifecycle::builder()
        .clock(clock.clone())
        .on_event(move |_| {
            let _ = &flag;
        });
    (builder, freed)
}

// ---- the queue's drivers' registrations kept past the close ----

/// Control: a task driven to its end frees everything once the handles are gone.
#[test]
fn a_wait_driven_to_its_end_frees_the_lifecycle() {
    let clock = ManualClock::new();
    let (builder, freed) = freed_flag(&clock);
    let lc = builder.build();
    let session = lc.unnamed_session().unwrap();
    let task = LeakyTask::spawn(lc.wait());
    assert!(task.poll().is_pending());
    lc.stop("deploy");
    drop(session);
    assert_eq!(lc.state(), State::Terminated);
    assert!(task.woken.load(Ordering::SeqCst) >= 1);
    let report = match task.poll() {
        Poll::Ready(report) => report,
        Poll::Pending => panic!("the report is there"),
    };
    assert_eq!(report.state(), State::Terminated);
    drop(task);
    drop(lc);
    assert!(freed.load(Ordering::SeqCst), "everything is freed");
}

/// A task whose executor lets it go without polling it again (its future lives in the task,
/// the task in its wakers). Since 9c1ed11 the closed queue keeps the `Wait`'s registration
/// (its waker) until the `Wait` is dropped, where the close used to drop it; but the `Wait`'s
/// own `FuturesUnordered` holds that waker too, so such a task was kept alive by its own
/// future before the change as well (checked against f021d0c: the task stays alive there
/// too). Not a regression: what matters is that once the executor drops the future (as
/// every executor does when it shuts down), nothing of the lifecycle is kept — through
/// the fast path's end and through the general one.
#[test]
fn a_wait_kept_registered_in_the_closed_queue_frees_everything_once_its_future_is_dropped() {
    for fast in [true, false] {
        let clock = ManualClock::new();
        let (builder, freed) = freed_flag(&clock);
        let lc = builder.build();
        let session = lc.unnamed_session().unwrap();
        let task = LeakyTask::spawn(lc.wait());
        assert!(task.poll().is_pending());
        if fast {
            lc.stop("deploy");
            // The last session's end: the fast path.
            drop(session);
        } else {
            drop(session);
            // Nothing live at the stop: the general settle ends it.
            lc.stop("deploy");
        }
        assert_eq!(lc.state(), State::Terminated);
        assert!(task.woken.load(Ordering::SeqCst) >= 1, "the end woke it");
        drop(lc);
        assert!(!freed.load(Ordering::SeqCst), "the Wait still holds it");
        // The executor shuts down: it drops the future.
        let future = task.future.lock().unwrap().take();
        drop(future);
        assert!(
            freed.load(Ordering::SeqCst),
            "fast {fast}: everything is freed"
        );
        assert_eq!(
            Arc::strong_count(&task),
            1,
            "fast {fast}: no waker of the task is kept"
        );
    }
}

// ---- the fast path: the last session's end ----

/// The last session's end publishes the report through the fast path: one `Ended`, the
/// drain timed from the stop, the sessions counted.
#[test]
fn the_last_sessions_end_publishes_a_timed_report_and_one_ended_event() {
    let clock = ManualClock::new();
    let (builder, events) = recorded(&clock);
    let lc = builder.build();
    let a = lc.session("a").unwrap();
    let b = lc.unnamed_session().unwrap();
    let wait = lc.wait();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(block_on(wait));
    });
    clock.advance(secs(3));
    lc.stop("deploy");
    clock.advance(secs(2));
    drop(a);
    assert_eq!(lc.state(), State::Draining);
    drop(b);
    assert_eq!(lc.state(), State::Terminated);
    let report = rx.recv_timeout(PATIENCE).expect("wait resolves");
    assert_eq!(report.state(), State::Terminated);
    assert_eq!(report.drained_in(), secs(2));
    assert_eq!(report.lifetime(), secs(5));
    assert_eq!(report.sessions().admitted(), 2);
    assert_eq!(report.sessions().completed(), 2);
    assert_eq!(report.sessions().panicked(), 0);
    assert_eq!(report.exit_code(), 0);
    assert_eq!(*events.lock().unwrap(), ["stop", "ended Terminated 0"]);
}

/// A `Wait` polled again after it resolved gives the same report; a `Wait` made after the end
/// resolves at its first poll; the lifecycle ended without any `Wait` polled.
#[test]
fn the_report_is_there_for_every_wait_and_without_one() {
    let clock = ManualClock::new();
    let (builder, events) = recorded(&clock);
    let lc = builder.build();
    let s = lc.session("conn").unwrap();
    lc.stop("deploy");
    drop(s);
    assert_eq!(lc.state(), State::Terminated, "no Wait needed");
    assert_eq!(ended_count(&events), 1);
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut wait = lc.wait();
    let Poll::Ready(first) = Pin::new(&mut wait).poll(&mut cx) else {
        panic!("a Wait made after the end resolves at once");
    };
    let Poll::Ready(again) = Pin::new(&mut wait).poll(&mut cx) else {
        panic!("a resolved Wait polled again resolves again");
    };
    assert_eq!(first, again);
    assert_eq!(first.sessions().completed(), 1);
    assert_eq!(block_on(lc.wait()), first);
}

/// Many `Wait`s on many threads, and the last session ended on yet another: every one of
/// them resolves with the same report (the single-waiter path and the general one).
#[test]
fn many_waits_on_many_threads_all_resolve_with_one_report() {
    for waits in [1usize, 2, 8] {
        let clock = ManualClock::new();
        let (builder, events) = recorded(&clock);
        let lc = builder.build();
        let s = lc.session("conn").unwrap();
        let barrier = Arc::new(Barrier::new(waits + 1));
        let (tx, rx) = mpsc::channel();
        for _ in 0..waits {
            let wait = lc.wait();
            let tx = tx.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                let _ = tx.send(block_on(wait));
            });
        }
        lc.stop("deploy");
        barrier.wait();
        let ender = thread::spawn(move || drop(s));
        let reports: Vec<Report> = (0..waits)
            .map(|_| rx.recv_timeout(PATIENCE).expect("every wait resolves"))
            .collect();
        ender.join().unwrap();
        assert!(reports.iter().all(|r| *r == reports[0]));
        assert_eq!(reports[0].state(), State::Terminated);
        assert_eq!(ended_count(&events), 1);
    }
}

/// A session ending by a panic as the last one: the lock-free census must see it (the
/// `any_panicked` flag is set before its exit).
#[test]
fn a_last_session_that_panics_is_in_the_report() {
    quiet_probe_panics();
    let clock = ManualClock::new();
    let (builder, events) = recorded(&clock);
    let lc = builder.build();
    let named = lc.session("doomed").unwrap();
    let other = lc.unnamed_session().unwrap();
    let wait = lc.wait();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(block_on(wait));
    });
    lc.stop("deploy");
    drop(other);
    let panicker = thread::spawn(move || {
        let _guard = named;
        panic!("review-probe: the last session panics");
    });
    assert!(panicker.join().is_err());
    let report = rx.recv_timeout(PATIENCE).expect("wait resolves");
    assert_eq!(report.state(), State::Terminated);
    assert_eq!(report.sessions().panicked(), 1);
    assert_eq!(report.sessions().completed(), 1);
    assert_eq!(
        report.sessions().panicked_sessions()[0].name(),
        Some("doomed")
    );
    assert_eq!(
        report.exit_code(),
        0,
        "sessions do not change the exit code"
    );
    assert_eq!(ended_count(&events), 1);
}

/// Sessions ending on many threads at once, one of them by a panic, whichever is last: the
/// report always counts the panic and every other session as completed.
#[test]
fn sessions_ending_on_many_threads_with_one_panic_are_all_counted() {
    quiet_probe_panics();
    const THREADS: usize = 6;
    for round in 0..60 {
        let clock = ManualClock::new();
        let lc = Lifecycle::builder().clock(clock.clone()).build();
        let sessions: Vec<Session> = (0..THREADS)
            .map(|i| {
                if i % 2 == 0 {
                    lc.session(format!("s{i}")).unwrap()
                } else {
                    lc.unnamed_session().unwrap()
                }
            })
            .collect();
        let doomed = round % THREADS;
        lc.stop("deploy");
        let barrier = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = sessions
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let barrier = barrier.clone();
                thread::spawn(move || {
                    barrier.wait();
                    if i == doomed {
                        let _guard = s;
                        panic!("review-probe: one of many");
                    }
                    drop(s);
                })
            })
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            assert_eq!(h.join().is_err(), i == doomed);
        }
        assert_eq!(lc.state(), State::Terminated, "round {round}");
        let report = block_on(lc.wait());
        assert_eq!(report.sessions().admitted(), THREADS as u64);
        assert_eq!(report.sessions().panicked(), 1, "round {round}");
        assert_eq!(
            report.sessions().completed(),
            THREADS as u64 - 1,
            "round {round}"
        );
    }
}

/// The last session ended from inside the hook, at the stop's event: the lifecycle ends
/// there (re-entrantly), once, and every `Wait` resolves.
#[test]
fn the_last_session_ended_from_the_stop_hook_ends_the_lifecycle_once() {
    let clock = ManualClock::new();
    let events: Events = Arc::default();
    let record = events.clone();
    let held: Arc<Mutex<Option<Session>>> = Arc::default();
    let inside = held.clone();
    let lc = Lifecycle::builder()
        .clock(clock.clone())
        .on_event(move |event| {
            record.lock().unwrap().push(describe(event));
            if matches!(event, Event::StopRequested { .. }) {
                drop(inside.lock().unwrap().take());
            }
        })
        .build();
    *held.lock().unwrap() = Some(lc.session("conn").unwrap());
    let wait = lc.wait();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(block_on(wait));
    });
    lc.stop("deploy");
    assert_eq!(lc.state(), State::Terminated);
    let report = rx.recv_timeout(PATIENCE).expect("wait resolves");
    assert_eq!(report.state(), State::Terminated);
    assert_eq!(report.sessions().completed(), 1);
    assert_eq!(*events.lock().unwrap(), ["stop", "ended Terminated 0"]);
}

/// The last session's end racing a force on another thread: one end, one `Ended`, a report
/// consistent with how it ended.
#[test]
fn the_last_sessions_end_racing_a_force_ends_once_and_consistently() {
    for round in 0..200 {
        let clock = ManualClock::new();
        let (builder, events) = recorded(&clock);
        let lc = builder.grace(secs(10)).build();
        let s = lc.session("conn").unwrap();
        lc.stop("deploy");
        let barrier = Arc::new(Barrier::new(2));
        let forcer = {
            let lc = lc.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                lc.force();
            })
        };
        barrier.wait();
        drop(s);
        forcer.join().unwrap();
        let report = block_on(lc.wait());
        assert!(report.state().is_terminal());
        assert_eq!(lc.state(), report.state(), "round {round}");
        match report.state() {
            State::Terminated => {
                assert_eq!(report.sessions().completed(), 1, "round {round}");
                assert_eq!(report.sessions().abandoned_count(), 0);
            }
            State::Abandoned => {
                assert!(report.forced());
                assert_eq!(report.sessions().abandoned_count(), 1, "round {round}");
                assert_eq!(report.sessions().abandoned()[0].name(), "conn");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(ended_count(&events), 1, "round {round}");
    }
}

/// The last session's end racing the grace deadline (the clock advanced to it on another
/// thread while a `Wait` sleeps on it).
#[test]
fn the_last_sessions_end_racing_the_deadline_ends_once_and_consistently() {
    for round in 0..100 {
        let clock = ManualClock::new();
        let (builder, events) = recorded(&clock);
        let lc = builder.grace(secs(5)).build();
        let s = lc.session("conn").unwrap();
        lc.stop("deploy");
        let wait = lc.wait();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(block_on(wait));
        });
        until("the Wait sleeps on the deadline", || clock.sleepers() > 0);
        let barrier = Arc::new(Barrier::new(2));
        let advancer = {
            let clock = clock.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                clock.advance(secs(5));
            })
        };
        barrier.wait();
        drop(s);
        advancer.join().unwrap();
        let report = rx.recv_timeout(PATIENCE).expect("wait resolves");
        assert_eq!(lc.state(), report.state(), "round {round}");
        match report.state() {
            State::Terminated => assert_eq!(report.sessions().completed(), 1),
            State::Abandoned => assert_eq!(report.sessions().abandoned_count(), 1),
            other => panic!("{other:?}"),
        }
        assert_eq!(ended_count(&events), 1, "round {round}");
    }
}

/// Every `Lifecycle` handle dropped while a session is live: the lifecycle stops; a
/// `WeakLifecycle` kept sees the session's end terminate it; without one, the end finds
/// nothing to report to and is harmless.
#[test]
fn the_last_session_ends_after_every_handle_was_dropped() {
    let clock = ManualClock::new();
    let (builder, events) = recorded(&clock);
    let lc = builder.build();
    let weak = lc.downgrade();
    let s = lc.session("conn").unwrap();
    drop(lc);
    assert!(weak.is_stopped());
    assert_eq!(weak.state(), State::Draining);
    drop(s);
    assert_eq!(weak.state(), State::Terminated);
    assert_eq!(*events.lock().unwrap(), ["stop", "ended Terminated 0"]);

    let (builder, freed) = freed_flag(&clock);
    let lc = builder.build();
    let s = lc.session("conn").unwrap();
    drop(lc);
    drop(s);
    assert!(freed.load(Ordering::SeqCst));
}

// ---- services around the fast path ----

/// A service with a dependent (held at the stop) that is still running when the lifecycle is
/// forced: its stop signal (a clone kept outside) fires at the end.
#[test]
fn a_held_services_stop_signal_fires_at_a_forced_end() {
    let clock = ManualClock::new();
    let (builder, events) = recorded(&clock);
    let lc = builder.grace(secs(10)).build();
    let kept: Arc<Mutex<Option<async_lifecycle::StopSignal>>> = Arc::default();
    let k = kept.clone();
    lc.service("db", move |stop| {
        *k.lock().unwrap() = Some(stop.clone());
        futures::future::pending::<()>()
    })
    .unwrap();
    lc.service_with("api", ServiceOptions::new().after(["db"]), |_stop| {
        futures::future::pending::<()>()
    })
    .unwrap();
    let s = lc.session("conn").unwrap();
    let mut pool = futures::executor::LocalPool::new();
    let wait = {
        use futures::task::LocalSpawnExt;
        pool.spawner().spawn_local_with_handle(lc.wait()).unwrap()
    };
    pool.run_until_stalled();
    let signal = kept.lock().unwrap().clone().expect("db ran");
    lc.stop("deploy");
    pool.run_until_stalled();
    assert!(!signal.is_stopped(), "db is held while api runs");
    drop(s);
    lc.force();
    let report = pool.run_until(wait);
    assert_eq!(report.state(), State::Abandoned);
    assert!(signal.is_stopped(), "the held signal fired at the end");
    block_on(signal);
    assert_eq!(ended_count(&events), 1);
}

/// Services ended, then the last session: the end comes with the session's end, with the
/// held service released (its `Stopping`) before, and `Ended` last.
#[test]
fn services_then_the_last_session_end_in_order() {
    let clock = ManualClock::new();
    let (builder, events) = recorded(&clock);
    let lc = builder.build();
    lc.service("db", |stop| stop).unwrap();
    lc.service_with("api", ServiceOptions::new().after(["db"]), |stop| stop)
        .unwrap();
    let s = lc.session("conn").unwrap();
    let mut pool = futures::executor::LocalPool::new();
    let wait = {
        use futures::task::LocalSpawnExt;
        pool.spawner().spawn_local_with_handle(lc.wait()).unwrap()
    };
    pool.run_until_stalled();
    lc.stop("deploy");
    pool.run_until_stalled();
    assert_eq!(lc.state(), State::Draining, "the session is live");
    drop(s);
    let report = pool.run_until(wait);
    assert_eq!(report.state(), State::Terminated);
    assert_eq!(report.services().len(), 2);
    let events = events.lock().unwrap().clone();
    let at = |name: &str| events.iter().position(|e| e == name).unwrap();
    assert!(at("stop") < at("stopping db"));
    assert_eq!(events.last().unwrap(), "ended Terminated 0");
    assert_eq!(events.iter().filter(|e| e.starts_with("ended")).count(), 1);
}

/// A service that fails while running under `Restart::OnFailure`: the restart's backoff is
/// scheduled (the `Wait` sleeps until it) and the service runs again when it comes.
#[test]
fn a_restart_backoff_is_armed_and_the_wait_wakes_for_it() {
    let clock = ManualClock::new();
    let (builder, events) = recorded(&clock);
    let lc = builder.grace(secs(30)).build();
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let backoff = Backoff::new(secs(2), secs(2)).unwrap().without_jitter();
    lc.service_with(
        "flaky",
        ServiceOptions::new()
            .restart(Restart::OnFailure)
            .backoff(backoff),
        move |stop| {
            let run = r.fetch_add(1, Ordering::SeqCst);
            async move {
                if run == 0 {
                    return Err("run 1 fails");
                }
                stop.await;
                Ok(())
            }
        },
    )
    .unwrap();
    let t0 = clock.now();
    let mut pool = futures::executor::LocalPool::new();
    let wait = {
        use futures::task::LocalSpawnExt;
        pool.spawner().spawn_local_with_handle(lc.wait()).unwrap()
    };
    pool.run_until_stalled();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(
        clock.next_deadline(),
        Some(t0 + secs(2)),
        "the Wait sleeps until the backoff"
    );
    clock.advance(secs(2));
    pool.run_until_stalled();
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "restarted after the backoff"
    );
    let s = lc.session("conn").unwrap();
    lc.stop("deploy");
    pool.run_until_stalled();
    drop(s);
    let report = pool.run_until(wait);
    assert_eq!(report.state(), State::Terminated);
    assert_eq!(report.service("flaky").unwrap().restarts(), 1);
    let events = events.lock().unwrap().clone();
    assert!(events.contains(&"failed flaky".to_owned()), "{events:?}");
    assert!(
        events.contains(&"restarting flaky 1".to_owned()),
        "{events:?}"
    );
    assert_eq!(events.last().unwrap(), "ended Terminated 0");
}

/// A service added after the stop is refused, and the end is not disturbed.
#[test]
fn a_service_added_after_the_stop_is_refused() {
    let clock = ManualClock::new();
    let (builder, events) = recorded(&clock);
    let lc = builder.build();
    let s = lc.session("conn").unwrap();
    lc.stop("deploy");
    let called = Arc::new(AtomicBool::new(false));
    let c = called.clone();
    assert!(
        lc.service("late", move |stop| {
            c.store(true, Ordering::SeqCst);
            stop
        })
        .is_err()
    );
    assert!(!called.load(Ordering::SeqCst));
    drop(s);
    let report = block_on(lc.wait());
    assert_eq!(report.state(), State::Terminated);
    assert!(report.services().is_empty());
    assert_eq!(ended_count(&events), 1);
}

/// A nested lifecycle whose last session ends after the parent stopped: its own end (the fast
/// path) ends its service, and its report joins the parent's.
#[test]
fn a_nested_lifecycles_last_session_after_the_parents_stop_is_joined() {
    let clock = ManualClock::new();
    let (builder, events) = recorded(&clock);
    let lc = builder.grace(secs(30)).build();
    let (child_builder, child_events) = recorded(&clock);
    let workers = lc
        .nest("workers", ServiceOptions::new(), child_builder)
        .unwrap();
    let s = workers.session("job").unwrap();
    let mut pool = futures::executor::LocalPool::new();
    let wait = {
        use futures::task::LocalSpawnExt;
        pool.spawner().spawn_local_with_handle(lc.wait()).unwrap()
    };
    pool.run_until_stalled();
    lc.stop("deploy");
    pool.run_until_stalled();
    assert_eq!(workers.state(), State::Draining, "its session is live");
    assert_eq!(lc.state(), State::Draining);
    clock.advance(secs(1));
    drop(s);
    assert_eq!(workers.state(), State::Terminated);
    let report = pool.run_until(wait);
    assert_eq!(report.state(), State::Terminated);
    let nested = report.service("workers").unwrap().nested().expect("joined");
    assert_eq!(nested.state(), State::Terminated);
    assert_eq!(nested.sessions().completed(), 1);
    assert_eq!(report.exit_code(), 0);
    assert_eq!(ended_count(&events), 1);
    assert_eq!(ended_count(&child_events), 1);
}

/// Services spawned on a multi-thread tokio runtime, each ending at the stop while sessions
/// end on other threads: whichever comes last (a service's exit through `apply`, or a
/// session's end through the fast path), the lifecycle ends once, with every service
/// stopped and every session completed.
#[test]
fn spawned_services_and_sessions_ending_together_end_once() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    for round in 0..50 {
        let clock = ManualClock::new();
        let (builder, events) = recorded(&clock);
        let lc = {
            let _enter = rt.enter();
            builder.tokio().clock(clock.clone()).build()
        };
        for i in 0..4 {
            lc.service(format!("svc{i}"), |stop| stop).unwrap();
        }
        let sessions: Vec<Session> = (0..4).map(|_| lc.unnamed_session().unwrap()).collect();
        let wait = rt.spawn(lc.wait());
        let barrier = Arc::new(Barrier::new(5));
        let enders: Vec<_> = sessions
            .into_iter()
            .map(|s| {
                let barrier = barrier.clone();
                thread::spawn(move || {
                    barrier.wait();
                    drop(s);
                })
            })
            .collect();
        barrier.wait();
        lc.stop("deploy");
        for e in enders {
            e.join().unwrap();
        }
        let report = rt.block_on(async {
            tokio::time::timeout(PATIENCE, wait)
                .await
                .expect("wait resolves")
                .unwrap()
        });
        assert_eq!(report.state(), State::Terminated, "round {round}");
        assert_eq!(report.sessions().completed(), 4);
        assert_eq!(report.services().len(), 4);
        assert!(report.is_clean(), "round {round}: {report}");
        until("the hook saw the end", || ended_count(&events) == 1);
        assert_eq!(ended_count(&events), 1, "round {round}");
    }
}
