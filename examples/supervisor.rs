//! Supervision: a dependency chain `db` ← `cache` ← `api` started in order, a nested
//! lifecycle `workers` (after `db`) with two workers inside, and a `flaky` client of the api
//! that fails every run. It is restarted with backoff until the restart intensity trips, which
//! stops everything: dependents first, so `api` sees its stop signal before `cache`, and
//! `cache` and the workers before `db`. Each service prints what it does as it does it, every
//! lifecycle event is printed too (`event: …`), then the report as a tree (the nested
//! report indented under `workers`). The program exits with status 1 and its output names
//! `flaky` as the service that tripped the limit.
//!
//! Runs on no runtime at all: `futures::executor::block_on` and the lifecycle's own clock
//! (real time: the whole story takes about a quarter of a second).
//!
//! ```sh
//! cargo run --example supervisor
//! ```

use std::sync::Arc;
use std::time::Duration;

use async_lifecycle::{
    Backoff, Clock, Lifecycle, Report, Restart, RestartIntensity, ServiceOptions, StopSignal,
};

/// How long `db` takes to open its pool before it declares itself ready.
const SETUP: Duration = Duration::from_millis(50);
/// How long each service takes to wrap up once it saw its stop signal.
const WRAP_UP: Duration = Duration::from_millis(20);

fn main() -> Result<Report, Box<dyn std::error::Error>> {
    let lc = Lifecycle::builder()
        .grace(Duration::from_secs(2))
        // More than 3 restarts within 10 s is a storm: `flaky`'s fourth failure trips it.
        .restart_intensity(RestartIntensity::new(3, Duration::from_secs(10))?)
        .on_event(|event| println!("  event: {event}"))
        .build();
    let clock = lc.clock().clone();

    // The root of the chain: ready only once its pool is open, which must take under 1 s.
    let db = ServiceOptions::new()
        .declares_ready()
        .start_timeout(Duration::from_secs(1));
    let db_clock = clock.clone();
    lc.service_with("db", db, move |stop: StopSignal| {
        let clock = db_clock.clone();
        async move {
            println!("db: opening the pool");
            sleep(&clock, SETUP).await;
            println!("db: ready");
            stop.ready();
            stop.await;
            println!("db: saw its stop signal");
            sleep(&clock, WRAP_UP).await;
            Ok::<(), String>(())
        }
    })?;

    // Each starts once the one before is ready, and is stopped before it. The api's stop
    // budget is its own share of the grace (the others get what is left, split by depth).
    let c = clock.clone();
    lc.service_with("cache", ServiceOptions::new().after(["db"]), move |stop| {
        serve("cache", c.clone(), stop)
    })?;
    let api = ServiceOptions::new()
        .after(["cache"])
        .stop_budget(Duration::from_millis(500));
    let c = clock.clone();
    lc.service_with("api", api, move |stop| serve("api", c.clone(), stop))?;

    // A lifecycle of its own, run as the service `workers` of this one: it starts once `db`
    // is ready, and is stopped (with everything inside it) before `db`.
    let workers = lc.nest(
        "workers",
        ServiceOptions::new().after(["db"]),
        Lifecycle::builder(),
    )?;
    workers.service("worker 1", |stop| serve("worker 1", clock.clone(), stop))?;
    workers.service("worker 2", |stop| serve("worker 2", clock.clone(), stop))?;

    // A client of the api that fails every run: restarted with a growing wait (round waits,
    // no jitter, so the story reads the same every time: 20 ms, 40 ms, 80 ms, then it would
    // wait 100 ms) until its fourth restart would exceed the intensity.
    let flaky = ServiceOptions::new()
        .after(["api"])
        .restart(Restart::OnFailure)
        .backoff(
            Backoff::new(Duration::from_millis(20), Duration::from_millis(100))?.without_jitter(),
        );
    let mut run = 0;
    lc.service_with("flaky", flaky, move |_stop| {
        run += 1;
        async move {
            println!("flaky: run {run}: connection refused");
            Err::<(), _>(format!("connection refused (run {run})"))
        }
    })?;

    let report = futures::executor::block_on(lc.wait());
    println!("\n{report}");
    // Exit status 1: the restart storm.
    Ok(report)
}

/// A well-behaved service: it serves until its stop signal fires, says so, and wraps up.
async fn serve(name: &str, clock: Arc<dyn Clock>, stop: StopSignal) -> Result<(), String> {
    println!("{name}: started");
    stop.await;
    println!("{name}: saw its stop signal");
    sleep(&clock, WRAP_UP).await;
    Ok(())
}

/// Waits `d` on the lifecycle's clock.
async fn sleep(clock: &Arc<dyn Clock>, d: Duration) {
    clock.sleep_until(clock.now() + d).await;
}
