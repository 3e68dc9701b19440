//! The [tokio] adapters: tokio's timer as the lifecycle's [`Clock`], and tokio's
//! spawner for services.
//!
//! [`TokioClock`] reads [`tokio::time::Instant`] and sleeps with
//! [`tokio::time::sleep_until`], so a test under
//! `#[tokio::test(start_paused = true)]` drives the grace deadline with tokio's paused time
//! (`tokio::time::advance`). [`spawner`] runs each service as its own tokio task, on the
//! runtime that was current when it was called. [`BuilderExt::tokio`] sets both.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use async_lifecycle::Lifecycle;
//! use async_lifecycle::tokio::BuilderExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let lc = Lifecycle::builder().grace(Duration::from_secs(10)).tokio().build();
//! lc.service("ticker", |stop| async move {
//!     stop.await;
//!     Ok::<(), std::io::Error>(())
//! })
//! .unwrap();
//! lc.stop("demo over");
//! let report = lc.wait().await;
//! assert_eq!(report.exit_code(), 0);
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use ::tokio::runtime::Handle;
use ::tokio::time;

use crate::{Builder, Clock, Sleep};

/// Tokio's time as the lifecycle's [`Clock`].
///
/// `now()` is [`tokio::time::Instant::now`], which follows
/// tokio's paused test time; outside a paused runtime it is the system's monotonic time.
/// Sleeps use [`tokio::time::sleep_until`].
///
/// [`coarse_now`](Clock::coarse_now) keeps the default, `now()` itself: under
/// `start_paused` (or `tokio::time::pause`) tokio's time is not the system's, so a coarse
/// reading of real time would be wrong there, and whether the current runtime's time is paused
/// is only known by the same runtime lookup that makes `now()` cost what it does.
///
/// # Panics
///
/// A sleep panics when it is first polled outside a tokio runtime whose time driver is
/// enabled (as `tokio::time::sleep` does): poll [`Lifecycle::wait`](crate::Lifecycle::wait)
/// on tokio.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl TokioClock {
    /// Creates the tokio clock.
    pub const fn new() -> Self {
        TokioClock
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        #[cfg(feature = "sim")]
        crate::sim::out_of_reach("tokio's clock (`TokioClock::now`)");
        time::Instant::now().into_std()
    }

    fn sleep_until(&self, deadline: Instant) -> Sleep {
        #[cfg(feature = "sim")]
        crate::sim::out_of_reach("a tokio timer (`TokioClock::sleep_until`)");
        // The timer is created at the first poll, inside the runtime that polls it.
        Box::pin(async move { time::sleep_until(time::Instant::from_std(deadline)).await })
    }
}

/// A spawner for [`Builder::spawner`] that runs every service as a task on the current
/// tokio runtime (the one this is called in), from whichever thread the service is added.
///
/// # Panics
///
/// When called outside a tokio runtime (as [`Handle::current`] does).
pub fn spawner() -> impl Fn(Pin<Box<dyn Future<Output = ()> + Send>>) + Send + Sync + 'static {
    spawner_on(Handle::current())
}

/// A spawner for [`Builder::spawner`] that runs every service as a task on the runtime of
/// `handle`.
pub fn spawner_on(
    handle: Handle,
) -> impl Fn(Pin<Box<dyn Future<Output = ()> + Send>>) + Send + Sync + 'static {
    move |service| spawn_on(&handle, service)
}

/// Spawns `task` on `handle`'s runtime: the spawner functions' body, and `.tokio()`'s, which
/// hands it each service's task as it is, unboxed (tokio's task cell is then its one
/// allocation).
pub(crate) fn spawn_on<F>(handle: &Handle, task: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    #[cfg(feature = "sim")]
    crate::sim::out_of_reach("tokio's spawner (`async_lifecycle::tokio::spawner`)");
    // The task reports its own end to the lifecycle; the join handle is not needed.
    drop(handle.spawn(task));
}

/// Configures a [`Builder`] for tokio in one call.
pub trait BuilderExt: sealed::Sealed {
    /// Uses [`TokioClock`] and runs services as tasks on the current runtime ([`spawner`]).
    /// An explicit [`Builder::clock`] or [`Builder::spawner`] wins, before or after this
    /// call (a [`ManualClock`](crate::ManualClock) with tokio's spawner, say).
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime, or after another runtime was chosen.
    fn tokio(self) -> Builder;
}

impl BuilderExt for Builder {
    fn tokio(self) -> Builder {
        self.runtime(
            "tokio",
            std::sync::Arc::new(TokioClock),
            // What `spawner()` does, without boxing each task first.
            Some(crate::shared::Spawner::Tokio(Handle::current())),
        )
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::Builder {}
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{Lifecycle, ServiceOutcome, State};

    #[::tokio::test(start_paused = true)]
    async fn the_grace_deadline_follows_tokio_paused_time() {
        let lc = Lifecycle::builder()
            .grace(Duration::from_secs(30))
            .tokio()
            .build();
        lc.service("stubborn", |_stop| std::future::pending::<()>())
            .unwrap();
        let started = time::Instant::now();
        lc.stop("test");
        // With paused time, tokio jumps straight to the deadline once every task is idle.
        let report = lc.wait().await;
        assert_eq!(report.state(), State::Abandoned);
        assert_eq!(
            report.service("stubborn").unwrap().outcome(),
            &ServiceOutcome::Abandoned
        );
        assert_eq!(time::Instant::now() - started, Duration::from_secs(30));
        assert_eq!(report.drained_in(), Duration::from_secs(30));
    }

    #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn services_run_as_tokio_tasks() {
        let lc = Lifecycle::builder().tokio().build();
        let (tx, rx) = ::tokio::sync::oneshot::channel();
        lc.service("says hello", |stop| async move {
            let _ = tx.send(());
            stop.await;
        })
        .unwrap();
        // Nobody polls `wait()` yet: only the spawner can have started the service. The
        // timeout only bounds a failure.
        let started = time::timeout(Duration::from_secs(10), rx).await;
        assert!(started.is_ok(), "the service was not spawned");
        lc.stop("test");
        let report = lc.wait().await;
        assert_eq!(report.state(), State::Terminated);
        assert_eq!(report.exit_code(), 0);
    }

    #[test]
    fn now_is_system_time_outside_a_runtime() {
        let before = Instant::now();
        let now = TokioClock::new().now();
        assert!(now >= before && now <= Instant::now());
    }
}
