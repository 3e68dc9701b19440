//! Restart policies, backoff and restart intensity: the configuration of supervision, with
//! its validation. Pure data; the machine applies it.

use std::fmt;
use std::time::Duration;

/// When a service that ends while the lifecycle is running is started again.
///
/// A restart happens only while the lifecycle is `Running`: once a stop was requested,
/// nothing is restarted, and a service waiting for its restart is stopped at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Restart {
    /// Never (the default): an unclean end is reported and, under
    /// [`FailurePolicy::StopAll`](super::FailurePolicy::StopAll), stops the lifecycle; the
    /// orchestrator restarts the process. Fail fast.
    #[default]
    Never,
    /// When it fails: returns an error or panics. An early `Ok` is not restarted.
    OnFailure,
    /// Whenever it ends before the stop, an early `Ok` included.
    Always,
}

/// How long a service waits before it is started again: exponential, with full jitter and a
/// cap, timed on the lifecycle's clock.
///
/// The `n`th restart in a row waits a uniformly random time in `[0, min(max, initial ×
/// 2ⁿ⁻¹)]` ("full jitter": restarts of many services do not fall in step). A run that lasted
/// at least [`stable_after`](Backoff::stable_after) resets the streak, so a service that
/// fails once a day always restarts after a short wait. The random source is the
/// lifecycle's, seeded with [`Builder::seed`](crate::Builder::seed): deterministic under a
/// [`ManualClock`](crate::ManualClock).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use async_lifecycle::Backoff;
///
/// let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30))?
///     .stable_after(Duration::from_secs(60))?;
/// assert_eq!(backoff.ceiling(1), Duration::from_millis(100));
/// assert_eq!(backoff.ceiling(4), Duration::from_millis(800));
/// assert_eq!(backoff.ceiling(20), Duration::from_secs(30));
/// assert!(Backoff::new(Duration::ZERO, Duration::from_secs(1)).is_err());
/// # Ok::<(), async_lifecycle::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    stable_after: Duration,
    jitter: bool,
}

impl Backoff {
    /// The longest wait a backoff may be configured with: one day. Longer is a unit mistake.
    pub const LIMIT: Duration = Duration::from_secs(24 * 60 * 60);

    /// The default: 100 ms doubling up to 30 s, reset after a minute of stable running.
    pub const DEFAULT: Backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(30),
        stable_after: Duration::from_secs(60),
        jitter: true,
    };

    /// A backoff starting at `initial` and doubling up to `max`, with full jitter, reset
    /// after a minute of stable running.
    ///
    /// # Errors
    ///
    /// [`ConfigError::ZeroBackoff`] for a zero `initial` (a failing service would restart in
    /// a busy loop), [`ConfigError::BackoffInverted`] when `max < initial`, and
    /// [`ConfigError::BackoffTooLong`] past [`Backoff::LIMIT`].
    pub fn new(initial: Duration, max: Duration) -> Result<Backoff, ConfigError> {
        if initial.is_zero() {
            return Err(ConfigError::ZeroBackoff);
        }
        if max < initial {
            return Err(ConfigError::BackoffInverted { initial, max });
        }
        if max > Self::LIMIT {
            return Err(ConfigError::BackoffTooLong { max });
        }
        Ok(Backoff {
            initial,
            max,
            ..Self::DEFAULT
        })
    }

    /// How long a run must last for the next failure to count as the first of a new streak.
    /// Zero makes every failure the first of its streak: the wait never grows.
    ///
    /// # Errors
    ///
    /// [`ConfigError::BackoffTooLong`] past [`Backoff::LIMIT`].
    pub fn stable_after(self, stable_after: Duration) -> Result<Backoff, ConfigError> {
        if stable_after > Self::LIMIT {
            return Err(ConfigError::BackoffTooLong { max: stable_after });
        }
        Ok(Backoff {
            stable_after,
            ..self
        })
    }

    /// Waits exactly [`ceiling`](Backoff::ceiling) instead of a random time below it: for
    /// tests that want round numbers, and for the reference model.
    pub fn without_jitter(self) -> Backoff {
        Backoff {
            jitter: false,
            ..self
        }
    }

    /// The longest wait before the `n`th restart in a row (`n ≥ 1`): `min(max, initial ×
    /// 2ⁿ⁻¹)`.
    pub fn ceiling(&self, n: u32) -> Duration {
        // `initial` is at least 1 ns and `max` at most a day (< 2⁴⁷ ns): 64 doublings always
        // reach the cap.
        let mut wait = self.initial;
        for _ in 0..n.saturating_sub(1).min(64) {
            wait = wait.saturating_mul(2);
            if wait >= self.max {
                return self.max;
            }
        }
        wait.min(self.max)
    }

    /// The wait before the `n`th restart in a row, given a uniformly random `u64`.
    pub(crate) fn delay(&self, n: u32, random: u64) -> Duration {
        let ceiling = self.ceiling(n);
        if !self.jitter {
            return ceiling;
        }
        // Full jitter: uniform in [0, ceiling], at nanosecond resolution.
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(if nanos == u64::MAX {
            random
        } else {
            random % (nanos + 1)
        })
    }

    pub(crate) fn stable(&self) -> Duration {
        self.stable_after
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// How many restarts a lifecycle tolerates in a window: more than `max_restarts` restarts
/// (of any of its services) within `within` stop the lifecycle with
/// [`StopCause::RestartIntensity`](super::StopCause::RestartIntensity) — a restart storm is a
/// failure the orchestrator should see (exit status 1). Instant clean exits under
/// [`Restart::Always`] count.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use async_lifecycle::RestartIntensity;
///
/// let intensity = RestartIntensity::new(5, Duration::from_secs(10))?;
/// assert_eq!(intensity.max_restarts(), 5);
/// assert!(RestartIntensity::new(0, Duration::from_secs(10)).is_err());
/// # Ok::<(), async_lifecycle::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RestartIntensity {
    max_restarts: u32,
    within: Duration,
}

