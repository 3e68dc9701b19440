//! Replay tokens: one printable word that names a run exactly.

use std::fmt;
use std::str::FromStr;

use super::choice::Choices;
use super::sched::{Plan, Scheduler};

/// Names one simulated run exactly: its scheduler and its [`Choices`]. A failing run prints
/// its token on a `replay:` line; [`replay`](super::replay), [`Config::run`](super::Config::run)
/// or the [`REPLAY_ENV`](super::REPLAY_ENV) variable run it again, step for step.
///
/// Spelled `v1-SCHEDULER-CHOICES`: `random` or `pct1`, `pct2-k120`, `pct3-k120` (PCT's
/// depth, and the run length its change points are spread over), then the choices as
/// [`Choices`] prints them (`s` and a hex seed, `b` and hex bytes, or `l` and a hex list).
/// It holds only `[0-9a-z.-]`, so it needs no quoting in a shell.
///
/// A token parses only in the spelling it prints, so that one run has one name: lower-case
/// hex without signs, no leading zeros in a step count or a list's numbers, no step count
/// on `pct1`. Only a seed's leading zeros may be left out (`s2a` is `s000000000000002a`).
///
/// A token replays the same run under the same [`Config`](super::Config) limits
/// ([`max_steps`](super::Config::max_steps)) and the same scenario code.
///
/// # Examples
///
/// ```
/// use async_lifecycle::sim::{Choices, Token};
///
/// let token = Token::pct(2, 150, Choices::seed(0x2a));
/// assert_eq!(token.to_string(), "v1-pct2-k150-s000000000000002a");
/// assert_eq!("v1-pct2-k150-s000000000000002a".parse::<Token>().unwrap(), token);
/// assert!("v2-anything".parse::<Token>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Token {
    pub(crate) plan: Plan,
    pub(crate) choices: Choices,
}

impl Token {
    /// A run under the uniformly random scheduler.
    pub fn random(choices: Choices) -> Self {
        Token {
            plan: Plan::Random,
            choices,
        }
    }

    /// A run under PCT of depth `depth` (1 to 3), its `depth − 1` change points spread over
    /// `steps` steps.
    ///
    /// # Panics
    ///
    /// When `depth` is not 1, 2 or 3.
    pub fn pct(depth: u8, steps: u64, choices: Choices) -> Self {
        assert!(
            (1..=3).contains(&depth),
            "async_lifecycle::sim: PCT depth {depth}: it is 1, 2 or 3"
        );
        Token {
            plan: Plan::Pct {
                depth,
                steps: if depth == 1 { 0 } else { steps.max(1) },
            },
            choices,
        }
    }

    /// The run's scheduler ([`Scheduler::Random`] or [`Scheduler::Pct`]).
    pub fn scheduler(&self) -> Scheduler {
        self.plan.scheduler()
    }

    /// The run's choices.
    pub fn choices(&self) -> &Choices {
        &self.choices
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v1-{}-{}", self.plan, self.choices)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({self})")
    }
}

/// A token that does not parse; its `Display` says what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError(String);

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TokenError {}

impl FromStr for Token {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, TokenError> {
        let bad = |why: &str| {
            TokenError(format!(
                "bad replay token {s:?}: {why} (expected v1-random-s<seed>, v1-pct1-s<seed>, \
                 v1-pct2-k<steps>-s<seed>, …, as a failing run prints it)"
            ))
        };
        let mut parts = s.trim().split('-');
        if parts.next() != Some("v1") {
            return Err(bad("it does not begin with v1-"));
        }
        let scheduler = parts.next().ok_or_else(|| bad("no scheduler"))?;
        let mut next = parts.next().ok_or_else(|| bad("no choices"))?;
        let plan = match scheduler {
            "random" => Plan::Random,
            "pct1" | "pct2" | "pct3" => {
                let depth = scheduler.as_bytes()[3] - b'0';
                let mut steps = 0;
                if let Some(k) = next.strip_prefix('k') {
                    steps = k.parse::<u64>().map_err(|_| bad("bad step count"))?;
                    next = parts.next().ok_or_else(|| bad("no choices"))?;
                } else if depth > 1 {
                    return Err(bad("PCT 2 and 3 need their step count (k…)"));
                }
                Plan::Pct {
                    depth,
                    steps: if depth == 1 { 0 } else { steps.max(1) },
                }
            }
            _ => return Err(bad("unknown scheduler")),
        };
        let choices = next.parse::<Choices>().map_err(|e| bad(&e))?;
        if parts.next().is_some() {
            return Err(bad("trailing text"));
        }
        let token = Token { plan, choices };
        // One run, one name: `+1`, upper-case hex, `k` on pct1 or `k0` would parse to a
        // token that prints otherwise.
        let given = s.trim();
        let seed_at = given.rfind("-s").map(|at| at + 2);
        let printed = token.to_string();
        let canonical = match seed_at {
            Some(at) if matches!(token.choices.0, super::choice::Kind::Seed(_)) => {
                format!("{}{:0>16}", &given[..at], &given[at..]) == printed
            }
            _ => given == printed,
        };
        if !canonical {
            return Err(bad(&format!("not in its own spelling, {printed}")));
        }
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        for token in [
            Token::random(Choices::seed(1)),
            Token::pct(1, 77, Choices::seed(u64::MAX)),
            Token::pct(3, 12, Choices::bytes(vec![1, 2, 3])),
            Token::random(Choices::list(vec![4, 0, 0x10])),
        ] {
            let text = token.to_string();
            assert!(
                text.bytes().all(|b| b.is_ascii_digit()
                    || b.is_ascii_lowercase()
                    || b == b'.'
                    || b == b'-'),
                "{text}"
            );
            assert_eq!(text.parse::<Token>(), Ok(token));
        }
        assert_eq!(
            Token::pct(1, 77, Choices::seed(1)).to_string(),
            "v1-pct1-s0000000000000001"
        );
        // A seed's leading zeros may be left out.
        assert_eq!(
            "v1-pct2-k5-s2a".parse::<Token>(),
            Ok(Token::pct(2, 5, Choices::seed(0x2a)))
        );
    }

    #[test]
    fn bad_tokens_say_why() {
        for bad in [
            "",
            "v1",
            "v2-random-s1",
            "v1-fifo-s1",
            "v1-pct2-s1",
            "v1-pct2-kx-s1",
            "v1-random-q1",
            "v1-random-s1-extra",
            "v1-pct4-k3-s1",
            // Parsable, but not as they print: one run, one name.
            "v1-random-s+1",
            "v1-random-sFF",
            "v1-random-b+1",
            "v1-random-l+1.+2",
            "v1-random-l01",
            "v1-pct1-k99-s1",
            "v1-pct2-k0-s1",
            "v1-pct2-k010-s1",
        ] {
            let err = bad.parse::<Token>().unwrap_err();
            assert!(err.to_string().starts_with("bad replay token"), "{err}");
        }
    }
}
