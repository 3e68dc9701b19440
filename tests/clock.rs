//! `Clock::coarse_now` through the public API: the system clock's coarse reading is never
//! ahead of `Instant::now`, never goes back (on a thread or across threads), and lags by less
//! than a second (a bound on failure, not a measurement: `benches/clock.rs` measures); a manual
//! clock's, tokio's paused one's and a default implementation's are `now` exactly; in a
//! simulated run the real clocks' coarse readings are out of reach like their `now`.

use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use async_lifecycle::async_io::AsyncIoClock;
use async_lifecycle::sim::{Config, FailureKind};
use async_lifecycle::tokio::TokioClock;
use async_lifecycle::{Clock, ManualClock, Sleep, SystemClock};

/// Reads `clock` many times: never ahead of a clock read after it, never behind one before it
/// by a second, never behind the previous read.
fn never_ahead_nor_back(clock: &dyn Clock) {
    let mut last = None;
    for _ in 0..100_000 {
        let before = Instant::now();
        let read = clock.coarse_now();
        assert!(read <= Instant::now(), "ahead of the clock");
        assert!(read <= clock.now(), "ahead of the clock's own now()");
        assert!(read + Duration::from_secs(1) >= before, "lags a second");
        assert!(last <= Some(read), "went back");
        last = Some(read);
    }
}

#[test]
fn the_system_clocks_coarse_reading_is_never_ahead_nor_back() {
    never_ahead_nor_back(&SystemClock::new());
}

#[test]
fn async_ios_coarse_reading_is_the_systems() {
    never_ahead_nor_back(&AsyncIoClock::new());
}

#[test]
fn the_coarse_reading_never_goes_back_across_threads() {
    // Every thread reads through `Arc<dyn Clock>`, as the lifecycle does; each read under the
    // lock happens after the previous holder's, so it must not be behind it.
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let last = Arc::new(Mutex::new(clock.coarse_now()));
    let threads = 4;
    let start = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (clock, last, start) = (clock.clone(), last.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                let mut mine = clock.coarse_now();
                for i in 0..50_000 {
                    let read = if i % 16 == t {
                        let mut last = last.lock().unwrap();
                        let read = clock.coarse_now();
                        assert!(read >= *last, "behind another thread's read");
                        *last = read;
                        read
                    } else {
                        clock.coarse_now()
                    };
                    assert!(read >= mine, "went back");
                    assert!(read <= Instant::now(), "ahead of the clock");
                    mine = read;
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
}

#[test]
fn a_manual_clocks_coarse_reading_is_exact() {
    let clock = ManualClock::new();
    let start = clock.now();
    assert_eq!(clock.coarse_now(), start);
    clock.advance(Duration::from_nanos(1));
    assert_eq!(clock.coarse_now(), start + Duration::from_nanos(1));
    clock.advance(Duration::from_secs(3600));
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    assert_eq!(shared.coarse_now(), clock.now());
    assert_eq!(
        shared.coarse_now(),
        start + Duration::from_nanos(3_600_000_000_001)
    );
}

/// A clock written before `coarse_now` existed: it still compiles, and gets `now`.
#[derive(Debug)]
struct Frozen(Instant);

impl Clock for Frozen {
    fn now(&self) -> Instant {
        self.0
    }
    fn sleep_until(&self, _deadline: Instant) -> Sleep {
        Box::pin(std::future::ready(()))
    }
}

#[test]
fn the_default_coarse_reading_is_now() {
    let at = Instant::now() + Duration::from_secs(7);
    let clock: Arc<dyn Clock> = Arc::new(Frozen(at));
    assert_eq!(clock.coarse_now(), at);
}

#[tokio::test(start_paused = true)]
async fn tokios_coarse_reading_follows_paused_time() {
    let clock = TokioClock::new();
    let start = clock.coarse_now();
    assert_eq!(start, clock.now());
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert_eq!(clock.coarse_now(), start + Duration::from_secs(3600));
    assert_eq!(clock.coarse_now(), clock.now());
}

#[test]
fn the_real_clocks_coarse_readings_are_out_of_reach_in_a_simulated_run() {
    fn message(read: fn() -> Instant) -> String {
        let failure = Config::new()
            .runs(1)
            .search(move |_env| async move {
                read();
                Ok(())
            })
            .expect_err("out of reach");
        match failure.kind() {
            FailureKind::OutOfReach(message) => message.clone(),
            _ => panic!("not out of reach: {failure}"),
        }
    }
    let system = message(|| SystemClock::new().coarse_now());
    assert!(
        system.starts_with("the system clock (`SystemClock::coarse_now`)"),
        "{system}"
    );
    let async_io = message(|| AsyncIoClock::new().coarse_now());
    assert!(
        async_io.starts_with("async-io's clock (`AsyncIoClock::coarse_now`)"),
        "{async_io}"
    );
    // the simulated clock (a manual one) is exact and in reach
    Config::new()
        .runs(1)
        .search(|env| async move {
            let clock = env.clock();
            assert_eq!(clock.coarse_now(), clock.now());
            Ok(())
        })
        .expect("in reach");
}
