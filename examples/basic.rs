//! The origin's `example`: a worker that honours the stop and a producer that ignores it.
//!
//! The producer hands batches of jobs to the worker; each batch it is preparing is a named
//! session. After a moment the program stops itself. The worker finishes its job in hand and
//! returns; the producer never looks at its stop signal, so at the end of the grace period it
//! is abandoned — named in the report, with the batch it was holding — and the program exits
//! with status 2.
//!
//! Runs on no runtime at all: `futures::executor::block_on` and the lifecycle's own clock.
//!
//! ```sh
//! cargo run --example basic
//! ```

use std::io::IsTerminal;
use std::time::Duration;

use async_lifecycle::Lifecycle;
use futures::FutureExt;

fn main() -> async_lifecycle::Report {
    // The lifecycle complains through `tracing`; show it on standard error.
    tracing_subscriber::fmt()
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let lc = Lifecycle::builder().grace(Duration::from_secs(2)).build();
    let clock = lc.clock().clone();
    let (jobs_tx, jobs_rx) = async_channel::bounded::<u32>(4);

    // The worker honours its stop signal: it finishes the job in hand, then returns.
    let worker_clock = clock.clone();
    lc.service("worker", move |stop| async move {
        let mut stop = stop.fuse();
        let mut done = 0;
        loop {
            futures::select! {
                () = stop => break,
                job = jobs_rx.recv().fuse() => {
                    let Ok(job) = job else { break };
                    let later = worker_clock.now() + Duration::from_millis(50);
                    worker_clock.sleep_until(later).await; // "work"
                    done += 1;
                    println!("worker: finished job {job}");
                }
            }
        }
        println!("worker: stop received after {done} jobs, shutting down cleanly");
        Ok::<(), std::io::Error>(())
    })
    .expect("the lifecycle is running");

    // The producer ignores its stop signal: it keeps preparing batches forever. Services hold
    // a weak handle: it begins sessions, and keeps nothing alive.
    let sessions = lc.downgrade();
    lc.service("producer", move |_stop| async move {
        for batch in 1.. {
            let session = sessions.session(format!("batch {batch}"));
            let Ok(session) = session else {
                println!("producer: batch {batch} refused, but I keep going anyway");
                let later = clock.now() + Duration::from_millis(500);
                clock.sleep_until(later).await;
                continue;
            };
            for job in 0..4 {
                let later = clock.now() + Duration::from_millis(100);
                clock.sleep_until(later).await;
                if jobs_tx.send(batch * 10 + job).await.is_err() {
                    // The worker is gone; wait forever, holding the batch (a straggler).
                    futures::future::pending::<()>().await;
                }
            }
            drop(session);
        }
        Ok::<(), std::io::Error>(())
    })
    .expect("the lifecycle is running");

    // Stop after a moment, as a signal would.
    let stopper = lc.clone();
    let stop_later = async move {
        let later = stopper.clock().now() + Duration::from_millis(700);
        stopper.clock().sleep_until(later).await;
        println!("main: stopping (grace 2s)");
        stopper.stop("the demo is over");
    };

    let (report, ()) = futures::executor::block_on(futures::future::join(lc.wait(), stop_later));
    println!("\n{report}");
    // Exits with the report's status (2 here) once every destructor ran.
    report
}
