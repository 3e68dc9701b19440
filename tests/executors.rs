//! One scenario, every executor: `futures::executor`, tokio (current-thread and
//! multi-thread, with and without a spawner) and smol. The lifecycle assumes none of them.
//!
//! The scenario: a worker service takes jobs from a queue, runs each as a named session and
//! acknowledges it; a session held by another task wraps up when draining starts; then the
//! program stops and must terminate cleanly with every job counted.

use std::time::Duration;

use async_lifecycle::{Lifecycle, Report, ServiceOutcome, State};
use futures::{FutureExt, StreamExt};

const JOBS: u64 = 100;

/// Runs the scenario. `spawn` runs a helper task on the executor under test.
async fn scenario(
    lc: Lifecycle,
    spawn: impl Fn(futures::future::BoxFuture<'static, ()>),
) -> Report {
    let (jobs_tx, jobs_rx) = async_channel::unbounded::<u64>();
    let (acks_tx, mut acks_rx) = futures::channel::mpsc::unbounded::<u64>();

    let sessions = lc.downgrade();
    lc.service("worker", move |stop| async move {
        let mut stop = stop.fuse();
        loop {
            futures::select! {
                () = stop => return Ok::<(), std::io::Error>(()),
                job = jobs_rx.recv().fuse() => {
                    let Ok(job) = job else { return Ok(()) };
                    let session = sessions.session(format!("job {job}")).expect("running");
                    acks_tx.unbounded_send(job).unwrap();
                    drop(session);
                }
            }
        }
    })
    .unwrap();

    // A long-lived session on another task, which wraps up once draining starts.
    let stream = lc.session("stream").unwrap();
    let (streaming_tx, streaming_rx) = futures::channel::oneshot::channel();
    spawn(
        async move {
            streaming_tx.send(()).unwrap();
            stream.stop_signal().await;
            drop(stream);
        }
        .boxed(),
    );
    streaming_rx.await.unwrap();

    let report = lc.wait();
    let driver = async {
        for job in 0..JOBS {
            jobs_tx.send(job).await.unwrap();
        }
        let mut acked = 0;
        while acked < JOBS {
            acks_rx.next().await.unwrap();
            acked += 1;
        }
        lc.stop("scenario over");
    };
    let (report, ()) = futures::join!(report, driver);
    report
}

fn check(report: &Report) {
    assert_eq!(report.state(), State::Terminated, "{report}");
    assert_eq!(
        report.service("worker").unwrap().outcome(),
        &ServiceOutcome::Stopped
    );
    assert_eq!(report.sessions().admitted(), JOBS + 1);
    assert_eq!(report.sessions().completed(), JOBS + 1);
    assert_eq!(report.exit_code(), 0);
}

fn lifecycle() -> async_lifecycle::Builder {
    // The deadline is never reached: the scenario drains well within it.
    Lifecycle::builder().grace(Duration::from_secs(60))
}

#[test]
fn futures_executor_block_on() {
    // Helper tasks run on their own threads, each under its own `block_on`.
    let report = futures::executor::block_on(scenario(lifecycle().build(), |f| {
        std::thread::spawn(move || futures::executor::block_on(f));
    }));
    check(&report);
}

#[test]
fn tokio_current_thread_driven_by_wait() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = rt.block_on(scenario(lifecycle().build(), |f| {
        tokio::spawn(f);
    }));
    check(&report);
}

#[test]
fn tokio_multi_thread_with_a_spawner() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let report = rt.block_on(async {
        let lc = lifecycle()
            .spawner(|f| {
                tokio::spawn(f);
            })
            .build();
        scenario(lc, |f| {
            tokio::spawn(f);
        })
        .await
    });
    check(&report);
}

#[test]
fn smol_with_a_spawner() {
    let report = smol::block_on(async {
        let lc = lifecycle().spawner(|f| smol::spawn(f).detach()).build();
        scenario(lc, |f| smol::spawn(f).detach()).await
    });
    check(&report);
}

#[test]
fn smol_driven_by_wait() {
    let ex = smol::LocalExecutor::new();
    let report = smol::block_on(ex.run(scenario(lifecycle().build(), |f| ex.spawn(f).detach())));
    check(&report);
}

/// Defect: with a zero grace, a service that returns as soon as it sees its stop was
/// `stopped` when `wait()` drove it and under tokio, but `abandoned` under smol. The stop is
/// now its own deadline: whatever still runs at the stop is abandoned, on every executor.
async fn zero_grace(builder: async_lifecycle::Builder) -> Report {
    let lc = builder.grace(Duration::ZERO).build();
    let (started_tx, started_rx) = futures::channel::oneshot::channel();
    lc.service("prompt", move |stop| async move {
        started_tx.send(()).unwrap();
        stop.await;
    })
    .unwrap();
    let finished = lc.session("finished").unwrap();
    drop(finished);
    let report = lc.wait();
    let stopper = async {
        // Only stop once the service runs (it is waiting on its stop signal).
        started_rx.await.unwrap();
        lc.stop("now");
    };
    let (report, ()) = futures::join!(report, stopper);
    report
}

fn check_zero_grace(report: &Report) {
    assert_eq!(report.state(), State::Abandoned, "{report}");
    assert_eq!(
        report.service("prompt").unwrap().outcome(),
        &ServiceOutcome::Abandoned,
        "{report}"
    );
    assert_eq!(report.sessions().completed(), 1, "ended before the stop");
    assert_eq!(report.exit_code(), 2);
}

#[test]
fn zero_grace_is_the_same_on_futures_executor() {
    check_zero_grace(&futures::executor::block_on(zero_grace(
        Lifecycle::builder(),
    )));
}

#[test]
fn zero_grace_is_the_same_on_tokio_current_thread() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    check_zero_grace(&rt.block_on(zero_grace(Lifecycle::builder())));
    let report = rt.block_on(async {
        zero_grace(Lifecycle::builder().spawner(|f| {
            tokio::spawn(f);
        }))
        .await
    });
    check_zero_grace(&report);
}

#[test]
fn zero_grace_is_the_same_on_tokio_multi_thread() {
    use async_lifecycle::tokio::BuilderExt;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let report = rt.block_on(async { zero_grace(Lifecycle::builder().tokio()).await });
    check_zero_grace(&report);
}

#[test]
fn zero_grace_is_the_same_on_smol() {
    use async_lifecycle::async_io::BuilderExt;
    let ex = std::sync::Arc::new(smol::Executor::new());
    let report = smol::block_on(ex.run(zero_grace(Lifecycle::builder().smol(ex.clone()))));
    check_zero_grace(&report);
    let report = smol::block_on(zero_grace(Lifecycle::builder().async_io()));
    check_zero_grace(&report);
}
