//! Loud complaints: through `tracing` at error level, or to standard error without it.

use crate::machine::{ServiceOutcome, SessionTally};

pub(crate) fn service(name: &str, outcome: &ServiceOutcome) {
    #[cfg(feature = "tracing")]
    tracing::error!(target: "async_lifecycle", service = name, outcome = %outcome, "service ended uncleanly");
    #[cfg(not(feature = "tracing"))]
    eprintln!("async-lifecycle: service \"{name}\" ended uncleanly: {outcome}");
}

pub(crate) fn sessions(census: &SessionTally) {
    for s in &census.abandoned {
        #[cfg(feature = "tracing")]
        tracing::error!(target: "async_lifecycle", session = s.name(), age = ?s.age(), "session abandoned");
        #[cfg(not(feature = "tracing"))]
        eprintln!(
            "async-lifecycle: session \"{}\" abandoned after {:?}",
            s.name(),
            s.age()
        );
    }
    if census.abandoned_unnamed > 0 {
        let n = census.abandoned_unnamed;
        #[cfg(feature = "tracing")]
        tracing::error!(target: "async_lifecycle", count = n, "unnamed sessions abandoned");
        #[cfg(not(feature = "tracing"))]
        eprintln!("async-lifecycle: {n} unnamed session(s) abandoned");
    }
}
