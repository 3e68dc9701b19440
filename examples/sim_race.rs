//! A queue worker with a planted shutdown race, found and replayed by the simulator
//! (`async_lifecycle::sim`).
//!
//! The worker takes a job off an async-channel queue, then begins a session for it. If the
//! stop (a SIGTERM, injected by the simulation's environment) lands between the two, the
//! session is refused and the job, already off the queue, is dropped: lost. The scenario's
//! check counts the jobs sent against those done or still queued.
//!
//! ```sh
//! cargo run --example sim_race                  # search: finds the race, exit 1
//! cargo run --example sim_race -- --replay TOKEN  # the same run again, the same trace, exit 1
//! cargo run --example sim_race -- --fixed       # 10,000 schedules of the corrected worker, exit 0
//! ```
//!
//! A failure prints what went wrong, then a `replay: TOKEN` line and a `trace: HASH` line;
//! replaying the token prints the identical trace line. Setting
//! `ASYNC_LIFECYCLE_SIM_REPLAY=TOKEN` makes the search run that one schedule too. Bad
//! arguments: one usage line on standard error, exit 64.
//!
//! The fix (`--fixed`): begin the session *before* taking a job. A worker that holds a
//! session is waited for, so a job it has taken is finished within the grace; a worker
//! refused its session has taken nothing, and the job stays queued.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_lifecycle::sim::{self, Config, Env, Fault, Token};
use async_lifecycle::{Clock, StopSignal, WeakLifecycle};
use futures::future::{Either, select};

const USAGE: &str = "usage: sim_race [--fixed] [--replay TOKEN]";
/// Exit status for bad arguments (sysexits' EX_USAGE).
const EX_USAGE: u8 = 64;
/// Jobs the producer sends in each run.
const JOBS: u32 = 3;
/// Schedules the search tries.
const SEARCH_RUNS: u64 = 1_000;
/// Schedules `--fixed` tries.
const FIXED_RUNS: u64 = 10_000;

/// What happened to the jobs of one run.
#[derive(Debug, Default)]
struct Ledger {
    sent: Vec<u32>,
    done: Vec<u32>,
}

/// The next job, or `None` once the stop fired (or the queue closed). Takes the job off
/// the queue when one is there, even if the stop has fired too.
async fn next_job(jobs: &async_channel::Receiver<u32>, stop: &mut StopSignal) -> Option<u32> {
    match select(std::pin::pin!(jobs.recv()), stop).await {
        Either::Left((Ok(job), _)) => Some(job),
        _ => None,
    }
}

/// The worker as first written: take a job, then begin its session.
async fn racy_worker(
    sessions: WeakLifecycle,
    jobs: async_channel::Receiver<u32>,
    mut stop: StopSignal,
    ledger: Arc<Mutex<Ledger>>,
    clock: Arc<dyn Clock>,
) {
    while let Some(job) = next_job(&jobs, &mut stop).await {
        // THE RACE: the job is off the queue, its session not begun yet. A stop that landed
        // since the job was sent makes `session` refuse, and the job is dropped.
        let Ok(session) = sessions.session(format!("job {job}")) else {
            break;
        };
        work(job, &ledger, &*clock).await;
        drop(session);
    }
}

/// The corrected worker: begin the session, then take a job.
async fn fixed_worker(
    sessions: WeakLifecycle,
    jobs: async_channel::Receiver<u32>,
    mut stop: StopSignal,
    ledger: Arc<Mutex<Ledger>>,
    clock: Arc<dyn Clock>,
) {
    // Refused: the stop came first, and nothing was taken.
    while let Ok(session) = sessions.session("worker: next job") {
        // Stopped while waiting: the queue keeps its jobs.
        let Some(job) = next_job(&jobs, &mut stop).await else {
            break;
        };
        // Taken inside the session: the lifecycle waits for it, stop or not.
        work(job, &ledger, &*clock).await;
        drop(session);
    }
}

/// "Work": 50 ms on the lifecycle's clock (simulated: it takes no real time).
async fn work(job: u32, ledger: &Mutex<Ledger>, clock: &dyn Clock) {
    clock
        .sleep_until(clock.now() + Duration::from_millis(50))
        .await;
    ledger.lock().unwrap().done.push(job);
}

/// One run: a worker, a producer sending `JOBS` jobs, and a SIGTERM at a moment the
/// scheduler picks. The check: every job sent was done or is still queued.
async fn scenario(env: Env, fixed: bool) -> sim::Outcome {
    let lc = env.lifecycle(|b| b.grace(Duration::from_secs(5)));
    let (tx, rx) = async_channel::unbounded::<u32>();
    // The queue outlives the producer, as a real one would: the worker sees it open.
    let _queue = tx.clone();
    let ledger = Arc::new(Mutex::new(Ledger::default()));

    let (sessions, jobs, worker_ledger) = (lc.downgrade(), rx.clone(), ledger.clone());
    let clock = lc.clock().clone();
    lc.service("worker", move |stop| async move {
        if fixed {
            fixed_worker(sessions, jobs, stop, worker_ledger, clock).await;
        } else {
            racy_worker(sessions, jobs, stop, worker_ledger, clock).await;
        }
    })?;

    let (producer, sent) = (env.clone(), ledger.clone());
    env.spawn("producer", async move {
        for job in 0..JOBS {
            tx.send(job).await.expect("the queue is open");
            sent.lock().unwrap().sent.push(job);
            producer.yield_now().await;
        }
    });

    env.fault(Fault::Signal);
    let report = lc.wait().await;

    let queued: Vec<u32> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    let Ledger { sent, done } = std::mem::take(&mut *ledger.lock().unwrap());
    let lost: Vec<u32> = sent
        .into_iter()
        .filter(|job| !done.contains(job) && !queued.contains(job))
        .collect();
    if let Some(job) = lost.first() {
        return Err(format!(
            "job {job} was taken off the queue after the stop and lost (done {done:?}, still \
             queued {queued:?}, the lifecycle {})",
            report.state()
        )
        .into());
    }
    if report.exit_code() != 0 {
        return Err(format!("the lifecycle ended uncleanly:\n{report}").into());
    }
    Ok(())
}

enum Mode {
    Search,
    Replay(Token),
}

fn main() -> ExitCode {
    let mut fixed = false;
    let mut mode = Mode::Search;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--fixed" if !fixed => fixed = true,
            "--replay" if matches!(mode, Mode::Search) => {
                match args.next().map(|token| token.parse::<Token>()) {
                    Some(Ok(token)) => mode = Mode::Replay(token),
                    _ => return usage(),
                }
            }
            _ => return usage(),
        }
    }
    let worker = if fixed { "the corrected" } else { "the racy" };
    let scenario = move |env: Env| scenario(env, fixed);
    let outcome = match mode {
        Mode::Replay(token) => {
            println!("replaying {token} with {worker} worker");
            Config::new()
                .run(&token, scenario)
                .map(|run| run.to_string())
        }
        Mode::Search => {
            let runs = if fixed { FIXED_RUNS } else { SEARCH_RUNS };
            println!("searching {runs} schedules of {worker} worker");
            Config::new()
                .runs(runs)
                .search(scenario)
                .map(|stats| stats.to_string())
        }
    };
    match outcome {
        Ok(passed) => {
            println!("{passed}");
            ExitCode::SUCCESS
        }
        Err(failure) => {
            println!("{failure}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("{USAGE}");
    ExitCode::from(EX_USAGE)
}
