//! Runs schedules on the pure `Machine`, behind the smallest driver that gives it the
//! semantics of `Op`. The driver decides nothing: it keeps the sessions itself (the shell's
//! gate and registry), answers every `Action::Census` with a count of them, forwards the last
//! session's end after admission closed, the first drive (the first `wait()` poll), service
//! exits, readiness and the timer, makes the runs `Action::Start` asks for, fires each
//! service's own stop signal (at `Action::Drain` unless `Machine::held` lists it, else at its
//! `Action::Release`) — and the machine decides every transition.

use std::time::{Duration, Instant};

use async_lifecycle::machine::{Action, Exit, Machine, ServiceId, SessionCensus};
use async_lifecycle::{NamedSession, PanickedSession, Refused, ServiceOptions, State};

use super::check::{Driver, Observation, Timer};
use super::op::{self, Answer, Config, How, Op};

#[derive(Debug)]
struct Service {
    id: ServiceId,
    name: String,
    honours_stop: bool,
    /// A run of it exists (made, not ended, not cancelled or given up on).
    run: bool,
    /// Its own stop signal fired.
    signalled: bool,
    /// Its run was polled by a drive (a run made outside one is polled at the next).
    polled: bool,
}

/// The pure machine under test.
#[derive(Debug)]
pub(crate) struct PureMachine {
    t0: Instant,
    now: Instant,
    machine: Machine,
    services: Vec<Service>,
    service_attempts: usize,
    session_attempts: usize,
    /// Live sessions: name (if named) and when each began.
    /// Live sessions: name, when begun, the parent's name (a child of a named session).
    live: Vec<(Option<String>, Instant, Option<String>)>,
    /// Admission closed (the `Drain` action was carried out).
    closed: bool,
    admitted: u64,
    refused: u64,
    panicked: Vec<PanickedSession>,
    wait_polled: bool,
    /// `Action::Release`s seen: the service's name, when.
    releases: Vec<(String, Duration)>,
    /// A command sent to a run, delivered at the next drive: which service, how it ends.
    command: Option<(usize, Exit)>,
    /// Inside a drive: runs made now are polled in it.
    driving: bool,
}

impl Driver for PureMachine {
    const REPORT_AT_FINISH: bool = true;

    fn new(config: Config) -> Self {
        let t0 = Instant::now();
        PureMachine {
            t0,
            now: t0,
            machine: {
                let mut machine = Machine::new(t0, config.grace.duration(), config.policy());
                machine.set_restart_intensity(op::intensity());
                machine.set_pre_drain(config.pre_drain());
                machine
            },
            services: Vec::new(),
            service_attempts: 0,
            session_attempts: 0,
            live: Vec::new(),
            closed: false,
            admitted: 0,
            refused: 0,
            panicked: Vec::new(),
            wait_polled: false,
            releases: Vec::new(),
            command: None,
            driving: false,
        }
    }

    fn apply(&mut self, op: Op) -> Option<Answer> {
        match op {
            Op::AddService { .. } | Op::AddRestartable { .. } | Op::AddDependent { .. } => {
                return Some(Answer::Service(self.add(op)));
            }
            Op::Ready { pick } => {
                let mut ready = false;
                if !self.services.is_empty() {
                    let service = &self.services[usize::from(pick) % self.services.len()];
                    // Only a run calls it: no run, no call.
                    if service.run {
                        ready = self.machine.service_ready(self.now, service.id);
                        self.settle();
                    }
                }
                return Some(Answer::Ready(ready));
            }
            Op::BeginSession { named } => {
                let n = self.session_attempts;
                self.session_attempts += 1;
                if self.closed {
                    self.refused += 1;
                    return Some(Answer::Session(Err(
                        if self.machine.state().is_terminal() {
                            Refused::Ended
                        } else {
                            Refused::Draining
                        },
                    )));
                }
                self.admitted += 1;
                self.live
                    .push((named.then(|| op::session_name(n)), self.now, None));
                return Some(Answer::Session(Ok(())));
            }
            Op::BeginChild { pick, named } => {
                if self.live.is_empty() {
                    return None;
                }
                let parent = self.live[usize::from(pick) % self.live.len()].0.clone();
                let n = self.session_attempts;
                self.session_attempts += 1;
                // A child of a live session is admitted until the lifecycle ended.
                if self.machine.state().is_terminal() {
                    self.refused += 1;
                    return Some(Answer::Session(Err(Refused::Ended)));
                }
                self.admitted += 1;
                self.live
                    .push((named.then(|| op::session_name(n)), self.now, parent));
                return Some(Answer::Session(Ok(())));
            }
            Op::EndSession { pick } => self.end_session(pick, false),
            Op::PanicSession { pick } => self.end_session(pick, true),
            Op::ServiceExit { pick, how } => {
                if !self.services.is_empty() {
                    let index = usize::from(pick) % self.services.len();
                    let exit = match how {
                        How::Ok => Exit::Ok,
                        How::Err => Exit::Err(op::FAILURE.to_owned()),
                        How::Panic => Exit::Panic(op::PANIC.to_owned()),
                    };
                    if self.services[index].run {
                        self.command = Some((index, exit));
                    }
                }
                self.drive();
            }
            Op::Stop { cause } => {
                self.machine.request_stop(self.now, op::stop_cause(cause));
                self.settle();
            }
            Op::Force => {
                self.machine.force(self.now);
                self.settle();
            }
            Op::Advance { millis } => self.now += Duration::from_millis(u64::from(millis)),
            Op::Drive => self.drive(),
        }
        None
    }

