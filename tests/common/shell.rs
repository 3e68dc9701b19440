//! Runs schedules on the real async shell: a `Lifecycle` on a `ManualClock`, its `wait()`
//! spawned on a single-threaded `LocalPool` that runs only when a schedule says so.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Instant;

use async_lifecycle::{
    Clock, Event, Lifecycle, ManualClock, Report, ServiceError, ServiceOptions, Session, Sleep,
    StopSignal,
};
use futures::channel::oneshot;
use futures::executor::LocalPool;
use futures::task::LocalSpawnExt;

use super::check::{Driver, Observation, Timer};
use super::op::{self, Answer, Config, How, Op};

/// How often one operation may read the clock or sleep on it before the checker calls it a
/// busy loop. A real operation uses it a handful of times.
const SPIN_LIMIT: usize = 100_000;

/// The manual clock, counting its uses in the current operation: a lifecycle that spins (a
/// `wait()` that re-arms a due sleep forever, say) fails the schedule with a message and a
/// shrunk input instead of hanging the checker.
#[derive(Debug, Clone)]
struct Watched {
    clock: ManualClock,
    uses: Arc<AtomicUsize>,
}

impl Watched {
    fn touch(&self) {
        // Relaxed: a counter read and reset by the one thread that drives the lifecycle.
        let uses = self.uses.fetch_add(1, Ordering::Relaxed);
        // Once, and never while unwinding: the lifecycle's drop reads the clock too.
        if uses == SPIN_LIMIT && !std::thread::panicking() {
            panic!("the lifecycle used the clock {SPIN_LIMIT} times in one operation: a busy loop");
        }
    }
}

impl Clock for Watched {
    fn now(&self) -> Instant {
        self.touch();
        self.clock.now()
    }

    fn sleep_until(&self, deadline: Instant) -> Sleep {
        self.touch();
        self.clock.sleep_until(deadline)
    }
}

/// The async shell under test.
pub(crate) struct Shell {
    clock: ManualClock,
    uses: Arc<AtomicUsize>,
    t0: Instant,
    lc: Lifecycle,
    pool: LocalPool,
    report: Rc<RefCell<Option<Report>>>,
    /// One per admitted service, in order: how to tell its current run to end (empty
    /// while no run waits for a command: ended, or waiting for a restart).
    commands: Vec<Arc<std::sync::Mutex<Option<oneshot::Sender<How>>>>>,
    /// One per admitted service, in order: the stop signal its current run was handed (empty
    /// while it has no run), for `Op::Ready`.
    signals: Vec<Arc<std::sync::Mutex<Option<StopSignal>>>>,
    /// The names of the admitted services, in order.
    names: Vec<String>,
    /// `Event::Stopping` (a held service's own stop signal fired): its name, when.
    releases: Arc<std::sync::Mutex<Vec<(String, std::time::Duration)>>>,
    service_attempts: usize,
    session_attempts: usize,
    live: Vec<Session>,
}

impl Driver for Shell {
    const REPORT_AT_FINISH: bool = false;

    fn new(config: Config) -> Self {
        super::quiet_planned_panics();
        let clock = ManualClock::new();
        let t0 = clock.now();
        let uses = Arc::new(AtomicUsize::new(0));
        let watched = Watched {
            clock: clock.clone(),
            uses: uses.clone(),
        };
        let releases = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (log, at) = (releases.clone(), clock.clone());
        let lc = Lifecycle::builder()
            .on_event(move |event| {
                if let Event::Stopping { service } = event {
                    let when = at.now() - t0;
                    log.lock().unwrap().push(((*service).to_owned(), when));
                }
            })
            .restart_intensity(op::intensity())
            .grace(config.grace.duration())
            .pre_drain(config.pre_drain())
            .clock(watched)
            .on_service_failure(config.policy())
            .build();
        let pool = LocalPool::new();
        let report = Rc::new(RefCell::new(None));
        let slot = report.clone();
        let wait = lc.wait();
        pool.spawner()
            .spawn_local(async move {
                *slot.borrow_mut() = Some(wait.await);
            })
            .expect("the pool is running");
        Shell {
            clock,
            uses,
            t0,
            lc,
            pool,
            report,
            commands: Vec::new(),
            signals: Vec::new(),
            names: Vec::new(),
            releases,
            service_attempts: 0,
            session_attempts: 0,
            live: Vec::new(),
        }
    }

