//! The simulator (`async_lifecycle::sim`, issue 11): runs repeat exactly, failures replay
//! from their token with the same trace, deadlocks and out-of-reach uses are named, idle
//! time jumps, the schedulers find planted races (PCT-2 one that random cannot), faults land
//! at varying moments, and byte- or list-driven choices replay. No real sleep anywhere: the
//! only real-time bounds are bounds on failure.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_lifecycle::sim::{
    self, Choices, Config, Env, FailureKind, Fault, Outcome, Scheduler, Token,
};
use async_lifecycle::{Clock, ServiceOutcome, State, StopCause, SystemClock};
use futures::future::{Either, select};

/// The planted race of `examples/sim_race.rs`, reduced: the worker takes a job off the
/// queue, then begins its session; a stop in between loses the job.
async fn racy_queue(env: Env) -> Outcome {
    let lc = env.lifecycle(|b| b.grace(Duration::from_secs(5)));
    let (tx, rx) = async_channel::unbounded::<u32>();
    let taken = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(Mutex::new(Vec::new()));
    let (sessions, t, d) = (lc.downgrade(), taken.clone(), done.clone());
    lc.service("worker", move |mut stop| async move {
        while let Either::Left((Ok(job), _)) = select(std::pin::pin!(rx.recv()), &mut stop).await {
            t.lock().unwrap().push(job);
            let Ok(_session) = sessions.session(format!("job {job}")) else {
                break;
            };
            d.lock().unwrap().push(job);
        }
    })?;
    let queue = tx.clone();
    env.spawn("producer", async move {
        for job in 0..3 {
            if queue.send(job).await.is_err() {
                break; // the worker is gone
            }
            sim::yield_now().await;
        }
    });
    env.fault(Fault::Signal);
    lc.wait().await;
    drop(tx);
    let (taken, done) = (taken.lock().unwrap(), done.lock().unwrap());
    if *taken != *done {
        return Err(format!("jobs taken {taken:?}, done only {done:?}: a job was lost").into());
    }
    Ok(())
}

/// A passing scenario with some of everything: two services that begin sessions and sleep,
/// a producer, a signal, events and a report.
async fn busy(env: Env) -> Outcome {
    let lc = env.lifecycle(|b| b.grace(Duration::from_secs(2)));
    for name in ["a", "b"] {
        let (sessions, clock) = (lc.downgrade(), lc.clock().clone());
        lc.service(name, move |stop| async move {
            let mut n = 0;
            while !stop.is_stopped() {
                if let Ok(_session) = sessions.session(format!("{name} {n}")) {
                    clock
                        .sleep_until(clock.now() + Duration::from_millis(10 * (n % 3 + 1)))
                        .await;
                }
                n += 1;
                sim::yield_now().await;
            }
        })?;
    }
    let ticks = env.clone();
    env.spawn("ticker", async move {
        for _ in 0..3 {
            ticks.sleep(Duration::from_millis(15)).await;
        }
    });
    env.fault(Fault::Signal);
    let report = lc.wait().await;
    assert_eq!(report.exit_code(), 0, "{report}");
    Ok(())
}

#[test]
fn the_same_token_leaves_the_same_trace_and_other_seeds_other_traces() {
    let config = Config::new().check_determinism(false);
    let mut traces = BTreeSet::new();
    for seed in 0..24 {
        let token = match seed % 3 {
            0 => Token::random(Choices::seed(seed)),
            depth => Token::pct(depth as u8, 40, Choices::seed(seed)),
        };
        let first = config.run(&token, busy).expect("busy passes");
        let second = config.run(&token, busy).expect("busy passes");
        assert_eq!(first.trace(), second.trace(), "{token}");
        assert_eq!(first.steps(), second.steps(), "{token}");
        assert_eq!(first.elapsed(), second.elapsed(), "{token}");
        assert_eq!(first.faults(), 1, "{first}");
        traces.insert(first.trace());
    }
    assert!(traces.len() >= 20, "only {} distinct traces", traces.len());
}

