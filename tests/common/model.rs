//! The reference model: a naive, obviously-correct lifecycle made of plain counters and lists,
//! with no concurrency, no clock (time is a `Duration` since creation) and no shortcuts.
//!
//! It implements the semantics documented on `Op` directly from the design's transition
//! table; the real lifecycle (the async shell, or the pure machine behind a small driver) is
//! compared against it after every operation.

use std::time::Duration;

use async_lifecycle::{Refused, ServiceOutcome, State, StopCause};

use super::op::{self, Config, How, Op};

#[derive(Debug, Clone)]
struct Service {
    name: String,
    honours_stop: bool,
    /// `None`: never restarted; `Some(always)`: see `Op::AddRestartable`.
    restart: Option<bool>,
    started: Duration,
    run_started: Duration,
    attempts: u32,
    streak: u32,
    last_outcome: Option<ServiceOutcome>,
    /// While waiting for a restart: when it is due (no run is active then).
    backoff_until: Option<Duration>,
    ended: Option<(Duration, ServiceOutcome)>,
}

#[derive(Debug, Clone)]
struct Session {
    name: Option<String>,
    began: Duration,
}

/// The report the model expects, field by field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ModelReport {
    pub(crate) state: State,
    pub(crate) cause: Option<StopCause>,
    pub(crate) forced: bool,
    pub(crate) drained_in: Duration,
    pub(crate) lifetime: Duration,
    /// Every service in the order added: name, outcome, how long it ran, runs, the last
    /// restarted run's outcome.
    pub(crate) services: Vec<(
        String,
        ServiceOutcome,
        Duration,
        u32,
        Option<ServiceOutcome>,
    )>,
    pub(crate) admitted: u64,
    pub(crate) completed: u64,
    pub(crate) refused: u64,
    /// Sessions ended by a panic, in order: their names (`None`: unnamed).
    pub(crate) panicked: Vec<Option<String>>,
    /// Abandoned named sessions, sorted by age (oldest first), then name.
    pub(crate) abandoned: Vec<(String, Duration)>,
    pub(crate) abandoned_unnamed: u64,
    pub(crate) exit_code: i32,
}

/// The reference lifecycle.
#[derive(Debug, Clone)]
pub(crate) struct Model {
    config: Config,
    now: Duration,
    state: State,
    cause: Option<StopCause>,
    forced: bool,
    stopped_at: Option<Duration>,
    deadline: Option<Duration>,
    services: Vec<Service>,
    live: Vec<Session>,
    service_attempts: usize,
    session_attempts: usize,
    admitted: u64,
    refused: u64,
    panicked: Vec<Option<String>>,
    /// When each restart within the intensity's window happened.
    restarts: Vec<Duration>,
    /// Half the grace after the stop: the slow-to-stop warning's timer, until it fires.
    slow_at: Option<Duration>,
    report: Option<ModelReport>,
    wait_polled: bool,
    wait_done: bool,
    armed: Option<Duration>,
}

impl Model {
    /// A running lifecycle at time zero.
    pub(crate) fn new(config: Config) -> Self {
        Model {
            config,
            now: Duration::ZERO,
            state: State::Running,
            cause: None,
            forced: false,
            stopped_at: None,
            deadline: None,
            services: Vec::new(),
            live: Vec::new(),
            service_attempts: 0,
            session_attempts: 0,
            admitted: 0,
            refused: 0,
            panicked: Vec::new(),
            restarts: Vec::new(),
            slow_at: None,
            report: None,
            wait_polled: false,
            wait_done: false,
            armed: None,
        }
    }

    /// The state.
    pub(crate) fn state(&self) -> State {
        self.state
    }

    /// The first stop cause.
    pub(crate) fn cause(&self) -> Option<&StopCause> {
        self.cause.as_ref()
    }

    /// The time since creation.
    pub(crate) fn now(&self) -> Duration {
        self.now
    }

    /// What `Machine::poll_timeout` answers: the earliest restart due while running, the
    /// grace deadline while draining.
    pub(crate) fn deadline(&self) -> Option<Duration> {
        match self.state {
            State::Running => self.services.iter().filter_map(|s| s.backoff_until).min(),
            // The slow-to-stop timer matters only while a service is still running.
            State::Draining => match (
                self.deadline,
                self.slow_at
                    .filter(|_| self.services.iter().any(|s| s.ended.is_none())),
            ) {
                (Some(deadline), Some(slow)) => Some(deadline.min(slow)),
                (deadline, slow) => deadline.or(slow),
            },
            _ => None,
        }
    }