impl RestartIntensity {
    /// The largest restart count an intensity may allow: a limit above it is no limit, and
    /// the lifecycle keeps the time of each restart within the window.
    pub const MAX_RESTARTS: u32 = 100_000;

    /// The default: more than 5 restarts within 60 s stop the lifecycle.
    pub const DEFAULT: RestartIntensity = RestartIntensity {
        max_restarts: 5,
        within: Duration::from_secs(60),
    };

    /// At most `max_restarts` restarts within any `within`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::ZeroIntensity`] for zero restarts (use [`Restart::Never`]),
    /// [`ConfigError::IntensityTooLarge`] above [`RestartIntensity::MAX_RESTARTS`], and
    /// [`ConfigError::ZeroWindow`] for a zero window (it would never trip).
    ///
    /// Two restarts exactly `within` apart are not in one window (the window excludes its
    /// end).
    pub fn new(max_restarts: u32, within: Duration) -> Result<RestartIntensity, ConfigError> {
        if max_restarts == 0 {
            return Err(ConfigError::ZeroIntensity);
        }
        if max_restarts > Self::MAX_RESTARTS {
            return Err(ConfigError::IntensityTooLarge { max_restarts });
        }
        if within.is_zero() {
            return Err(ConfigError::ZeroWindow);
        }
        Ok(RestartIntensity {
            max_restarts,
            within,
        })
    }

    /// The most restarts tolerated within [`within`](Self::within).
    pub fn max_restarts(&self) -> u32 {
        self.max_restarts
    }

    /// The window.
    pub fn within(&self) -> Duration {
        self.within
    }
}

impl Default for RestartIntensity {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// How a service is supervised and ordered: its [`Restart`] policy and [`Backoff`], the
/// services it starts [`after`](ServiceOptions::after), whether it
/// [declares itself ready](ServiceOptions::declares_ready) and how long it may take to, and
/// its [stop budget](ServiceOptions::stop_budget).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use async_lifecycle::{Backoff, Restart, ServiceOptions};
///
/// let options = ServiceOptions::new()
///     .restart(Restart::OnFailure)
///     .backoff(Backoff::DEFAULT)
///     .after(["db", "cache"])
///     .declares_ready()
///     .start_timeout(Duration::from_secs(10))
///     .stop_budget(Duration::from_secs(5));
/// assert_eq!(options.restart_policy(), Restart::OnFailure);
/// assert_eq!(options.dependencies().count(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ServiceOptions {
    restart: Restart,
    backoff: Backoff,
    after: Vec<std::borrow::Cow<'static, str>>,
    declares_ready: bool,
    start_timeout: Option<Duration>,
    stop_budget: Option<Duration>,
}

impl ServiceOptions {
    /// Never restarted, with the default backoff (unused until a restart policy is set), no
    /// dependency, ready as soon as it starts, and no stop budget of its own.
    pub fn new() -> Self {
        ServiceOptions::default()
    }

