//! Runs schedules on the pure `Machine`, behind the smallest driver that gives it the
//! semantics of `Op`. The driver decides nothing: it keeps the sessions itself (the shell's
//! gate and registry), answers every `Action::Census` with a count of them, forwards the last
//! session's end after admission closed, the first drive (the first `wait()` poll), service
//! exits and the deadline — and the machine decides every transition.

use std::time::{Duration, Instant};

use async_lifecycle::machine::{Action, Exit, Machine, ServiceId, SessionCensus};
use async_lifecycle::{NamedSession, PanickedSession, Refused, ServiceError, ServiceOptions};

use super::check::{Driver, Observation, Timer};
use super::op::{self, Config, How, Op};

#[derive(Debug)]
struct Service {
    id: ServiceId,
    honours_stop: bool,
    exited: bool,
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
    live: Vec<(Option<String>, Instant)>,
    /// Admission closed (the `Drain` action was carried out).
    closed: bool,
    admitted: u64,
    refused: u64,
    panicked: Vec<PanickedSession>,
    wait_polled: bool,
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
        }
    }

    fn apply(&mut self, op: Op) -> Option<Result<(), Refused>> {
        match op {
            Op::AddService { .. } | Op::AddRestartable { .. } => {
                let (honours_stop, options) = match op {
                    Op::AddRestartable {
                        honours_stop,
                        always,
                    } => (
                        honours_stop,
                        ServiceOptions::new()
                            .restart(op::restart_policy(always))
                            .backoff(op::backoff()),
                    ),
                    Op::AddService { honours_stop } => (honours_stop, ServiceOptions::new()),
                    _ => unreachable!(),
                };
                let name = op::service_name(self.service_attempts);
                self.service_attempts += 1;
                let added = self
                    .machine
                    .add_service_with(self.now, name, options)
                    .map(|id| {
                        self.services.push(Service {
                            id,
                            honours_stop,
                            exited: false,
                        });
                    })
                    .map_err(|e| match e {
                        ServiceError::Refused(refused) => refused,
                        other => panic!("services are named uniquely, yet: {other}"),
                    });
                return Some(added);
            }
            Op::BeginSession { named } => {
                let n = self.session_attempts;
                self.session_attempts += 1;
                if self.closed {
                    self.refused += 1;
                    return Some(Err(if self.machine.state().is_terminal() {
                        Refused::Ended
                    } else {
                        Refused::Draining
                    }));
                }
                self.admitted += 1;
                self.live
                    .push((named.then(|| op::session_name(n)), self.now));
                return Some(Ok(()));
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
                    self.exit(index, exit);
                }
                self.drive();
            }
            Op::Stop { cause } => {
                self.machine.stop(self.now, op::stop_cause(cause));
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
            report: self.machine.report().cloned(),
        }
    }
}

impl PureMachine {
    fn end_session(&mut self, pick: u8, panicked: bool) {
        if self.live.is_empty() {
            return;
        }
        let index = usize::from(pick) % self.live.len();
        let (name, _) = self.live.remove(index);
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
        if service.exited {
            return;
        }
        service.exited = true;
        self.machine.service_exited(self.now, service.id, exit);
        self.settle();
    }

    /// What `wait()` does when it runs: the first poll is forwarded, then services are
    /// driven, then the deadline.
    fn drive(&mut self) {
        if self.machine.report().is_some() {
            return;
        }
        if !std::mem::replace(&mut self.wait_polled, true) {
            self.machine.handle_wait_started(self.now);
            self.settle();
        }
        if self.machine.state() == async_lifecycle::State::Draining {
            for index in 0..self.services.len() {
                if self.services[index].honours_stop {
                    self.exit(index, Exit::Ok);
                }
            }
        }
        if self.machine.poll_timeout().is_some_and(|d| self.now >= d) {
            self.machine.handle_timeout(self.now);
            self.settle();
        }
    }

    fn census(&self) -> SessionCensus {
        let live: Vec<NamedSession> = self
            .live
            .iter()
            .filter_map(|(name, began)| Some(NamedSession::new(name.clone()?, self.now - *began)))
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
                Action::Drain => self.closed = true,
                // The next run of a restarted service: it takes commands again.
                Action::Start { service } => {
                    self.machine.run_made(self.now, service);
                    self.services[service.index()].exited = false;
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
