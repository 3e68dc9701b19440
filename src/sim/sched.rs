//! Schedulers: which ready task runs next.

use std::fmt;

use super::choice::Source;
use super::executor::TaskId;

/// Which scheduler picks the next task to run among the ready ones.
///
/// - [`Random`](Scheduler::Random): uniformly at random at every step. Good at shallow bugs
///   and at variety, but a bug that needs two specific tasks to be ordered a specific way
///   at two specific moments among many steps can be found very rarely.
/// - [`Pct(d)`](Scheduler::Pct): probabilistic concurrency testing (Burckhardt, Kothari,
///   Musuvathi and Nagarakatte, ASPLOS 2010). Each task gets a random priority when it is
///   spawned, the highest-priority ready task always runs, and at `d − 1` random steps the
///   task about to run is demoted below every other. Its guarantee, in plain words: a bug
///   that shows whenever `d` particular ordering constraints hold (its *depth*; most
///   shutdown races have depth 1 or 2) is found by each run with probability at least
///   `1 / (n · k^(d−1))`, for `n` tasks and `k` steps, whatever the program — so with 5 tasks
///   and 200 steps, a depth-2 bug is found at least once per 1,000 runs on average, and
///   10,000 runs miss it with probability below e⁻¹⁰ (the bound covers the order of the
///   tasks' steps; the environment's fault timing is drawn on top). `d` is 1 to 3 here; `k` is learned
///   from the previous runs of a search (or set by [`Config::pct_steps`](super::Config::pct_steps)).
///   One departure from the paper, as in shuttle: a task that runs 1,000 steps in a row,
///   yielding at each with no other task run in between (a spin on a flag), is put below
///   every other task until one other task has run a step, then gets its priority back —
///   so PCT cannot starve the task that sets the flag into a livelock of its own making.
///   The bound above therefore covers the schedules in which no task runs 1,000 yielding
///   steps in a row; a longer spin hands one step to the highest-priority other ready task
///   (as soon as one is ready) every 1,000 steps, whatever the priorities.
/// - [`Portfolio`](Scheduler::Portfolio) (the default): run `i` of a search uses Random,
///   PCT 1, PCT 2 and PCT 3 in turn (`i mod 4`), so no one scheduler's blind spot is the
///   search's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Scheduler {
    /// Uniformly random among the ready tasks.
    Random,
    /// PCT with this depth (1 to 3).
    Pct(u8),
    /// Random, PCT 1, PCT 2 and PCT 3 in turn, by run index.
    #[default]
    Portfolio,
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scheduler::Random => f.write_str("random"),
            Scheduler::Pct(depth) => write!(f, "pct{depth}"),
            Scheduler::Portfolio => f.write_str("portfolio"),
        }
    }
}

/// One run's concrete scheduler: what a replay token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Plan {
    Random,
    /// `steps`: the estimated length of a run, over which the change points are spread.
    Pct {
        depth: u8,
        steps: u64,
    },
}

impl Plan {
    pub(crate) fn scheduler(self) -> Scheduler {
        match self {
            Plan::Random => Scheduler::Random,
            Plan::Pct { depth, .. } => Scheduler::Pct(depth),
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Plan::Random => f.write_str("random"),
            // Depth 1 has no change point: its steps change nothing, so the token omits them.
            Plan::Pct { depth: 1, .. } => f.write_str("pct1"),
            Plan::Pct { depth, steps } => write!(f, "pct{depth}-k{steps}"),
        }
    }
}

/// A ready task as the scheduler sees it: the executor's runnables, or bare ids in tests.
pub(crate) trait Ready {
    fn task(&self) -> TaskId;
}

impl Ready for TaskId {
    fn task(&self) -> TaskId {
        *self
    }
}

/// A scheduler's state during one run.
#[derive(Debug)]
pub(crate) enum Picker {
    Random,
    Pct(Pct),
}

