//! The sharded sessions under stress and misuse (written as a hostile review of issue 12's
//! change: a gate and a registry per shard, the drain across shards, a session reaching its
//! lifecycle weakly, the stand-in stop signal, the coarse clock): many threads beginning,
//! moving, nesting, panicking and ending sessions while others stop, force, snapshot and wait;
//! every report must add up, nothing hang, no child be refused while its parent lives.
//! Three findings of that review are regression tests here: `stop` returning before
//! `is_stopped` (a concurrent stop), a stand-in signal with the wrong cause, and a snapshot
//! whose panicked count ran ahead of its admitted one.

mod support;

use std::alloc::System;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex, mpsc};
use std::task::{Context, Poll};
use std::thread;
use std::time::{Duration, Instant};

use async_lifecycle::{
    Lifecycle, ManualClock, Refused, Report, Session, Snapshot, State, StopCause,
};
use futures::executor::block_on;

// ---- helpers ----

/// Heap accounting for the leak probe (stats_alloc: no unsafe here).
#[global_allocator]
static GLOBAL: &stats_alloc::StatsAlloc<System> = &stats_alloc::INSTRUMENTED_SYSTEM;

/// Net heap bytes allocated so far in this process (stats_alloc folds a reallocation's
/// growth or shrink into these two).
fn net_heap() -> isize {
    let stats = GLOBAL.stats();
    stats.bytes_allocated as isize - stats.bytes_deallocated as isize
}

/// `lc.wait()` on another thread, failing (not hanging) after `secs`.
fn wait_bounded(lc: &Lifecycle, secs: u64) -> Report {
    let wait = lc.wait();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(block_on(wait));
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .expect("wait() did not return: the drain was never reported (hang)")
}

fn poll_once<F: std::future::Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    std::pin::Pin::new(f).poll(&mut cx)
}

/// Runs the test `name` again, alone, in a child process of this test binary, where
/// `is_child(name)` holds (for probes that need the process to themselves: the coarse clock's
/// idleness, heap accounting).
fn run_isolated(name: &str) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("SESSIONS_STRESS_CHILD", name)
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "isolated {name} failed:\n{text}");
    assert!(
        text.contains("1 passed"),
        "isolated {name} did not run:\n{text}"
    );
    println!("{text}");
}

fn is_child(name: &str) -> bool {
    std::env::var("SESSIONS_STRESS_CHILD").as_deref() == Ok(name)
}

/// The invariant every report keeps.
fn check_report_adds_up(report: &Report) {
    let s = report.sessions();
    assert!(
        s.abandoned_count() + s.panicked() <= s.admitted(),
        "more abandoned + panicked than admitted: {s:?}"
    );
    assert_eq!(
        s.completed() + s.panicked() + s.abandoned_count(),
        s.admitted(),
        "{s:?}"
    );
    // No session is both abandoned and panicked.
    let panicked: HashSet<&str> = s
        .panicked_sessions()
        .iter()
        .filter_map(|p| p.name())
        .collect();
    for a in s.abandoned() {
        assert!(
            !panicked.contains(a.name()),
            "{} both abandoned and panicked",
            a.name()
        );
    }
    // Oldest first.
    for w in s.abandoned().windows(2) {
        assert!(
            w[0].age() >= w[1].age(),
            "abandoned not oldest first: {s:?}"
        );
    }
}

fn check_snapshot(snap: &Snapshot, max_age: Duration) {
    assert!(
        snap.live_sessions() <= snap.admitted_sessions(),
        "live {} > admitted {}",
        snap.live_sessions(),
        snap.admitted_sessions()
    );
    for w in snap.oldest_sessions().windows(2) {
        assert!(
            w[0].age() >= w[1].age(),
            "oldest not sorted: {:?}",
            snap.oldest_sessions()
        );
    }
    for s in snap.oldest_sessions() {
        assert!(
            s.age() <= max_age,
            "age {:?} > {max_age:?} for {}",
            s.age(),
            s.name()
        );
        if s.name().starts_with("child:") && !s.name().starts_with("child:late") {
            // "child:<parent>:<n>": the parent must be named as that.
            let parent = s.name().split(':').nth(1).unwrap();
            assert_eq!(s.parent(), Some(parent), "{s:?}");
        }
        if s.name().starts_with("orphan:") {
            assert_eq!(s.parent(), None, "{s:?}");
        }
    }
    assert!(snap.oldest_sessions().len() <= Snapshot::OLDEST);
}

// ---- 1. stress: many threads, named/unnamed/children, stop/force/snapshot/wait ----

#[derive(Default)]
struct Tally {
    admitted: AtomicU64,
    refused: AtomicU64,
    panicked: AtomicU64,
    child_refused_while_parent_lived_before_end: AtomicU64,
}

