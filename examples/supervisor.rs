//! Supervision: a cache that fails once at start-up and then settles, restarted with
//! backoff; a flaky client that always fails, restarted until the restart intensity trips
//! and stops everything. Every event is printed as it happens, then the report; the program
//! exits with status 1 and its output names the service that tripped the limit.
//!
//! Runs on no runtime at all: `futures::executor::block_on` and the lifecycle's own clock.
//!
//! ```sh
//! cargo run --example supervisor
//! ```
//!
//! (Dependencies between services, ordered stops and nested lifecycles are not built yet;
//! this example will grow with them.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_lifecycle::{Backoff, Lifecycle, Restart, RestartIntensity, ServiceOptions};

fn main() -> Result<async_lifecycle::Report, Box<dyn std::error::Error>> {
    let lc = Lifecycle::builder()
        .grace(Duration::from_secs(2))
        // More than 3 restarts within 10 s is a storm: the cache's one restart and the
        // client's third make four, so the client trips it.
        .restart_intensity(RestartIntensity::new(3, Duration::from_secs(10))?)
        .on_event(|event| println!("event: {event}"))
        .build();
    // Round waits (no jitter) so the story reads the same every time: the cache is back
    // after 10 ms; the client waits 100 ms, then 200 ms, then would wait 400 ms.
    let quick = Backoff::new(Duration::from_millis(10), Duration::from_millis(10))?;
    let slow = Backoff::new(Duration::from_millis(100), Duration::from_millis(400))?;
    let options = |backoff: Backoff| {
        ServiceOptions::new()
            .restart(Restart::OnFailure)
            .backoff(backoff.without_jitter())
    };

    // Fails its first run (a cold dependency), then serves until the stop.
    let runs = Arc::new(AtomicU32::new(0));
    lc.service_with("cache", options(quick), move |stop| {
        let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            if run == 1 {
                return Err(format!("warm-up failed (run {run})"));
            }
            stop.await;
            Ok(())
        }
    })?;

    // Fails every run: restarted with a growing wait until the intensity stops it all.
    lc.service_with("flaky-client", options(slow), |_stop| async {
        Err::<(), _>("connection refused")
    })?;

    let report = futures::executor::block_on(lc.wait());
    println!("\n{report}");
    // Exit status 1: a service ended uncleanly (the restart storm).
    Ok(report)
}
