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
    /// The services it starts after and stops before (indices).
    deps: Vec<usize>,
    declares_ready: bool,
    start_timeout: bool,
    /// Its own stop budget.
    budget: Option<Duration>,
    /// When it was added.
    started: Duration,
    run_started: Duration,
    attempts: u32,
    streak: u32,
    last_outcome: Option<ServiceOutcome>,
    /// While waiting for a restart: when it is due (no run is active then).
    backoff_until: Option<Duration>,
    ended: Option<(Duration, ServiceOutcome)>,
    /// Its run was polled by `wait()` (runs made outside a drive are polled at the next).
    polled: bool,
    /// Its first run waits for its dependencies (no run yet).
    waiting: bool,
    /// Its current run is ready.
    ready: bool,
    /// A run of it was ready once.
    ever_ready: bool,
    /// When its start timeout runs out, while it was never ready.
    ready_by: Option<Duration>,
    /// While draining: when its own stop signal fired.
    signalled: Option<Duration>,
    /// While draining: when its stop budget runs out, and its slow-to-stop warning (until it
    /// fired).
    budget_end: Option<Duration>,
    slow_at: Option<Duration>,
}

impl Service {
    /// Not ended.
    fn live(&self) -> bool {
        self.ended.is_none()
    }

    /// A run of it exists now: live, started, not between two runs.
    fn has_run(&self) -> bool {
        self.live() && !self.waiting && self.backoff_until.is_none()
    }
}

#[derive(Debug, Clone)]
struct Session {
    name: Option<String>,
    began: Duration,
    /// The parent's name, for a child of a named session.
    parent: Option<String>,
}

/// One service in the report: name, outcome, how long it ran, runs, the last restarted run's
/// outcome.
pub(crate) type ServiceLine = (
    String,
    ServiceOutcome,
    Duration,
    u32,
    Option<ServiceOutcome>,
);

