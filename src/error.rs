//! The error a lifecycle returns when it will not take on new work.

use std::fmt;

/// Why the lifecycle would not admit a session (or a service: see [`ServiceError`]).
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
/// assert_eq!(lc.session("late").unwrap_err(), Refused::Ended);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refused {
    /// A stop was requested and in-flight work is draining.
    Draining,
    /// The lifecycle has ended (terminated or abandoned).
    Ended,
}

impl Refused {
    /// Whether the refusal happened while in-flight work was draining.
    pub fn is_draining(&self) -> bool {
        matches!(self, Refused::Draining)
    }

    /// Whether the refusal happened after the lifecycle ended.
    pub fn is_ended(&self) -> bool {
        matches!(self, Refused::Ended)
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Draining => f.write_str("lifecycle is draining: no new work is admitted"),
            Refused::Ended => f.write_str("lifecycle has ended: no new work is admitted"),
        }
    }
}

impl std::error::Error for Refused {}

/// Why [`Lifecycle::service`](crate::Lifecycle::service) did not add a service. The service's
/// closure was not called.
///
/// # Examples
///
/// ```
/// use async_lifecycle::{Lifecycle, ServiceError};
///
/// let lc = Lifecycle::new();
/// lc.service("db", |stop| stop).unwrap();
/// let err = lc.service("db", |stop| stop).unwrap_err();
/// assert!(matches!(err, ServiceError::DuplicateName(ref name) if name == "db"));
/// assert_eq!(err.to_string(), "a service named \"db\" was already added");
/// # lc.stop("done");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ServiceError {
    /// The lifecycle is no longer running.
    Refused(Refused),
    /// A service of this name was already added: names identify services in the report
    /// and in [`Report::service`](crate::Report::service).
    DuplicateName(std::borrow::Cow<'static, str>),
    /// A dependency ([`ServiceOptions::after`](crate::ServiceOptions::after)) names no
    /// service added so far: dependencies are added first.
    UnknownDependency {
        /// The service being added.
        service: std::borrow::Cow<'static, str>,
        /// The name it depends on.
        dependency: std::borrow::Cow<'static, str>,
    },
    /// A dependency that has already ended for good: it will never be ready (again), so
    /// the service could never start, or would start without it.
    DependencyEnded {
        /// The service being added.
        service: std::borrow::Cow<'static, str>,
        /// The dependency that ended.
        dependency: std::borrow::Cow<'static, str>,
    },
    /// A service that depends on itself: the one cycle a dependency list can spell, since
    /// every other dependency must already be added.
    DependencyCycle {
        /// The service.
        service: std::borrow::Cow<'static, str>,
    },
    /// Its stop budgets, added along its longest chain of dependencies, exceed the grace:
    /// the chain could not stop within the deadline.
    BudgetsExceedGrace {
        /// The service being added (the start of the chain).
        service: std::borrow::Cow<'static, str>,
        /// The budgets' sum along the chain.
        total: std::time::Duration,
        /// The lifecycle's grace.
        grace: std::time::Duration,
    },
    /// A setting that is wrong whatever the program.
    Config(crate::ConfigError),
}

impl From<crate::ConfigError> for ServiceError {
    fn from(error: crate::ConfigError) -> Self {
        ServiceError::Config(error)
    }
}

impl From<Refused> for ServiceError {
    fn from(refused: Refused) -> Self {
        ServiceError::Refused(refused)
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceError::Refused(refused) => refused.fmt(f),
            ServiceError::DuplicateName(name) => {
                write!(f, "a service named \"{name}\" was already added")
            }
            ServiceError::UnknownDependency {
                service,
                dependency,
            } => write!(
                f,
                "service \"{service}\" depends on \"{dependency}\", which was not added (add \
                 dependencies first)"
            ),
            ServiceError::DependencyEnded {
                service,
                dependency,
            } => write!(
                f,
                "service \"{service}\" depends on \"{dependency}\", which has already ended"
            ),
            ServiceError::DependencyCycle { service } => {
                write!(f, "service \"{service}\" depends on itself")
            }
            ServiceError::BudgetsExceedGrace {
                service,
                total,
                grace,
            } => write!(
                f,
                "the stop budgets along service \"{service}\"'s dependencies add up to \
                 {total:?}, more than the grace of {grace:?}"
            ),
            ServiceError::Config(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for ServiceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServiceError::Refused(refused) => Some(refused),
            ServiceError::Config(error) => Some(error),
            _ => None,
        }
    }
}