    fn apply(&mut self, op: Op) -> Option<Answer> {
        self.uses.store(0, Ordering::Relaxed);
        match op {
            Op::AddService { .. } | Op::AddRestartable { .. } | Op::AddDependent { .. } => {
                return Some(Answer::Service(self.add_service(op)));
            }
            Op::Ready { pick } => {
                let mut ready = false;
                if !self.signals.is_empty() {
                    let index = usize::from(pick) % self.signals.len();
                    let signal = self.signals[index].lock().unwrap().clone();
                    if let Some(signal) = signal {
                        ready = signal.ready();
                    }
                }
                return Some(Answer::Ready(ready));
            }
            Op::BeginSession { named } => {
                let n = self.session_attempts;
                self.session_attempts += 1;
                let session = if named {
                    self.lc.session(op::session_name(n))
                } else {
                    self.lc.unnamed_session()
                };
                return Some(Answer::Session(session.map(|s| self.live.push(s))));
            }
            Op::BeginChild { pick, named } => {
                if self.live.is_empty() {
                    return None;
                }
                let n = self.session_attempts;
                self.session_attempts += 1;
                let parent = &self.live[usize::from(pick) % self.live.len()];
                let child = if named {
                    parent.child(op::session_name(n))
                } else {
                    parent.unnamed_child()
                };
                return Some(Answer::Session(child.map(|s| self.live.push(s))));
            }
            Op::EndSession { pick } => {
                if !self.live.is_empty() {
                    let index = usize::from(pick) % self.live.len();
                    drop(self.live.remove(index));
                }
            }
            Op::PanicSession { pick } => {
                if !self.live.is_empty() {
                    let index = usize::from(pick) % self.live.len();
                    let session = self.live.remove(index);
                    // The guard is dropped while this closure's panic unwinds.
                    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let _session = session;
                        std::panic::panic_any(op::PANIC);
                    }));
                    assert!(unwound.is_err());
                }
            }
            Op::ServiceExit { pick, how } => {
                if !self.commands.is_empty() {
                    let index = usize::from(pick) % self.commands.len();
                    let command = self.commands[index].lock().unwrap().take();
                    if let Some(command) = command {
                        // Fails only if the service already ended; then nothing happens.
                        let _ = command.send(how);
                    }
                }
                self.pool.run_until_stalled();
            }
            Op::Stop { cause } => self.lc.stop(op::stop_cause(cause)),
            Op::Force => self.lc.force(),
            Op::Advance { millis } => self
                .clock
                .advance(std::time::Duration::from_millis(u64::from(millis))),
            Op::Drive => self.pool.run_until_stalled(),
        }
        None
    }

    fn observe(&self) -> Observation {
        Observation {
            state: self.lc.state(),
            cause: self.lc.cause().cloned(),
            live: self.live.len(),
            refused: self.lc.snapshot().refused_sessions(),
            timer: Timer::Armed(self.clock.next_deadline().map(|d| d - self.t0)),
            releases: self.releases.lock().unwrap().clone(),
            readiness: self
                .lc
                .snapshot()
                .services()
                .iter()
                .map(|s| (s.is_waiting(), s.is_ready()))
                .collect(),
            report: self.report.borrow().clone(),
        }
    }
}

/// The signal slots would keep the lifecycle alive through the factories that fill them (a
/// cycle): emptied when the shell goes, so a run of many schedules does not leak them.
impl Drop for Shell {
    fn drop(&mut self) {
        for slot in &self.signals {
            slot.lock().unwrap().take();
        }
    }
}

impl Shell {
    fn add_service(&mut self, op: Op) -> Result<(), ServiceError> {
        let (honours_stop, options) = match op {
            Op::AddService { honours_stop } => (honours_stop, None),
            Op::AddRestartable {
                honours_stop,
                always,
            } => (
                honours_stop,
                Some(
                    ServiceOptions::new()
                        .restart(op::restart_policy(always))
                        .backoff(op::backoff()),
                ),
            ),
            Op::AddDependent {
                on,
                declares_ready,
                start_timeout,
                budget,
                honours_stop,
                restart,
            } => {
                let after = op::dependencies(on, self.names.len())
                    .into_iter()
                    .map(|index| self.names[index].clone());
                let options =
                    op::dependent_options(after, restart, declares_ready, start_timeout, budget);
                (honours_stop, Some(options))
            }
            _ => unreachable!("not an add"),
        };
        let name = op::service_name(self.service_attempts);
        self.service_attempts += 1;
        let slot = Arc::new(std::sync::Mutex::new(None));
        let signal_slot = Arc::new(std::sync::Mutex::new(None));
        let (commands, signals) = (slot.clone(), signal_slot.clone());
        // Each run makes its own command channel and leaves the sender in the slot, and its
        // stop signal in the other (taken back when the run returns).
        let run = move |mut stop: StopSignal| {
            let (tx, mut rx) = oneshot::channel::<How>();
            *commands.lock().unwrap() = Some(tx);
            *signals.lock().unwrap() = Some(stop.clone());
            let signals = signals.clone();
            async move {
                // The command first, then (for a service that honours it) its stop signal.
                let command = futures::future::poll_fn(|cx| {
                    if let Poll::Ready(command) = Pin::new(&mut rx).poll(cx) {
                        return Poll::Ready(command.ok());
                    }
                    if honours_stop && Pin::new(&mut stop).poll(cx).is_ready() {
                        return Poll::Ready(None);
                    }
                    Poll::Pending
                })
                .await;
                signals.lock().unwrap().take();
                match command {
                    None | Some(How::Ok) => Ok(()),
                    Some(How::Err) => Err(op::FAILURE),
                    Some(How::Panic) => std::panic::panic_any(op::PANIC),
                }
            }
        };
        // Before the add: a run made by it (or by a later readiness) fills the slots.
        self.commands.push(slot);
        self.signals.push(signal_slot);
        let added = match options {
            None => self.lc.service(name.clone(), run),
            Some(options) => self.lc.service_with(name.clone(), options, run),
        };
        if added.is_err() {
            self.commands.pop();
            self.signals.pop();
        } else {
            self.names.push(name);
        }
        added
    }
}
