//! A hostile review of the abort slots (commit 10f0120): a service's run driven by a task
//! that holds its service's slot in a segment the lifecycle's core owns, re-armed for each
//! restart, on every kind of spawner. Every probe is a regression test; two exposed bugs,
//! since fixed: a waker whose drop panics, dropped when a run ends, lost the run's exit
//! report (`a_task_dropped_holding_the_last_ref_of_a_panicking_waker_still_reports_its_exit`),
//! and, replaced by a poll, ended a healthy run
//! (`a_replaced_waker_whose_drop_panics_does_not_end_a_healthy_run`). Both are now dropped
//! under `catch_unwind`.
//!
//! Time is a `ManualClock`; tasks handed to a spawner function are polled here by hand,
//! with wakers whose wakes and drops are observed. Nothing sleeps for synchronisation and
//! nothing waits unbounded.

mod support;

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use async_lifecycle::{
    Backoff, Lifecycle, ManualClock, Restart, RestartIntensity, ServiceOptions, ServiceOutcome,
    State,
};
use futures::executor::LocalPool;
use futures::task::{ArcWake, LocalSpawnExt};

type BoxedTask = Pin<Box<dyn Future<Output = ()> + Send>>;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A run that never polls its stop signal and never ends; counts its polls, flags its drop.
fn stubborn(
    polls: Arc<AtomicUsize>,
    dropped: Arc<AtomicBool>,
) -> impl Future<Output = ()> + Send + 'static {
    let flag = support::DropFlag(dropped);
    futures::future::poll_fn(move |_cx| {
        let _owned = &flag;
        polls.fetch_add(1, Ordering::SeqCst);
        Poll::Pending
    })
}

#[derive(Clone, Default)]
struct Run {
    polls: Arc<AtomicUsize>,
    dropped: Arc<AtomicBool>,
}

impl Run {
    fn future(&self) -> impl Future<Output = ()> + Send + 'static + use<> {
        stubborn(self.polls.clone(), self.dropped.clone())
    }
    fn polls(&self) -> usize {
        self.polls.load(Ordering::SeqCst)
    }
    fn dropped(&self) -> bool {
        self.dropped.load(Ordering::SeqCst)
    }
}

/// A waker that counts its wakes; its `Arc`'s strong count tells whether anyone keeps it.
#[derive(Default)]
struct Probe(AtomicUsize);

