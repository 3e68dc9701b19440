//! Where a run's choices come from: a seeded generator, a recorded list, or raw bytes.

use std::fmt;

/// SplitMix64 (Steele, Lea and Flood): a tiny, fast generator with a fixed, documented output,
/// so a seed means the same run on every platform and Rust version.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }
}

/// SplitMix64's finaliser: a bijection that spreads every input bit over the output.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The source of every choice a simulated run makes: which ready task runs next, where a PCT
/// scheduler's priorities and change points fall, when each injected fault fires, the
/// lifecycles' seeds and whatever the scenario asks [`Env::choose`](super::Env::choose).
///
/// The same choices make the same run, so each source replays exactly:
///
/// - [`Choices::seed`]: a seeded generator (SplitMix64), what [`Config::search`](super::Config::search)
///   uses, one seed per run;
/// - [`Choices::bytes`]: raw bytes, for cargo-fuzz (`fuzz_target!(|data: &[u8]| …)`): each
///   choice among `n ≤ 256` options reads one byte (two up to 65,536, else four), modulo
///   `n`; bytes that run out choose 0, so a fuzzer's shorter input is a simpler schedule;
/// - [`Choices::list`]: a list of numbers, one per choice, modulo its range; for proptest,
///   whose `Vec<u32>` strategy shrinks towards shorter lists of smaller numbers, and so towards
///   the schedule that runs the lowest-numbered ready task (spawn order) at each step.
///
/// A choice among one option consumes nothing.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Choices(pub(crate) Kind);

#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Seed(u64),
    Bytes(Vec<u8>),
    List(Vec<u32>),
}

impl Choices {
    /// Choices drawn from a generator seeded with `seed`.
    pub fn seed(seed: u64) -> Self {
        Choices(Kind::Seed(seed))
    }

    /// Choices read from `bytes` (cargo-fuzz input); see the type docs for the encoding.
    pub fn bytes(bytes: impl Into<Vec<u8>>) -> Self {
        Choices(Kind::Bytes(bytes.into()))
    }

    /// Choices read from `list`, one number per choice (proptest input).
    pub fn list(list: impl Into<Vec<u32>>) -> Self {
        Choices(Kind::List(list.into()))
    }

    pub(crate) fn source(&self) -> Source {
        match &self.0 {
            Kind::Seed(seed) => Source::Seeded(SplitMix64::new(*seed)),
            Kind::Bytes(bytes) => Source::Bytes(bytes.clone(), 0),
            Kind::List(list) => Source::List(list.clone(), 0),
        }
    }
}

