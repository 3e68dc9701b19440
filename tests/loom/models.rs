//! Loom models of the lifecycle's races, through the public API: the real composition of the
//! admission gate, the stop broadcast, the state machine's lock and `wait()`, with every
//! interleaving explored (up to the preemption bound) instead of hoped about.
//!
//! ```sh
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 \
//!     CARGO_TARGET_DIR=target/loom cargo test --release --test loom
//! ```
//!
//! Under `cfg(loom)`, `src/loom.rs` swaps the gate's atomics and every crate mutex for loom's;
//! `wait()` and the services are run by `loom::future::block_on`, whose waker parks the loom
//! thread, so a lost wake-up shows up as a deadlock that loom reports. The preemption bound
//! is `LOOM_MAX_PREEMPTIONS`, [`DEFAULT_PREEMPTIONS`] when it is unset.
//!
//! In the vocabulary of `tests/common/op.rs`, each model is two short schedules run at once:
//! `BeginSession` against `Stop`, `EndSession` against `Drive`, `Stop` against `Stop`,
//! `Stop` against `Drive`, and `ServiceExit` against `Stop`.
#![cfg(loom)]

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};
use std::time::Duration;

use async_lifecycle::{Lifecycle, ManualClock, Report, ServiceOutcome, State, StopCause};
use loom::future::block_on;
use loom::thread;

/// The preemption bound when `LOOM_MAX_PREEMPTIONS` is unset.
const DEFAULT_PREEMPTIONS: usize = 3;

/// Runs `f` under loom with the stated preemption bound.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(DEFAULT_PREEMPTIONS);
    }
    builder.check(f);
}

/// A lifecycle on a manual clock (no timer thread), with a grace that never runs out.
fn lifecycle() -> Lifecycle {
    Lifecycle::builder()
        .grace(Duration::from_secs(10))
        .clock(ManualClock::new())
        .build()
}

fn requested(reason: &'static str) -> StopCause {
    StopCause::Requested(Cow::Borrowed(reason))
}

/// A waker that counts its wakes.
#[derive(Default)]
struct Counter(std::sync::atomic::AtomicUsize);

