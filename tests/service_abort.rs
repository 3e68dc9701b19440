//! Aborting a service's run: the lifecycle giving up on one service past its stop budget
//! (`GiveUp`), or abandoning everything at the end (`Abandon`), ends the run's task — woken
//! even when the service never polls its stop signal — and drops its future, on every way a
//! service is run: a spawner function (tasks polled here by hand, with wakers that count),
//! `.tokio()` and `.smol(..)` (tasks spawned unboxed), and the queue a `wait()` drives. A
//! restarted service reuses its abort slot; many services span several slot segments.

mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use async_lifecycle::{
    Backoff, Lifecycle, ManualClock, Restart, ServiceOptions, ServiceOutcome, State,
};
use futures::executor::LocalPool;
use futures::task::{ArcWake, LocalSpawnExt};

type BoxedTask = Pin<Box<dyn Future<Output = ()> + Send>>;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A service's run that never polls its stop signal (dropped at once) and never ends;
/// `polled` is set at its first poll, `dropped` when it is dropped.
fn stubborn(
    polled: Arc<AtomicBool>,
    dropped: Arc<AtomicBool>,
) -> impl Future<Output = ()> + Send + 'static {
    let flag = support::DropFlag(dropped);
    futures::future::poll_fn(move |_cx| {
        let _owned = &flag;
        polled.store(true, Ordering::SeqCst);
        Poll::Pending
    })
}

/// Counts its wakes.
#[derive(Default)]
struct Counter(AtomicUsize);