fn churn_round(round: u64, threads: usize, force: bool) {
    support::quiet_probe_panics();
    let start = Instant::now();
    let lc = Lifecycle::builder().grace(Duration::from_secs(60)).build();
    let tally = Arc::new(Tally::default());
    let go = Arc::new(Barrier::new(threads + 1));
    let ended = Arc::new(AtomicBool::new(false));
    // Sessions handed from one thread to the next (moved across threads, ended elsewhere).
    let (tx, rx) = mpsc::channel::<Session>();
    let rx = Arc::new(Mutex::new(rx));
    let mut handles = Vec::new();
    for t in 0..threads {
        let weak = lc.downgrade();
        let tally = tally.clone();
        let go = go.clone();
        let tx = tx.clone();
        let rx = rx.clone();
        let ended = ended.clone();
        handles.push(thread::spawn(move || {
            go.wait();
            let mut held: Vec<Session> = Vec::new();
            let mut i = 0u64;
            loop {
                i += 1;
                let name = format!("s{t}-{i}");
                let begun = match i % 4 {
                    0 => weak.unnamed_session(),
                    _ => weak.session(name.clone()),
                };
                match begun {
                    Ok(s) => {
                        tally.admitted.fetch_add(1, Ordering::Relaxed);
                        // children, named and unnamed, also while draining
                        for k in 0..2 {
                            let child = if k == 0 {
                                if i % 4 == 0 {
                                    // an unnamed parent: no parent name
                                    s.child(format!("orphan:{name}:{k}"))
                                } else {
                                    s.child(format!("child:{name}:{k}"))
                                }
                            } else {
                                s.unnamed_child()
                            };
                            match child {
                                Ok(c) => {
                                    tally.admitted.fetch_add(1, Ordering::Relaxed);
                                    if i % 3 == 0 { held.push(c) } else { drop(c) }
                                }
                                Err(e) => {
                                    // refused only once ended
                                    if !matches!(e, Refused::Ended) {
                                        tally
                                            .child_refused_while_parent_lived_before_end
                                            .fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                            }
                        }
                        match i % 7 {
                            0 => {
                                let _ = tx.send(s);
                            }
                            1 => {
                                tally.panicked.fetch_add(1, Ordering::Relaxed);
                                let r = block_on(s.run(async { panic!("review-probe boom") }));
                                assert!(r.is_err());
                            }
                            2 => held.push(s),
                            _ => drop(s),
                        }
                    }
                    Err(_) => {
                        tally.refused.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
                if held.len() > 8 {
                    held.drain(..4);
                }
                if let Ok(s) = rx.lock().unwrap().try_recv() {
                    drop(s);
                }
            }
            // Draining (or ended): children of what we hold still come in until the end.
            for s in &held {
                match s.child(format!("child:late:{t}")) {
                    Ok(c) => {
                        tally.admitted.fetch_add(1, Ordering::Relaxed);
                        drop(c);
                    }
                    Err(Refused::Ended) => {}
                    Err(_) => {
                        tally
                            .child_refused_while_parent_lived_before_end
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            if !force {
                // Without a force the lifecycle cannot have ended while we hold sessions.
                assert!(!ended.load(Ordering::SeqCst) || held.is_empty());
            }
            drop(held);
            while let Ok(s) = rx.lock().unwrap().try_recv() {
                drop(s);
            }
        }));
    }
    drop(tx);
    go.wait();
    // The controller: snapshots while churning, then stop (and maybe force), then wait.
    for _ in 0..50 {
        let snap = lc.snapshot();
        check_snapshot(&snap, start.elapsed() + Duration::from_secs(1));
        thread::yield_now();
    }
    lc.stop(format!("round {round}"));
    for _ in 0..20 {
        check_snapshot(&lc.snapshot(), start.elapsed() + Duration::from_secs(1));
    }
    if force {
        lc.force();
    }
    let report = wait_bounded(&lc, 60);
    ended.store(true, Ordering::SeqCst);
    for h in handles {
        h.join().unwrap();
    }
    // Whatever is still in the channel ends now.
    drop(rx);
    check_report_adds_up(&report);
    let s = report.sessions();
    assert_eq!(
        tally
            .child_refused_while_parent_lived_before_end
            .load(Ordering::Relaxed),
        0,
        "a child was refused with Draining"
    );
    let admitted = tally.admitted.load(Ordering::Relaxed);
    assert_eq!(
        s.admitted(),
        admitted,
        "report's admitted != sessions the callers got"
    );
    assert!(s.refused() <= tally.refused.load(Ordering::Relaxed));
    if !force {
        assert_eq!(report.state(), State::Terminated);
        assert_eq!(s.abandoned_count(), 0);
        assert_eq!(s.panicked(), tally.panicked.load(Ordering::Relaxed));
    } else {
        assert!(s.panicked() <= tally.panicked.load(Ordering::Relaxed));
        for a in s.abandoned() {
            assert!(a.age() <= start.elapsed() + Duration::from_secs(1));
            if a.name().starts_with("child:") && !a.name().starts_with("child:late") {
                let parent = a.name().split(':').nth(1).unwrap();
                assert_eq!(a.parent(), Some(parent));
            }
            if a.name().starts_with("orphan:") {
                assert_eq!(a.parent(), None);
            }
        }
    }
    // The snapshot after the end: every live session still counted, nothing negative.
    let snap = lc.snapshot();
    assert!(snap.live_sessions() <= snap.admitted_sessions());
    assert_eq!(
        snap.live_sessions(),
        0,
        "everything ended after the threads joined"
    );
}

#[test]
fn ok_stress_churn_stop_then_wait() {
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut round = 0;
    while Instant::now() < deadline && round < 60 {
        churn_round(round, 8 + (round as usize % 3) * 8, false);
        round += 1;
    }
}

#[test]
fn ok_stress_churn_stop_force_wait() {
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut round = 0;
    while Instant::now() < deadline && round < 60 {
        churn_round(round, 8 + (round as usize % 4) * 8, true);
        round += 1;
    }
}

/// Stop races the very first admissions on many shards; the drain must be reported.
#[test]
fn ok_stop_races_first_admissions_no_hang() {
    for _ in 0..300 {
        let lc = Lifecycle::new();
        let go = Arc::new(Barrier::new(9));
        let admitted = Arc::new(AtomicU64::new(0));
        let hs: Vec<_> = (0..8)
            .map(|t| {
                let weak = lc.downgrade();
                let go = go.clone();
                let admitted = admitted.clone();
                thread::spawn(move || {
                    go.wait();
                    for i in 0..20 {
                        let s = if (t + i) % 2 == 0 {
                            weak.session("x")
                        } else {
                            weak.unnamed_session()
                        };
                        if let Ok(s) = s {
                            admitted.fetch_add(1, Ordering::Relaxed);
                            if let Ok(c) = s.unnamed_child() {
                                admitted.fetch_add(1, Ordering::Relaxed);
                                drop(s); // the child outlives its parent
                                drop(c);
                            }
                        }
                    }
                })
            })
            .collect();
        go.wait();
        lc.stop("race");
        let report = wait_bounded(&lc, 30);
        for h in hs {
            h.join().unwrap();
        }
        check_report_adds_up(&report);
        assert_eq!(report.state(), State::Terminated);
        assert_eq!(
            report.sessions().admitted(),
            admitted.load(Ordering::Relaxed)
        );
    }
}

// ---- 2. moved sessions, children on other threads/shards ----

#[test]
fn ok_moved_sessions_and_children_from_other_threads() {
    let lc = Lifecycle::new();
    // Parent begun on thread A.
    let weak = lc.downgrade();
    let parent = thread::spawn(move || weak.session("conn").unwrap())
        .join()
        .unwrap();
    let unnamed_parent = {
        let weak = lc.downgrade();
        thread::spawn(move || weak.unnamed_session().unwrap())
            .join()
            .unwrap()
    };
    lc.stop("deploy");
    assert!(parent.is_stopped() && unnamed_parent.is_stopped());
    // Children on a third thread, while draining.
    let (parent, unnamed_parent, child, uchild) = thread::spawn(move || {
        let c = parent.child("req").expect("child admitted while draining");
        let u = unnamed_parent
            .child("orphan-named")
            .expect("child of unnamed admitted");
        (parent, unnamed_parent, c, u)
    })
    .join()
    .unwrap();
    assert_eq!(child.name().as_deref(), Some("req"));
    assert_eq!(unnamed_parent.name(), None);
    let snap = lc.snapshot();
    let req = snap
        .oldest_sessions()
        .iter()
        .find(|s| s.name() == "req")
        .unwrap();
    assert_eq!(req.parent(), Some("conn"));
    let orphan = snap
        .oldest_sessions()
        .iter()
        .find(|s| s.name() == "orphan-named")
        .unwrap();
    assert_eq!(orphan.parent(), None);
    // Parent ended on thread B, children outlive it on the main thread.
    thread::spawn(move || drop((parent, unnamed_parent)))
        .join()
        .unwrap();
    assert_eq!(lc.state(), State::Draining);
    let grandchild = child
        .child("sub")
        .expect("child of a child of an ended parent");
    drop(child);
    drop(uchild);
    assert_eq!(lc.state(), State::Draining);
    drop(grandchild);
    let report = wait_bounded(&lc, 10);
    assert_eq!(report.state(), State::Terminated);
    assert_eq!(report.sessions().admitted(), 5);
    assert_eq!(report.sessions().completed(), 5);
}

#[test]
fn ok_child_after_final_census_is_refused_ended_and_parent_named() {
    let lc = Lifecycle::new();
    let weak = lc.downgrade();
    let conn = thread::spawn(move || weak.session("conn").unwrap())
        .join()
        .unwrap();
    let req = conn.child("req").unwrap();
    lc.stop("deploy");
    lc.force();
    let report = wait_bounded(&lc, 10);
    assert_eq!(report.state(), State::Abandoned);
    let ab = report.sessions().abandoned();
    assert_eq!(ab.len(), 2);
    assert!(
        ab.iter()
            .any(|s| s.name() == "req" && s.parent() == Some("conn"))
    );
    assert!(matches!(conn.child("late"), Err(Refused::Ended)));
    assert!(matches!(conn.unnamed_child(), Err(Refused::Ended)));
    assert!(matches!(req.child("late"), Err(Refused::Ended)));
    // Ending the abandoned ones later: no panic, no second report.
    drop(conn);
    drop(req);
    assert_eq!(lc.snapshot().live_sessions(), 0);
    check_report_adds_up(&report);
}

#[test]
fn ok_child_after_lifecycle_dropped() {
    let lc = Lifecycle::new();
    let conn = lc.session("conn").unwrap();
    let u = lc.unnamed_session().unwrap();
    drop(lc);
    assert!(conn.is_stopped());
    let c = conn
        .child("req")
        .expect("admitted: the lifecycle drains, nobody enforces");
    let c2 = thread::spawn({
        let c = c.child("deeper").unwrap();
        move || c
    })
    .join()
    .unwrap();
    assert_eq!(c2.name().as_deref(), Some("deeper"));
    drop(conn);
    drop(u);
    drop(c);
    drop(c2);
}

// ---- 3. every handle dropped while sessions live ----

#[test]
fn ok_all_handles_dropped_sessions_behave() {
    let lc = Lifecycle::new();
    let weak = lc.downgrade();
    let named = lc.session("job").unwrap();
    let unnamed = lc.unnamed_session().unwrap();
    assert!(!named.is_stopped());
    drop(lc);
    assert!(weak.is_stopped());
    assert!(named.is_stopped() && unnamed.is_stopped());
    drop(weak);
    // Nothing holds the lifecycle now.
    assert!(named.is_stopped());
    assert_eq!(named.name().as_deref(), Some("job"));
    let mut sig = named.stop_signal();
    assert!(sig.is_stopped());
    assert!(poll_once(&mut sig).is_ready());
    let mut sig2 = unnamed.stop_signal();
    assert!(poll_once(&mut sig2).is_ready());
    let child = named.child("step").unwrap();
    let sent = thread::spawn(move || {
        drop(unnamed);
        named
    })
    .join()
    .unwrap();
    drop(child);
    drop(sent);
    drop(sig);
    drop(sig2);
}

/// Once every handle is gone, a session's stop signal is a stand-in's — with the lifecycle's
/// real cause (it was the stand-in's own `HandlesDropped` before the review's fix).
#[test]
fn stop_signal_after_handles_gone_carries_the_cause() {
    let lc = Lifecycle::new();
    let session = lc.session("job").unwrap();
    lc.stop("deploy");
    // While a handle lives: the real cause.
    assert_eq!(
        session.stop_signal().cause(),
        Some(&StopCause::Requested("deploy".into()))
    );
    drop(lc);
    // Every handle gone: the session's signal is a stand-in's.
    let sig = session.stop_signal();
    assert_eq!(
        sig.cause(),
        Some(&StopCause::Requested("deploy".into())),
        "the session's stop signal names a cause the lifecycle never had"
    );
}

/// A stop signal taken from a session before the handles went: keeps the lifecycle alive
/// (no weak), so it still works — and a drain reported through it still ends the lifecycle.
#[test]
fn ok_signal_taken_before_handles_gone_keeps_reporting() {
    let lc = Lifecycle::new();
    let weak_watch = lc.downgrade();
    let s = lc.session("job").unwrap();
    let sig = s.stop_signal();
    drop(lc);
    assert!(sig.is_stopped());
    assert_eq!(weak_watch.state(), State::Draining);
    drop(s);
    // The drain reached the lifecycle through the session's Weak.
    assert_eq!(weak_watch.state(), State::Terminated);
}

#[test]
fn ok_wait_dropped_and_recreated() {
    let lc = Lifecycle::new();
    let s = lc.session("x").unwrap();
    {
        let mut w = lc.wait();
        assert!(poll_once(&mut w).is_pending());
    }
    lc.stop("x");
    let mut w = lc.wait();
    assert!(poll_once(&mut w).is_pending());
    drop(w);
    let t = thread::spawn(move || drop(s));
    let report = wait_bounded(&lc, 10);
    t.join().unwrap();
    assert_eq!(report.state(), State::Terminated);
    assert_eq!(report.sessions().completed(), 1);
}

// ---- 4. panicking sessions on several shards concurrently with the final census ----

#[test]
fn ok_panics_on_many_shards_during_drain() {
    support::quiet_probe_panics();
    for round in 0..40 {
        let lc = Lifecycle::new();
        let n = 12;
        let go = Arc::new(Barrier::new(n + 1));
        let hs: Vec<_> = (0..n)
            .map(|t| {
                let weak = lc.downgrade();
                let go = go.clone();
                thread::spawn(move || {
                    let s = weak.session(format!("p{t}")).unwrap();
                    let c = s.child(format!("child:p{t}:0")).unwrap();
                    go.wait();
                    if t % 2 == 0 {
                        let r = block_on(c.run(async { panic!("review-probe run") }));
                        assert_eq!(r.unwrap_err().message(), "review-probe run");
                        drop(s);
                    } else {
                        let _keep = (s, c);
                        panic!("review-probe unwind");
                    }
                })
            })
            .collect();
        go.wait();
        lc.stop(format!("r{round}"));
        let report = wait_bounded(&lc, 30);
        let mut panicked_threads = 0;
        for h in hs {
            if h.join().is_err() {
                panicked_threads += 1;
            }
        }
        assert_eq!(panicked_threads, n / 2);
        check_report_adds_up(&report);
        let s = report.sessions();
        assert_eq!(s.admitted(), 2 * n as u64);
        // t even: the child panicked (1); t odd: parent and child unwound (2).
        assert_eq!(s.panicked(), (n / 2 + 2 * (n / 2)) as u64, "{s:?}");
        let names: Vec<_> = s
            .panicked_sessions()
            .iter()
            .map(|p| p.name().unwrap())
            .collect();
        let unique: HashSet<_> = names.iter().collect();
        assert_eq!(
            unique.len(),
            names.len(),
            "a panicked session counted twice: {names:?}"
        );
        assert_eq!(report.state(), State::Terminated);
    }
}

#[test]
fn ok_panics_racing_force() {
    support::quiet_probe_panics();
    for round in 0..40 {
        let lc = Lifecycle::new();
        let n = 8;
        let go = Arc::new(Barrier::new(n + 1));
        let hs: Vec<_> = (0..n)
            .map(|t| {
                let weak = lc.downgrade();
                let go = go.clone();
                thread::spawn(move || {
                    let s = weak.session(format!("p{t}")).unwrap();
                    let u = weak.unnamed_session().unwrap();
                    go.wait();
                    let _keep = (s, u);
                    panic!("review-probe unwind");
                })
            })
            .collect();
        go.wait();
        lc.stop(format!("r{round}"));
        lc.force();
        let report = wait_bounded(&lc, 30);
        for h in hs {
            let _ = h.join();
        }
        check_report_adds_up(&report);
        let s = report.sessions();
        assert_eq!(s.admitted(), 2 * n as u64);
        let named_accounted = s.abandoned().len()
            + s.panicked_sessions()
                .iter()
                .filter(|p| p.name().is_some())
                .count();
        assert_eq!(
            named_accounted, n,
            "each named session abandoned xor panicked: {s:?}"
        );
        assert_eq!(
            s.panicked() + s.abandoned_count(),
            2 * n as u64,
            "every session panicked or was abandoned (none completed): {s:?}"
        );
    }
}

// ---- 5. snapshot during churn, with panics ----

/// live + panicked never exceeds admitted in one snapshot (completed would be negative). It
/// did when the snapshot read each shard's gate under that shard's lock and a global panicked
/// count after every shard: a session that panicked on an already-read shard was counted
/// live and panicked at once. Each shard now counts its own panics under its lock.
#[test]
fn snapshot_counts_add_up_while_sessions_panic() {
    support::quiet_probe_panics();
    let lc = Lifecycle::new();
    let stop = Arc::new(AtomicBool::new(false));
    let hs: Vec<_> = (0..3)
        .map(|t| {
            let weak = lc.downgrade();
            let stop = stop.clone();
            thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let s = weak.session(format!("q{t}-{i}")).unwrap();
                    let _ = block_on(s.run(async { panic!("review-probe snap") }));
                }
            })
        })
        .collect();
    let start = Instant::now();
    let mut bad = None;
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(4) {
        let snap = lc.snapshot();
        n += 1;
        check_snapshot(&snap, start.elapsed() + Duration::from_secs(1));
        if snap.live_sessions() + snap.panicked_sessions() > snap.admitted_sessions() {
            bad = Some(format!(
                "live {} + panicked {} > admitted {} (snapshot #{n})",
                snap.live_sessions(),
                snap.panicked_sessions(),
                snap.admitted_sessions()
            ));
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for h in hs {
        h.join().unwrap();
    }
    if let Some(bad) = bad {
        panic!("{bad}");
    }
}

// ---- cross-shard oldest ordering under a manual clock ----

#[test]
fn ok_snapshot_oldest_merges_shards_by_age() {
    let clock = ManualClock::new();
    let lc = Lifecycle::builder().clock(clock.clone()).build();
    // 40 sessions, begun at distinct instants on 8 threads (so several shards), in an
    // interleaved order.
    let mut held = Vec::new();
    let weak = lc.downgrade();
    let workers: Vec<(mpsc::Sender<String>, mpsc::Receiver<Session>)> = (0..8)
        .map(|_| {
            let (tx_name, rx_name) = mpsc::channel::<String>();
            let (tx_s, rx_s) = mpsc::channel::<Session>();
            let weak = weak.clone();
            thread::spawn(move || {
                for name in rx_name {
                    tx_s.send(weak.session(name).unwrap()).unwrap();
                }
            });
            (tx_name, rx_s)
        })
        .collect();
    for i in 0..40 {
        let (tx, rx) = &workers[(i * 5) % 8];
        tx.send(format!("n{i:02}")).unwrap();
        held.push(rx.recv().unwrap());
        clock.advance(Duration::from_millis(10));
    }
    let snap = lc.snapshot();
    let names: Vec<_> = snap
        .oldest_sessions()
        .iter()
        .map(|s| s.name().to_string())
        .collect();
    let expected: Vec<_> = (0..Snapshot::OLDEST).map(|i| format!("n{i:02}")).collect();
    assert_eq!(names, expected);
    assert_eq!(snap.oldest_sessions()[0].age(), Duration::from_millis(400));
    assert_eq!(snap.live_sessions(), 40);
    drop(workers);
    lc.stop("x");
    lc.force();
    let report = wait_bounded(&lc, 10);
    assert_eq!(report.sessions().abandoned().len(), 40);
    assert_eq!(report.sessions().abandoned()[0].name(), "n00");
    assert_eq!(report.sessions().abandoned()[39].name(), "n39");
    check_report_adds_up(&report);
}

// ---- 6. coarse clock ----

#[test]
fn ok_coarse_ages_after_idle_park() {
    if is_child("ok_coarse_ages_after_idle_park") {
        coarse_ages_after_idle_park();
    } else {
        run_isolated("ok_coarse_ages_after_idle_park");
    }
}

fn coarse_ages_after_idle_park() {
    let lc = Lifecycle::new();
    // Start the ticker, then idle so it parks (not a synchronization: just idleness).
    drop(lc.session("warm").unwrap());
    for round in 0..5 {
        thread::sleep(Duration::from_millis(250 + 50 * round));
        let before = Instant::now();
        let s = lc.session(format!("after-idle-{round}")).unwrap();
        thread::sleep(Duration::from_millis(50));
        let snap = lc.snapshot();
        let after = before.elapsed();
        let age = snap
            .oldest_sessions()
            .iter()
            .find(|x| x.name() == format!("after-idle-{round}"))
            .unwrap()
            .age();
        assert!(
            age >= Duration::from_millis(50),
            "age {age:?} < the 50 ms it really lived"
        );
        assert!(
            age <= after + Duration::from_millis(20),
            "age {age:?} > {after:?} since just before it began: a stale coarse reading"
        );
        drop(s);
    }
    // Busy: ages close to real while the ticker runs.
    let begun = Instant::now();
    let s = lc.session("busy").unwrap();
    for _ in 0..200_000 {
        let _ = lc.unnamed_session(); // coarse not read by unnamed: read it via named
        drop(lc.session("spin").unwrap());
    }
    let real = begun.elapsed();
    let snap = lc.snapshot();
    let age = snap.oldest_sessions()[0].age();
    assert!(
        age <= real + Duration::from_millis(50),
        "{age:?} vs {real:?}"
    );
    assert!(
        age + Duration::from_millis(50) >= real,
        "{age:?} vs {real:?}"
    );
    drop(s);
    lc.stop("x");
    let report = wait_bounded(&lc, 10);
    check_report_adds_up(&report);
}

/// Ages in a forced report under the system clock: never more than real time, never wildly
/// less.
#[test]
fn ok_coarse_ages_in_forced_report() {
    let lc = Lifecycle::new();
    let t0 = Instant::now();
    let hs: Vec<_> = (0..6)
        .map(|t| {
            let weak = lc.downgrade();
            thread::spawn(move || {
                let s = weak.session(format!("a{t}")).unwrap();
                let c = s.child(format!("child:a{t}:0")).unwrap();
                (s, c)
            })
        })
        .collect();
    let held: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    let begun_by = t0.elapsed();
    thread::sleep(Duration::from_millis(30));
    lc.force();
    let report = wait_bounded(&lc, 10);
    let real = t0.elapsed();
    for a in report.sessions().abandoned() {
        assert!(
            a.age() <= real + Duration::from_millis(5),
            "{a:?} vs {real:?}"
        );
        assert!(
            a.age() + begun_by + Duration::from_secs(1) >= Duration::from_millis(30),
            "{a:?}"
        );
    }
    assert_eq!(report.sessions().abandoned().len(), 12);
    drop(held);
}

// ---- 7. nested lifecycles ----

#[test]
fn ok_nested_lifecycle_sessions_on_threads() {
    for round in 0..20 {
        let lc = Lifecycle::new();
        let inner = lc
            .nest(
                "inner",
                async_lifecycle::ServiceOptions::new(),
                Lifecycle::builder(),
            )
            .unwrap();
        let go = Arc::new(Barrier::new(7));
        let hs: Vec<_> = (0..6)
            .map(|t| {
                let weak = inner.downgrade();
                let go = go.clone();
                thread::spawn(move || {
                    let s = weak.session(format!("in{t}")).unwrap();
                    let u = weak.unnamed_session().unwrap();
                    go.wait();
                    // Until the nested lifecycle's stop: then a child, then end.
                    block_on(s.stop_signal());
                    assert!(s.is_stopped());
                    let c = s
                        .child(format!("child:in{t}:0"))
                        .expect("child while draining");
                    drop((c, u, s));
                })
            })
            .collect();
        go.wait();
        drop(inner);
        lc.stop(format!("r{round}"));
        let report = wait_bounded(&lc, 30);
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(report.state(), State::Terminated, "{report}");
        let nested = report.service("inner").unwrap().nested().unwrap();
        assert_eq!(nested.state(), State::Terminated);
        assert_eq!(nested.sessions().admitted(), 18);
        assert_eq!(nested.sessions().completed(), 18);
        check_report_adds_up(nested);
    }
}

#[test]
fn ok_nested_forced_names_inner_stragglers() {
    let lc = Lifecycle::new();
    let inner = lc
        .nest(
            "inner",
            async_lifecycle::ServiceOptions::new(),
            Lifecycle::builder(),
        )
        .unwrap();
    let weak = inner.downgrade();
    let held = thread::spawn(move || {
        let s = weak.session("in-conn").unwrap();
        let c = s.child("in-req").unwrap();
        (s, c)
    })
    .join()
    .unwrap();
    lc.stop("x");
    lc.force();
    let report = wait_bounded(&lc, 10);
    let nested = report.service("inner").unwrap().nested().unwrap();
    let ab = nested.sessions().abandoned();
    assert!(
        ab.iter()
            .any(|s| s.name() == "in-req" && s.parent() == Some("in-conn")),
        "{report}"
    );
    assert!(matches!(held.0.child("late"), Err(Refused::Ended)));
    drop(held);
}

// ---- 8. more threads than shards ----

#[test]
fn ok_hundred_threads_one_session_each() {
    for _ in 0..5 {
        let lc = Lifecycle::new();
        let go = Arc::new(Barrier::new(101));
        let release = Arc::new(Barrier::new(101));
        let hs: Vec<_> = (0..100)
            .map(|t| {
                let weak = lc.downgrade();
                let (go, release) = (go.clone(), release.clone());
                thread::spawn(move || {
                    let s = if t % 2 == 0 {
                        weak.session(format!("t{t}")).unwrap()
                    } else {
                        weak.unnamed_session().unwrap()
                    };
                    go.wait();
                    release.wait();
                    drop(s);
                })
            })
            .collect();
        go.wait();
        let snap = lc.snapshot();
        assert_eq!(snap.live_sessions(), 100);
        assert_eq!(snap.admitted_sessions(), 100);
        lc.stop("x");
        release.wait();
        let report = wait_bounded(&lc, 30);
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(report.state(), State::Terminated);
        assert_eq!(report.sessions().admitted(), 100);
        assert_eq!(report.sessions().completed(), 100);
    }
}

/// A session begun, and one ended, inside a thread-local's destructor at thread exit.
#[test]
fn ok_session_in_thread_local_destructor() {
    struct BeginOnDrop(Option<async_lifecycle::WeakLifecycle>, Option<Session>);
    impl Drop for BeginOnDrop {
        fn drop(&mut self) {
            if let Some(weak) = self.0.take() {
                let s = weak.session("from-tls-dtor").expect("admitted");
                drop(s);
            }
            drop(self.1.take());
        }
    }
    thread_local! {
        static SLOT: std::cell::RefCell<Option<BeginOnDrop>> = const { std::cell::RefCell::new(None) };
    }
    let lc = Lifecycle::new();
    for _ in 0..4 {
        let weak = lc.downgrade();
        thread::spawn(move || {
            // The thread's number is taken here, in the destructor, for the first time.
            let held = weak.session("held").unwrap();
            SLOT.with(|s| *s.borrow_mut() = Some(BeginOnDrop(Some(weak), Some(held))));
        })
        .join()
        .unwrap();
        let weak = lc.downgrade();
        thread::spawn(move || {
            SLOT.with(|s| *s.borrow_mut() = Some(BeginOnDrop(Some(weak), None)));
        })
        .join()
        .unwrap();
    }
    lc.stop("x");
    let report = wait_bounded(&lc, 10);
    assert_eq!(report.sessions().admitted(), 12);
    assert_eq!(report.sessions().completed(), 12);
}

// ---- 9. memory ----

#[test]
fn ok_no_leak_lifecycles_with_sessions() {
    if is_child("ok_no_leak_lifecycles_with_sessions") {
        no_leak_lifecycles_with_sessions();
    } else {
        run_isolated("ok_no_leak_lifecycles_with_sessions");
    }
}

fn statm_rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4
}

fn no_leak_lifecycles_with_sessions() {
    let one = |i: u32| {
        let lc = Lifecycle::new();
        let named = lc.session("n").unwrap();
        let child = named.child(format!("c{i}")).unwrap();
        let unnamed = lc.unnamed_session().unwrap();
        match i % 4 {
            0 => {
                // sessions outlive every handle
                drop(lc);
                let sig = child.stop_signal(); // the stand-in
                drop(sig);
                drop((named, child, unnamed));
            }
            1 => {
                drop((named, child, unnamed));
                lc.stop("x");
                let _ = block_on(lc.wait());
            }
            2 => {
                lc.force();
                drop((named, child, unnamed));
            }
            _ => {
                let sig = named.stop_signal();
                drop(lc);
                drop((named, child, unnamed));
                drop(sig);
            }
        }
    };
    for i in 0..10_000 {
        one(i);
    }
    let heap0 = net_heap();
    let rss0 = statm_rss_kib();
    for i in 0..100_000 {
        one(i);
    }
    let heap1 = net_heap();
    let rss1 = statm_rss_kib();
    println!("heap {heap0} -> {heap1} bytes; rss {rss0} -> {rss1} KiB");
    assert!(
        heap1 - heap0 < 256 * 1024,
        "heap grew by {} bytes",
        heap1 - heap0
    );
    assert!(rss1 < rss0 + 32 * 1024, "rss grew {rss0} -> {rss1} KiB");
}

// ---- 10. is_stopped ordering ----

#[test]
fn ok_is_stopped_same_thread_after_every_kind_of_stop() {
    // stop
    let lc = Lifecycle::new();
    let s = lc.session("a").unwrap();
    let u = lc.unnamed_session().unwrap();
    assert!(!s.is_stopped());
    lc.stop("x");
    assert!(s.is_stopped() && u.is_stopped());
    drop((s, u));
    // weak stop
    let lc = Lifecycle::new();
    let s = lc.session("a").unwrap();
    lc.downgrade().stop("x");
    assert!(s.is_stopped());
    drop(s);
    // force
    let lc = Lifecycle::new();
    let s = lc.session("a").unwrap();
    lc.force();
    assert!(s.is_stopped());
    drop(s);
    // handles dropped
    let lc = Lifecycle::new();
    let s = lc.session("a").unwrap();
    drop(lc);
    assert!(s.is_stopped());
    // pre-drain: not stopped yet, as the lifecycle
    let clock = ManualClock::new();
    let lc = Lifecycle::builder()
        .clock(clock.clone())
        .pre_drain(Duration::from_secs(1))
        .build();
    let s = lc.session("a").unwrap();
    lc.stop("x");
    assert_eq!(s.is_stopped(), lc.is_stopped());
    drop(s);
}

/// Another thread: once it sees `lc.is_stopped()` (or the stop signal), the session says so.
#[test]
fn ok_is_stopped_cross_thread_implication() {
    for _ in 0..2_000 {
        let lc = Lifecycle::new();
        let s = Arc::new(lc.session("a").unwrap());
        let weak = lc.downgrade();
        let s2 = s.clone();
        let watcher = thread::spawn(move || {
            let start = Instant::now();
            while !weak.is_stopped() {
                assert!(start.elapsed() < Duration::from_secs(10));
                std::hint::spin_loop();
            }
            assert!(s2.is_stopped(), "lifecycle stopped, session not");
        });
        lc.stop("x");
        watcher.join().unwrap();
        drop(s);
    }
}

/// After `stop()` returns on this thread, `session.is_stopped()` must be true (the docs'
/// example). It was not, now and then, when another thread's `stop` had begun the drain:
/// this `stop` found the machine draining and returned while the other thread had released
/// the lock but not yet set the flag (then in `carry_out`). The flag is now set under the
/// lock, at the drain.
#[test]
fn is_stopped_when_a_concurrent_stop_returns() {
    let start = Instant::now();
    let mut tries = 0u64;
    while start.elapsed() < Duration::from_secs(20) {
        tries += 1;
        let lc = Lifecycle::new();
        let s = Arc::new(lc.session("a").unwrap());
        let go = Arc::new(Barrier::new(2));
        let hs: Vec<_> = (0..2)
            .map(|_| {
                let weak = lc.downgrade();
                let (s, go) = (s.clone(), go.clone());
                thread::spawn(move || {
                    go.wait();
                    weak.stop("x");
                    let session = s.is_stopped();
                    let state = weak.state();
                    (session, state)
                })
            })
            .collect();
        for h in hs {
            let (session, state) = h.join().unwrap();
            assert!(
                session,
                "try {tries}: stop() returned, state {state:?}, but session.is_stopped() is false"
            );
        }
    }
}

// ---- own probes: user code around the session path ----

/// A hook that ends the last session on `StopRequested`, begins sessions and children and
/// takes snapshots from inside events: no deadlock, the drain is seen, refusals say Ended
/// after the end.
#[test]
fn ok_event_hook_reenters_session_path() {
    let slot: Arc<Mutex<Option<Session>>> = Arc::new(Mutex::new(None));
    let weak_slot: Arc<Mutex<Option<async_lifecycle::WeakLifecycle>>> = Arc::new(Mutex::new(None));
    let ended_refusal: Arc<Mutex<Option<Refused>>> = Arc::new(Mutex::new(None));
    let lc = {
        let (slot, weak_slot, ended_refusal) =
            (slot.clone(), weak_slot.clone(), ended_refusal.clone());
        Lifecycle::builder()
            .on_event(move |event| {
                let weak = weak_slot.lock().unwrap().clone();
                match event {
                    async_lifecycle::Event::StopRequested { .. } => {
                        if let Some(weak) = &weak {
                            let _ = weak.snapshot();
                            assert!(weak.session("in-hook").is_err());
                        }
                        let s = slot.lock().unwrap().take();
                        if let Some(s) = s {
                            // a child while draining, then the last end, from inside the hook
                            let c = s.child("hook-child").unwrap();
                            drop(s);
                            drop(c);
                        }
                    }
                    async_lifecycle::Event::Ended { .. } => {
                        if let Some(weak) = &weak {
                            *ended_refusal.lock().unwrap() = weak.session("after").err();
                        }
                    }
                    _ => {}
                }
            })
            .build()
    };
    *weak_slot.lock().unwrap() = Some(lc.downgrade());
    let weak = lc.downgrade();
    *slot.lock().unwrap() = Some(
        thread::spawn(move || weak.session("held").unwrap())
            .join()
            .unwrap(),
    );
    lc.stop("x");
    let report = wait_bounded(&lc, 10);
    assert_eq!(report.state(), State::Terminated);
    assert_eq!(report.sessions().admitted(), 2);
    assert_eq!(*ended_refusal.lock().unwrap(), Some(Refused::Ended));
    *weak_slot.lock().unwrap() = None;
}

/// Past the deadline but before any census: a child is still admitted (the lifecycle has
/// not ended), and then named with its parent by the deadline's census.
#[test]
fn ok_child_past_deadline_before_census_then_named() {
    let clock = ManualClock::new();
    let lc = Lifecycle::builder()
        .clock(clock.clone())
        .grace(Duration::from_secs(1))
        .build();
    let conn = lc.session("conn").unwrap();
    lc.stop("x");
    clock.advance(Duration::from_secs(2));
    let req = conn.child("req").expect("not ended yet");
    let report = wait_bounded(&lc, 10);
    assert_eq!(report.state(), State::Abandoned);
    let ab = report.sessions().abandoned();
    assert_eq!(ab.len(), 2);
    assert_eq!(ab[0].name(), "conn");
    assert_eq!(ab[0].age(), Duration::from_secs(2));
    assert!(
        ab.iter()
            .any(|s| s.name() == "req" && s.parent() == Some("conn"))
    );
    assert!(matches!(conn.child("late"), Err(Refused::Ended)));
    assert!(matches!(lc.session("late"), Err(Refused::Ended)));
    drop((conn, req));
}

/// Grace zero: the stop's census is the final one; a child is refused only after it.
#[test]
fn ok_grace_zero_children() {
    let lc = Lifecycle::builder().grace(Duration::ZERO).build();
    let conn = lc.session("conn").unwrap();
    lc.stop("x");
    assert_eq!(lc.state(), State::Abandoned);
    assert!(matches!(conn.child("late"), Err(Refused::Ended)));
    let report = wait_bounded(&lc, 10);
    assert_eq!(report.sessions().abandoned().len(), 1);
    drop(conn);
    let lc = Lifecycle::builder().grace(Duration::ZERO).build();
    drop(lc.session("a").unwrap());
    lc.stop("x");
    assert_eq!(lc.state(), State::Terminated);
}

// ---- coarse clock after fork ----