    /// When the service is started again.
    pub fn restart(self, restart: Restart) -> Self {
        ServiceOptions { restart, ..self }
    }

    /// How long it waits before each restart.
    pub fn backoff(self, backoff: Backoff) -> Self {
        ServiceOptions { backoff, ..self }
    }

    /// Services (by name) this one starts after and stops before: its first run is made
    /// once every one of them is ready, and at the stop their stop signals fire only once
    /// this service (and every other dependent) has ended or spent its stop budget.
    ///
    /// Each name must be a service already added to the lifecycle (so the dependencies form
    /// a graph without cycles by construction); adding the service fails with
    /// [`ServiceError::UnknownDependency`](crate::ServiceError::UnknownDependency) otherwise,
    /// and with [`ServiceError::DependencyCycle`](crate::ServiceError::DependencyCycle) for
    /// a service that names itself. Calls add up.
    pub fn after<I>(mut self, names: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<std::borrow::Cow<'static, str>>,
    {
        self.after.extend(names.into_iter().map(Into::into));
        self
    }

    /// The service declares itself ready by calling
    /// [`StopSignal::ready`](crate::StopSignal::ready) (on the signal its run receives);
    /// until then its dependents wait. Without it, a service is ready as soon as its run is
    /// made. Each restart is not ready until it declares so again.
    pub fn declares_ready(self) -> Self {
        ServiceOptions {
            declares_ready: true,
            ..self
        }
    }

    /// How long the service may take, from its first run being asked for, to become ready:
    /// past that the lifecycle stops with
    /// [`StopCause::StartFailed`](crate::StopCause::StartFailed), and what already started
    /// is stopped, dependents first. Meaningful with
    /// [`declares_ready`](Self::declares_ready). Checked when the service is added: zero,
    /// or more than [`Backoff::LIMIT`], is a [`ConfigError`].
    pub fn start_timeout(self, timeout: Duration) -> Self {
        ServiceOptions {
            start_timeout: Some(timeout),
            ..self
        }
    }

    /// How long this service may take to stop once its stop signal fired: its budget is
    /// the smaller of this and the time left to the lifecycle's deadline; past it the
    /// service is abandoned (named in the report) and the services it depends on are
    /// signalled. Without one, a service with dependencies gets half the time left (the other
    /// half is theirs: down a chain, budgets halve), and one without gets all of it,
    /// so budgets never stack past the grace and one stalled service never keeps the others
    /// from their stop.
    /// Checked when the service is added: zero, or more than [`Backoff::LIMIT`], is a
    /// [`ConfigError`], and a chain of budgets longer than the grace is
    /// [`ServiceError::BudgetsExceedGrace`](crate::ServiceError::BudgetsExceedGrace).
    pub fn stop_budget(self, budget: Duration) -> Self {
        ServiceOptions {
            stop_budget: Some(budget),
            ..self
        }
    }

    /// The restart policy.
    pub fn restart_policy(&self) -> Restart {
        self.restart
    }

    /// The backoff.
    pub fn backoff_policy(&self) -> Backoff {
        self.backoff
    }

    /// The names of the services this one starts after.
    pub fn dependencies(&self) -> impl Iterator<Item = &str> {
        self.after.iter().map(|name| &**name)
    }

    /// Whether the service declares itself ready.
    pub fn is_declaring_ready(&self) -> bool {
        self.declares_ready
    }

    /// The start timeout, if any.
    pub fn start_timeout_limit(&self) -> Option<Duration> {
        self.start_timeout
    }

    /// The stop budget, if any.
    pub fn stop_budget_limit(&self) -> Option<Duration> {
        self.stop_budget
    }

    /// The durations that are wrong whatever the program.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        for (what, value) in [
            ("start timeout", self.start_timeout),
            ("stop budget", self.stop_budget),
        ] {
            match value {
                Some(value) if value.is_zero() => return Err(ConfigError::ZeroDuration { what }),
                Some(value) if value > Backoff::LIMIT => {
                    return Err(ConfigError::TooLong { what, value });
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// A configuration the lifecycle refuses, found when it is made — never a panic or a hang
/// at run time. Only settings that are wrong whatever the program are refused (a zero wait
/// is a busy loop); a tiny backoff with a tiny intensity window is allowed, and restarts as
/// fast as it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigError {
    /// A zero initial backoff: a failing service would restart in a busy loop.
    ZeroBackoff,
    /// A backoff whose cap is below its initial wait.
    BackoffInverted {
        /// The initial wait.
        initial: Duration,
        /// The cap.
        max: Duration,
    },
    /// A backoff (or its stable period) longer than [`Backoff::LIMIT`].
    BackoffTooLong {
        /// The duration given.
        max: Duration,
    },
    /// A restart intensity of zero restarts.
    ZeroIntensity,
    /// A restart intensity above [`RestartIntensity::MAX_RESTARTS`].
    IntensityTooLarge {
        /// The count given.
        max_restarts: u32,
    },
    /// A restart intensity over a zero window.
    ZeroWindow,
    /// A zero start timeout or stop budget (`what` says which): the service could never
    /// make it.
    ZeroDuration {
        /// Which setting.
        what: &'static str,
    },
    /// A start timeout or stop budget longer than [`Backoff::LIMIT`]: a unit mistake.
    TooLong {
        /// Which setting.
        what: &'static str,
        /// The duration given.
        value: Duration,
    },
    /// An option a nested lifecycle cannot honour (`option` says which): a restart policy
    /// (a lifecycle runs once), or `declares_ready` (its run is ready when it starts).
    NotForNested {
        /// The option.
        option: &'static str,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::ZeroBackoff => {
                f.write_str("a zero initial backoff would restart a failing service in a busy loop")
            }
            ConfigError::BackoffInverted { initial, max } => write!(
                f,
                "the backoff's cap ({max:?}) is below its initial wait ({initial:?})"
            ),
            ConfigError::BackoffTooLong { max } => write!(
                f,
                "a backoff of {max:?} is longer than the limit of {:?}",
                Backoff::LIMIT
            ),
            ConfigError::ZeroIntensity => {
                f.write_str("a restart intensity of zero restarts: use Restart::Never instead")
            }
            ConfigError::ZeroWindow => f.write_str("a restart intensity over a zero window"),
            ConfigError::ZeroDuration { what } => write!(f, "a zero {what} could never be met"),
            ConfigError::TooLong { what, value } => write!(
                f,
                "a {what} of {value:?} is longer than the limit of {:?}",
                Backoff::LIMIT
            ),
            ConfigError::NotForNested { option } => write!(
                f,
                "a nested lifecycle cannot take {option}: it runs once, and is ready when it \
                 starts"
            ),
            ConfigError::IntensityTooLarge { max_restarts } => write!(
                f,
                "a restart intensity of {max_restarts} restarts is no limit (at most {})",
                RestartIntensity::MAX_RESTARTS
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The lifecycle's random source for jitter: SplitMix64, tiny and seedable.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_configurations_are_typed_errors() {
        let s = Duration::from_secs;
        assert_eq!(
            Backoff::new(Duration::ZERO, s(1)),
            Err(ConfigError::ZeroBackoff)
        );
        assert_eq!(
            Backoff::new(s(2), s(1)),
            Err(ConfigError::BackoffInverted {
                initial: s(2),
                max: s(1)
            })
        );
        assert!(matches!(
            Backoff::new(s(1), s(2 * 24 * 3600)),
            Err(ConfigError::BackoffTooLong { .. })
        ));
        assert!(Backoff::DEFAULT.stable_after(s(100 * 24 * 3600)).is_err());
        assert_eq!(
            RestartIntensity::new(0, s(1)),
            Err(ConfigError::ZeroIntensity)
        );
        assert_eq!(
            RestartIntensity::new(1, Duration::ZERO),
            Err(ConfigError::ZeroWindow)
        );
        assert!(ConfigError::ZeroBackoff.to_string().contains("busy loop"));
    }

    #[test]
    fn the_ceiling_doubles_to_the_cap_without_overflow() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(30)).unwrap();
        assert_eq!(b.ceiling(0), Duration::from_millis(100));
        assert_eq!(b.ceiling(2), Duration::from_millis(200));
        assert_eq!(b.ceiling(9), Duration::from_millis(25_600));
        assert_eq!(b.ceiling(10), Duration::from_secs(30));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn full_jitter_stays_below_the_ceiling_and_is_seeded() {
        let b = Backoff::DEFAULT;
        let (mut r1, mut r2) = (Rng::new(7), Rng::new(7));
        for n in 1..40 {
            let (d1, d2) = (b.delay(n, r1.next()), b.delay(n, r2.next()));
            assert_eq!(d1, d2, "the same seed, the same waits");
            assert!(d1 <= b.ceiling(n));
        }
        assert_eq!(b.without_jitter().delay(3, 12345), b.ceiling(3));
    }
}