    fn observe(&self) -> Observation {
        Observation {
            state: self.machine.state(),
            cause: self.machine.cause().cloned(),
            live: self.live.len(),
            refused: self.refused,
            timer: Timer::Deadline(self.machine.poll_timeout().map(|d| d - self.t0)),
            releases: self.releases.clone(),
            readiness: self
                .services
                .iter()
                .map(|s| {
                    let (waiting, ready) = self.machine.service_readiness(s.id);
                    let (_, ended) = self.machine.service_status(s.id);
                    let (_, backoff) = self.machine.service_restarts(s.id);
                    // As the live view shows it: a run that ended, or waits for its
                    // restart, is not ready.
                    (waiting, ready && ended.is_none() && backoff.is_none())
                })
                .collect(),
            report: self.machine.report().cloned(),
        }
    }
}

impl PureMachine {
    fn add(&mut self, op: Op) -> Result<(), async_lifecycle::ServiceError> {
        let (honours_stop, options) = match op {
            Op::AddService { honours_stop } => (honours_stop, ServiceOptions::new()),
            Op::AddRestartable {
                honours_stop,
                always,
            } => (
                honours_stop,
                ServiceOptions::new()
                    .restart(op::restart_policy(always))
                    .backoff(op::backoff()),
            ),
            Op::AddDependent {
                on,
                declares_ready,
                start_timeout,
                budget,
                honours_stop,
                restart,
            } => {
                let after = op::dependencies(on, self.services.len())
                    .into_iter()
                    .map(|index| self.services[index].name.clone());
                let options =
                    op::dependent_options(after, restart, declares_ready, start_timeout, budget);
                (honours_stop, options)
            }
            _ => unreachable!("not an add"),
        };
        let name = op::service_name(self.service_attempts);
        self.service_attempts += 1;
        let ordered = options.dependencies().next().is_some();
        let id = self
            .machine
            .add_service_with(self.now, name.clone(), options)?;
        self.services.push(Service {
            id,
            name,
            honours_stop,
            // One with dependencies is started by an `Action::Start` (maybe at once).
            run: !ordered,
            signalled: false,
            polled: false,
        });
        self.settle();
        Ok(())
    }

    fn end_session(&mut self, pick: u8, panicked: bool) {
        if self.live.is_empty() {
            return;
        }
        let index = usize::from(pick) % self.live.len();
        let (name, _, _) = self.live.remove(index);
        if panicked {
            self.panicked
                .push(PanickedSession::new(name.map(Into::into), None));
        }
        // The gate reports the drain to whoever took the last live session after the close.
        if self.closed && self.live.is_empty() {
            let census = self.census();
            self.machine.handle_census(self.now, census);
            self.settle();
        }
    }

    fn exit(&mut self, index: usize, exit: Exit) {
        let service = &mut self.services[index];
        // Only a run ends.
        if !std::mem::replace(&mut service.run, false) {
            return;
        }
        self.machine.service_exited(self.now, service.id, exit);
        self.settle();
    }