#[test]
fn a_failure_prints_a_token_that_replays_it_with_the_same_trace() {
    let failure = Config::new()
        .search(racy_queue)
        .expect_err("the race is found");
    let FailureKind::Check(message) = failure.kind() else {
        panic!("not a check failure: {failure}");
    };
    assert!(message.contains("a job was lost"), "{message}");
    assert!(failure.run_index().unwrap() < 1000);
    let text = failure.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[lines.len() - 2],
        format!("replay: {}", failure.token())
    );
    assert_eq!(
        lines[lines.len() - 1],
        format!("trace: {:016x}", failure.trace())
    );

    let token = failure.token().to_string();
    for _ in 0..3 {
        let again = sim::replay(&token, racy_queue).expect_err("the replay fails too");
        assert_eq!(again.kind(), failure.kind());
        assert_eq!(again.trace(), failure.trace());
        assert_eq!(again.steps(), failure.steps());
        assert_eq!(again.run_index(), None);
        assert!(
            again
                .to_string()
                .ends_with(&lines[lines.len() - 1].to_string())
        );
    }
}

#[test]
fn a_deadlock_names_the_live_service_and_session_with_their_ages() {
    let failure = Config::new()
        .runs(20)
        .search(|env| async move {
            // Never abandons: only the stuck service could end the drain.
            let lc = env.lifecycle(|b| b.grace(Duration::MAX));
            let session = lc.session("job 7")?;
            lc.service("stuck", move |_stop| async move {
                let _session = session;
                std::future::pending::<()>().await;
            })?;
            env.sleep(Duration::from_secs(3)).await;
            env.fault(Fault::Signal);
            lc.wait().await;
            Ok(())
        })
        .expect_err("a deadlock");
    let FailureKind::Deadlock(deadlock) = failure.kind() else {
        panic!("not a deadlock: {failure}");
    };
    assert_eq!(deadlock.elapsed, Duration::from_secs(3), "{failure}");
    assert_eq!(deadlock.services, [("stuck".to_owned(), deadlock.elapsed)]);
    assert_eq!(deadlock.sessions, [("job 7".to_owned(), deadlock.elapsed)]);
    assert!(
        deadlock.tasks.iter().any(|t| t.starts_with("scenario #")),
        "{failure}"
    );
    let text = failure.to_string();
    assert!(text.contains("live sessions: \"job 7\" (age 3s)"), "{text}");
    assert!(text.contains("live services: \"stuck\" (up 3s)"), "{text}");
    assert_eq!(failure.run_index(), Some(0));
}

/// Pending until woken, with its waker left in `slot` for someone else to wake.
struct Parked(Arc<Mutex<Option<std::task::Waker>>>, bool);

impl Future for Parked {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.1 {
            return Poll::Ready(());
        }
        self.1 = true;
        *self.0.lock().unwrap() = Some(cx.waker().clone());
        Poll::Pending
    }
}

fn out_of_reach(failure: &sim::Failure) -> &str {
    match failure.kind() {
        FailureKind::OutOfReach(message) => message,
        _ => panic!("not out of reach: {failure}"),
    }
}

#[test]
fn a_wake_from_another_thread_is_out_of_reach() {
    let failure = Config::new()
        .runs(3)
        .search(|env| async move {
            let slot = Arc::new(Mutex::new(None));
            let waiter = env.spawn("waiter", Parked(slot.clone(), false));
            let waker = loop {
                if let Some(waker) = slot.lock().unwrap().take() {
                    break waker;
                }
                env.yield_now().await;
            };
            // A real thread wakes the parked task (joined here: deterministic).
            std::thread::Builder::new()
                .name("intruder".into())
                .spawn(move || waker.wake())
                .unwrap()
                .join()
                .unwrap();
            waiter.await;
            Ok(())
        })
        .expect_err("out of reach");
    let message = out_of_reach(&failure);
    assert!(
        message.contains("woken from another thread (thread `intruder`)"),
        "{message}"
    );
}