    /// The deadline `wait()` has a sleep registered for on the manual clock.
    pub(crate) fn armed(&self) -> Option<Duration> {
        self.armed
    }

    /// Whether `wait()` has resolved.
    pub(crate) fn wait_done(&self) -> bool {
        self.wait_done
    }

    /// The report, once a final state was reached.
    pub(crate) fn report(&self) -> Option<&ModelReport> {
        self.report.as_ref()
    }

    /// The number of live sessions.
    /// Every refusal so far, after the end included (what a snapshot counts).
    pub(crate) fn refused(&self) -> u64 {
        self.refused
    }

    pub(crate) fn live(&self) -> usize {
        self.live.len()
    }

    /// Applies one operation. Returns what a `BeginSession` or `AddService` answered.
    pub(crate) fn apply(&mut self, op: Op) -> Option<Result<(), Refused>> {
        match op {
            Op::AddService { honours_stop } => return Some(self.add_service(honours_stop, None)),
            Op::AddRestartable {
                honours_stop,
                always,
            } => return Some(self.add_service(honours_stop, Some(always))),
            Op::BeginSession { named } => return Some(self.begin_session(named)),
            Op::EndSession { pick } => self.end_session(pick, false),
            Op::PanicSession { pick } => self.end_session(pick, true),
            Op::ServiceExit { pick, how } => {
                if !self.services.is_empty() {
                    let index = usize::from(pick) % self.services.len();
                    self.service_exit(index, how);
                }
                self.drive();
            }
            Op::Stop { cause } => self.stop(op::stop_cause(cause)),
            Op::Force => self.force(),
            Op::Advance { millis } => {
                self.now += Duration::from_millis(u64::from(millis));
                // The manual clock forgets a sleep once it is due.
                if self.armed.is_some_and(|armed| armed <= self.now) {
                    self.armed = None;
                }
            }
            Op::Drive => self.drive(),
        }
        None
    }

    fn refusal(&self) -> Refused {
        if self.state.is_terminal() {
            Refused::Ended
        } else {
            Refused::Draining
        }
    }

    fn add_service(&mut self, honours_stop: bool, restart: Option<bool>) -> Result<(), Refused> {
        let n = self.service_attempts;
        self.service_attempts += 1;
        if self.state != State::Running {
            return Err(self.refusal());
        }
        self.services.push(Service {
            name: op::service_name(n),
            honours_stop,
            restart,
            started: self.now,
            run_started: self.now,
            attempts: 1,
            streak: 0,
            last_outcome: None,
            backoff_until: None,
            ended: None,
        });
        Ok(())
    }

    fn begin_session(&mut self, named: bool) -> Result<(), Refused> {
        let n = self.session_attempts;
        self.session_attempts += 1;
        if self.state != State::Running {
            self.refused += 1;
            return Err(self.refusal());
        }
        self.admitted += 1;
        self.live.push(Session {
            name: named.then(|| op::session_name(n)),
            began: self.now,
        });
        Ok(())
    }

    fn end_session(&mut self, pick: u8, panicked: bool) {
        if self.live.is_empty() {
            return;
        }
        let index = usize::from(pick) % self.live.len();
        let session = self.live.remove(index);
        if panicked {
            self.panicked.push(session.name);
        }
        self.settle();
        // The last session's end is a census: past the deadline, it decides like the timer.
        if self.live.is_empty() {
            self.timeout();
        }
    }

