//! The error a lifecycle returns when it will not take on new work.

use std::fmt;

/// Why the lifecycle would not admit a session or a service.
///
/// A lifecycle admits work only while it is [`Running`](crate::State::Running). Once a stop
/// was requested, every new [`session`](crate::Lifecycle::session) or
/// [`service`](crate::Lifecycle::service) is refused with this error — never dropped
/// silently — so the caller can close the connection politely, nack the job, or log it.
///
/// # Examples
///
/// ```
/// use async_lifecycle::{Lifecycle, Refused};
///
/// let lc = Lifecycle::new();
/// let in_flight = lc.session("conn 10.0.0.7:5123").unwrap();
/// lc.stop("deploy");
/// let err = lc.session("conn 10.0.0.9:40001").unwrap_err();
/// assert_eq!(err, Refused::Draining);
/// assert!(err.is_draining());
/// assert_eq!(err.to_string(), "lifecycle is draining: no new work is admitted");
/// drop(in_flight); // the last session ends: the lifecycle terminates
/// assert_eq!(lc.session("late").unwrap_err(), Refused::Terminated);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refused {
    /// A stop was requested and in-flight work is draining.
    Draining,
    /// The lifecycle has ended (terminated or abandoned).
    Terminated,
}

impl Refused {
    /// Whether the refusal happened while in-flight work was draining.
    pub fn is_draining(&self) -> bool {
        matches!(self, Refused::Draining)
    }

    /// Whether the refusal happened after the lifecycle ended.
    pub fn is_terminated(&self) -> bool {
        matches!(self, Refused::Terminated)
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Draining => f.write_str("lifecycle is draining: no new work is admitted"),
            Refused::Terminated => f.write_str("lifecycle has ended: no new work is admitted"),
        }
    }
}

impl std::error::Error for Refused {}
