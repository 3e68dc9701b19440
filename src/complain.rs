//! Loud complaints: through `tracing` at error level, or to standard error without it.
//!
//! A complaint never panics and never stops the lifecycle from finishing: each one runs
//! under `catch_unwind` (a subscriber may panic; `tracing-subscriber`'s fmt layer panics
//! through `eprintln!` when standard error is a closed pipe), and the standard-error
//! fallback ignores write errors. Complaints run after the report is published, outside
//! every lock.

use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::machine::{ServiceOutcome, SessionReport};

/// Runs `f`, swallowing a panic: user code (a subscriber, a waker, a drop) must not stop the
/// lifecycle's bookkeeping. The panic hook has already reported the panic.
pub(crate) fn quietly(f: impl FnOnce()) {
    let _ = catch_unwind(AssertUnwindSafe(f));
}

/// Writes one line to `out`, ignoring errors (a closed or broken standard error).
#[cfg_attr(feature = "tracing", allow(dead_code))]
fn line(mut out: impl Write, args: std::fmt::Arguments<'_>) {
    let _ = out.write_fmt(args).and_then(|()| out.write_all(b"\n"));
}

#[cfg(not(feature = "tracing"))]
macro_rules! stderr_line {
    ($($arg:tt)*) => {
        line(std::io::stderr().lock(), format_args!($($arg)*))
    };
}

pub(crate) fn service(name: &str, outcome: &ServiceOutcome) {
    quietly(|| {
        #[cfg(feature = "tracing")]
        tracing::error!(target: "async_lifecycle", service = name, outcome = %outcome, "service ended uncleanly");
        #[cfg(not(feature = "tracing"))]
        stderr_line!("async-lifecycle: service \"{name}\" ended uncleanly: {outcome}");
    });
}

pub(crate) fn restarting(
    name: &str,
    outcome: &ServiceOutcome,
    attempt: u32,
    after: std::time::Duration,
) {
    quietly(|| {
        #[cfg(feature = "tracing")]
        tracing::error!(target: "async_lifecycle", service = name, outcome = %outcome, attempt, after = ?after, "service ended uncleanly; restarting");
        #[cfg(not(feature = "tracing"))]
        stderr_line!(
            "async-lifecycle: service \"{name}\" ended uncleanly: {outcome}; restart {attempt} in {after:?}"
        );
    });
}

pub(crate) fn slow_to_stop(name: &str, elapsed: std::time::Duration) {
    quietly(|| {
        #[cfg(feature = "tracing")]
        tracing::warn!(target: "async_lifecycle", service = name, elapsed = ?elapsed, "service slow to stop: half its stop budget is gone");
        #[cfg(not(feature = "tracing"))]
        stderr_line!(
            "async-lifecycle: service \"{name}\" still running {elapsed:?} after its stop signal (half its stop budget)"
        );
    });
}

pub(crate) fn sessions(sessions: &SessionReport) {
    for s in sessions.abandoned() {
        quietly(|| {
            #[cfg(feature = "tracing")]
            tracing::error!(target: "async_lifecycle", session = s.name(), age = ?s.age(), "session abandoned");
            #[cfg(not(feature = "tracing"))]
            stderr_line!(
                "async-lifecycle: session \"{}\" abandoned after {:?}",
                s.name(),
                s.age()
            );
        });
    }
    let n = sessions.abandoned_unnamed();
    if n > 0 {
        quietly(|| {
            #[cfg(feature = "tracing")]
            tracing::error!(target: "async_lifecycle", count = n, "unnamed sessions abandoned");
            #[cfg(not(feature = "tracing"))]
            stderr_line!("async-lifecycle: {n} unnamed session(s) abandoned");
        });
    }
}

pub(crate) fn session_panicked(name: Option<&str>, message: Option<&str>) {
    quietly(|| {
        let name = name.unwrap_or("(unnamed)");
        let message = message.unwrap_or("(payload not caught: use Session::run)");
        #[cfg(feature = "tracing")]
        tracing::error!(target: "async_lifecycle", session = name, panic = message, "session panicked");
        #[cfg(not(feature = "tracing"))]
        stderr_line!("async-lifecycle: session \"{name}\" panicked: {message}");
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose every write fails, as a closed pipe does.
    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
        }
    }

    #[test]
    fn the_stderr_fallback_ignores_a_broken_writer() {
        // `eprintln!` would panic here ("failed printing to stderr").
        line(Broken, format_args!("async-lifecycle: {}", "complaint"));
    }

    #[test]
    fn quietly_swallows_a_panic() {
        let mut ran = false;
        quietly(|| {
            ran = true;
            panic!("a subscriber that panics");
        });
        assert!(ran);
    }
}