#[test]
fn a_tokio_timer_is_out_of_reach() {
    let failure = Config::new()
        .runs(3)
        .search(|_env| async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            Ok(())
        })
        .expect_err("out of reach");
    let message = out_of_reach(&failure);
    assert!(
        message.starts_with("tokio was used inside a simulated run"),
        "{message}"
    );
    assert!(message.contains("Env::sleep"), "{message}");
}

#[test]
fn the_system_clock_is_out_of_reach_in_the_scenario_and_in_a_service() {
    // A lifecycle built the usual way reads the system clock.
    let failure = Config::new()
        .runs(3)
        .search(|_env| async move {
            let lc = async_lifecycle::Lifecycle::new();
            lc.stop("never reached");
            Ok(())
        })
        .expect_err("out of reach");
    let message = out_of_reach(&failure);
    assert!(
        message.starts_with("the system clock (`SystemClock::now`)"),
        "{message}"
    );
    assert!(message.contains("Env::lifecycle"), "{message}");

    // In a service the lifecycle catches the panic, but the run still reports the cause.
    let failure = Config::new()
        .runs(3)
        .search(|env| async move {
            let lc = env.lifecycle(|b| b);
            lc.service("clock reader", |stop| async move {
                let _ = SystemClock::new().now();
                stop.await;
            })?;
            env.fault(Fault::stop("done"));
            lc.wait().await;
            Ok(())
        })
        .expect_err("out of reach");
    assert!(out_of_reach(&failure).starts_with("the system clock"));

    // tokio's clock too.
    let failure = Config::new()
        .runs(1)
        .search(|_env| async move {
            let lc = async_lifecycle::Lifecycle::builder()
                .clock(async_lifecycle::tokio::TokioClock::new())
                .build();
            drop(lc);
            Ok(())
        })
        .expect_err("out of reach");
    assert!(out_of_reach(&failure).starts_with("tokio's clock"));
}

#[test]
fn idle_time_jumps_to_the_next_deadline_so_an_hour_of_grace_takes_no_time() {
    let began = Instant::now();
    let run = Config::new()
        .run(&Token::random(Choices::seed(11)), |env| async move {
            let lc = env.lifecycle(|b| b.grace(Duration::from_secs(3600)));
            let _upload = lc.session("upload 42")?;
            lc.service("svc", |stop| stop)?;
            env.fault(Fault::Signal);
            let report = lc.wait().await;
            assert_eq!(report.state(), State::Abandoned);
            assert_eq!(report.sessions().abandoned()[0].name(), "upload 42");
            assert_eq!(report.drained_in(), Duration::from_secs(3600));
            assert_eq!(report.cause(), Some(&StopCause::Signal("SIGTERM")));
            Ok(())
        })
        .expect("the run passes");
    assert!(run.elapsed() >= Duration::from_secs(3600), "{run}");
    assert!(run.clock_jumps() >= 1, "{run}");
    // A bound on failure: the run (twice, with the determinism check) is microseconds of
    // work; an hour of simulated grace must not be anywhere near a real second.
    assert!(
        began.elapsed() < Duration::from_secs(1),
        "{:?}",
        began.elapsed()
    );
}

