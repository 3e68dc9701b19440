//! Session admission: one atomic word, one read-modify-write per begin and per end.
//!
//! # Layout
//!
//! ```text
//!  63                33 32                 1   0
//! +--------------------+--------------------+---+
//! | admitted (31 bits) |   live (32 bits)   | C |
//! +--------------------+--------------------+---+
//! ```
//!
//! - `C` (closed): set once by [`Gate::close`]; after it nothing is admitted.
//! - `live`: sessions admitted and not yet ended.
//! - `admitted`: attempts to enter, modulo 2³¹; every wrap-around is counted in `wraps` by
//!   the one attempt that observes the field at its maximum, so the total stays exact.
//!
//! Beginning a session adds `LIVE_ONE | ADMIT_ONE` in a single `fetch_add` and then looks
//! at the closed bit of the value it replaced: the read and the increment are one atomic
//! step, so a session is either counted before the close (and the closer sees it live) or
//! sees the close and undoes its live increment (a refusal). Ending subtracts `LIVE_ONE`.
//!
//! # Invariants
//!
//! - Once `C` is set, the live count only rises by refused attempts that at once undo it.
//! - "Drained" (closed and live = 0) is reported by exactly the operation that moved the
//!   word into that state: the close itself when nothing was live, or the end (or refusal
//!   undo) that took live from 1 to 0. A refused attempt can make that happen more than
//!   once; the receiver of the report is idempotent.
//! - `admitted - refused` sessions were admitted; each ends exactly once through
//!   [`Gate::exit`].

use crate::loom::{AtomicU64, Ordering};

const CLOSED: u64 = 1;
const LIVE_ONE: u64 = 1 << 1;
const LIVE_MASK: u64 = ((1 << 32) - 1) << 1;
const ADMIT_SHIFT: u32 = 33;
const ADMIT_ONE: u64 = 1 << ADMIT_SHIFT;
const ADMIT_FIELD_MAX: u64 = u64::MAX >> ADMIT_SHIFT;
/// The word of a closed gate with exactly one live session.
const CLOSED_LAST: u64 = CLOSED | LIVE_ONE;

#[derive(Debug)]
pub(crate) struct Gate {
    word: AtomicU64,
    /// Wrap-arounds of the 31-bit admitted field.
    wraps: AtomicU64,
    /// Attempts refused because the gate was closed.
    refused: AtomicU64,
}

/// A refused attempt to enter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed {
    /// Whether undoing the attempt left the closed gate with no live session.
    pub(crate) drained: bool,
}

impl Gate {
    pub(crate) fn new() -> Self {
        Gate {
            word: AtomicU64::new(0),
            wraps: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// Admits one session, or refuses it if the gate is closed.
    #[inline]
    pub(crate) fn enter(&self) -> Result<(), Closed> {
        // Acquire: a refused caller then sees everything the closer did before closing
        // (the stop cause, the state). The decision itself needs no ordering: an RMW always
        // reads the latest value of the word.
        let prev = self.word.fetch_add(LIVE_ONE | ADMIT_ONE, Ordering::Acquire);
        if prev >> ADMIT_SHIFT == ADMIT_FIELD_MAX {
            self.count_wrap();
        }
        if prev & CLOSED == 0 {
            Ok(())
        } else {
            Err(self.refuse())
        }
    }

    /// Ends one admitted session. Returns whether the gate is now drained (closed, no live
    /// session): the caller must then report it.
    #[inline]
    pub(crate) fn exit(&self) -> bool {
        // Release: the session's work happens-before whoever observes the drain (it takes a
        // lock after this returns true, which orders it for them).
        let prev = self.word.fetch_sub(LIVE_ONE, Ordering::Release);
        debug_assert!(prev & LIVE_MASK != 0, "session ended twice");
        prev & (CLOSED | LIVE_MASK) == CLOSED_LAST
    }

    /// Closes admission. Returns whether no session was live at that moment (drained).
    pub(crate) fn close(&self) -> bool {
        // AcqRel: Release publishes what the closer did before (for refused callers);
        // Acquire pairs with the exits that happened before.
        let prev = self.word.fetch_or(CLOSED, Ordering::AcqRel);
        prev & LIVE_MASK == 0
    }

    /// Sessions admitted and not yet ended (refused attempts in flight included).
    pub(crate) fn live(&self) -> u64 {
        (self.word.load(Ordering::Acquire) & LIVE_MASK) >> 1
    }

    /// Sessions admitted so far (refusals excluded).
    pub(crate) fn admitted(&self) -> u64 {
        // Relaxed: statistics read once admission is closed and stable.
        let field = self.word.load(Ordering::Acquire) >> ADMIT_SHIFT;
        let wraps = self.wraps.load(Ordering::Relaxed);
        let attempts = wraps * (ADMIT_FIELD_MAX + 1) + field;
        attempts - self.refused()
    }

    /// Attempts refused because admission was closed.
    pub(crate) fn refused(&self) -> u64 {
        // Relaxed: a statistic.
        self.refused.load(Ordering::Relaxed)
    }

    #[cold]
    fn count_wrap(&self) {
        // Relaxed: a statistic, read after admission closed.
        self.wraps.fetch_add(1, Ordering::Relaxed);
    }

    #[cold]
    fn refuse(&self) -> Closed {
        // Relaxed: a statistic.
        self.refused.fetch_add(1, Ordering::Relaxed);
        let prev = self.word.fetch_sub(LIVE_ONE, Ordering::Release);
        Closed {
            drained: prev & (CLOSED | LIVE_MASK) == CLOSED_LAST,
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn admits_until_closed_then_refuses() {
        let gate = Gate::new();
        assert_eq!(gate.enter(), Ok(()));
        assert_eq!(gate.enter(), Ok(()));
        assert_eq!(gate.live(), 2);
        assert!(!gate.close(), "two sessions are live");
        assert_eq!(gate.enter(), Err(Closed { drained: false }));
        assert!(!gate.exit());
        assert!(gate.exit(), "the last exit after close reports the drain");
        assert_eq!(gate.live(), 0);
        assert_eq!(gate.admitted(), 2);
        assert_eq!(gate.refused(), 1);
    }

    #[test]
    fn close_with_nothing_live_is_drained_at_once() {
        let gate = Gate::new();
        gate.enter().unwrap();
        assert!(!gate.exit(), "an exit while open never reports a drain");
        assert!(gate.close());
        // A refusal on a drained gate re-reports the drain; receivers are idempotent.
        assert_eq!(gate.enter(), Err(Closed { drained: true }));
    }

    #[test]
    fn admitted_count_survives_wrap_around_of_its_field() {
        let gate = Gate::new();
        // Start the field one below its maximum.
        gate.word
            .store((ADMIT_FIELD_MAX - 1) << ADMIT_SHIFT, Ordering::Relaxed);
        for _ in 0..3 {
            gate.enter().unwrap();
            gate.exit();
        }
        assert_eq!(gate.admitted(), ADMIT_FIELD_MAX - 1 + 3);
        assert_eq!(gate.live(), 0);
    }
}
