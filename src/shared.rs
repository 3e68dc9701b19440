//! The state every handle shares, and the one place where machine actions are carried out.
//!
//! # Lock order
//!
//! `core` → `registry`. Nothing takes `core` while holding `registry`: a named session ends
//! under `registry`, releases it, and only then reports a drain through `core`. Broadcasts
//! are fired, wakers woken, abort handles triggered, complaints emitted and service tasks
//! dropped only after `core` is released.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use futures_util::future::AbortHandle;
use slab::Slab;

use crate::clock::Clock;
use crate::complain;
use crate::loom::{AtomicBool, Mutex, Ordering, lock};
use crate::machine::{
    AbandonedSession, Action, Exit, Machine, Report, ServiceId, SessionTally, State, StopCause,
};
use crate::service::ServiceTask;
use crate::sync::{Broadcast, Gate, Queue};

/// Hands a service's future to an executor.
pub(crate) type Spawner =
    Arc<dyn Fn(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) + Send + Sync>;

#[derive(Debug)]
pub(crate) struct NamedSession {
    pub(crate) name: Cow<'static, str>,
    pub(crate) began: Instant,
}

#[derive(Debug)]
struct Core {
    machine: Machine,
    /// Abort handles of the services, by service index.
    aborts: Vec<AbortHandle>,
    /// The census a timeout decided on: it feeds the `Abandon` and the report that timeout
    /// may cause in the same settle, and is cleared at the end of it.
    census: Option<SessionTally>,
    report: Option<Report>,
}

pub(crate) struct Shared {
    pub(crate) gate: Gate,
    /// Whether the "nothing to run" question was already asked (see `stop_if_empty`).
    empty_checked: AtomicBool,
    /// Guards the names and start times of live named sessions.
    pub(crate) registry: Mutex<Slab<NamedSession>>,
    /// Fires when draining starts.
    pub(crate) stop: Broadcast,
    /// Fires when a final state is reached and the report is written.
    pub(crate) finished: Broadcast,
    /// Guards the state machine and what hangs off its transitions.
    core: Mutex<Core>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) spawner: Option<Spawner>,
    /// Services waiting for a driver (when there is no spawner).
    pub(crate) queue: Queue<ServiceTask>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("gate", &self.gate)
            .field("clock", &self.clock)
            .field("spawner", &self.spawner.is_some())
            .finish_non_exhaustive()
    }
}

/// What to do once `core` is released.
#[derive(Default)]
struct Effects {
    fire_stop: bool,
    fire_finished: bool,
    aborts: Vec<AbortHandle>,
    complaints: Vec<Action>,
    abandoned_sessions: Option<SessionTally>,
}

impl Shared {
    pub(crate) fn new(machine: Machine, clock: Arc<dyn Clock>, spawner: Option<Spawner>) -> Self {
        Shared {
            gate: Gate::new(),
            empty_checked: AtomicBool::new(false),
            registry: Mutex::new(Slab::new()),
            stop: Broadcast::new(),
            finished: Broadcast::new(),
            core: Mutex::new(Core {
                machine,
                aborts: Vec::new(),
                census: None,
                report: None,
            }),
            clock,
            spawner,
            queue: Queue::new(),
        }
    }

    /// Applies `input` to the machine at the clock's `now`, then carries out every action.
    pub(crate) fn apply<R>(&self, input: impl FnOnce(&mut Machine, Instant) -> R) -> R {
        self.apply_core(|core, now| input(&mut core.machine, now))
    }

    fn apply_core<R>(&self, input: impl FnOnce(&mut Core, Instant) -> R) -> R {
        let now = self.clock.now();
        let mut effects = Effects::default();
        let result;
        {
            let mut core = lock(&self.core);
            result = input(&mut core, now);
            self.settle(&mut core, now, &mut effects);
        }
        self.carry_out(effects);
        result
    }

    /// Registers a service's abort handle under the lock that assigned its id.
    pub(crate) fn add_service(
        &self,
        name: Cow<'static, str>,
        abort: AbortHandle,
    ) -> Result<ServiceId, crate::Refused> {
        self.apply_core(|core, now| {
            let id = core.machine.add_service(now, name)?;
            // Under the same lock that assigned the id, so indices line up.
            core.aborts.push(abort);
            Ok(id)
        })
    }

    pub(crate) fn state(&self) -> State {
        lock(&self.core).machine.state()
    }

    pub(crate) fn cause(&self) -> Option<StopCause> {
        lock(&self.core).machine.cause().cloned()
    }