impl ArcWake for Probe {
    fn wake_by_ref(this: &Arc<Self>) {
        this.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Probe {
    fn wakes(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

fn probe() -> (Arc<Probe>, Waker) {
    let probe = Arc::new(Probe::default());
    let waker = futures::task::waker(probe.clone());
    (probe, waker)
}

/// A waker whose last drop panics (executor code that misbehaves).
struct PanicsOnLastDrop;

impl ArcWake for PanicsOnLastDrop {
    fn wake_by_ref(_this: &Arc<Self>) {}
}

impl Drop for PanicsOnLastDrop {
    fn drop(&mut self) {
        panic!("a waker whose drop panics");
    }
}

/// The tasks a spawner function was handed, polled here by hand.
#[derive(Clone, Default)]
struct Tasks(Arc<Mutex<Vec<Option<BoxedTask>>>>);

impl Tasks {
    fn builder(&self, clock: &ManualClock) -> async_lifecycle::Builder {
        let tasks = self.clone();
        Lifecycle::builder()
            .clock(clock.clone())
            .spawner(move |task| tasks.0.lock().unwrap().push(Some(task)))
    }

    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    fn is_live(&self, i: usize) -> bool {
        self.0.lock().unwrap()[i].is_some()
    }

    fn take(&self, i: usize) -> BoxedTask {
        self.0.lock().unwrap()[i].take().expect("not finished")
    }

    /// Polls task `i` with `waker`; `true` once it has finished (it is dropped then).
    fn poll(&self, i: usize, waker: &Waker) -> bool {
        let mut task = self.take(i);
        match task.as_mut().poll(&mut Context::from_waker(waker)) {
            Poll::Ready(()) => true,
            Poll::Pending => {
                self.0.lock().unwrap()[i] = Some(task);
                false
            }
        }
    }
}

fn flaky_options(budget: Option<Duration>) -> ServiceOptions {
    let backoff = Backoff::new(secs(1), secs(1)).unwrap().without_jitter();
    let options = ServiceOptions::new()
        .restart(Restart::OnFailure)
        .backoff(backoff);
    match budget {
        Some(budget) => options.stop_budget(budget),
        None => options,
    }
}

// ---------------------------------------------------------------------------------------
// Wakers: panics in their drop, and wakers kept after the run ended.
// ---------------------------------------------------------------------------------------

/// The task's drop releases the slot's stored waker before it reports the run's exit: a
/// waker whose (last) drop panics must not take the report with it.
#[test]
fn a_task_dropped_holding_the_last_ref_of_a_panicking_waker_still_reports_its_exit() {
    let clock = ManualClock::new();
    let tasks = Tasks::default();
    let lc = tasks.builder(&clock).grace(secs(10)).build();
    let run = Run::default();
    let r = run.clone();
    lc.service("svc", move |_stop| r.future()).unwrap();
    let hostile = futures::task::waker(Arc::new(PanicsOnLastDrop));
    assert!(!tasks.poll(0, &hostile));
    // The slot's clone is now the waker's last reference.
    drop(hostile);
    lc.stop("test");
    assert_eq!(lc.state(), State::Draining);
    // The executor drops the task (its own shutdown, say).
    let task = tasks.take(0);
    let dropped = catch_unwind(AssertUnwindSafe(|| drop(task)));
    assert!(run.dropped(), "the run's future is dropped either way");
    // The run ended (dropped): it is the last service, so the lifecycle ends now, at the
    // stop, not at its deadline 10 s later.
    assert!(
        lc.state().is_terminal(),
        "the dropped run's exit was never reported: the lifecycle still waits on it ({:?})",
        lc.state()
    );
    assert!(
        dropped.is_ok(),
        "a waker's panicking drop escaped the task's drop"
    );
    let report = futures::executor::block_on(lc.wait());
    assert_eq!(
        report.service("svc").unwrap().outcome(),
        &ServiceOutcome::Dropped
    );
}

/// A poll with a different waker replaces the stored one; its drop must not panic out of the
/// poll (and so end a healthy run).
#[test]
fn a_replaced_waker_whose_drop_panics_does_not_end_a_healthy_run() {
    let clock = ManualClock::new();
    let tasks = Tasks::default();
    let lc = tasks.builder(&clock).grace(secs(10)).build();
    // Keeps no clone of its waker: the slot's is the only one.
    let run = Run::default();
    let r = run.clone();
    lc.service("svc", move |_stop| r.future()).unwrap();
    let hostile = futures::task::waker(Arc::new(PanicsOnLastDrop));
    assert!(!tasks.poll(0, &hostile));
    drop(hostile);
    let (_probe, waker) = probe();
    let polled = catch_unwind(AssertUnwindSafe(|| tasks.poll(0, &waker)));
    assert!(
        polled.is_ok(),
        "the replaced waker's drop panicked out of the service's poll"
    );
    assert_eq!(polled.ok(), Some(false));
    assert_eq!(run.polls(), 2, "the run itself was polled");
    assert_eq!(lc.state(), State::Running, "the service still runs");
}

/// However a run ends — returns, is aborted and polled, is aborted and never polled again, is
/// dropped unaborted — the slot keeps no waker of it (the executor's task is not kept).
#[test]
fn no_waker_is_kept_once_a_run_ended_whichever_way() {
    let clock = ManualClock::new();
    let tasks = Tasks::default();
    let lc = tasks.builder(&clock).grace(secs(10)).build();
    let (tx, rx) = futures::channel::oneshot::channel::<()>();
    lc.service("returns", move |_stop| async move {
        let _ = rx.await;
    })
    .unwrap();
    let runs: Vec<Run> = (0..3).map(|_| Run::default()).collect();
    for (i, run) in runs.iter().enumerate() {
        let r = run.clone();
        lc.service(format!("stubborn {i}"), move |_stop| r.future())
            .unwrap();
    }
    let probes: Vec<(Arc<Probe>, Waker)> = (0..4).map(|_| probe()).collect();
    for (i, (_, waker)) in probes.iter().enumerate() {
        assert!(!tasks.poll(i, waker));
    }
    for (probe, _) in &probes[1..] {
        assert_eq!(Arc::strong_count(probe), 3, "ours, our waker, the slot's");
    }
    // Returns on its own (before the stop: unclean, but that is not the point here).
    tx.send(()).unwrap();
    assert!(tasks.poll(0, &probes[0].1));
    assert_eq!(
        Arc::strong_count(&probes[0].0),
        2,
        "released when it returned"
    );
    // The return stopped the lifecycle (StopAll); the stubborn ones are abandoned by force.
    lc.force();
    assert_eq!(lc.state(), State::Abandoned);
    for (i, probe) in probes.iter().enumerate().take(4).skip(1) {
        assert_eq!(probe.0.wakes(), 1, "run {i} woken by the abort");
        assert_eq!(
            Arc::strong_count(&probe.0),
            2,
            "the abort consumed the slot's waker of run {i}"
        );
    }
    // Run 1 polled after the abort: not polled, and keeps nothing.
    let before = runs[0].polls();
    assert!(tasks.poll(1, &probes[1].1));
    assert_eq!(runs[0].polls(), before, "not polled after the abort");
    assert!(runs[0].dropped());
    // Run 2 dropped unpolled after the abort.
    drop(tasks.take(2));
    assert!(runs[1].dropped());
    // Run 3 polled again with another waker after the abort: not stored.
    let (late, late_waker) = probe();
    assert!(tasks.poll(3, &late_waker));
    assert_eq!(Arc::strong_count(&late), 2);
    for (probe, _) in &probes {
        assert_eq!(Arc::strong_count(probe), 2);
    }
}

/// A run dropped by its executor while the lifecycle runs (no abort) keeps no waker either.
#[test]
fn a_run_dropped_unaborted_releases_its_waker_and_reports_dropped() {
    let clock = ManualClock::new();
    let tasks = Tasks::default();
    let lc = tasks.builder(&clock).grace(secs(10)).build();
    let run = Run::default();
    let r = run.clone();
    lc.service("svc", move |_stop| r.future()).unwrap();
    let (probe, waker) = probe();
    assert!(!tasks.poll(0, &waker));
    assert_eq!(Arc::strong_count(&probe), 3);
    drop(tasks.take(0));
    assert_eq!(Arc::strong_count(&probe), 2);
    assert!(run.dropped());
    assert!(lc.state().is_terminal(), "its exit stopped and ended it");
    let report = futures::executor::block_on(lc.wait());
    assert_eq!(
        report.service("svc").unwrap().outcome(),
        &ServiceOutcome::Dropped
    );
}

// ---------------------------------------------------------------------------------------
// Restarts: the slot re-armed for the next run.
// ---------------------------------------------------------------------------------------

/// A restart re-arms the slot: the old run's waker is not woken by the new run's abort, is
/// not kept, and the new run is woken once.
#[test]
fn a_restart_neither_wakes_nor_keeps_the_old_run_and_the_new_one_is_aborted() {
    let clock = ManualClock::new();
    let tasks = Tasks::default();
    let lc = tasks.builder(&clock).grace(secs(30)).build();
    let (fail, failed) = futures::channel::oneshot::channel::<()>();
    let mut failed = Some(failed);
    let later = Run::default();
    let l = later.clone();
    lc.service_with("flaky", flaky_options(None), move |_stop| {
        let first = failed.take();
        let run = l.future();
        async move {
            if let Some(first) = first {
                let _ = first.await;
                return Err("run 1 fails");
            }
            run.await;
            Ok(())
        }
    })
    .unwrap();
    let mut pool = LocalPool::new();
    let wait = pool.spawner().spawn_local_with_handle(lc.wait()).unwrap();
    pool.run_until_stalled();
    let (old, old_waker) = probe();
    assert!(!tasks.poll(0, &old_waker));
    fail.send(()).unwrap();
    assert!(tasks.poll(0, &old_waker), "run 1 fails");
    drop(old_waker);
    assert_eq!(Arc::strong_count(&old), 1, "run 1's waker not kept");
    clock.advance(secs(1));
    pool.run_until_stalled();
    assert_eq!(tasks.len(), 2, "run 2 made");
    let (new, new_waker) = probe();
    assert!(!tasks.poll(1, &new_waker));
    let old_wakes = old.wakes();
    lc.force();
    assert_eq!(old.wakes(), old_wakes, "run 1 not woken by run 2's abort");
    assert_eq!(new.wakes(), 1, "run 2 woken by the abort");
    assert!(tasks.poll(1, &new_waker));
    assert!(later.dropped());
    let report = pool.run_until(wait);
    let flaky = report.service("flaky").unwrap();
    assert_eq!(flaky.outcome(), &ServiceOutcome::Abandoned);
    assert_eq!(flaky.restarts(), 1);
}

/// A factory that panics makes no run (and arms nothing); the run after it is the one the
/// abort reaches.
#[test]
fn a_panicking_factory_between_runs_does_not_misdirect_the_abort() {
    let clock = ManualClock::new();
    let tasks = Tasks::default();
    let lc = tasks.builder(&clock).grace(secs(30)).build();
    let later = Run::default();
    let l = later.clone();
    let mut made = 0;
    lc.service_with("flaky", flaky_options(Some(secs(2))), move |_stop| {
        made += 1;
        match made {
            1 => futures::future::Either::Left(async { Err::<(), _>("run 1 fails") }),
            2 => panic!("the factory panics at run 2"),
            _ => {
                let run = l.future();
                futures::future::Either::Right(async move {
                    run.await;
                    Ok(())
                })
            }
        }
    })
    .unwrap();
    // Keeps the lifecycle draining past the give-up.
    lc.service("held", |_stop| futures::future::pending::<()>())
        .unwrap();
    let mut pool = LocalPool::new();
    let wait = pool.spawner().spawn_local_with_handle(lc.wait()).unwrap();
    let (p1, w1) = probe();
    assert!(tasks.poll(0, &w1), "run 1 fails");
    let (held, held_waker) = probe();
    assert!(!tasks.poll(1, &held_waker));
    clock.advance(secs(1));
    pool.run_until_stalled();
    assert_eq!(tasks.len(), 2, "run 2 panicked in its factory: no task");
    clock.advance(secs(1));
    pool.run_until_stalled();
    assert_eq!(tasks.len(), 3, "run 3 made");
    let (p3, w3) = probe();
    assert!(!tasks.poll(2, &w3));
    lc.stop("test");
    pool.run_until_stalled();
    clock.advance(secs(2));
    pool.run_until_stalled();
    assert_eq!(p3.wakes(), 1, "run 3 given up");
    assert_eq!(p1.wakes(), 0);
    assert_eq!(held.wakes(), 0, "held keeps running within the grace");
    assert!(tasks.poll(2, &w3));
    assert!(later.dropped());
    lc.force();
    assert_eq!(held.wakes(), 1);
    assert!(tasks.poll(1, &held_waker));
    let report = pool.run_until(wait);
    let flaky = report.service("flaky").unwrap();
    assert_eq!(flaky.outcome(), &ServiceOutcome::Abandoned);
    assert_eq!(flaky.restarts(), 2);
}

// ---------------------------------------------------------------------------------------
// Many services across segments, restarts and give-ups mixed.
// ---------------------------------------------------------------------------------------

#[test]
fn sixty_services_across_four_segments_with_restarts_and_give_ups_mixed() {
    // 8 + 16 + 32 + 64: 60 services reach the fourth segment.
    const N: usize = 60;
    let clock = ManualClock::new();
    let tasks = Tasks::default();
    let lc = tasks
        .builder(&clock)
        .grace(secs(30))
        .restart_intensity(RestartIntensity::new(1_000, secs(60)).unwrap())
        .build();
    // Who each task runs: appended at a run's first poll, read after each poll below.
    let log: Arc<Mutex<Vec<(usize, u32)>>> = Arc::default();
    let runs: Vec<Run> = (0..N).map(|_| Run::default()).collect();
    for (i, run) in runs.iter().enumerate() {
        let (log, run) = (log.clone(), run.clone());
        match i % 3 {
            // Restartable: run 1 fails at once; run 2 never ends; given up after 2 s.
            0 => {
                let mut attempt = 0;
                lc.service_with(
                    format!("s{i}"),
                    flaky_options(Some(secs(2))),
                    move |_stop| {
                        attempt += 1;
                        let (log, a) = (log.clone(), attempt);
                        let stubborn = run.future();
                        async move {
                            log.lock().unwrap().push((i, a));
                            if a == 1 {
                                return Err("fails");
                            }
                            stubborn.await;
                            Ok(())
                        }
                    },
                )
                .unwrap();
            }
            // Never ends; given up after 4 s.
            1 => {
                lc.service_with(
                    format!("s{i}"),
                    ServiceOptions::new().stop_budget(secs(4)),
                    move |_stop| {
                        let stubborn = run.future();
                        let log = log.clone();
                        async move {
                            log.lock().unwrap().push((i, 1));
                            stubborn.await;
                        }
                    },
                )
                .unwrap();
            }
            // Honours its stop.
            _ => {
                lc.service(format!("s{i}"), move |stop| async move {
                    log.lock().unwrap().push((i, 1));
                    stop.await;
                })
                .unwrap();
            }
        }
    }
    let mut pool = LocalPool::new();
    let wait = pool.spawner().spawn_local_with_handle(lc.wait()).unwrap();
    let mut probes: Vec<(Arc<Probe>, Waker)> = Vec::new();
    let mut who: Vec<(usize, u32)> = Vec::new();
    let mut poll_new = |tasks: &Tasks, probes: &mut Vec<(Arc<Probe>, Waker)>| {
        while probes.len() < tasks.len() {
            let t = probes.len();
            probes.push(probe());
            tasks.poll(t, &probes[t].1);
            who.push(*log.lock().unwrap().last().unwrap());
        }
        who.clone()
    };
    poll_new(&tasks, &mut probes);
    assert_eq!(tasks.len(), N);
    clock.advance(secs(1));
    pool.run_until_stalled();
    let who = poll_new(&tasks, &mut probes);
    assert_eq!(
        tasks.len(),
        N + N / 3,
        "every restartable service restarted once"
    );
    let live = |t: usize| tasks.is_live(t);
    for (t, &(i, a)) in who.iter().enumerate() {
        let expect_live = !(i % 3 == 0 && a == 1);
        assert_eq!(live(t), expect_live, "task {t}: service {i} run {a}");
    }
    lc.stop("test");
    pool.run_until_stalled();
    // The honouring services are woken by their signal and end.
    for (t, &(i, _)) in who.iter().enumerate() {
        if i % 3 == 2 {
            assert!(probes[t].0.wakes() >= 1, "s{i} signalled");
            assert!(tasks.poll(t, &probes[t].1), "s{i} ends");
        }
    }
    clock.advance(secs(2));
    pool.run_until_stalled();
    for (t, &(i, a)) in who.iter().enumerate() {
        let wakes = probes[t].0.wakes();
        match (i % 3, a) {
            (0, 2) => assert_eq!(wakes, 1, "s{i} run 2 given up at 2 s"),
            (1, _) => assert_eq!(wakes, 0, "s{i} within its 4 s"),
            (0, 1) => assert_eq!(wakes, 0, "s{i} run 1 long ended"),
            _ => {}
        }
    }
    assert_eq!(lc.state(), State::Draining);
    clock.advance(secs(2));
    pool.run_until_stalled();
    for (t, &(i, _)) in who.iter().enumerate() {
        if i % 3 == 1 {
            assert_eq!(probes[t].0.wakes(), 1, "s{i} given up at 4 s");
        }
    }
    for t in 0..tasks.len() {
        if tasks.is_live(t) {
            let (i, _) = who[t];
            let before = runs[i].polls();
            assert!(tasks.poll(t, &probes[t].1), "task {t} ends");
            assert_eq!(runs[i].polls(), before, "an aborted run is not polled");
        }
    }
    for (i, run) in runs.iter().enumerate() {
        if i % 3 != 2 {
            assert!(run.dropped(), "s{i} dropped");
        }
    }
    for (t, (probe, _)) in probes.iter().enumerate() {
        assert_eq!(Arc::strong_count(probe), 2, "task {t}'s waker not kept");
    }
    let report = pool.run_until(wait);
    assert_eq!(report.state(), State::Abandoned);
    for i in 0..N {
        let service = report.service(&format!("s{i}")).unwrap();
        let expected = if i % 3 == 2 {
            ServiceOutcome::Stopped
        } else {
            ServiceOutcome::Abandoned
        };
        assert_eq!(service.outcome(), &expected, "s{i}");
        assert_eq!(service.restarts(), u32::from(i % 3 == 0), "s{i}");
    }
}

// ---------------------------------------------------------------------------------------
// The same poll: a run that causes the abort while it is polled.
// ---------------------------------------------------------------------------------------

/// A run that forces the lifecycle from inside its own poll and completes in that poll: the
/// end is reported once, nothing is kept, and a later poll does nothing.
#[test]
fn a_run_that_completes_in_the_poll_that_aborted_it() {
    let clock = ManualClock::new();
    let tasks = Tasks::default();
    let lc = tasks.builder(&clock).grace(secs(10)).build();
    let handle: Arc<Mutex<Option<Lifecycle>>> = Arc::new(Mutex::new(None));
    let polls = Arc::new(AtomicUsize::new(0));
    let (h, p) = (handle.clone(), polls.clone());
    lc.service("suicidal", move |_stop| {
        futures::future::poll_fn(move |_cx| {
            p.fetch_add(1, Ordering::SeqCst);
            if let Some(lc) = h.lock().unwrap().take() {
                lc.force();
                return Poll::Ready(());
            }
            Poll::<()>::Pending
        })
    })
    .unwrap();
    let (probe, waker) = probe();
    assert!(!tasks.poll(0, &waker));
    *handle.lock().unwrap() = Some(lc.clone());
    assert!(tasks.poll(0, &waker), "completes in the aborting poll");
    assert_eq!(polls.load(Ordering::SeqCst), 2);
    assert_eq!(probe.wakes(), 1, "the abort woke the poll in progress");
    assert_eq!(Arc::strong_count(&probe), 2, "nothing kept");
    let report = futures::executor::block_on(lc.wait());
    assert_eq!(report.state(), State::Abandoned);
    assert_eq!(
        report.service("suicidal").unwrap().outcome(),
        &ServiceOutcome::Abandoned
    );
}

/// The same, but the run stays pending in the aborting poll: its next poll does not poll it.
#[test]
fn a_run_pending_in_the_poll_that_aborted_it_is_not_polled_again() {
    let clock = ManualClock::new();
    let tasks = Tasks::default();
    let lc = tasks.builder(&clock).grace(secs(10)).build();
    let handle: Arc<Mutex<Option<Lifecycle>>> = Arc::new(Mutex::new(None));
    let polls = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let (h, p, d) = (handle.clone(), polls.clone(), dropped.clone());
    lc.service("suicidal", move |_stop| {
        let flag = support::DropFlag(d);
        futures::future::poll_fn(move |_cx| {
            let _owned = &flag;
            p.fetch_add(1, Ordering::SeqCst);
            if let Some(lc) = h.lock().unwrap().take() {
                lc.force();
            }
            Poll::<()>::Pending
        })
    })
    .unwrap();
    *handle.lock().unwrap() = Some(lc.clone());
    let (probe, waker) = probe();
    assert!(!tasks.poll(0, &waker), "pending in the aborting poll");
    assert_eq!(lc.state(), State::Abandoned);
    assert_eq!(probe.wakes(), 1);
    assert!(tasks.poll(0, &waker));
    assert_eq!(polls.load(Ordering::SeqCst), 1, "not polled after the end");
    assert!(dropped.load(Ordering::SeqCst));
    assert_eq!(Arc::strong_count(&probe), 2);
}

// ---------------------------------------------------------------------------------------
// Nested lifecycles.
// ---------------------------------------------------------------------------------------

/// With a spawner (the nested lifecycle inherits it), the parent's force ends the nested
/// lifecycle and aborts its services' runs, each woken.
#[test]
fn a_nested_lifecycles_spawned_services_are_aborted_with_the_parent() {
    let clock = ManualClock::new();
    let tasks = Tasks::default();
    let parent = tasks.builder(&clock).grace(secs(10)).build();
    let nested = parent
        .nest("child", ServiceOptions::new(), Lifecycle::builder())
        .unwrap();
    let runs: Vec<Run> = (0..10).map(|_| Run::default()).collect();
    for (i, run) in runs.iter().enumerate() {
        let r = run.clone();
        nested
            .service(format!("n{i}"), move |_stop| r.future())
            .unwrap();
    }
    assert_eq!(tasks.len(), 1, "the nested services wait for its run");
    let mut probes: Vec<(Arc<Probe>, Waker)> = Vec::new();
    // The nest run opens the gate: the nested services are spawned then.
    probes.push(probe());
    assert!(!tasks.poll(0, &probes[0].1));
    assert_eq!(tasks.len(), 11);
    for t in 1..11 {
        probes.push(probe());
        assert!(!tasks.poll(t, &probes[t].1));
    }
    assert!(runs.iter().all(|r| r.polls() == 1));
    parent.force();
    assert_eq!(parent.state(), State::Abandoned);
    assert!(nested.state().is_terminal(), "ended with its parent");
    for (t, probe) in probes.iter().enumerate().take(11).skip(1) {
        assert_eq!(probe.0.wakes(), 1, "nested task {t} woken by the abort");
        assert!(tasks.poll(t, &probe.1));
    }
    assert!(runs.iter().all(|r| r.polls() == 1 && r.dropped()));
    assert!(probes[0].0.wakes() >= 1, "the nest run woken");
    assert!(tasks.poll(0, &probes[0].1));
    for (probe, _) in &probes {
        assert_eq!(Arc::strong_count(probe), 2);
    }
    let report = futures::executor::block_on(parent.wait());
    let child = report.service("child").unwrap();
    assert_eq!(child.outcome(), &ServiceOutcome::Abandoned);
    let inner = child.nested().expect("the nested report");
    assert_eq!(inner.state(), State::Abandoned);
    assert!(
        inner
            .services()
            .iter()
            .all(|s| s.outcome() == &ServiceOutcome::Abandoned)
    );
}

/// On the queue path, the parent giving up on the nest run past its budget drops the
/// nested `wait()` and with it the nested services it drove.
#[test]
fn a_given_up_nest_on_the_queue_drops_the_nested_services() {
    let clock = ManualClock::new();
    let parent = Lifecycle::builder()
        .clock(clock.clone())
        .grace(secs(30))
        .build();
    let nested = parent
        .nest(
            "child",
            ServiceOptions::new().stop_budget(secs(2)),
            Lifecycle::builder(),
        )
        .unwrap();
    let run = Run::default();
    let r = run.clone();
    nested.service("stubborn", move |_stop| r.future()).unwrap();
    parent
        .service("held", |_stop| futures::future::pending::<()>())
        .unwrap();
    let mut pool = LocalPool::new();
    let wait = pool
        .spawner()
        .spawn_local_with_handle(parent.wait())
        .unwrap();
    pool.run_until_stalled();
    assert_eq!(run.polls(), 1);
    parent.stop("test");
    pool.run_until_stalled();
    assert!(!run.dropped());
    clock.advance(secs(2));
    pool.run_until_stalled();
    assert!(run.dropped(), "dropped with the given-up nest run");
    assert_eq!(run.polls(), 1, "not polled after the abort");
    assert!(nested.state().is_terminal());
    assert_eq!(parent.state(), State::Draining, "held drains on");
    parent.force();
    let report = pool.run_until(wait);
    assert_eq!(report.state(), State::Abandoned);
    assert_eq!(
        report.service("child").unwrap().outcome(),
        &ServiceOutcome::Abandoned
    );
}

// ---------------------------------------------------------------------------------------
// Handles dropped; queue path.
// ---------------------------------------------------------------------------------------

/// Every handle dropped while spawned services run: they get their stop, end, and keep no
/// waker; the end is seen by the event hook.
#[test]
fn handles_dropped_while_spawned_services_run() {
    let clock = ManualClock::new();
    let tasks = Tasks::default();
    let ended: Arc<Mutex<Option<State>>> = Arc::default();
    let e = ended.clone();
    let lc = tasks
        .builder(&clock)
        .grace(secs(10))
        .on_event(move |event| {
            if let async_lifecycle::Event::Ended { state, .. } = event {
                *e.lock().unwrap() = Some(*state);
            }
        })
        .build();
    for i in 0..20 {
        lc.service(format!("s{i}"), |stop| stop).unwrap();
    }
    let probes: Vec<(Arc<Probe>, Waker)> = (0..20).map(|_| probe()).collect();
    for (t, (_, waker)) in probes.iter().enumerate() {
        assert!(!tasks.poll(t, waker));
    }
    drop(lc);
    for (t, (probe, waker)) in probes.iter().enumerate() {
        assert!(probe.wakes() >= 1, "s{t} signalled");
        assert!(tasks.poll(t, waker));
    }
    assert_eq!(*ended.lock().unwrap(), Some(State::Terminated));
    for (probe, _) in &probes {
        assert_eq!(Arc::strong_count(probe), 2);
    }
}

/// Queue path: the services a `wait()` drives past a stop budget are given up, woken and
/// dropped while the rest drains, restarts and all.
#[test]
fn queued_restarted_services_are_given_up_by_the_wait_that_drives_them() {
    let clock = ManualClock::new();
    let lc = Lifecycle::builder()
        .clock(clock.clone())
        .grace(secs(30))
        .restart_intensity(RestartIntensity::new(1_000, secs(60)).unwrap())
        .build();
    let runs: Vec<Run> = (0..12).map(|_| Run::default()).collect();
    for (i, run) in runs.iter().enumerate() {
        let run = run.clone();
        let mut attempt = 0;
        lc.service_with(
            format!("s{i}"),
            flaky_options(Some(secs(2))),
            move |_stop| {
                attempt += 1;
                let a = attempt;
                let stubborn = run.future();
                async move {
                    if a == 1 {
                        return Err("fails");
                    }
                    stubborn.await;
                    Ok(())
                }
            },
        )
        .unwrap();
    }
    lc.service("held", |_stop| futures::future::pending::<()>())
        .unwrap();
    let mut pool = LocalPool::new();
    let wait = pool.spawner().spawn_local_with_handle(lc.wait()).unwrap();
    pool.run_until_stalled();
    clock.advance(secs(1));
    pool.run_until_stalled();
    assert!(runs.iter().all(|r| r.polls() == 1), "run 2 of each runs");
    lc.stop("test");
    pool.run_until_stalled();
    clock.advance(secs(2));
    pool.run_until_stalled();
    assert!(runs.iter().all(|r| r.dropped() && r.polls() == 1));
    assert_eq!(lc.state(), State::Draining);
    lc.force();
    let report = pool.run_until(wait);
    for i in 0..12 {
        let s = report.service(&format!("s{i}")).unwrap();
        assert_eq!(s.outcome(), &ServiceOutcome::Abandoned);
        assert_eq!(s.restarts(), 1);
    }
}

// ---------------------------------------------------------------------------------------
// Runtimes that are gone or going.
// ---------------------------------------------------------------------------------------

/// `.tokio()` keeps the runtime's `Handle`: a service added once that runtime is gone must
/// not panic the caller, and is reported (its task could not run), not lost.
#[test]
fn a_service_added_after_the_tokio_runtime_is_gone_is_reported() {
    use async_lifecycle::tokio::BuilderExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let clock = ManualClock::new();
    let lc = {
        let _guard = rt.enter();
        Lifecycle::builder()
            .tokio()
            .clock(clock.clone())
            .grace(secs(5))
            .build()
    };
    drop(rt);
    let added = catch_unwind(AssertUnwindSafe(|| lc.service("late", |stop| stop)));
    assert!(
        added.is_ok(),
        "spawning on a gone runtime panicked the caller"
    );
    assert!(added.unwrap().is_ok());
    assert!(
        lc.state().is_terminal(),
        "the unrun service is not reported ({:?})",
        lc.state()
    );
    let report = futures::executor::block_on(lc.wait());
    assert_eq!(
        report.service("late").unwrap().outcome(),
        &ServiceOutcome::Dropped
    );
}

/// A runtime dropped while its `.tokio()` services run (restartable ones among them): each
/// task dropped by the runtime reports its run as dropped; nothing is left running.
#[test]
fn a_tokio_runtime_shut_down_under_running_services() {
    use async_lifecycle::tokio::BuilderExt;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let clock = ManualClock::new();
    let lc = {
        let _guard = rt.enter();
        Lifecycle::builder()
            .tokio()
            .clock(clock.clone())
            .grace(secs(5))
            .on_service_failure(async_lifecycle::FailurePolicy::ReportOnly)
            .build()
    };
    let runs: Vec<Run> = (0..5).map(|_| Run::default()).collect();
    for (i, run) in runs.iter().enumerate() {
        let run = run.clone();
        let options = ServiceOptions::new()
            .restart(Restart::Always)
            .backoff(Backoff::new(secs(1), secs(1)).unwrap().without_jitter());
        lc.service_with(format!("r{i}"), options, move |_stop| run.future())
            .unwrap();
    }
    lc.service("plain", |_stop| futures::future::pending::<()>())
        .unwrap();
    // Bounded wait for the runtime to have polled each run once.
    let deadline = std::time::Instant::now() + secs(10);
    while !runs.iter().all(|r| r.polls() >= 1) {
        assert!(std::time::Instant::now() < deadline, "never polled");
        std::thread::yield_now();
    }
    drop(rt);
    assert!(runs.iter().all(Run::dropped));
    assert_eq!(
        lc.snapshot()
            .services()
            .iter()
            .find(|s| s.name() == "plain")
            .and_then(|s| s.outcome().cloned()),
        Some(ServiceOutcome::Dropped),
        "the plain service's end is reported"
    );
    // Every run's end is reported (a dropped run is not restarted): none is left running.
    let snapshot = lc.snapshot();
    for s in snapshot.services() {
        assert_eq!(s.outcome(), Some(&ServiceOutcome::Dropped), "{}", s.name());
        assert!(!s.is_running(), "{}", s.name());
    }
    lc.stop("test");
    assert!(lc.state().is_terminal(), "nothing left to wait for");
    let report = futures::executor::block_on(lc.wait());
    for i in 0..5 {
        assert_eq!(
            report.service(&format!("r{i}")).unwrap().outcome(),
            &ServiceOutcome::Dropped,
            "r{i}"
        );
    }
}

/// `.smol(ex)`: a run woken by an abort after its executor stopped being run ends when the
/// executor runs again; the lifecycle's report does not wait for it.
#[test]
fn smol_services_aborted_while_the_executor_is_idle() {
    use async_lifecycle::async_io::BuilderExt;
    let ex = Arc::new(smol::Executor::new());
    let clock = ManualClock::new();
    let lc = Lifecycle::builder()
        .smol(ex.clone())
        .clock(clock.clone())
        .grace(secs(5))
        .build();
    let runs: Vec<Run> = (0..20).map(|_| Run::default()).collect();
    for (i, run) in runs.iter().enumerate() {
        let r = run.clone();
        lc.service(format!("s{i}"), move |_stop| r.future())
            .unwrap();
    }
    // Run the executor until each run was polled once (bounded).
    for _ in 0..1_000 {
        if ex.try_tick() {
            continue;
        }
        break;
    }
    assert!(runs.iter().all(|r| r.polls() == 1));
    lc.force();
    assert_eq!(lc.state(), State::Abandoned);
    let report = futures::executor::block_on(lc.wait());
    assert_eq!(report.state(), State::Abandoned);
    // Each aborted task was woken (scheduled): ticking runs each once, which ends it.
    let mut ticks = 0;
    while ex.try_tick() {
        ticks += 1;
        assert!(ticks <= 100, "tasks keep being rescheduled");
    }
    assert_eq!(ticks, 20, "every aborted run woken exactly once");
    assert!(ex.is_empty(), "every service's task ended");
    assert!(runs.iter().all(|r| r.polls() == 1 && r.dropped()));
}

// ---------------------------------------------------------------------------------------
// The sim: the runtimes' spawners stay out of reach.
// ---------------------------------------------------------------------------------------

#[cfg(feature = "sim")]
fn out_of_reach(
    result: Result<async_lifecycle::sim::Stats, async_lifecycle::sim::Failure>,
) -> String {
    let failure = result.expect_err("must fail");
    match failure.kind() {
        async_lifecycle::sim::FailureKind::OutOfReach(message) => message.clone(),
        _ => panic!("expected out of reach, got:\n{failure}"),
    }
}

/// `.tokio()` and `.smol(ex)` with the simulated clock (so the clock is not what trips):
/// their spawn path itself is out of reach in a simulated run.
#[cfg(feature = "sim")]
#[test]
fn the_runtime_spawners_are_out_of_reach_in_the_sim() {
    use async_lifecycle::sim::Config;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let handle = rt.handle().clone();
    let message = out_of_reach(Config::new().runs(2).search(move |env| {
        let lc = {
            let _guard = handle.enter();
            use async_lifecycle::tokio::BuilderExt;
            Lifecycle::builder().tokio().clock(env.clock()).build()
        };
        async move {
            lc.service("x", |stop| stop)?;
            lc.stop("done");
            lc.wait().await;
            Ok(())
        }
    }));
    assert!(message.contains("tokio's spawner"), "{message}");
    let ex = Arc::new(smol::Executor::new());
    let message = out_of_reach(Config::new().runs(2).search(move |env| {
        use async_lifecycle::async_io::BuilderExt;
        let lc = Lifecycle::builder()
            .smol(ex.clone())
            .clock(env.clock())
            .build();
        async move {
            lc.service("x", |stop| stop)?;
            lc.stop("done");
            lc.wait().await;
            Ok(())
        }
    }));
    assert!(message.contains("smol's spawner"), "{message}");
}