    fn service_exit(&mut self, index: usize, how: How) {
        let service = &self.services[index];
        // A service waiting for its restart has no run to end.
        if self.state.is_terminal() || service.ended.is_some() || service.backoff_until.is_some() {
            return;
        }
        // An exit at or after the deadline is too late: the deadline decides first.
        if self.state == State::Draining && self.deadline.is_some_and(|d| d <= self.now) {
            self.timeout();
            return;
        }
        let outcome = match (how, self.state) {
            (How::Ok, State::Running) => ServiceOutcome::EndedEarly,
            (How::Ok, _) => ServiceOutcome::Stopped,
            (How::Err, _) => ServiceOutcome::Failed(op::FAILURE.to_owned()),
            (How::Panic, _) => ServiceOutcome::Panicked(op::PANIC.to_owned()),
        };
        let restarts = match (self.services[index].restart, &outcome) {
            (None, _) => false,
            (Some(always), ServiceOutcome::EndedEarly) => always,
            (Some(_), ServiceOutcome::Failed(_) | ServiceOutcome::Panicked(_)) => true,
            (Some(_), _) => false,
        };
        if self.state == State::Running && restarts {
            self.restart(index, outcome);
            return;
        }
        let clean = outcome == ServiceOutcome::Stopped;
        self.services[index].ended = Some((self.now, outcome));
        if !clean && self.state == State::Running && !self.config.report_only {
            let service = self.services[index].name.clone().into();
            self.stop(StopCause::ServiceEnded { service });
        }
        self.settle();
    }

    /// A restartable run ended while running: schedule its next run after the backoff,
    /// unless more than the intensity's restarts fall within its window.
    fn restart(&mut self, index: usize, outcome: ServiceOutcome) {
        let intensity = op::intensity();
        let now = self.now;
        self.restarts.retain(|&at| now - at < intensity.within());
        self.restarts.push(now);
        let count = self.restarts.len() as u32;
        let service = &mut self.services[index];
        service.last_outcome = Some(outcome.clone());
        if count > intensity.max_restarts() {
            service.ended = Some((now, outcome));
            let cause = StopCause::RestartIntensity {
                service: service.name.clone().into(),
                restarts: count,
                within: intensity.within(),
            };
            self.stop(cause);
            return;
        }
        let backoff = op::backoff();
        if now - service.run_started >= Duration::from_millis(200) {
            service.streak = 0;
        }
        service.streak += 1;
        // 10 ms, doubling, at most 80 ms: written out, not asked of the crate.
        let wait = Duration::from_millis((10u64 << (service.streak - 1).min(4)).min(80));
        debug_assert_eq!(wait, backoff.ceiling(service.streak));
        service.backoff_until = Some(now + wait);
    }

    fn stop(&mut self, cause: StopCause) {
        if self.state != State::Running {
            return;
        }
        // Waiting for a restart: stopped at once, ending as its last run did — but a run
        // that returned Ok (a periodic job under Always) was not a failure: stopped cleanly.
        for service in &mut self.services {
            if service.backoff_until.take().is_some() {
                let outcome = match service.last_outcome.clone().expect("it ran") {
                    ServiceOutcome::EndedEarly => ServiceOutcome::Stopped,
                    other => other,
                };
                service.ended = Some((self.now, outcome));
            }
        }
        self.state = State::Draining;
        self.cause = Some(cause);
        self.stopped_at = Some(self.now);
        self.deadline = self.config.grace.bound().map(|grace| self.now + grace);
        self.slow_at = self
            .config
            .grace
            .bound()
            .filter(|grace| !grace.is_zero())
            .map(|grace| self.now + grace / 2);
        self.settle();
        // A zero grace: the stop is its own deadline.
        self.timeout();
    }

    fn force(&mut self) {
        if self.state.is_terminal() {
            return;
        }
        // Forced, even when the stop it starts finds nothing to wait for.
        self.forced = true;
        if self.state == State::Running {
            self.stop(StopCause::Forced);
        }
        if self.state == State::Draining {
            self.deadline = Some(self.deadline.map_or(self.now, |d| d.min(self.now)));
            self.timeout();
        }
    }

    /// What one run of the executor does: `wait()` (if it is woken, which it is whenever
    /// something below applies) drives the services, then the deadline.
    fn drive(&mut self) {
        if self.wait_done {
            return;
        }
        let first_poll = !self.wait_polled;
        self.wait_polled = true;
        if self.state == State::Draining {
            for index in 0..self.services.len() {
                if self.services[index].honours_stop {
                    self.service_exit(index, How::Ok);
                }
            }
        }
        // Half the grace gone: the slow-to-stop warning fires once (it changes no state).
        if self.state == State::Draining && self.slow_at.is_some_and(|slow| slow <= self.now) {
            self.slow_at = None;
        }
        self.timeout();
        // While running, the timer starts every restart that is due.
        if self.state == State::Running {
            for service in &mut self.services {
                if service.backoff_until.is_some_and(|due| due <= self.now) {
                    service.backoff_until = None;
                    service.attempts += 1;
                    service.run_started = self.now;
                }
            }
        }
        // `wait()` on a lifecycle with nothing to run stops it; only its first poll can see
        // that (nothing wakes it later while it runs without services).
        if self.state == State::Running
            && first_poll
            && self.services.is_empty()
            && self.live.is_empty()
        {
            self.stop(StopCause::NothingToRun);
        }
        if self.state.is_terminal() {
            self.wait_done = true;
            self.armed = None;
        } else {
            // The sleep `wait()` keeps registered: for the next timeout, or none.
            self.armed = self.deadline();
        }
    }

