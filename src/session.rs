//! Sessions: units of work that come and go (a connection, a request, a job), counted by the
//! admission gate so the lifecycle can wait for them before it ends.

use std::fmt;
use std::sync::Arc;

use crate::loom::lock;
use crate::service::StopSignal;
use crate::shared::Shared;
use crate::{Refused, State};

/// One unit of in-flight work. Dropping it ends the session.
///
/// Obtained from [`Lifecycle::session`](crate::Lifecycle::session) (named: a straggler
/// report names it) or [`Lifecycle::unnamed_session`](crate::Lifecycle::unnamed_session)
/// (cheapest: counted, not named). While any session is live, a draining lifecycle waits
/// for it — until the grace deadline, when it is abandoned and reported.
///
/// A session can learn that draining started with [`Session::draining`], to wrap up early
/// (answer with `Connection: close`, finish the current job and take no other).
///
/// # Examples
///
/// ```
/// use async_lifecycle::Lifecycle;
///
/// let lc = Lifecycle::new();
/// let session = lc.session("job 42").expect("admitted while running");
/// assert!(!session.is_draining());
/// lc.stop("deploy");
/// assert!(session.is_draining());
/// drop(session); // the session ends; the lifecycle can terminate
/// let report = futures::executor::block_on(lc.wait());
/// assert_eq!(report.sessions().completed(), 1);
/// assert_eq!(report.exit_code(), 0);
/// ```
#[must_use = "dropping a session ends it at once"]
pub struct Session {
    shared: Arc<Shared>,
    /// The registry key of a named session, or [`UNNAMED`]: a sentinel rather than an
    /// `Option` keeps the guard at two words.
    key: usize,
}

/// The key of a session without a name (a slab never hands out `usize::MAX`).
const UNNAMED: usize = usize::MAX;

impl Session {
    #[inline]
    pub(crate) fn unnamed(shared: Arc<Shared>) -> Self {
        Session {
            shared,
            key: UNNAMED,
        }
    }

    pub(crate) fn named(shared: Arc<Shared>, key: usize) -> Self {
        debug_assert_ne!(key, UNNAMED);
        Session { shared, key }
    }

    /// A future that resolves once the lifecycle starts draining (see [`StopSignal`]).
    pub fn draining(&self) -> StopSignal {
        StopSignal::new(self.shared.clone())
    }

    /// Whether the lifecycle has started draining.
    pub fn is_draining(&self) -> bool {
        self.shared.stop.is_fired()
    }

    /// The name this session was started with, if it has one.
    pub fn name(&self) -> Option<String> {
        if self.key == UNNAMED {
            return None;
        }
        lock(&self.shared.registry)
            .get(self.key)
            .map(|s| s.name.to_string())
    }

    /// Ends a named session: out of line, so the unnamed path stays small.
    #[inline(never)]
    fn end_named(&self) -> bool {
        let mut registry = lock(&self.shared.registry);
        let entry = registry.try_remove(self.key);
        // Under the registry lock, so a census sees the name and the count agree.
        let drained = self.shared.gate.exit();
        drop(registry);
        drop(entry);
        drained
    }
}

impl Drop for Session {
    #[inline]
    fn drop(&mut self) {
        let drained = if self.key == UNNAMED {
            self.shared.gate.exit()
        } else {
            self.end_named()
        };
        if drained {
            self.shared.sessions_drained();
        }
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("named", &(self.key != UNNAMED))
            .finish_non_exhaustive()
    }
}

/// Turns a closed gate into the refusal the caller sees. Cold: only while stopping.
#[cold]
pub(crate) fn refuse(shared: &Shared) -> Refused {
    match shared.state() {
        State::Running | State::Draining => Refused::Draining,
        State::Terminated | State::Abandoned => Refused::Terminated,
    }
}