impl fmt::Debug for Choices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The token's spelling: `s` and 16 hex digits for a seed, `b` and hex for bytes, `l` and
/// hex numbers joined by `.` for a list.
impl fmt::Display for Choices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Seed(seed) => write!(f, "s{seed:016x}"),
            Kind::Bytes(bytes) => {
                f.write_str("b")?;
                bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
            Kind::List(list) => {
                f.write_str("l")?;
                for (i, n) in list.iter().enumerate() {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    write!(f, "{n:x}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::str::FromStr for Choices {
    type Err = String;

    /// Only in the spelling [`Display`](fmt::Display) prints (a seed's leading zeros may be
    /// left out): lower-case hex, no signs, no leading zeros in a list's numbers.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("bad choices {s:?}: expected s<hex seed>, b<hex bytes> or l<hex.hex…>");
        let choices = Self::parse(s).ok_or_else(bad)?;
        let printed = choices.to_string();
        let given = match s.strip_prefix('s') {
            Some(seed) => format!("s{seed:0>16}"),
            None => s.to_owned(),
        };
        if given != printed {
            return Err(format!(
                "bad choices {s:?}: not in its own spelling, {printed}"
            ));
        }
        Ok(choices)
    }
}

impl Choices {
    fn parse(s: &str) -> Option<Self> {
        let mut chars = s.chars();
        let kind = chars.next()?;
        let rest = chars.as_str();
        match kind {
            's' if !rest.is_empty() && rest.len() <= 16 => {
                u64::from_str_radix(rest, 16).ok().map(Choices::seed)
            }
            'b' if rest.len() % 2 == 0 && rest.is_ascii() => (0..rest.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&rest[i..i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .ok()
                .map(Choices::bytes),
            'l' if rest.is_empty() => Some(Choices::list(Vec::new())),
            'l' => rest
                .split('.')
                .map(|n| u32::from_str_radix(n, 16))
                .collect::<Result<Vec<u32>, _>>()
                .ok()
                .map(Choices::list),
            _ => None,
        }
    }
}

/// A run's source of choices, being consumed.
#[derive(Debug)]
pub(crate) enum Source {
    Seeded(SplitMix64),
    Bytes(Vec<u8>, usize),
    List(Vec<u32>, usize),
}

impl Source {
    /// A choice in `0..n` (0 when `n <= 1`, consuming nothing).
    pub(crate) fn choose(&mut self, n: usize) -> usize {
        if n <= 1 {
            return 0;
        }
        match self {
            // Lemire's multiply-shift: no modulo bias worth the name, no division.
            Source::Seeded(rng) => ((u128::from(rng.next_u64()) * n as u128) >> 64) as usize,
            Source::Bytes(bytes, at) => {
                let width = if n <= 1 << 8 {
                    1
                } else if n <= 1 << 16 {
                    2
                } else {
                    4
                };
                let mut value: u32 = 0;
                for i in 0..width {
                    let byte = bytes.get(*at).copied().unwrap_or(0);
                    *at += 1;
                    value |= u32::from(byte) << (8 * i);
                }
                value as usize % n
            }
            Source::List(list, at) => {
                let value = list.get(*at).copied().unwrap_or(0);
                *at += 1;
                value as usize % n
            }
        }
    }

    /// A full 64-bit draw (a lifecycle's seed, a PCT priority).
    pub(crate) fn next_u64(&mut self) -> u64 {
        match self {
            Source::Seeded(rng) => rng.next_u64(),
            Source::Bytes(bytes, at) => {
                let mut value = 0u64;
                for i in 0..8 {
                    let byte = bytes.get(*at).copied().unwrap_or(0);
                    *at += 1;
                    value |= u64::from(byte) << (8 * i);
                }
                value
            }
            Source::List(list, at) => {
                let value = list.get(*at).copied().unwrap_or(0);
                *at += 1;
                u64::from(value)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_the_reference_output() {
        // The first outputs of the reference implementation seeded with 1234567.
        let mut rng = SplitMix64::new(1234567);
        assert_eq!(rng.next_u64(), 6457827717110365317);
        assert_eq!(rng.next_u64(), 3203168211198807973);
    }

    #[test]
    fn choices_round_trip_through_their_spelling() {
        for choices in [
            Choices::seed(0xdead_beef),
            Choices::bytes(vec![0, 1, 0xff]),
            Choices::bytes(Vec::new()),
            Choices::list(vec![3, 0x1_0000, 0]),
            Choices::list(Vec::new()),
        ] {
            assert_eq!(choices.to_string().parse::<Choices>(), Ok(choices));
        }
        assert_eq!("s2a".parse::<Choices>(), Ok(Choices::seed(0x2a)));
        for bad in [
            "",
            "x1",
            "s",
            "s12345678901234567",
            "b1",
            "bzz",
            "l1..2",
            "lq",
            "s+1",
            "sFF",
            "bAB",
            "l01",
        ] {
            assert!(bad.parse::<Choices>().is_err(), "{bad}");
        }
    }

    #[test]
    fn exhausted_bytes_and_lists_choose_zero() {
        let mut bytes = Choices::bytes(vec![7]).source();
        assert_eq!(bytes.choose(5), 2);
        assert_eq!(bytes.choose(5), 0);
        assert_eq!(bytes.choose(1), 0);
        let mut list = Choices::list(vec![9]).source();
        assert_eq!(list.choose(4), 1);
        assert_eq!(list.next_u64(), 0);
    }

    #[test]
    fn seeded_choices_stay_in_range() {
        let mut source = Choices::seed(42).source();
        for n in 1..50 {
            assert!(source.choose(n) < n);
        }
    }
}