/// A depth-2 ordering bug: it shows only if task `a` takes its first step before `b` starts,
/// and `b` then runs all 20 of its steps before `a` takes its second. A uniformly random
/// schedule almost never holds `a` back 21 times in a row (2⁻²¹); PCT-2 needs `a` above `b`
/// and its one change point at `a`'s second step.
async fn depth_two(env: Env) -> Outcome {
    let log = Arc::new(Mutex::new(Vec::new()));
    let (la, lb) = (log.clone(), log.clone());
    let a = env.spawn("a", async move {
        la.lock().unwrap().push("a1");
        sim::yield_now().await;
        la.lock().unwrap().push("a2");
    });
    let b = env.spawn("b", async move {
        for _ in 0..20 {
            lb.lock().unwrap().push("b");
            sim::yield_now().await;
        }
        lb.lock().unwrap().push("b done");
    });
    a.await;
    b.await;
    let log = log.lock().unwrap();
    let a1 = log.iter().position(|s| *s == "a1").unwrap();
    let a2 = log.iter().position(|s| *s == "a2").unwrap();
    let b0 = log.iter().position(|s| *s == "b").unwrap();
    let b_done = log.iter().position(|s| *s == "b done").unwrap();
    if a1 < b0 && b_done < a2 {
        return Err("b ran to its end between a's two steps".into());
    }
    Ok(())
}

#[test]
fn pct_depth_two_finds_an_ordering_bug_that_random_schedules_miss() {
    let runs = 2000;
    let random = Config::new()
        .runs(runs)
        .scheduler(Scheduler::Random)
        .search(depth_two);
    assert_eq!(random.expect("random misses it").runs(), runs);
    let pct1 = Config::new()
        .runs(runs)
        .scheduler(Scheduler::Pct(1))
        .search(depth_two);
    assert!(pct1.is_ok(), "depth 1 has no change point to find it");
    let pct2 = Config::new()
        .runs(runs)
        .scheduler(Scheduler::Pct(2))
        .search(depth_two)
        .expect_err("PCT-2 finds it");
    assert_eq!(pct2.token().scheduler(), Scheduler::Pct(2));
    assert!(pct2.run_index().unwrap() < 500, "{pct2}");
    // and so does the default portfolio, through its PCT runs
    let portfolio = Config::new()
        .runs(runs)
        .search(depth_two)
        .expect_err("found");
    assert!(matches!(
        portfolio.token().scheduler(),
        Scheduler::Pct(2 | 3)
    ));
}

#[test]
fn every_scheduler_finds_the_planted_queue_race() {
    for scheduler in [
        Scheduler::Random,
        Scheduler::Pct(1),
        Scheduler::Pct(2),
        Scheduler::Pct(3),
    ] {
        let failure = Config::new()
            .runs(1000)
            .scheduler(scheduler)
            .search(racy_queue)
            .expect_err("found");
        assert_eq!(failure.token().scheduler(), scheduler);
        assert!(matches!(failure.kind(), FailureKind::Check(_)), "{failure}");
    }
}

#[test]
fn faults_fire_at_varying_moments_and_after_varying_simulated_time() {
    let ticks = Arc::new(Mutex::new(BTreeSet::new()));
    let stopped_at = Arc::new(Mutex::new(BTreeSet::new()));
    for seed in 0..40 {
        let (ticks, stopped_at) = (ticks.clone(), stopped_at.clone());
        Config::new()
            .check_determinism(false)
            .run(&Token::random(Choices::seed(seed)), move |env| {
                let (ticks, stopped_at) = (ticks.clone(), stopped_at.clone());
                async move {
                    let lc = env.lifecycle(|b| b.grace(Duration::from_secs(5)));
                    let clock = lc.clock().clone();
                    let watch = env.clone();
                    lc.service("ticker", move |stop| async move {
                        let mut n = 0;
                        while !stop.is_stopped() {
                            n += 1;
                            // Each tick waits on the clock every third time, else yields.
                            if n % 3 == 0 {
                                let tick = clock.now() + Duration::from_secs(1);
                                let _ = select(clock.sleep_until(tick), stop.clone()).await;
                            } else {
                                sim::yield_now().await;
                            }
                        }
                        ticks.lock().unwrap().insert(n);
                        stopped_at.lock().unwrap().insert(watch.elapsed());
                    })?;
                    env.fault(Fault::Signal);
                    lc.wait().await;
                    Ok(())
                }
            })
            .expect("passes");
    }
    let ticks = ticks.lock().unwrap();
    let stopped_at = stopped_at.lock().unwrap();
    assert!(
        ticks.len() >= 6,
        "the signal landed after {ticks:?} ticks only"
    );
    assert!(
        stopped_at.len() >= 3 && stopped_at.iter().any(|t| *t >= Duration::from_secs(2)),
        "the signal landed at {stopped_at:?} only"
    );
}