/// The report the model expects, field by field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ModelReport {
    pub(crate) state: State,
    pub(crate) cause: Option<StopCause>,
    pub(crate) forced: bool,
    pub(crate) drained_in: Duration,
    pub(crate) lifetime: Duration,
    /// Every service in the order added.
    pub(crate) services: Vec<ServiceLine>,
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
    /// A service was given up on past its stop budget: the end is `Abandoned`.
    gave_up: bool,
    /// Held services whose own stop signal fired, in order: name, when.
    releases: Vec<(String, Duration)>,
    report: Option<ModelReport>,
    wait_polled: bool,
    wait_done: bool,
    /// A requested stop in its pre-drain: when its drain begins, its cause, its deadline.
    pending: Option<(Duration, StopCause, Option<Duration>)>,
    /// `wait()` was woken since it last ran (it runs at the next drive only then).
    woken: bool,
    /// A command sent to a run, which the next drive delivers: which service, how it ends.
    command: Option<(usize, How)>,
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
            gave_up: false,
            releases: Vec::new(),
            report: None,
            wait_polled: false,
            wait_done: false,
            woken: true,
            pending: None,
            command: None,
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

    /// What `Machine::poll_timeout` answers: while running, the earliest restart due or start
    /// timeout; while draining, the deadline, or earlier a live service's slow-to-stop
    /// warning or the end of its budget (if that comes strictly before the deadline).
    pub(crate) fn deadline(&self) -> Option<Duration> {
        match self.state {
            State::Running => self
                .services
                .iter()
                .filter(|s| s.live())
                .flat_map(|s| [s.backoff_until, s.ready_by])
                .flatten()
                .chain(self.pending.as_ref().map(|(at, ..)| *at))
                .min(),
            State::Draining => {
                let mut times: Vec<Duration> = self.deadline.into_iter().collect();
                for s in self.services.iter().filter(|s| s.live()) {
                    times.extend(s.slow_at);
                    if let Some(end) = s.budget_end {
                        // At the deadline the deadline decides; with none, the budget does.
                        if self.deadline.is_none_or(|d| end < d) {
                            times.push(end);
                        }
                    }
                }
                times.into_iter().min()
            }
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

    /// Every refusal so far, after the end included (what a snapshot counts).
    pub(crate) fn refused(&self) -> u64 {
        self.refused
    }

    /// The number of live sessions.
    pub(crate) fn live(&self) -> usize {
        self.live.len()
    }

    /// Held services whose own stop signal fired (after the stop itself), with when.
    pub(crate) fn releases(&self) -> &[(String, Duration)] {
        &self.releases
    }

    /// When the service of that name ended, if it did.
    pub(crate) fn ended_at(&self, name: &str) -> Option<Duration> {
        let service = self.services.iter().find(|s| s.name == name)?;
        service.ended.as_ref().map(|(at, _)| *at)
    }

    /// Per service, in order: waiting for its dependencies, and its current run ready (as
    /// the live view shows them).
    pub(crate) fn readiness(&self) -> Vec<(bool, bool)> {
        self.services
            .iter()
            .map(|s| (s.waiting, s.ready && s.has_run()))
            .collect()
    }

    /// Applies one operation. Returns what a `BeginSession`, an add or a `Ready` answered.
    pub(crate) fn apply(&mut self, op: Op) -> Option<op::Answer> {
        let (state, waiting) = (self.state, self.waiting());
        let answer = self.apply_op(op);
        // What wakes `wait()`: a run to drive (a service added with a run, a first run
        // made, a command to a run), a timer that may come earlier, the stop, the end, its
        // own sleep. A readiness that starts nothing only makes its timer later: it does not
        // wake it (a stale earlier sleep is harmless: it finds nothing due).
        self.woken |= match op {
            Op::AddService { .. } | Op::AddRestartable { .. } => {
                answer.as_ref().is_some_and(op::Answer::admitted)
            }
            Op::AddDependent { .. } | Op::Ready { .. } => {
                let added = answer.as_ref().is_some_and(op::Answer::admitted);
                self.waiting() < waiting + usize::from(added)
            }
            Op::Advance { .. } => false,
            _ => self.state != state,
        };
        answer
    }

    /// How many services wait for their dependencies.
    fn waiting(&self) -> usize {
        self.services.iter().filter(|s| s.waiting).count()
    }

    fn apply_op(&mut self, op: Op) -> Option<op::Answer> {
        match op {
            Op::AddService { honours_stop } => {
                let spec = Spec::plain(honours_stop, None);
                return Some(op::Answer::Service(self.add_service(spec)));
            }
            Op::AddRestartable {
                honours_stop,
                always,
            } => {
                let spec = Spec::plain(honours_stop, Some(always));
                return Some(op::Answer::Service(self.add_service(spec)));
            }
            Op::AddDependent {
                on,
                declares_ready,
                start_timeout,
                budget,
                honours_stop,
                restart,
            } => {
                let spec = Spec {
                    honours_stop,
                    restart,
                    deps: op::dependencies(on, self.services.len()),
                    declares_ready,
                    start_timeout,
                    budget: budget.map(op::stop_budget),
                };
                return Some(op::Answer::Service(self.add_service(spec)));
            }
            Op::Ready { pick } => {
                let ready = !self.services.is_empty() && {
                    let index = usize::from(pick) % self.services.len();
                    self.ready(index)
                };
                return Some(op::Answer::Ready(ready));
            }
            Op::BeginSession { named } => {
                return Some(op::Answer::Session(self.begin_session(named)));
            }
            Op::BeginChild { pick, named } => {
                return self.begin_child(pick, named).map(op::Answer::Session);
            }
            Op::EndSession { pick } => self.end_session(pick, false),
            Op::PanicSession { pick } => self.end_session(pick, true),
            Op::ServiceExit { pick, how } => {
                if !self.services.is_empty() {
                    let index = usize::from(pick) % self.services.len();
                    // The command wakes the run, and so `wait()`, which runs it after the runs
                    // woken before it.
                    if self.services[index].has_run() && !self.wait_done {
                        self.woken = true;
                        self.command = Some((index, how));
                    }
                }
                self.drive();
            }
            Op::Stop { cause } => self.request_stop(op::stop_cause(cause)),
            Op::Force => self.force(),
            Op::Advance { millis } => {
                self.now += Duration::from_millis(u64::from(millis));
                // The manual clock forgets a sleep once it is due.
                if self.armed.is_some_and(|armed| armed <= self.now) {
                    self.armed = None;
                    self.woken = true;
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

    /// The explicit stop budgets summed along the dependency path below `index` (itself
    /// included) that sums to the most: every path walked, naively.
    fn budget_chain(&self, own: Option<Duration>, deps: &[usize]) -> Duration {
        let below = deps
            .iter()
            .map(|&d| self.budget_chain(self.services[d].budget, &self.services[d].deps))
            .max()
            .unwrap_or_default();
        own.unwrap_or_default() + below
    }

    fn add_service(&mut self, spec: Spec) -> Result<(), async_lifecycle::ServiceError> {
        let n = self.service_attempts;
        self.service_attempts += 1;
        if self.state != State::Running {
            return Err(async_lifecycle::ServiceError::Refused(self.refusal()));
        }
        let name = op::service_name(n);
        // A dependency that ended will never be ready again.
        if let Some(&ended) = spec.deps.iter().find(|&&d| !self.services[d].live()) {
            return Err(async_lifecycle::ServiceError::DependencyEnded {
                service: name.into(),
                dependency: self.services[ended].name.clone().into(),
            });
        }
        let chain = self.budget_chain(spec.budget, &spec.deps);
        let grace = self.config.grace.duration();
        if chain > grace {
            return Err(async_lifecycle::ServiceError::BudgetsExceedGrace {
                service: name.into(),
                total: chain,
                grace,
            });
        }
        self.services.push(Service {
            name,
            honours_stop: spec.honours_stop,
            restart: spec.restart,
            deps: spec.deps,
            declares_ready: spec.declares_ready,
            start_timeout: spec.start_timeout,
            budget: spec.budget,
            started: self.now,
            run_started: self.now,
            attempts: 0,
            streak: 0,
            last_outcome: None,
            backoff_until: None,
            ended: None,
            polled: false,
            waiting: true,
            ready: false,
            ever_ready: false,
            ready_by: None,
            signalled: None,
            budget_end: None,
            slow_at: None,
        });
        // Started at once if every dependency was ready once (or it has none).
        self.start_waiting();
        Ok(())
    }

    /// Starts the first run of every waiting service whose dependencies were each ready
    /// once, until none is left to start (a service ready at once may let another start).
    fn start_waiting(&mut self) {
        loop {
            let due = (0..self.services.len()).find(|&i| {
                let s = &self.services[i];
                s.waiting && s.deps.iter().all(|&d| self.services[d].ever_ready)
            });
            let Some(index) = due else { return };
            let now = self.now;
            let s = &mut self.services[index];
            s.waiting = false;
            s.polled = false;
            // It runs from its first run: the wait for its dependencies does not count.
            s.started = now;
            s.attempts = 1;
            s.run_started = now;
            if s.declares_ready {
                s.ready_by = s.start_timeout.then_some(now + op::START_TIMEOUT);
            } else {
                s.ready = true;
                s.ever_ready = true;
            }
        }
    }

    /// `stop.ready()` by the current run of a service.
    fn ready(&mut self, index: usize) -> bool {
        let s = &mut self.services[index];
        if self.state != State::Running || !s.has_run() || s.ready {
            return false;
        }
        s.ready = true;
        s.ever_ready = true;
        s.ready_by = None;
        self.start_waiting();
        true
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
            parent: None,
        });
        Ok(())
    }

    /// A child of the live session `pick`: admitted unless the lifecycle ended.
    fn begin_child(&mut self, pick: u8, named: bool) -> Option<Result<(), Refused>> {
        if self.live.is_empty() {
            return None;
        }
        let parent = self.live[usize::from(pick) % self.live.len()].name.clone();
        let n = self.session_attempts;
        self.session_attempts += 1;
        if self.state.is_terminal() {
            self.refused += 1;
            return Some(Err(Refused::Ended));
        }
        self.admitted += 1;
        self.live.push(Session {
            name: named.then(|| op::session_name(n)),
            began: self.now,
            parent,
        });
        Some(Ok(()))
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
        // Only a run can end: not a service waiting for its dependencies or its restart.
        if self.state.is_terminal() || !self.services[index].has_run() {
            return;
        }
        // An exit at or after the deadline is too late: the deadline decides first.
        if self.state == State::Draining && self.deadline.is_some_and(|d| d <= self.now) {
            self.timeout();
            return;
        }
        // Likewise at or past its own budget's end: it is given up on, as the timer would.
        if self.state == State::Draining
            && self.services[index]
                .budget_end
                .is_some_and(|end| end <= self.now)
        {
            self.timer();
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
        if self.state == State::Running {
            if !clean && !self.config.report_only {
                let service = self.services[index].name.clone().into();
                self.stop(StopCause::ServiceEnded { service });
            } else if self
                .services
                .iter()
                .any(|s| s.waiting && s.deps.contains(&index))
            {
                // Ended for good while a dependent waits: that one never starts.
                let service = self.services[index].name.clone().into();
                self.stop(StopCause::StartFailed {
                    service,
                    timeout: None,
                });
            }
        }
        self.release_held();
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
        service.ready = false;
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

    /// A stop requested from outside: with a pre-drain, it waits that long (never more than
    /// the grace), still running and admitting; its deadline stays grace after the request.
    fn request_stop(&mut self, cause: StopCause) {
        if self.state != State::Running || self.pending.is_some() {
            return;
        }
        let pre = self.config.pre_drain();
        match self.config.grace.bound() {
            Some(grace) if !pre.is_zero() && !grace.is_zero() => {
                self.pending = Some((self.now + pre.min(grace), cause, Some(self.now + grace)));
                // The drivers are woken to arm the new timer.
                self.woken = true;
            }
            None if !pre.is_zero() => {
                self.pending = Some((self.now + pre, cause, None));
                self.woken = true;
            }
            _ => self.stop(cause),
        }
    }

    fn stop(&mut self, cause: StopCause) {
        if self.state != State::Running {
            return;
        }
        // A stop in its pre-drain came first: its cause and deadline are kept.
        let (cause, by) = match self.pending.take() {
            Some((_, first, by)) => (first, by),
            None => (cause, None),
        };
        // Waiting for a restart: stopped at once, ending as its last run did — but a run
        // that returned Ok (a periodic job under Always) was not a failure: stopped cleanly.
        // Waiting for its dependencies: never started.
        for service in &mut self.services {
            service.ready_by = None;
            if service.backoff_until.take().is_some() {
                let outcome = match service.last_outcome.clone().expect("it ran") {
                    ServiceOutcome::EndedEarly => ServiceOutcome::Stopped,
                    other => other,
                };
                service.ended = Some((self.now, outcome));
            } else if service.waiting {
                service.waiting = false;
                // Never ran: it ran for no time.
                service.started = self.now;
                service.ended = Some((self.now, ServiceOutcome::NotStarted));
            }
        }
        self.state = State::Draining;
        self.cause = Some(cause);
        self.stopped_at = Some(self.now);
        self.deadline = match (self.config.grace.bound().map(|grace| self.now + grace), by) {
            (Some(own), Some(by)) => Some(own.min(by.max(self.now))),
            (own, by) => own.or(by),
        };
        // Dependents first: what no live service depends on is signalled by the stop
        // itself; the others are held until their dependents are done.
        for index in self.releasable() {
            self.signal(index);
        }
        self.settle();
        // A zero grace: the stop is its own deadline.
        self.timeout();
    }

    /// The live services not signalled yet whose dependents have all ended.
    fn releasable(&self) -> Vec<usize> {
        (0..self.services.len())
            .filter(|&i| {
                let s = &self.services[i];
                s.live()
                    && s.signalled.is_none()
                    && self
                        .services
                        .iter()
                        .filter(|d| d.deps.contains(&i))
                        .all(|d| !d.live())
            })
            .collect()
    }

    /// Fires a service's own stop signal now: its budget is its own, or half the time left if
    /// it has dependencies, else all of it; never past the deadline.
    /// The slow-to-stop warning comes at half of it.
    fn signal(&mut self, index: usize) {
        let now = self.now;
        let left = self.deadline.map(|d| d.saturating_sub(now));
        let shares: u128 = if !self.services[index].deps.is_empty() {
            2
        } else {
            1
        };
        let budget = match (self.services[index].budget, left) {
            (Some(own), Some(left)) => Some(own.min(left)),
            (Some(own), None) => Some(own),
            (None, Some(left)) => Some(Duration::from_nanos((left.as_nanos() / shares) as u64)),
            (None, None) => None,
        };
        let s = &mut self.services[index];
        s.signalled = Some(now);
        s.budget_end = budget.map(|b| now + b);
        s.slow_at = budget.filter(|b| !b.is_zero()).map(|b| now + b / 2);
    }

    /// While draining: signals the held services whose dependents are all done now.
    fn release_held(&mut self) {
        if self.state != State::Draining {
            return;
        }
        for index in self.releasable() {
            self.signal(index);
            let name = self.services[index].name.clone();
            self.releases.push((name, self.now));
        }
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
    /// something below applies) drives the services, then its timer, again and again until
    /// nothing is left to do now.
    fn drive(&mut self) {
        if self.wait_done || !std::mem::take(&mut self.woken) {
            return;
        }
        let first_poll = !self.wait_polled;
        self.wait_polled = true;
        let mut command = self.command.take();
        for round in 0.. {
            assert!(round < 1000, "the model does not settle");
            let mut progress = false;
            // The runs first, in the order they were woken: those whose own stop signal
            // fired (a run that honours it returns; a command to it comes first in it), then
            // the run a command woke, then the runs made since the last drive (first polled
            // now), in the order made; then whatever their ends woke, until none is left.
            let signalled = |s: &Service| s.honours_stop && s.has_run() && s.signalled.is_some();
            let mut order: Vec<usize> = (0..self.services.len())
                .filter(|&i| self.services[i].polled && signalled(&self.services[i]))
                .collect();
            if let Some((index, _)) = command {
                if self.services[index].polled && !order.contains(&index) {
                    order.push(index);
                }
            }
            order.extend((0..self.services.len()).filter(|&i| !self.services[i].polled));
            loop {
                for index in std::mem::take(&mut order) {
                    let how = match command {
                        Some((commanded, how)) if commanded == index => {
                            command = None;
                            how
                        }
                        _ if signalled(&self.services[index]) => How::Ok,
                        _ => continue,
                    };
                    self.service_exit(index, how);
                    progress = true;
                }
                for s in &mut self.services {
                    s.polled = true;
                }
                order = (0..self.services.len())
                    .filter(|&i| signalled(&self.services[i]))
                    .collect();
                if order.is_empty() || self.state.is_terminal() {
                    break;
                }
            }
            if !self.state.is_terminal() && self.deadline().is_some_and(|d| d <= self.now) {
                self.timer();
                progress = true;
            }
            if !progress {
                break;
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

    /// The timer fired (something in `deadline()` is due).
    fn timer(&mut self) {
        let now = self.now;
        // The pre-drain is over: the drain begins, its deadline kept.
        if self.pending.as_ref().is_some_and(|(at, ..)| *at <= now) {
            let cause = self
                .pending
                .as_ref()
                .map(|(_, c, _)| c.clone())
                .expect("pending");
            self.stop(cause);
        }
        if self.state == State::Running {
            // A service not ready within its start timeout: the start failed.
            let late = self.services.iter().find(|s| {
                s.live() && !s.waiting && !s.ever_ready && s.ready_by.is_some_and(|by| by <= now)
            });
            if let Some(s) = late {
                let service = s.name.clone().into();
                self.stop(StopCause::StartFailed {
                    service,
                    timeout: Some(op::START_TIMEOUT),
                });
            }
        }
        // While running, the timer starts every restart that is due.
        if self.state == State::Running {
            for s in &mut self.services {
                if s.backoff_until.is_some_and(|due| due <= now) {
                    s.backoff_until = None;
                    s.attempts += 1;
                    s.run_started = now;
                    s.ready = !s.declares_ready;
                }
            }
            return;
        }
        if self.state != State::Draining {
            return;
        }
        // Half a budget gone: the slow-to-stop warning fires once (it changes no state).
        for s in &mut self.services {
            if s.live() && s.slow_at.is_some_and(|slow| slow <= now) {
                s.slow_at = None;
            }
        }
        if self.deadline.is_some_and(|d| d <= now) {
            self.timeout();
            return;
        }
        // Past its own budget, before the deadline: given up on.
        let mut spent = false;
        for s in &mut self.services {
            if s.live() && s.budget_end.is_some_and(|end| end <= now) {
                s.ended = Some((now, ServiceOutcome::Abandoned));
                spent = true;
            }
        }
        if spent {
            self.gave_up = true;
            self.release_held();
            self.settle();
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
            // Everything ended; still abandoned if a service was given up on.
            let state = if self.gave_up {
                State::Abandoned
            } else {
                State::Terminated
            };
            self.finish(state);
        }
    }

    fn finish(&mut self, state: State) {
        self.state = state;
        let (mut abandoned, mut abandoned_unnamed) = (Vec::new(), 0);
        if state == State::Abandoned {
            for session in &self.live {
                match &session.name {
                    Some(name) => abandoned.push((
                        shown_with_parent(name, session.parent.as_deref()),
                        self.now - session.began,
                    )),
                    None => abandoned_unnamed += 1,
                }
            }
        }
        sort_abandoned(&mut abandoned);
        let services: Vec<ServiceLine> = self
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
        let clean =
            |o: &ServiceOutcome| matches!(o, ServiceOutcome::Stopped | ServiceOutcome::NotStarted);
        let exit_code = if state == State::Abandoned {
            2
        } else if services.iter().any(|(_, o, ..)| !clean(o))
            || matches!(self.cause, Some(StopCause::StartFailed { .. }))
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

/// What an add asks for.
#[derive(Debug, Clone)]
struct Spec {
    honours_stop: bool,
    restart: Option<bool>,
    deps: Vec<usize>,
    declares_ready: bool,
    start_timeout: bool,
    budget: Option<Duration>,
}

impl Spec {
    fn plain(honours_stop: bool, restart: Option<bool>) -> Self {
        Spec {
            honours_stop,
            restart,
            deps: Vec::new(),
            declares_ready: false,
            start_timeout: false,
            budget: None,
        }
    }
}

/// Oldest first, then by name: the report's documented order, with ties made comparable.
/// An abandoned session's name as the comparison sees it: with its parent's, if it has one.
pub(crate) fn shown_with_parent(name: &str, parent: Option<&str>) -> String {
    match parent {
        Some(parent) => format!("{name} under {parent}"),
        None => name.to_owned(),
    }
}

pub(crate) fn sort_abandoned(list: &mut [(String, Duration)]) {
    list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
}

/// The model's view of a real report, for comparison.
pub(crate) fn view(report: &async_lifecycle::Report) -> ModelReport {
    let sessions = report.sessions();
    let mut abandoned: Vec<(String, Duration)> = sessions
        .abandoned()
        .iter()
        .map(|s| (shown_with_parent(s.name(), s.parent()), s.age()))
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
