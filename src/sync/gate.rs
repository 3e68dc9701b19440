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
//! - `admitted`: sessions admitted, modulo 2³¹; every wrap-around is counted in `wraps` by
//!   the one admission that observes the field at its maximum, so the total stays exact.
//!
//! Beginning a session is one compare-and-swap that adds `LIVE_ONE | ADMIT_ONE` only if `C`
//! is clear: a session is either counted before the close (and the closer sees it live) or
//! refused without touching the word. Ending subtracts `LIVE_ONE`.
//!
//! Why not a `fetch_add` and an undo on refusal, which is cheaper under contention? Loom
//! showed the undo's window: a refusal in flight is, for that moment, a live session and an
//! admission, so a census or a report taken then named a phantom straggler and, with the
//! refusal counter bumped separately, computed `admitted - refused` below zero. With the
//! CAS a refused attempt never changes the word, so every count read from it is exact.
//!
//! # Invariants
//!
//! - Once `C` is set, the word changes only by [`Gate::exit`]: live only falls.
//! - "Drained" (closed and live = 0) is reported exactly once, by the operation that moved
//!   the word into that state: the close itself when nothing was live, or the exit that took
//!   live from 1 to 0.
//! - `admitted` sessions were admitted; each ends exactly once through [`Gate::exit`].

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

/// A refused attempt to enter: the gate is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed;

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
        let admit =
            |word: u64| (word & CLOSED == 0).then(|| word.wrapping_add(LIVE_ONE | ADMIT_ONE));
        // Acquire on both outcomes: a refused caller then sees everything the closer did
        // before closing (the stop cause, the state).
        match self
            .word
            .fetch_update(Ordering::Acquire, Ordering::Acquire, admit)
        {
            Ok(prev) => {
                if prev >> ADMIT_SHIFT == ADMIT_FIELD_MAX {
                    self.count_wrap();
                }
                Ok(())
            }
            Err(_closed) => Err(self.refuse()),
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

    /// Sessions admitted and not yet ended.
    pub(crate) fn live(&self) -> u64 {
        (self.word.load(Ordering::Acquire) & LIVE_MASK) >> 1
    }

    /// Sessions admitted so far (refusals excluded).
    pub(crate) fn admitted(&self) -> u64 {
        // Acquire on the word: pairs with the admissions it counts. Relaxed on `wraps`: a
        // statistic, read once admission is closed and stable.
        let field = self.word.load(Ordering::Acquire) >> ADMIT_SHIFT;
        let wraps = self.wraps.load(Ordering::Relaxed);
        wraps * (ADMIT_FIELD_MAX + 1) + field
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
        Closed
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
        assert_eq!(gate.enter(), Err(Closed));
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
        // A refusal leaves the word alone: nothing live, nothing admitted, no new report.
        assert_eq!(gate.enter(), Err(Closed));
        assert_eq!(gate.live(), 0);
        assert_eq!(gate.admitted(), 1);
        assert_eq!(gate.refused(), 1);
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
