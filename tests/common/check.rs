//! Runs a schedule on a real lifecycle and on the reference model side by side, comparing
//! them after every operation and checking the invariants of the design on the real one.

use std::time::Duration;

use async_lifecycle::{Report, ServiceOutcome, State, StopCause};

use super::model::{self, Model};
use super::op::{Answer, Config, Op, Schedule};

/// What a driver can see of its lifecycle after an operation.
#[derive(Debug, Clone)]
pub(crate) struct Observation {
    pub(crate) state: State,
    pub(crate) cause: Option<StopCause>,
    /// Sessions the driver holds (admitted and not ended).
    pub(crate) live: usize,
    /// Every refusal so far, after the end included (the live view's count).
    pub(crate) refused: u64,
    pub(crate) timer: Timer,
    /// Services held at the stop whose own stop signal fired since, with when (as an offset
    /// from creation), in the order seen.
    pub(crate) releases: Vec<(String, Duration)>,
    /// Per service: waiting for its dependencies, and its current run ready (the live view).
    pub(crate) readiness: Vec<(bool, bool)>,
    /// The report, once the driver can see it.
    pub(crate) report: Option<Report>,
}

/// The deadline as a driver sees it (as an offset from the lifecycle's creation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// The sleep registered on the manual clock (the async shell).
    Armed(Option<Duration>),
    /// `Machine::poll_timeout` (the pure machine).
    Deadline(Option<Duration>),
}

/// A real lifecycle that runs schedules.
pub(crate) trait Driver {
    /// Whether the report is visible as soon as a final state is reached (the machine), or
    /// only once `wait()` resolved (the async shell).
    const REPORT_AT_FINISH: bool;

    /// A fresh lifecycle.
    fn new(config: Config) -> Self;

    /// Applies one operation; returns what an add, a `BeginSession` or a `Ready` answered.
    fn apply(&mut self, op: Op) -> Option<Answer>;

    /// What the lifecycle looks like now.
    fn observe(&self) -> Observation;
}

/// The operations every schedule ends with, so that every run is checked up to its report.
pub(crate) const EPILOGUE: [Op; 2] = [Op::Force, Op::Drive];

/// Runs `schedule` (then [`EPILOGUE`]) on `D` and on the model. Returns the first divergence
/// or broken invariant, described.
pub(crate) fn run<D: Driver>(schedule: &Schedule) -> Result<(), String> {
    let mut model = Model::new(schedule.config);
    let mut real = D::new(schedule.config);
    let mut prev = real.observe();
    compare::<D>(&model, &prev, None, None).map_err(|e| format!("at creation: {e}"))?;
    let mut step = |op: Op, model: &mut Model, prev: &mut Observation| {
        let expected = model.apply(op);
        let answered = real.apply(op);
        let now = real.observe();
        let context = |e: String| format!("{op:?} at {:?}: {e}", model.now());
        compare::<D>(model, &now, expected, answered.clone()).map_err(context)?;
        invariants(schedule.config, prev, &now, op, answered).map_err(context)?;
        *prev = now;
        Ok::<(), String>(())
    };
    let mut steps = 0;
    for &op in &schedule.ops {
        step(op, &mut model, &mut prev).map_err(|e| format!("step {steps} ({e})"))?;
        steps += 1;
    }
    for op in EPILOGUE {
        step(op, &mut model, &mut prev).map_err(|e| format!("step {steps} ({e})"))?;
        steps += 1;
    }
    if prev.report.is_none() {
        return Err("no report after the epilogue (force, drive)".to_owned());
    }
    Ok(())
}

fn compare<D: Driver>(
    model: &Model,
    real: &Observation,
    expected: Option<Answer>,
    answered: Option<Answer>,
) -> Result<(), String> {
    if expected != answered {
        return Err(format!("answered {answered:?}, model says {expected:?}"));
    }
    if real.state != model.state() {
        return Err(format!(
            "state {:?}, model says {:?}",
            real.state,
            model.state()
        ));
    }
    if real.cause.as_ref() != model.cause() {
        return Err(format!(
            "cause {:?}, model says {:?}",
            real.cause,
            model.cause()
        ));
    }
    if real.live != model.live() {
        return Err(format!(
            "{} live sessions, model says {}",
            real.live,
            model.live()
        ));
    }
    if real.refused != model.refused() {
        return Err(format!(
            "{} refused so far, model says {}",
            real.refused,
            model.refused()
        ));
    }
    // The order the held services' own signals fired in: by time (several may fire at one
    // instant, in an order the executor decides). A release at the instant the service
    // ended is left out: whether its last dependent's end or its own came first at one
    // instant is the executor's order, and changes nothing else.
    let sorted = |list: &[(String, Duration)]| {
        let mut list: Vec<(String, Duration)> = list
            .iter()
            .filter(|(name, at)| model.ended_at(name) != Some(*at))
            .cloned()
            .collect();
        list.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        list
    };
    if sorted(&real.releases) != sorted(model.releases()) {
        return Err(format!(
            "released {:?}, model says {:?}",
            real.releases,
            model.releases()
        ));
    }
    if real.readiness != model.readiness() {
        return Err(format!(
            "(waiting, ready) {:?}, model says {:?}",
            real.readiness,
            model.readiness()
        ));
    }
    let timer = match real.timer {
        Timer::Armed(_) => Timer::Armed(model.armed()),
        Timer::Deadline(_) => Timer::Deadline(model.deadline()),
    };
    if real.timer != timer {
        return Err(format!("timer {:?}, model says {timer:?}", real.timer));
    }
    let visible = if D::REPORT_AT_FINISH {
        model.state().is_terminal()
    } else {
        model.wait_done()
    };
    match (&real.report, visible) {
        (None, false) => {}
        (Some(report), true) => {
            let got = model::view(report);
            let want = model.report().expect("a final model has a report");
            if &got != want {
                return Err(format!(
                    "report differs:\n  real:  {got:?}\n  model: {want:?}"
                ));
            }
        }
        (got, _) => {
            return Err(format!(
                "report present: {}, model says {visible}",
                got.is_some()
            ));
        }
    }
    Ok(())
}

