//! The [async-io](::async_io) adapters, for smol and async-std: async-io's timer as the
//! lifecycle's [`Clock`], and a smol executor as the spawner for services.
//!
//! async-io's timers are driven by its reactor, which runs on a thread of its own when no
//! executor drives it, so [`AsyncIoClock`] works under any executor (and `block_on`).
//! [`spawner`] runs each service as a task of an [`Executor`] — `smol::Executor` is that
//! type.
//!
//! # Examples
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use async_executor::Executor;
//! use async_lifecycle::Lifecycle;
//! use async_lifecycle::async_io::BuilderExt;
//!
//! let ex = Arc::new(Executor::new());
//! let lc = Lifecycle::builder()
//!     .grace(Duration::from_secs(10))
//!     .smol(ex.clone())
//!     .build();
//! lc.service("ticker", |stop| async move {
//!     stop.await;
//!     Ok::<(), std::io::Error>(())
//! })
//! .unwrap();
//! lc.stop("demo over");
//! let report = async_io::block_on(ex.run(lc.wait()));
//! assert_eq!(report.exit_code(), 0);
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use ::async_io::Timer;
use async_executor::Executor;

use crate::{Builder, Clock, Sleep};

/// async-io's timer as the lifecycle's [`Clock`]: `now()` is [`Instant::now`], sleeps are
/// [`async_io::Timer`]s.
///
/// Use it with smol or async-std, whose reactor is async-io's; it needs no runtime to be
/// entered and works under any executor.
///
/// Its time is the system's, with no paused or simulated mode, so its
/// [`coarse_now`](Clock::coarse_now) is [`SystemClock`](crate::SystemClock)'s: one atomic load
/// of a reading refreshed every millisecond in the background, a few milliseconds behind
/// `now()` at most.
#[derive(Debug, Clone, Copy, Default)]
pub struct AsyncIoClock;

impl AsyncIoClock {
    /// Creates the async-io clock.
    pub const fn new() -> Self {
        AsyncIoClock
    }
}

impl Clock for AsyncIoClock {
    fn now(&self) -> Instant {
        #[cfg(feature = "sim")]
        crate::sim::out_of_reach("async-io's clock (`AsyncIoClock::now`)");
        Instant::now()
    }

    #[inline]
    fn coarse_now(&self) -> Instant {
        #[cfg(feature = "sim")]
        crate::sim::out_of_reach("async-io's clock (`AsyncIoClock::coarse_now`)");
        crate::coarse::now()
    }

    fn sleep_until(&self, deadline: Instant) -> Sleep {
        #[cfg(feature = "sim")]
        crate::sim::out_of_reach("an async-io timer (`AsyncIoClock::sleep_until`)");
        let timer = Timer::at(deadline);
        Box::pin(async move {
            timer.await;
        })
    }
}

/// A spawner for [`Builder::spawner`] that runs every service as a detached task of `ex`
/// (a `smol::Executor`). The executor must be run — `ex.run(…)` — for services to make
/// progress.
pub fn spawner(
    ex: Arc<Executor<'static>>,
) -> impl Fn(Pin<Box<dyn Future<Output = ()> + Send>>) + Send + Sync + 'static {
    move |service| spawn_on(&ex, service)
}

/// Spawns `task` as a detached task of `ex`: the spawner function's body, and `.smol(ex)`'s,
/// which hands it each service's task as it is, unboxed (the executor's task is then its one
/// allocation).
pub(crate) fn spawn_on<F>(ex: &Executor<'static>, task: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    #[cfg(feature = "sim")]
    crate::sim::out_of_reach("smol's spawner (`async_lifecycle::async_io::spawner`)");
    // The task reports its own end to the lifecycle; it need not be awaited.
    ex.spawn(task).detach();
}

/// Configures a [`Builder`] for async-io in one call.
pub trait BuilderExt: sealed::Sealed {
    /// Uses [`AsyncIoClock`]; services stay driven by [`Lifecycle::wait`](crate::Lifecycle::wait).
    /// An explicit [`Builder::clock`] wins, before or after this call.
    ///
    /// # Panics
    ///
    /// After another runtime was chosen.
    fn async_io(self) -> Builder;

    /// Uses [`AsyncIoClock`] and runs services as tasks of `ex` (see [`spawner`]). An explicit
    /// [`Builder::clock`] or [`Builder::spawner`] wins, before or after this call.
    ///
    /// # Panics
    ///
    /// After another runtime was chosen.
    fn smol(self, ex: Arc<Executor<'static>>) -> Builder;
}

impl BuilderExt for Builder {
    fn async_io(self) -> Builder {
        self.runtime("async_io", Arc::new(AsyncIoClock), None)
    }

    fn smol(self, ex: Arc<Executor<'static>>) -> Builder {
        // What `spawner(ex)` does, without boxing each task first.
        self.runtime(
            "smol",
            Arc::new(AsyncIoClock),
            Some(crate::shared::Spawner::Smol(ex)),
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

    #[test]
    fn the_grace_deadline_fires_on_an_async_io_timer() {
        let grace = Duration::from_millis(50);
        let lc = Lifecycle::builder().grace(grace).async_io().build();
        lc.service("stubborn", |_stop| std::future::pending::<()>())
            .unwrap();
        lc.stop("test");
        let report = futures::executor::block_on(lc.wait());
        assert_eq!(report.state(), State::Abandoned);
        assert_eq!(
            report.service("stubborn").unwrap().outcome(),
            &ServiceOutcome::Abandoned
        );
        assert!(report.drained_in() >= grace);
    }

    #[test]
    fn services_run_as_executor_tasks() {
        let ex = Arc::new(Executor::new());
        let lc = Lifecycle::builder().smol(ex.clone()).build();
        lc.service("worker", |stop| async move {
            stop.await;
            Ok::<(), std::io::Error>(())
        })
        .unwrap();
        // Spawned, not queued for `wait()`: the executor holds the task.
        assert!(!ex.is_empty());
        lc.stop("test");
        let report = ::async_io::block_on(ex.run(lc.wait()));
        assert_eq!(report.state(), State::Terminated);
        assert_eq!(report.exit_code(), 0);
        assert!(ex.is_empty());
    }
}