#[test]
fn byte_and_list_choices_replay_and_drive_a_search_like_a_fuzzer() {
    let config = Config::new();
    let bytes: Vec<u8> = (0u32..96).map(|i| (i * 37 % 251) as u8).collect();
    let token = Token::random(Choices::bytes(bytes.clone()));
    let first = config.run(&token, busy).expect("passes");
    let parsed: Token = first.token().to_string().parse().unwrap();
    assert_eq!(parsed, token);
    assert_eq!(config.run(&parsed, busy).unwrap().trace(), first.trace());
    let other = Token::random(Choices::bytes(
        bytes.iter().map(|b| b ^ 0x55).collect::<Vec<_>>(),
    ));
    assert_ne!(config.run(&other, busy).unwrap().trace(), first.trace());
    // Empty input: every choice is 0, still a whole run.
    config
        .run(&Token::pct(2, 30, Choices::bytes(Vec::new())), busy)
        .expect("passes");

    // A fuzzer's loop: inputs from a counter until one fails; its token replays it.
    let failure = (0u64..5000)
        .find_map(|n| {
            let input: Vec<u8> = (0..16).map(|i| (n >> (i % 8 * 4)) as u8 ^ i).collect();
            config
                .run(&Token::random(Choices::bytes(input)), racy_queue)
                .err()
        })
        .expect("some input finds the race");
    let replayed = sim::replay(&failure.token().to_string(), racy_queue).unwrap_err();
    assert_eq!(replayed.trace(), failure.trace());

    // proptest's shape: a list of numbers.
    let list = Token::pct(3, 25, Choices::list(vec![7, 1, 0, 12, 3, 3, 9]));
    let a = config.run(&list, busy).unwrap();
    let b = config
        .run(&list.to_string().parse().unwrap(), busy)
        .unwrap();
    assert_eq!(a.trace(), b.trace());
}

#[test]
fn a_spin_on_a_flag_is_no_livelock_under_pct() {
    // The scenario spins until a task it spawned sets a flag: under PCT a spinning task that
    // outranks the setter would never let it run, unless yielding demotes it (as it does).
    // (The spinner yields 1,000 times in a row before it is put below the setter.)
    for depth in 1..=3 {
        Config::new()
            .runs(100)
            .max_steps(5000)
            .scheduler(Scheduler::Pct(depth))
            .search(|env| async move {
                let flag = Arc::new(AtomicU64::new(0));
                let setter = flag.clone();
                env.spawn("setter", async move { setter.store(1, Ordering::Relaxed) });
                while flag.load(Ordering::Relaxed) == 0 {
                    env.yield_now().await;
                }
                Ok(())
            })
            .unwrap_or_else(|failure| panic!("PCT {depth}: {failure}"));
    }
}

#[test]
fn a_livelock_hits_the_step_limit() {
    let failure = Config::new()
        .runs(2)
        .max_steps(500)
        .search(|env| async move {
            env.spawn("spinner", async {
                loop {
                    sim::yield_now().await;
                }
            })
            .await;
            Ok(())
        })
        .expect_err("a livelock");
    assert_eq!(failure.kind(), &FailureKind::StepLimit { steps: 500 });
    assert_eq!(failure.steps(), 500);
}