    /// What `wait()` does when it runs, as the shell's executor orders it: the first poll
    /// is forwarded; then the runs are polled in the order they were woken — those whose own
    /// stop signal fired (a run that honours it returns; a command comes first in a run),
    /// then the run a command woke, then the runs made since the last drive in the order
    /// made, then whatever their ends woke — then the timer; again until nothing is left.
    fn drive(&mut self) {
        if self.machine.report().is_some() {
            self.command = None;
            return;
        }
        if !std::mem::replace(&mut self.wait_polled, true) {
            self.machine.handle_wait_started(self.now);
            self.settle();
        }
        self.driving = true;
        let mut command = self.command.take();
        for round in 0.. {
            if round == 1000 {
                panic!(
                    "wait() would spin: poll_timeout stays due at {:?}",
                    self.now - self.t0
                );
            }
            let mut progress = false;
            let signalled = |s: &Service| s.honours_stop && s.run && s.signalled;
            let mut order: Vec<usize> = (0..self.services.len())
                .filter(|&i| self.services[i].polled && signalled(&self.services[i]))
                .collect();
            if let Some((index, _)) = &command {
                if self.services[*index].polled && !order.contains(index) {
                    order.push(*index);
                }
            }
            order.extend((0..self.services.len()).filter(|&i| !self.services[i].polled));
            loop {
                for index in std::mem::take(&mut order) {
                    let exit = match command.take() {
                        Some((commanded, exit)) if commanded == index => exit,
                        other => {
                            command = other;
                            if !signalled(&self.services[index]) {
                                continue;
                            }
                            Exit::Ok
                        }
                    };
                    self.exit(index, exit);
                    progress = true;
                }
                for s in &mut self.services {
                    s.polled = true;
                }
                order = (0..self.services.len())
                    .filter(|&i| signalled(&self.services[i]))
                    .collect();
                if order.is_empty() || self.machine.report().is_some() {
                    break;
                }
            }
            if self.machine.poll_timeout().is_some_and(|d| self.now >= d) {
                self.machine.handle_timeout(self.now);
                self.settle();
                progress = true;
            }
            if !progress || self.machine.report().is_some() {
                break;
            }
        }
        self.driving = false;
    }

    fn census(&self) -> SessionCensus {
        let live: Vec<NamedSession> = self
            .live
            .iter()
            .filter_map(|(name, began, parent)| {
                let named = NamedSession::new(name.clone()?, self.now - *began);
                Some(match parent {
                    Some(parent) => named.with_parent(parent.clone()),
                    None => named,
                })
            })
            .collect();
        SessionCensus {
            admitted: self.admitted,
            refused: self.refused,
            live_unnamed: (self.live.len() - live.len()) as u64,
            live,
            panicked: self.panicked.clone(),
            panicked_count: self.panicked.len() as u64,
        }
    }

    /// Carries out the machine's actions, as the shell's `Shared::settle` does.
    fn settle(&mut self) {
        while let Some(action) = self.machine.poll() {
            match action {
                Action::Drain => {
                    self.closed = true;
                    // The stop fires every signal but those of the services still held.
                    let held: Vec<ServiceId> = self.machine.held().collect();
                    for s in &mut self.services {
                        s.signalled = !held.contains(&s.id);
                    }
                }
                Action::Release { service } => {
                    let s = &mut self.services[service.index()];
                    s.signalled = true;
                    self.releases.push((s.name.clone(), self.now - self.t0));
                }
                // The run is cancelled: it will not return.
                Action::GiveUp { service } => self.services[service.index()].run = false,
                // A first run, or the next run of a restarted service: made at once.
                Action::Start { service } => {
                    if self.machine.state() == State::Running {
                        self.machine.run_made(self.now, service);
                        let s = &mut self.services[service.index()];
                        s.run = true;
                        s.polled = self.driving;
                    } else {
                        self.machine.cancel_start(self.now, service);
                    }
                }
                Action::Census => {
                    let census = self.census();
                    self.machine.handle_census(self.now, census);
                }
                // Complaints, cancellation and the report's publication are the shell's
                // business; the machine keeps the report.
                _ => {}
            }
        }
    }
}
