//! Typed lifecycle events, for a hook installed with
//! [`Builder::on_event`](crate::Builder::on_event).

use std::fmt;
use std::time::Duration;

use crate::machine::{ServiceOutcome, State, StopCause};

/// Something that happened to the lifecycle or one of its services, as it happened.
///
/// Delivered to the hook of [`Builder::on_event`](crate::Builder::on_event) on the thread
/// that caused it, outside every lock of the crate, and also emitted as a `tracing` event
/// (target `async_lifecycle::event`, level info; failures are also complained about at
/// error level). A hook that panics is ignored: it cannot break the lifecycle.
///
/// Each event is emitted after the transition it reports, and the events one thread causes
/// come in order; events caused on different threads may interleave. So a `StopRequested`
/// can follow the `Ended` a `wait()` on another thread emitted, and a run's `Started` can
/// follow `Ended` when a force on another thread ended the lifecycle just after the run was
/// made — that run is then never polled. `Ended` is emitted once, after the report is
/// published.
///
/// # Examples
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use async_lifecycle::{Event, Lifecycle};
///
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let log = seen.clone();
/// let lc = Lifecycle::builder()
///     .on_event(move |event| log.lock().unwrap().push(event.to_string()))
///     .build();
/// lc.service("worker", |stop| stop).unwrap();
/// lc.stop("deploy");
/// futures::executor::block_on(lc.wait());
/// let seen = seen.lock().unwrap();
/// assert_eq!(seen[0], "service \"worker\" started (run 1)");
/// assert_eq!(seen[1], "stop requested: requested: deploy");
/// assert_eq!(seen.last().unwrap(), "lifecycle terminated (exit code 0)");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A service's run started: its first (`attempt` 1) or a restart.
    Started {
        /// The service.
        service: &'a str,
        /// Which run (1 for the first).
        attempt: u32,
    },
    /// A service that [declares readiness](crate::ServiceOptions::declares_ready) declared
    /// its run ready (a service that does not is ready when it is `Started`).
    Ready {
        /// The service.
        service: &'a str,
        /// Which run (1 for the first).
        attempt: u32,
    },
    /// A service's stop signal fired after the stop was requested, because the services
    /// depending on it were done: ordered stop, dependents first.
    Stopping {
        /// The service.
        service: &'a str,
    },
    /// A service's run ended uncleanly: an error, a panic (with its payload), an early
    /// return, or a drop before it finished.
    Failed {
        /// The service.
        service: &'a str,
        /// How it ended.
        outcome: &'a ServiceOutcome,
    },
    /// A service will be started again after `after` (its `attempt`th restart).
    Restarting {
        /// The service.
        service: &'a str,
        /// Which restart (1 for the first).
        attempt: u32,
        /// The backoff wait before it.
        after: Duration,
    },
    /// The stop was requested: draining starts.
    StopRequested {
        /// Why.
        cause: &'a StopCause,
    },
    /// Half of this service's stop budget has gone (half the grace, without dependencies)
    /// and it has not stopped: a warning before it is abandoned (so an operator sees it
    /// while there is time).
    SlowToStop {
        /// The service.
        service: &'a str,
        /// How long since its own stop signal fired: the stop, for a service nothing running
        /// depended on; its release, for the others.
        elapsed: Duration,
    },
    /// A service was still running when the lifecycle gave up on it (at the deadline, or
    /// past its own stop budget).
    Abandoned {
        /// The service.
        service: &'a str,
    },
    /// The lifecycle ended; the report is ready.
    Ended {
        /// `Terminated` or `Abandoned`.
        state: State,
        /// The report's exit code.
        exit_code: i32,
    },
}

impl fmt::Display for Event<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Started { service, attempt } => {
                write!(f, "service \"{service}\" started (run {attempt})")
            }
            Event::Ready { service, attempt } => {
                write!(f, "service \"{service}\" ready (run {attempt})")
            }
            Event::Stopping { service } => {
                write!(
                    f,
                    "service \"{service}\" signalled to stop (its dependents are done)"
                )
            }
            Event::Failed { service, outcome } => write!(f, "service \"{service}\" {outcome}"),
            Event::Restarting {
                service,
                attempt,
                after,
            } => write!(
                f,
                "service \"{service}\" restarting in {after:?} (restart {attempt})"
            ),
            Event::StopRequested { cause } => write!(f, "stop requested: {cause}"),
            Event::SlowToStop { service, elapsed } => {
                write!(
                    f,
                    "service \"{service}\" still running {elapsed:?} after the stop"
                )
            }
            Event::Abandoned { service } => write!(f, "service \"{service}\" abandoned"),
            Event::Ended { state, exit_code } => {
                write!(f, "lifecycle {state} (exit code {exit_code})")
            }
        }
    }
}

/// The hook, shared.
pub(crate) type Hook = std::sync::Arc<dyn Fn(&Event<'_>) + Send + Sync>;

/// Whether anyone listens for events: a hook, or a `tracing` subscriber interested in them.
pub(crate) fn wanted(hook: Option<&Hook>) -> bool {
    #[cfg(feature = "tracing")]
    let traced = tracing::enabled!(target: "async_lifecycle::event", tracing::Level::INFO);
    #[cfg(not(feature = "tracing"))]
    let traced = false;
    hook.is_some() || traced
}

/// Delivers `event` to the hook (if any) and to `tracing`, swallowing a panic from either.
pub(crate) fn emit(hook: Option<&Hook>, event: Event<'_>) {
    crate::complain::quietly(|| {
        #[cfg(feature = "tracing")]
        tracing::info!(target: "async_lifecycle::event", "{event}");
        if let Some(hook) = hook {
            hook(&event);
        }
    });
}