    pub(crate) fn report(&self) -> Option<Report> {
        lock(&self.core).report.clone()
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        lock(&self.core).machine.poll_timeout()
    }

    /// At the first call only: stops a running lifecycle that has never had a service and
    /// has no live session. Returns whether it did.
    pub(crate) fn stop_if_empty(&self) -> bool {
        // Decided once per lifecycle, at the first poll of the first `Wait`. Relaxed: only
        // this flag's own value matters, and `swap` is atomic on it.
        if self.empty_checked.swap(true, Ordering::Relaxed) {
            return false;
        }
        self.apply(|m, now| {
            // A session that begins right after this check is admitted before the close
            // and waited for: nothing is lost.
            m.state() == State::Running
                && m.services() == 0
                && self.gate.live() == 0
                && m.stop(now, StopCause::NothingToRun)
        })
    }

    /// The grace deadline (or a force) came: decide on one census of the sessions, so a
    /// session that ended a moment ago (its drain report still on its way) is not abandoned,
    /// and every abandoned one is named.
    pub(crate) fn timeout(&self) {
        self.apply_core(|core, now| {
            let census = self.census(now);
            if core.machine.state() == State::Draining
                && census.abandoned.is_empty()
                && census.abandoned_unnamed == 0
            {
                core.machine.handle_sessions_drained(now);
            }
            core.census = Some(census);
            // `settle` hands this census to the `Abandon` and the report this may cause.
            core.machine.handle_timeout(now);
        });
    }

    pub(crate) fn service_exited(&self, id: ServiceId, exit: Exit) {
        self.apply(|m, now| m.service_exited(now, id, exit));
    }

    /// Called by whoever observed the gate drain (closed, nothing live).
    #[cold]
    pub(crate) fn sessions_drained(&self) {
        self.apply(|m, now| m.handle_sessions_drained(now));
    }

    fn settle(&self, core: &mut Core, now: Instant, effects: &mut Effects) {
        while let Some(action) = core.machine.poll() {
            match action {
                Action::Drain => {
                    effects.fire_stop = true;
                    if self.gate.close() {
                        core.machine.handle_sessions_drained(now);
                    }
                }
                Action::Complain { .. } => effects.complaints.push(action),
                Action::Abandon => {
                    effects.aborts = core.aborts.clone();
                    // Only `timeout` abandons, and it took the census first.
                    let census = core.census.get_or_insert_with(|| self.census(now));
                    effects.abandoned_sessions = Some(census.clone());
                }
                Action::Finish => {
                    let tally = core.census.take().unwrap_or_else(|| SessionTally {
                        admitted: self.gate.admitted(),
                        refused: self.gate.refused(),
                        ..SessionTally::default()
                    });
                    core.report = core.machine.report(tally);
                    effects.fire_finished = true;
                }
            }
        }
        // A census taken by a timeout that abandoned nothing must not outlive it.
        core.census = None;
    }

    /// Names the sessions live now. Takes `registry` under `core` (the allowed order).
    fn census(&self, now: Instant) -> SessionTally {
        let registry = lock(&self.registry);
        // Named sessions begin and end under `registry`, so the named list and the live
        // count agree for them; only unnamed sessions can move while we look.
        let live = self.gate.live();
        let abandoned: Vec<AbandonedSession> = registry
            .iter()
            .map(|(_, s)| {
                AbandonedSession::new(s.name.clone(), now.saturating_duration_since(s.began))
            })
            .collect();
        let abandoned_unnamed = live.saturating_sub(abandoned.len() as u64);
        SessionTally {
            admitted: self.gate.admitted(),
            refused: self.gate.refused(),
            abandoned,
            abandoned_unnamed,
        }
    }

    /// Closes the queue of services waiting for a driver and drops what is in it: each
    /// dropped task reports itself (ignored by a final machine). This also breaks the cycle
    /// queue → task → shared. Must not be called with `core` held.
    pub(crate) fn drop_queued_services(&self) {
        drop(self.queue.close());
    }

    fn carry_out(&self, effects: Effects) {
        if effects.fire_stop {
            self.stop.fire();
        }
        for action in &effects.complaints {
            if let Action::Complain { name, outcome, .. } = action {
                complain::service(name, outcome);
            }
        }
        if let Some(census) = &effects.abandoned_sessions {
            complain::sessions(census);
        }
        for abort in effects.aborts {
            abort.abort();
        }
        if effects.fire_finished {
            // Services never picked up by a driver will never run now.
            self.drop_queued_services();
            self.finished.fire();
        }
    }
}