impl ArcWake for Counter {
    fn wake_by_ref(this: &Arc<Self>) {
        this.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Panics when woken.
struct Hostile;

impl ArcWake for Hostile {
    fn wake_by_ref(_this: &Arc<Self>) {
        panic!("a waker that panics");
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

    /// Polls task `i` with `waker`; `true` once it has finished (it is dropped then).
    fn poll(&self, i: usize, waker: &Waker) -> bool {
        let mut task = self.0.lock().unwrap()[i].take().expect("not finished");
        match task.as_mut().poll(&mut Context::from_waker(waker)) {
            Poll::Ready(()) => true,
            Poll::Pending => {
                self.0.lock().unwrap()[i] = Some(task);
                false
            }
        }
    }
}

/// A run's `polled` and `dropped` flags (see [`stubborn`]).
type Flags = (Arc<AtomicBool>, Arc<AtomicBool>);

fn flags(n: usize) -> Vec<Flags> {
    (0..n).map(|_| Default::default()).collect()
}

#[test]
fn an_abandoned_service_that_never_polls_its_stop_signal_is_woken_and_dropped() {
    let clock = ManualClock::new();
    let tasks = Tasks::default();
    let lc = tasks.builder(&clock).grace(secs(10)).build();
    let (polled, dropped) = Flags::default();
    let (p, d) = (polled.clone(), dropped.clone());
    lc.service("stubborn", move |_stop| stubborn(p, d)).unwrap();
    let counter = Arc::new(Counter::default());
    let waker = futures::task::waker(counter.clone());
    assert!(!tasks.poll(0, &waker), "pending");
    assert!(polled.load(Ordering::SeqCst));
    lc.stop("test");
    assert_eq!(
        counter.0.load(Ordering::SeqCst),
        0,
        "it does not poll its signal"
    );
    lc.force();
    assert_eq!(lc.state(), State::Abandoned);
    assert_eq!(counter.0.load(Ordering::SeqCst), 1, "woken by the abort");
    assert!(
        !dropped.load(Ordering::SeqCst),
        "its task holds it until polled"
    );
    assert!(
        tasks.poll(0, &waker),
        "the aborted run ends at its next poll"
    );
    assert!(dropped.load(Ordering::SeqCst));
    let report = futures::executor::block_on(lc.wait());
    assert_eq!(
        report.service("stubborn").unwrap().outcome(),
        &ServiceOutcome::Abandoned
    );
    assert_eq!(report.exit_code(), 2);
}

#[test]
fn a_run_aborted_before_its_first_poll_is_never_polled() {
    let clock = ManualClock::new();
    let tasks = Tasks::default();
    let lc = tasks.builder(&clock).grace(Duration::ZERO).build();
    let (polled, dropped) = Flags::default();
    let (p, d) = (polled.clone(), dropped.clone());
    lc.service("stubborn", move |_stop| stubborn(p, d)).unwrap();
    // A zero grace: the stop is its own deadline, so the run is abandoned by this call.
    lc.stop("test");
    assert_eq!(lc.state(), State::Abandoned);
    let waker = futures::task::waker(Arc::new(Counter::default()));
    assert!(tasks.poll(0, &waker));
    assert!(
        !polled.load(Ordering::SeqCst),
        "aborted runs are not polled"
    );
    assert!(dropped.load(Ordering::SeqCst));
}

#[test]
fn a_given_up_service_past_its_stop_budget_is_woken_and_dropped_while_the_rest_drains() {
    let clock = ManualClock::new();
    let tasks = Tasks::default();
    let lc = tasks.builder(&clock).grace(secs(30)).build();
    let (polled, dropped) = Flags::default();
    let (p, d) = (polled.clone(), dropped.clone());
    lc.service_with(
        "stubborn",
        ServiceOptions::new().stop_budget(secs(4)),
        move |_stop| {
            let (p, d) = (p.clone(), d.clone());
            stubborn(p, d)
        },
    )
    .unwrap();
    // Honours its stop once released by hand: keeps the lifecycle draining meanwhile.
    let (release, released) = futures::channel::oneshot::channel::<()>();
    let mut released = Some(released);
    lc.service("slow", move |stop| {
        let released = released.take().unwrap();
        async move {
            stop.await;
            let _ = released.await;
        }
    })
    .unwrap();
    let mut pool = LocalPool::new();
    let wait = pool.spawner().spawn_local_with_handle(lc.wait()).unwrap();
    let counters = [Arc::new(Counter::default()), Arc::new(Counter::default())];
    let wakers = counters.clone().map(futures::task::waker);
    assert_eq!(tasks.len(), 2);
    assert!(!tasks.poll(0, &wakers[0]));
    assert!(!tasks.poll(1, &wakers[1]));
    lc.stop("test");
    pool.run_until_stalled();
    assert!(!tasks.poll(1, &wakers[1]), "slow waits for its release");
    clock.advance(secs(3));
    pool.run_until_stalled();
    assert_eq!(counters[0].0.load(Ordering::SeqCst), 0, "within its budget");
    clock.advance(secs(1));
    pool.run_until_stalled();
    assert_eq!(counters[0].0.load(Ordering::SeqCst), 1, "given up: woken");
    assert_eq!(lc.state(), State::Draining, "slow still drains");
    assert!(tasks.poll(0, &wakers[0]), "the given-up run ends");
    assert!(dropped.load(Ordering::SeqCst));
    release.send(()).unwrap();
    assert!(tasks.poll(1, &wakers[1]), "slow ends when released");
    let report = pool.run_until(wait);
    assert_eq!(
        report.service("stubborn").unwrap().outcome(),
        &ServiceOutcome::Abandoned
    );
    assert_eq!(
        report.service("slow").unwrap().outcome(),
        &ServiceOutcome::Stopped
    );
    assert_eq!(report.state(), State::Abandoned);
}

/// A restartable service whose first `failures` runs fail at once and whose later runs never
/// end (nor poll their stop signal); the later runs' flags are in `later`.
fn flaky(lc: &Lifecycle, failures: usize, budget: Option<Duration>, later: Arc<Mutex<Vec<Flags>>>) {
    let backoff = Backoff::new(secs(1), secs(1)).unwrap().without_jitter();
    let mut options = ServiceOptions::new()
        .restart(Restart::OnFailure)
        .backoff(backoff);
    if let Some(budget) = budget {
        options = options.stop_budget(budget);
    }
    let mut runs = 0;
    lc.service_with("flaky", options, move |_stop| {
        runs += 1;
        let fails = runs <= failures;
        let (p, d) = Flags::default();
        if !fails {
            later.lock().unwrap().push((p.clone(), d.clone()));
        }
        let run = stubborn(p, d);
        async move {
            if fails {
                return Err("refused");
            }
            run.await;
            Ok(())
        }
    })
    .unwrap();
}

#[test]
fn a_restarted_run_reuses_its_slot_and_is_still_given_up_and_dropped() {
    let clock = ManualClock::new();
    let tasks = Tasks::default();
    let lc = tasks.builder(&clock).grace(secs(30)).build();
    let later = Arc::new(Mutex::new(Vec::new()));
    flaky(&lc, 2, Some(secs(2)), later.clone());
    // Keeps the lifecycle draining past the give-up.
    lc.service("held", |_stop| futures::future::pending::<()>())
        .unwrap();
    let mut pool = LocalPool::new();
    let wait = pool.spawner().spawn_local_with_handle(lc.wait()).unwrap();
    let counter = Arc::new(Counter::default());
    let waker = futures::task::waker(counter.clone());
    assert!(tasks.poll(0, &waker), "run 1 fails");
    assert!(!tasks.poll(1, &waker), "held");
    for run in 2..=3 {
        clock.advance(secs(1));
        pool.run_until_stalled();
        assert_eq!(tasks.len(), run + 1, "run {run} made and spawned");
        let done = tasks.poll(run, &waker);
        assert_eq!(done, run == 2, "run 2 fails, run 3 runs");
    }
    assert_eq!(later.lock().unwrap().len(), 1);
    let before = counter.0.load(Ordering::SeqCst);
    lc.stop("test");
    pool.run_until_stalled();
    clock.advance(secs(2));
    pool.run_until_stalled();
    assert!(
        counter.0.load(Ordering::SeqCst) > before,
        "run 3 woken by the give-up"
    );
    assert!(tasks.poll(3, &waker), "run 3 ends");
    assert!(later.lock().unwrap()[0].1.load(Ordering::SeqCst));
    assert_eq!(lc.state(), State::Draining);
    lc.force();
    assert!(tasks.poll(1, &waker), "held is abandoned at the force");
    let report = pool.run_until(wait);
    let flaky = report.service("flaky").unwrap();
    assert_eq!(flaky.outcome(), &ServiceOutcome::Abandoned);
    assert_eq!(flaky.restarts(), 2);
}

#[test]
fn an_abandoned_restarted_run_is_woken_and_dropped() {
    let clock = ManualClock::new();
    let tasks = Tasks::default();
    let lc = tasks.builder(&clock).grace(secs(30)).build();
    let later = Arc::new(Mutex::new(Vec::new()));
    flaky(&lc, 1, None, later.clone());
    let mut pool = LocalPool::new();
    let wait = pool.spawner().spawn_local_with_handle(lc.wait()).unwrap();
    let counter = Arc::new(Counter::default());
    let waker = futures::task::waker(counter.clone());
    assert!(tasks.poll(0, &waker), "run 1 fails");
    clock.advance(secs(1));
    pool.run_until_stalled();
    assert!(!tasks.poll(1, &waker), "run 2 runs");
    lc.force();
    assert_eq!(counter.0.load(Ordering::SeqCst), 1);
    assert!(tasks.poll(1, &waker));
    assert!(later.lock().unwrap()[0].1.load(Ordering::SeqCst));
    let report = pool.run_until(wait);
    assert_eq!(report.state(), State::Abandoned);
}

#[test]
fn every_service_across_slot_segments_is_woken_even_past_a_waker_that_panics() {
    // 8 + 16 + 32 slots: 41 services span three segments.
    const N: usize = 41;
    let clock = ManualClock::new();
    let tasks = Tasks::default();
    let lc = tasks.builder(&clock).grace(secs(10)).build();
    let flags = flags(N);
    for (i, (p, d)) in flags.iter().enumerate() {
        let (p, d) = (p.clone(), d.clone());
        lc.service(format!("stubborn {i}"), move |_stop| stubborn(p, d))
            .unwrap();
    }
    let counter = Arc::new(Counter::default());
    let waker = futures::task::waker(counter.clone());
    let hostile = futures::task::waker(Arc::new(Hostile));
    for i in 0..N {
        assert!(!tasks.poll(i, if i == 20 { &hostile } else { &waker }));
    }
    lc.force();
    assert_eq!(counter.0.load(Ordering::SeqCst), N - 1);
    for (i, (polled, dropped)) in flags.iter().enumerate() {
        assert!(polled.load(Ordering::SeqCst));
        assert!(tasks.poll(i, &waker), "service {i} ends");
        assert!(dropped.load(Ordering::SeqCst), "service {i} dropped");
    }
    let report = futures::executor::block_on(lc.wait());
    assert_eq!(report.services().len(), N);
    assert!(
        report
            .services()
            .iter()
            .all(|s| s.outcome() == &ServiceOutcome::Abandoned)
    );
}

#[test]
fn a_run_whose_drop_panics_at_the_abort_does_not_keep_the_others() {
    let clock = ManualClock::new();
    let tasks = Tasks::default();
    let lc = tasks.builder(&clock).grace(secs(10)).build();
    struct PanicsOnDrop;
    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            panic!("a service whose drop panics");
        }
    }
    lc.service("hostile", |_stop| {
        let owned = PanicsOnDrop;
        async move {
            let _owned = owned;
            futures::future::pending::<()>().await;
        }
    })
    .unwrap();
    let (polled, dropped) = Flags::default();
    let (p, d) = (polled.clone(), dropped.clone());
    lc.service("stubborn", move |_stop| stubborn(p, d)).unwrap();
    let waker = futures::task::waker(Arc::new(Counter::default()));
    assert!(!tasks.poll(0, &waker));
    assert!(!tasks.poll(1, &waker));
    lc.force();
    assert!(tasks.poll(0, &waker), "ends; its drop's panic is swallowed");
    assert!(tasks.poll(1, &waker));
    assert!(dropped.load(Ordering::SeqCst));
    let report = futures::executor::block_on(lc.wait());
    assert_eq!(report.state(), State::Abandoned);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn tokio_spawned_services_are_aborted_and_dropped_at_the_deadline() {
    use async_lifecycle::tokio::BuilderExt;
    const N: usize = 30;
    let lc = Lifecycle::builder().grace(secs(5)).tokio().build();
    let flags = flags(N);
    for (i, (p, d)) in flags.iter().enumerate() {
        let (p, d) = (p.clone(), d.clone());
        lc.service(format!("stubborn {i}"), move |_stop| stubborn(p, d))
            .unwrap();
    }
    lc.service("honours", |stop| stop).unwrap();
    tokio::task::yield_now().await;
    assert!(flags.iter().all(|(p, _)| p.load(Ordering::SeqCst)));
    lc.stop("test");
    let report = lc.wait().await;
    assert_eq!(report.state(), State::Abandoned);
    assert_eq!(report.drained_in(), secs(5));
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
    for (i, (_, dropped)) in flags.iter().enumerate() {
        assert!(dropped.load(Ordering::SeqCst), "service {i} dropped");
    }
    assert_eq!(
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
        0,
        "every service's task ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_spawner_on_tokio_aborts_and_drops_too() {
    let lc = Lifecycle::builder()
        .grace(Duration::from_millis(20))
        .spawner(|task| {
            tokio::spawn(task);
        })
        .build();
    let flags = flags(10);
    for (i, (p, d)) in flags.iter().enumerate() {
        let (p, d) = (p.clone(), d.clone());
        lc.service(format!("stubborn {i}"), move |_stop| stubborn(p, d))
            .unwrap();
    }
    lc.stop("test");
    let report = lc.wait().await;
    assert_eq!(report.state(), State::Abandoned);
    // Each task is woken by the abort and ends on a worker; bounded only against a hang.
    let deadline = std::time::Instant::now() + secs(10);
    while !flags.iter().all(|(_, d)| d.load(Ordering::SeqCst)) {
        assert!(
            std::time::Instant::now() < deadline,
            "not every run dropped"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[test]
fn smol_spawned_services_are_aborted_and_dropped() {
    use async_lifecycle::async_io::BuilderExt;
    let ex = Arc::new(smol::Executor::new());
    let lc = Lifecycle::builder()
        .grace(Duration::from_millis(20))
        .smol(ex.clone())
        .build();
    let flags = flags(10);
    for (i, (p, d)) in flags.iter().enumerate() {
        let (p, d) = (p.clone(), d.clone());
        lc.service(format!("stubborn {i}"), move |_stop| stubborn(p, d))
            .unwrap();
    }
    assert!(!ex.is_empty(), "spawned, not queued");
    lc.stop("test");
    let report = smol::block_on(ex.run(lc.wait()));
    assert_eq!(report.state(), State::Abandoned);
    // The aborted tasks end at their next poll, when the executor runs again.
    // Bounded, so a task never woken fails the test instead of spinning.
    smol::block_on(ex.run(async {
        for _ in 0..1_000 {
            if ex.is_empty() {
                break;
            }
            smol::future::yield_now().await;
        }
    }));
    assert!(ex.is_empty(), "every service's task ended");
    assert!(flags.iter().all(|(_, d)| d.load(Ordering::SeqCst)));
}

#[test]
fn queued_services_are_aborted_and_dropped_by_the_wait_that_drives_them() {
    let lc = Lifecycle::builder()
        .grace(Duration::from_millis(20))
        .build();
    let flags = flags(10);
    for (i, (p, d)) in flags.iter().enumerate() {
        let (p, d) = (p.clone(), d.clone());
        lc.service(format!("stubborn {i}"), move |_stop| stubborn(p, d))
            .unwrap();
    }
    lc.stop("test");
    let report = futures::executor::block_on(lc.wait());
    assert_eq!(report.state(), State::Abandoned);
    assert!(
        flags
            .iter()
            .all(|(p, d)| p.load(Ordering::SeqCst) && d.load(Ordering::SeqCst))
    );
}