#[derive(Debug)]
pub(crate) struct Pct {
    /// Each task's priority, by id: a random draw above `HIGH` for a task never demoted,
    /// `MID + 1 ..= MID + depth − 1` once demoted at a change point.
    priorities: Vec<u64>,
    /// The task that ran last, and how many steps in a row it has run yielding each time
    /// (no other task run in between).
    streak: Option<(TaskId, u32)>,
    /// A task caught spinning: below every other task until another one has run once.
    spinner: Option<TaskId>,
    /// The steps (1-based) at which the task about to run is demoted, with the priority it
    /// gets then.
    change_points: Vec<(u64, u64)>,
}

/// Every priority drawn at spawn is above this.
const HIGH: u64 = 1 << 62;
/// Change points demote to just above this.
const MID: u64 = 1 << 61;
/// Steps in a row that one task may run, yielding each time with no other task run in
/// between, before it is taken for a spinner (`while !flag { yield_now().await }`) and put
/// below every other task until one other task has run a step; then its priority is
/// restored. Without it, a spinning task that outranks the task that would set its flag
/// livelocks the run by PCT's own doing (shuttle's PCT demotes yielders for the same
/// reason). So high that PCT's orderings stay reachable for any task yielding fewer times
/// in a row; so temporary that a task yielding more is only interrupted once per this many
/// steps, never starved. A real livelock still ends at the step limit.
pub(crate) const SPIN: u32 = 1000;

impl Picker {
    pub(crate) fn new(plan: Plan, source: &mut Source) -> Self {
        match plan {
            Plan::Random => Picker::Random,
            Plan::Pct { depth, steps } => {
                let steps = steps.max(1);
                let change_points = (1..u64::from(depth))
                    .map(|i| {
                        let at = 1 + source.choose(usize::try_from(steps).unwrap_or(usize::MAX));
                        (at as u64, MID + u64::from(depth) - i)
                    })
                    .collect();
                Picker::Pct(Pct {
                    priorities: Vec::new(),
                    streak: None,
                    spinner: None,
                    change_points,
                })
            }
        }
    }

    /// A task was spawned: PCT gives it a random priority (a random place among the others).
    pub(crate) fn spawned(&mut self, id: TaskId, source: &mut Source) {
        if let Picker::Pct(pct) = self {
            let priority = HIGH.saturating_add(source.next_u64() >> 2).max(HIGH + 1);
            if pct.priorities.len() <= id.0 {
                pct.priorities.resize(id.0 + 1, HIGH + 1);
            }
            pct.priorities[id.0] = priority;
        }
    }

    /// Task `id` ran a step; `yielded`: it woke itself while it ran (`yield_now`).
    pub(crate) fn ran(&mut self, id: TaskId, yielded: bool) {
        if let Picker::Pct(pct) = self {
            if pct.spinner.is_some_and(|spinner| spinner != id) {
                // Another task has run: the spinner gets its priority back.
                pct.spinner = None;
            }
            let count = match pct.streak {
                Some((last, count)) if last == id => count,
                _ => 0,
            };
            let count = if yielded { count + 1 } else { 0 };
            if count >= SPIN {
                pct.spinner = Some(id);
                pct.streak = Some((id, 0));
            } else {
                pct.streak = Some((id, count));
            }
        }
    }

    /// The index in `ready` of the task to run at `step` (1-based). `ready` is not empty.
    pub(crate) fn pick<R: Ready>(&mut self, ready: &[R], step: u64, source: &mut Source) -> usize {
        match self {
            Picker::Random => source.choose(ready.len()),
            Picker::Pct(pct) => {
                let mut best = pct.highest(ready);
                for &(at, priority) in &pct.change_points {
                    if at == step {
                        // The task about to run is demoted below every other; the next
                        // highest runs instead (or it does, if it is alone).
                        pct.priorities[ready[best].task().0] = priority;
                        best = pct.highest(ready);
                    }
                }
                best
            }
        }
    }
}