#[test]
fn a_panic_in_a_spawned_task_is_named_and_a_service_panic_is_the_lifecycle_s() {
    let failure = Config::new()
        .runs(2)
        .search(|env| async move {
            env.spawn("exploder", async { panic!("boom") }).await;
            Ok(())
        })
        .expect_err("a panic");
    let FailureKind::Panic { task, message } = failure.kind() else {
        panic!("not a panic: {failure}");
    };
    assert!(task.starts_with("exploder #"), "{task}");
    assert!(message.starts_with("boom (at tests/sim.rs:"), "{message}");

    // An assertion in the scenario is its check failing.
    let failure = Config::new()
        .runs(2)
        .search(|_env| async move {
            assert_eq!(1 + 1, 3, "arithmetic");
            Ok(())
        })
        .expect_err("a failed check");
    let FailureKind::Check(message) = failure.kind() else {
        panic!("not a check: {failure}");
    };
    assert!(
        message.contains("the scenario panicked: assertion"),
        "{message}"
    );

    // Fault::Panic: the wrapped service panics at a moment the scheduler picks, and its
    // lifecycle reports it, as it would a real panic.
    Config::new()
        .runs(40)
        .search(|env| async move {
            let lc = env.lifecycle(|b| b.grace(Duration::from_secs(5)));
            let db = env.clone();
            lc.service("db", move |stop| db.panicky("db", stop))?;
            env.fault(Fault::panic("db"));
            let report = lc.wait().await;
            let outcome = report.service("db").unwrap().outcome();
            assert!(
                matches!(outcome, ServiceOutcome::Panicked(m) if m.contains("injected panic")),
                "{report}"
            );
            assert_eq!(report.exit_code(), 1);
            Ok(())
        })
        .expect("the lifecycle reports the injected panic");
}

#[test]
fn a_second_signal_forces_and_a_clock_jump_moves_time() {
    let forced = Arc::new(AtomicU64::new(0));
    let seen = forced.clone();
    Config::new()
        .runs(40)
        .search(move |env| {
            let forced = seen.clone();
            async move {
                let lc = env.lifecycle(|b| b.grace(Duration::from_secs(3600)));
                lc.service("stubborn", |_stop| std::future::pending::<()>())?;
                env.fault(Fault::ClockJump(Duration::from_secs(7)));
                env.fault(Fault::Signal);
                env.fault(Fault::Signal);
                let report = lc.wait().await;
                assert_eq!(report.state(), State::Abandoned);
                assert_eq!(report.cause(), Some(&StopCause::Signal("SIGTERM")));
                assert!(env.elapsed() >= Duration::from_secs(7));
                if report.drained_in() < Duration::from_secs(3600) {
                    forced.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }
        })
        .expect("passes");
    assert!(
        forced.load(Ordering::Relaxed) > 0,
        "the second signal never forced"
    );
}

#[test]
fn a_run_that_depends_on_a_global_is_reported_nondeterministic() {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let failure = Config::new()
        .runs(5)
        .search(|env| async move {
            // Outside the simulation's control: how often this ran before.
            let yields = CALLS.fetch_add(1, Ordering::Relaxed) % 3;
            for _ in 0..yields {
                env.yield_now().await;
            }
            Ok(())
        })
        .expect_err("caught by the determinism check");
    let FailureKind::Nondeterministic { first, second } = *failure.kind() else {
        panic!("not nondeterministic: {failure}");
    };
    assert_ne!(first, second);
    assert_eq!(failure.run_index(), Some(0));
}

#[test]
fn spawned_tasks_return_values_and_choices_shape_the_scenario() {
    let counts = Arc::new(Mutex::new(BTreeSet::new()));
    let seen = counts.clone();
    Config::new()
        .runs(30)
        .search(move |env| {
            let counts = seen.clone();
            async move {
                let jobs = 1 + env.choose(5);
                let handles: Vec<_> = (0..jobs)
                    .map(|i| env.spawn(format!("job {i}"), async move { i * 2 }))
                    .collect();
                let mut total = 0;
                for handle in handles {
                    total += handle.await;
                }
                assert_eq!(total, jobs * (jobs - 1));
                counts.lock().unwrap().insert(jobs);
                Ok(())
            }
        })
        .expect("passes");
    assert!(counts.lock().unwrap().len() >= 4);
}
