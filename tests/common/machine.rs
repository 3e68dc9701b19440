//! Runs schedules on the pure `Machine`, behind the smallest driver that gives it the
//! semantics of `Op`: it keeps the sessions itself (the shell's gate and registry), reports
//! the drain, takes the census, and drives services and the deadline the way `wait()` does.

use std::time::{Duration, Instant};

use async_lifecycle::machine::{AbandonedSession, Action, Exit, Machine, ServiceId, SessionTally};
use async_lifecycle::{Refused, Report, State, StopCause};

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
    closed: bool,
    admitted: u64,
    refused: u64,
    census: Option<SessionTally>,
    report: Option<Report>,
    wait_polled: bool,
    wait_done: bool,
}

impl Driver for PureMachine {
    const REPORT_AT_FINISH: bool = true;

    fn new(config: Config) -> Self {
        let t0 = Instant::now();
        PureMachine {
            t0,
            now: t0,
            machine: Machine::new(t0, config.grace.duration(), config.policy()),
            services: Vec::new(),
            service_attempts: 0,
            session_attempts: 0,
            live: Vec::new(),
            closed: false,
            admitted: 0,
            refused: 0,
            census: None,
            report: None,
            wait_polled: false,
            wait_done: false,
        }
    }

    fn apply(&mut self, op: Op) -> Option<Result<(), Refused>> {
        match op {
            Op::AddService { honours_stop } => {
                let name = op::service_name(self.service_attempts);
                self.service_attempts += 1;
                let added = self.machine.add_service(self.now, name).map(|id| {
                    self.services.push(Service {
                        id,
                        honours_stop,
                        exited: false,
                    });
                });
                return Some(added);
            }
            Op::BeginSession { named } => {
                let n = self.session_attempts;
                self.session_attempts += 1;
                if self.closed {
                    self.refused += 1;
                    return Some(Err(if self.machine.state().is_terminal() {
                        Refused::Terminated
                    } else {
                        Refused::Draining
                    }));
                }
                self.admitted += 1;
                self.live
                    .push((named.then(|| op::session_name(n)), self.now));
                return Some(Ok(()));
            }
            Op::EndSession { pick } => {
                if !self.live.is_empty() {
                    let index = usize::from(pick) % self.live.len();
                    self.live.remove(index);
                    if self.closed && self.live.is_empty() {
                        self.machine.handle_sessions_drained(self.now);
                        self.settle();
                    }
                }
            }
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
                self.machine.handle_timeout(self.now);
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
            timer: Timer::Deadline(self.machine.poll_timeout().map(|d| d - self.t0)),
            report: self.report.clone(),
        }
    }
}

impl PureMachine {
    fn exit(&mut self, index: usize, exit: Exit) {
        let service = &mut self.services[index];
        if service.exited {
            return;
        }
        service.exited = true;
        self.machine.service_exited(self.now, service.id, exit);
        self.settle();
    }

    /// What `wait()` does when it runs: services first, then the deadline, then (on its
    /// first poll only) the "nothing to run" check.
    fn drive(&mut self) {
        if self.wait_done {
            return;
        }
        let first_poll = !self.wait_polled;
        self.wait_polled = true;
        if self.machine.state() == State::Draining {
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
        if self.machine.state() == State::Running
            && first_poll
            && self.machine.services() == 0
            && self.live.is_empty()
        {
            self.machine.stop(self.now, StopCause::NothingToRun);
            self.settle();
        }
        self.wait_done = self.machine.state().is_terminal();
    }

    /// Carries out the machine's actions, as the shell's `Shared::settle` does.
    fn settle(&mut self) {
        while let Some(action) = self.machine.poll() {
            match action {
                Action::Drain => {
                    self.closed = true;
                    if self.live.is_empty() {
                        self.machine.handle_sessions_drained(self.now);
                    }
                }
                Action::Abandon => {
                    let abandoned: Vec<AbandonedSession> = self
                        .live
                        .iter()
                        .filter_map(|(name, began)| {
                            let name = name.clone()?;
                            Some(AbandonedSession::new(name, self.now - *began))
                        })
                        .collect();
                    let unnamed = self.live.len() - abandoned.len();
                    self.census = Some(SessionTally {
                        admitted: self.admitted,
                        refused: self.refused,
                        abandoned,
                        abandoned_unnamed: unnamed as u64,
                    });
                }
                Action::Finish => {
                    let tally = self.census.take().unwrap_or_else(|| SessionTally {
                        admitted: self.admitted,
                        refused: self.refused,
                        ..SessionTally::default()
                    });
                    self.report = self.machine.report(tally);
                }
                // Complaints are the shell's business; the report records the outcome.
                _ => {}
            }
        }
    }
}