impl Pct {
    fn highest<R: Ready>(&self, ready: &[R]) -> usize {
        let priority = |id: TaskId| {
            if self.spinner == Some(id) {
                0
            } else {
                self.priorities.get(id.0).copied().unwrap_or(HIGH + 1)
            }
        };
        // Ties (a byte source that ran out draws equal priorities) go to the lowest id.
        let mut best = 0;
        let (mut best_id, mut best_priority) = (ready[0].task(), priority(ready[0].task()));
        for (i, r) in ready.iter().enumerate().skip(1) {
            let id = r.task();
            let p = priority(id);
            if p > best_priority || (p == best_priority && id.0 < best_id.0) {
                (best, best_id, best_priority) = (i, id, p);
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::Choices;

    #[test]
    fn pct_runs_the_highest_priority_ready_task() {
        let mut source = Choices::list(vec![5, 9, 1]).source();
        let mut picker = Picker::new(
            Plan::Pct {
                depth: 1,
                steps: 10,
            },
            &mut source,
        );
        for id in 0..3 {
            picker.spawned(TaskId(id), &mut source);
        }
        let ready = [TaskId(0), TaskId(1), TaskId(2)];
        assert_eq!(picker.pick(&ready, 1, &mut source), 1);
        assert_eq!(picker.pick(&[TaskId(0), TaskId(2)], 2, &mut source), 0);
    }

    #[test]
    fn a_change_point_demotes_the_task_about_to_run() {
        // depth 2, 10 steps: the change point is at step 1 + (3 % 10) = 4.
        let mut source = Choices::list(vec![3, 5, 9]).source();
        let mut picker = Picker::new(
            Plan::Pct {
                depth: 2,
                steps: 10,
            },
            &mut source,
        );
        picker.spawned(TaskId(0), &mut source);
        picker.spawned(TaskId(1), &mut source);
        let ready = [TaskId(0), TaskId(1)];
        for step in 1..4 {
            assert_eq!(picker.pick(&ready, step, &mut source), 1);
        }
        assert_eq!(picker.pick(&ready, 4, &mut source), 0);
        assert_eq!(picker.pick(&ready, 5, &mut source), 0, "it stays demoted");
        assert_eq!(
            picker.pick(&[TaskId(1)], 6, &mut source),
            0,
            "alone, it runs"
        );
    }

    #[test]
    fn a_task_that_spins_goes_below_every_other_until_another_has_run() {
        // depth 1; priorities 0: 9, 1: 5, 2: 1.
        let mut source = Choices::list(vec![9 << 2, 5 << 2, 1 << 2]).source();
        let mut picker = Picker::new(Plan::Pct { depth: 1, steps: 0 }, &mut source);
        for id in 0..3 {
            picker.spawned(TaskId(id), &mut source);
        }
        let ready = [TaskId(0), TaskId(1), TaskId(2)];
        let mut step = 0;
        let mut pick = |picker: &mut Picker, ready: &[TaskId]| {
            step += 1;
            ready[picker.pick(ready, step, &mut source)]
        };
        // Task 0 yields SPIN − 1 times in a row: it keeps its place.
        for _ in 0..SPIN - 1 {
            assert_eq!(pick(&mut picker, &ready), TaskId(0));
            picker.ran(TaskId(0), true);
        }
        // A step without a yield ends the streak; so does another task's step.
        assert_eq!(pick(&mut picker, &ready), TaskId(0));
        picker.ran(TaskId(0), false);
        for _ in 0..SPIN - 1 {
            picker.ran(TaskId(0), true);
        }
        picker.ran(TaskId(2), false);
        picker.ran(TaskId(0), true);
        assert_eq!(pick(&mut picker, &ready), TaskId(0));
        // SPIN yielding steps in a row: below every other task, for one step of another.
        for _ in 0..SPIN - 2 {
            picker.ran(TaskId(0), true);
        }
        assert_eq!(pick(&mut picker, &ready), TaskId(0));
        picker.ran(TaskId(0), true);
        assert_eq!(pick(&mut picker, &ready), TaskId(1), "the next highest");
        assert_eq!(pick(&mut picker, &[TaskId(0), TaskId(2)]), TaskId(2));
        assert_eq!(pick(&mut picker, &[TaskId(0)]), TaskId(0), "alone, it runs");
        picker.ran(TaskId(0), true);
        assert_eq!(pick(&mut picker, &ready), TaskId(1), "still below");
        // Another task ran a step: the spinner has its priority back.
        picker.ran(TaskId(1), true);
        assert_eq!(pick(&mut picker, &ready), TaskId(0));
    }
}