/// The design's invariants, checked on the real lifecycle alone.
fn invariants(
    config: Config,
    prev: &Observation,
    now: &Observation,
    op: Op,
    answered: Option<Answer>,
) -> Result<(), String> {
    if prev.state.is_terminal() && (now.state != prev.state || now.cause != prev.cause) {
        return Err(format!(
            "terminal state left: {:?} -> {:?}",
            prev.state, now.state
        ));
    }
    if prev.cause.is_some() && now.cause != prev.cause {
        return Err(format!(
            "first cause not kept: {:?} -> {:?}",
            prev.cause, now.cause
        ));
    }
    if now.state != State::Running && now.cause.is_none() {
        return Err(format!("{:?} without a stop cause", now.state));
    }
    // Nothing is admitted outside `Running` — but a child of a live session, until the end.
    let child = matches!(op, Op::BeginChild { .. });
    if answered.as_ref().is_some_and(Answer::admitted)
        && prev.state != State::Running
        && !(child && prev.state == State::Draining)
    {
        return Err(format!("{op:?} admitted while {:?}", prev.state));
    }
    if now.state == State::Terminated && now.live != 0 {
        return Err(format!("terminated with {} live sessions", now.live));
    }
    if let (Some(before), Some(after)) = (&prev.report, &now.report) {
        if before != after {
            return Err("the report changed after it was written".to_owned());
        }
    }
    let Some(report) = &now.report else {
        return Ok(());
    };
    let sessions = report.sessions();
    if report.state() != now.state || report.cause() != now.cause.as_ref() {
        return Err("the report disagrees with the lifecycle's state or cause".to_owned());
    }
    if sessions.admitted()
        != sessions.completed() + sessions.panicked() + sessions.abandoned_count()
    {
        return Err(format!(
            "admitted {} != completed {} + panicked {} + abandoned {}",
            sessions.admitted(),
            sessions.completed(),
            sessions.panicked(),
            sessions.abandoned_count()
        ));
    }
    if now.refused < sessions.refused() {
        return Err(format!(
            "the live view counts {} refusals, fewer than the report's {}",
            now.refused,
            sessions.refused()
        ));
    }
    let abandoned_service = report
        .services()
        .iter()
        .any(|s| *s.outcome() == ServiceOutcome::Abandoned);
    if now.releases.len() < prev.releases.len()
        || now.releases[..prev.releases.len()] != prev.releases
    {
        return Err("a release was forgotten".to_owned());
    }
    match report.state() {
        State::Terminated if abandoned_service || sessions.abandoned_count() != 0 => {
            return Err("terminated with abandoned work".to_owned());
        }
        State::Abandoned => {
            // The drain's deadline is the grace after the stop's request, and a pre-drain
            // spent part of it before the drain began — how much, the report does not say
            // (a late timer begins the drain late): with one, the model's report (compared
            // above) is the check.
            let reached = config.pre_drain_ms > 0
                || config
                    .grace
                    .bound()
                    .is_some_and(|g| report.drained_in() >= g);
            // Before the deadline, only a service given up on past its budget abandons.
            if !report.forced() && !reached && !abandoned_service {
                return Err(format!(
                    "abandoned after {:?}, before the deadline, unforced, nothing given up on",
                    report.drained_in()
                ));
            }
        }
        _ => {}
    }
    let ages: Vec<Duration> = sessions.abandoned().iter().map(|s| s.age()).collect();
    if ages.windows(2).any(|w| w[0] < w[1])
        || sessions.abandoned().iter().any(|s| s.name().is_empty())
    {
        return Err("abandoned sessions not named or not oldest first".to_owned());
    }
    Ok(())
}