    fn timeout(&mut self) {
        if self.state != State::Draining || self.deadline.is_none_or(|d| self.now < d) {
            return;
        }
        for service in &mut self.services {
            if service.ended.is_none() {
                service.ended = Some((self.now, ServiceOutcome::Abandoned));
            }
        }
        self.finish(State::Abandoned);
    }

    fn settle(&mut self) {
        let services_done = self.services.iter().all(|s| s.ended.is_some());
        if self.state == State::Draining && services_done && self.live.is_empty() {
            self.finish(State::Terminated);
        }
    }

    fn finish(&mut self, state: State) {
        self.state = state;
        let (mut abandoned, mut abandoned_unnamed) = (Vec::new(), 0);
        if state == State::Abandoned {
            for session in &self.live {
                match &session.name {
                    Some(name) => abandoned.push((name.clone(), self.now - session.began)),
                    None => abandoned_unnamed += 1,
                }
            }
        }
        sort_abandoned(&mut abandoned);
        let services: Vec<(
            String,
            ServiceOutcome,
            Duration,
            u32,
            Option<ServiceOutcome>,
        )> = self
            .services
            .iter()
            .map(|s| {
                let (at, outcome) = s.ended.clone().expect("every service ended");
                (
                    s.name.clone(),
                    outcome,
                    at - s.started,
                    s.attempts,
                    s.last_outcome.clone(),
                )
            })
            .collect();
        let exit_code = if state == State::Abandoned {
            2
        } else if services
            .iter()
            .any(|(_, o, ..)| *o != ServiceOutcome::Stopped)
        {
            1
        } else {
            0
        };
        let abandoned_count = abandoned.len() as u64 + abandoned_unnamed;
        let panicked_count = self.panicked.len() as u64;
        self.report = Some(ModelReport {
            state,
            cause: self.cause.clone(),
            forced: self.forced,
            drained_in: self.now - self.stopped_at.expect("only a stopped lifecycle ends"),
            lifetime: self.now,
            services,
            admitted: self.admitted,
            completed: self.admitted - abandoned_count - panicked_count,
            refused: self.refused,
            panicked: self.panicked.clone(),
            abandoned,
            abandoned_unnamed,
            exit_code,
        });
    }
}

/// Oldest first, then by name: the report's documented order, with ties made comparable.
pub(crate) fn sort_abandoned(list: &mut [(String, Duration)]) {
    list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
}

/// The model's view of a real report, for comparison.
pub(crate) fn view(report: &async_lifecycle::Report) -> ModelReport {
    let sessions = report.sessions();
    let mut abandoned: Vec<(String, Duration)> = sessions
        .abandoned()
        .iter()
        .map(|s| (s.name().to_owned(), s.age()))
        .collect();
    sort_abandoned(&mut abandoned);
    ModelReport {
        state: report.state(),
        cause: report.cause().cloned(),
        forced: report.forced(),
        drained_in: report.drained_in(),
        lifetime: report.lifetime(),
        services: report
            .services()
            .iter()
            .map(|s| {
                (
                    s.name().to_owned(),
                    s.outcome().clone(),
                    s.ran(),
                    s.attempts(),
                    s.last_failure().cloned(),
                )
            })
            .collect(),
        admitted: sessions.admitted(),
        completed: sessions.completed(),
        refused: sessions.refused(),
        panicked: sessions
            .panicked_sessions()
            .iter()
            .map(|s| s.name().map(str::to_owned))
            .collect(),
        abandoned,
        abandoned_unnamed: sessions.abandoned_unnamed(),
        exit_code: report.exit_code(),
    }
}