impl Wake for Counter {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `BeginSession` racing `Stop`: a session is either admitted — and then counted, told that
/// draining started, and waited for — or refused and counted as refused. Never admitted and
/// lost (the lifecycle ending while it is live, or the report not counting it).
#[test]
fn session_begin_racing_stop() {
    for named in [false, true] {
        model(move || {
            let lc = lifecycle();
            let other = lc.clone();
            let begin = thread::spawn(move || {
                let session = if named {
                    other.session("late")
                } else {
                    other.unnamed_session()
                };
                session.ok()
            });
            lc.stop("deploy");
            let session = begin.join().unwrap();
            let admitted = session.is_some();
            if let Some(session) = session {
                assert_eq!(
                    lc.state(),
                    State::Draining,
                    "an admitted session holds the drain"
                );
                assert!(session.is_stopped());
                drop(session);
            }
            assert_eq!(lc.state(), State::Terminated);
            let report = block_on(lc.wait());
            let sessions = report.sessions();
            assert_eq!(sessions.abandoned_count(), 0, "{report}");
            assert_eq!(sessions.admitted(), u64::from(admitted), "{report}");
            assert_eq!(sessions.completed(), u64::from(admitted), "{report}");
            // A refusal may land after the report was written: at most one, never as admitted.
            assert!(sessions.refused() <= u64::from(!admitted), "{report}");
        });
    }
}

/// `BeginSession` racing `Force` on a lifecycle already draining: the census of abandoned
/// sessions names the live ones only, never a refused attempt caught half-way.
#[test]
fn refused_begin_racing_force() {
    model(|| {
        let lc = lifecycle();
        let held = lc.session("held").unwrap();
        lc.stop("deploy");
        let other = lc.clone();
        let begin = thread::spawn(move || other.unnamed_session().is_ok());
        lc.force();
        assert!(!begin.join().unwrap(), "admitted while draining");
        let report = block_on(lc.wait());
        assert_eq!(report.state(), State::Abandoned);
        assert_eq!(report.sessions().abandoned().len(), 1, "{report}");
        assert_eq!(report.sessions().admitted(), 1, "{report}");
        assert_eq!(
            report.sessions().abandoned_unnamed(),
            0,
            "phantom: {report}"
        );
        drop(held);
    });
}

/// `EndSession` (the last live session) racing `Drive` (a `wait()` parked on the drain): the
/// waiter is always woken, and the lifecycle terminates with the session completed.
#[test]
fn last_session_ending_racing_the_drain_waiter() {
    model(|| {
        let lc = lifecycle();
        let session = lc.unnamed_session().unwrap();
        lc.stop("deploy");
        let end = thread::spawn(move || drop(session));
        let report = block_on(lc.wait());
        end.join().unwrap();
        assert_eq!(report.state(), State::Terminated);
        assert_eq!(report.sessions().completed(), 1);
    });
}

/// `EndSession` (the last live session) racing a refused `BeginSession`, with `wait()` parked:
/// the refusal must neither be admitted nor hide the drain, or the waiter would sleep until
/// the deadline with nothing live. (It guarded the old fetch_add + undo gate, where the undo
/// could be what emptied it; the CAS gate keeps it as a regression model.)
#[test]
fn refused_begin_racing_the_last_session_end() {
    model(|| {
        let lc = lifecycle();
        let session = lc.unnamed_session().unwrap();
        lc.stop("deploy");
        let other = lc.clone();
        let begin = thread::spawn(move || other.unnamed_session().is_ok());
        let end = thread::spawn(move || drop(session));
        let report = block_on(lc.wait());
        assert!(!begin.join().unwrap(), "admitted while draining");
        end.join().unwrap();
        assert_eq!(report.state(), State::Terminated);
        assert_eq!(report.sessions().abandoned_count(), 0, "{report}");
        assert_eq!(report.sessions().completed(), 1, "{report}");
    });
}

/// `Force` racing `EndSession` of the last live session: either the session ended first and
/// the lifecycle terminates, or it is abandoned — and then the report names the straggler.
/// Never abandoned with nothing abandoned.
#[test]
fn force_racing_the_last_session_end() {
    for named in [false, true] {
        model(move || {
            let lc = lifecycle();
            let session = if named {
                lc.session("last").unwrap()
            } else {
                lc.unnamed_session().unwrap()
            };
            lc.stop("deploy");
            let end = thread::spawn(move || drop(session));
            lc.force();
            end.join().unwrap();
            let report = block_on(lc.wait());
            if report.state() == State::Abandoned {
                assert_eq!(report.sessions().abandoned_count(), 1, "{report}");
            } else {
                assert_eq!(report.state(), State::Terminated, "{report}");
                assert_eq!(report.sessions().completed(), 1, "{report}");
            }
        });
    }
}

/// Two sessions (one named) ending on two threads while `wait()` is parked: whichever is
/// last reports the drain, exactly one final state is reached, the waiter wakes.
#[test]
fn two_sessions_ending_racing_the_drain_waiter() {
    model(|| {
        let lc = lifecycle();
        let named = lc.session("named").unwrap();
        let unnamed = lc.unnamed_session().unwrap();
        lc.stop("deploy");
        let a = thread::spawn(move || drop(named));
        let b = thread::spawn(move || drop(unnamed));
        let report = block_on(lc.wait());
        a.join().unwrap();
        b.join().unwrap();
        assert_eq!(report.state(), State::Terminated);
        assert_eq!(report.sessions().completed(), 2);
    });
}

/// `Stop` racing `Stop`: both callers see the same first cause, it never changes, and the
/// drain starts once (a parked stop waiter is woken exactly once).
#[test]
fn two_threads_stopping_at_once() {
    model(|| {
        let lc = lifecycle();
        let session = lc.unnamed_session().unwrap(); // keeps the lifecycle draining
        let counter = Arc::new(Counter::default());
        let mut signal = lc.stop_signal();
        let waker = Waker::from(counter.clone());
        let poll = std::pin::Pin::new(&mut signal).poll(&mut Context::from_waker(&waker));
        assert!(poll.is_pending());
        let stopper = |reason: &'static str| {
            let lc = lc.clone();
            thread::spawn(move || {
                lc.stop(reason);
                lc.cause().cloned()
            })
        };
        let (a, b) = (stopper("a"), stopper("b"));
        let (seen_a, seen_b) = (a.join().unwrap(), b.join().unwrap());
        assert_eq!(seen_a, seen_b, "both stoppers see the first cause");
        let first = seen_a.expect("stopped");
        assert!(
            first == requested("a") || first == requested("b"),
            "{first:?}"
        );
        assert_eq!(
            counter.0.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "one transition"
        );
        assert_eq!(lc.state(), State::Draining);
        drop(session);
        let report = block_on(lc.wait());
        assert_eq!(report.cause(), Some(&first));
        assert!(
            std::pin::Pin::new(&mut signal)
                .poll(&mut Context::from_waker(&waker))
                .is_ready()
        );
    });
}

/// `Stop` racing `Drive`: `wait()` (driving a service that honours its stop signal) never
/// misses a stop requested from another thread while it registers.
#[test]
fn stop_racing_wait() {
    model(|| {
        let lc = lifecycle();
        lc.service("worker", |stop| async move {
            stop.await;
            Ok::<(), std::io::Error>(())
        })
        .unwrap();
        let other = lc.clone();
        let stopper = thread::spawn(move || other.stop("deploy"));
        let report = block_on(lc.wait());
        stopper.join().unwrap();
        assert_eq!(report.state(), State::Terminated);
        assert_eq!(report.cause(), Some(&requested("deploy")));
        assert_eq!(
            report.service("worker").unwrap().outcome(),
            &ServiceOutcome::Stopped
        );
    });
}

/// `Stop` racing the first `Drive` of a lifecycle with nothing to run: either `wait()` stops
/// it (nothing to run) or the request does; either way one cause, kept, and it terminates.
#[test]
fn stop_racing_wait_with_nothing_to_run() {
    model(|| {
        let lc = lifecycle();
        let other = lc.clone();
        let stopper = thread::spawn(move || {
            other.stop("deploy");
            other.cause().cloned()
        });
        let report = block_on(lc.wait());
        let seen = stopper.join().unwrap();
        assert_eq!(report.state(), State::Terminated);
        assert_eq!(report.cause(), seen.as_ref());
        assert!(
            seen == Some(requested("deploy")) || seen == Some(StopCause::NothingToRun),
            "{seen:?}"
        );
    });
}

type Task = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A lifecycle whose services are handed to the caller instead of run.
fn with_spawner() -> (Lifecycle, Arc<Mutex<Vec<Task>>>) {
    let tasks: Arc<Mutex<Vec<Task>>> = Arc::default();
    let slot = tasks.clone();
    let lc = Lifecycle::builder()
        .grace(Duration::from_secs(10))
        .clock(ManualClock::new())
        .spawner(move |task| slot.lock().unwrap().push(task))
        .build();
    (lc, tasks)
}

fn report_of(lc: &Lifecycle) -> Report {
    block_on(lc.wait())
}

/// `ServiceExit` racing `Stop`: a service that returns on its own thread while another thread
/// requests the stop ends either before the stop (ended early, and its end is the cause) or
/// after it (stopped, the request is the cause) — never a mix, and the lifecycle terminates.
#[test]
fn service_exiting_racing_stop() {
    model(|| {
        let (lc, tasks) = with_spawner();
        lc.service("svc", |_stop| async { Ok::<(), std::io::Error>(()) })
            .unwrap();
        let task = tasks.lock().unwrap().pop().unwrap();
        let runner = thread::spawn(move || block_on(task));
        lc.stop("deploy");
        runner.join().unwrap();
        let report = report_of(&lc);
        assert_eq!(report.state(), State::Terminated);
        let outcome = report.service("svc").unwrap().outcome().clone();
        match report.cause() {
            Some(StopCause::ServiceEnded { service }) if service == "svc" => {
                assert_eq!(outcome, ServiceOutcome::EndedEarly);
            }
            Some(cause) if *cause == requested("deploy") => {
                assert_eq!(outcome, ServiceOutcome::Stopped);
            }
            other => panic!("unexpected cause {other:?}"),
        }
    });
}

/// `ServiceExit` (a failure) racing `Stop`: the failure is recorded either way, and the cause
/// is whichever came first.
#[test]
fn service_failing_racing_stop() {
    model(|| {
        let (lc, tasks) = with_spawner();
        lc.service("svc", |_stop| async { Err::<(), _>("boom") })
            .unwrap();
        let task = tasks.lock().unwrap().pop().unwrap();
        let runner = thread::spawn(move || block_on(task));
        lc.stop("deploy");
        runner.join().unwrap();
        let report = report_of(&lc);
        assert_eq!(report.state(), State::Terminated);
        assert_eq!(
            report.service("svc").unwrap().outcome(),
            &ServiceOutcome::Failed("boom".into())
        );
        let cause = report.cause().unwrap();
        assert!(
            *cause == requested("deploy")
                || *cause
                    == StopCause::ServiceEnded {
                        service: "svc".into()
                    },
            "{cause:?}"
        );
        assert_eq!(report.exit_code(), 1);
    });
}

/// A service that honours its stop signal, parked on its own thread, while another thread
/// stops: its wake-up is never lost, it ends `Stopped`, and the lifecycle terminates.
#[test]
fn service_honouring_stop_on_its_own_thread() {
    model(|| {
        let (lc, tasks) = with_spawner();
        lc.service("svc", |stop| async move {
            stop.await;
            Ok::<(), std::io::Error>(())
        })
        .unwrap();
        let task = tasks.lock().unwrap().pop().unwrap();
        let runner = thread::spawn(move || block_on(task));
        lc.stop("deploy");
        runner.join().unwrap();
        let report = report_of(&lc);
        assert_eq!(report.state(), State::Terminated);
        assert_eq!(
            report.service("svc").unwrap().outcome(),
            &ServiceOutcome::Stopped
        );
    });
}
