//! A process-wide coarse reading of [`Instant::now`]: one atomic load instead of a clock read,
//! for `SystemClock::coarse_now` (and `AsyncIoClock::coarse_now`, whose time is the same).
//!
//! # Design
//!
//! One word, [`Source::word`], holds both the reading and the ticker's state: the nanoseconds
//! since a fixed base instant, shifted left by one, with the low bit set while the ticker is
//! parked. A background thread, the ticker ("async-lifecycle-coarse-clock", started by the
//! first read), stores a reading it took every [`TICK`] while the word is being read, and parks
//! once a whole [`IDLE`] period went by with no read, so an idle process pays nothing.
//!
//! - A read loads the word (`Acquire`). Running: it returns the stored reading, and sets the
//!   `used` flag if it finds it clear (a relaxed load, and a store only then: one shared write
//!   per period, not one per read). Parked: it takes [`Instant::now`] itself, installs it in
//!   the word with a compare-exchange that also clears the parked bit, and unparks the ticker
//!   (only the reader whose exchange ended the park does). Installing the reading and marking
//!   the ticker running is that one exchange, so no reader can see the word running with a
//!   value from before the park.
//! - The ticker stores with `fetch_max`, and a waker installs the larger of its reading and the
//!   word's, so the reading only grows in the word's modification order: by coherence, a read
//!   never returns less than a read that happened before it, on any thread.
//! - Every value in the word is a reading some thread took and then stored (`Release`, paired
//!   with the readers' `Acquire`), so a coarse reading is never ahead of an [`Instant::now`]
//!   taken after it. While the ticker runs it lags by at most one tick plus the ticker's
//!   scheduling delay; after a park, the first read is exact.
//! - Only the ticker sets the parked bit, and it does not tick while parked, so its
//!   `fetch_max` (an even value over an even one) never clears the bit behind a waker's back.
//! - If the ticker cannot be spawned (a platform without threads), the word stays parked and
//!   every read is [`Instant::now`].
//!
//! A forked child has no ticker, and its coarse readings **freeze** at the value the word held
//! (they do not fall back to exact ones: the word still says the ticker runs), so the named
//! sessions it begins get that instant as their start and look older than they are. After
//! `fork` only async-signal-safe calls are allowed in a multi-threaded process anyway, and
//! `futures-timer`'s helper thread (the system clock's sleeps) is missing there just the
//! same: a child that goes on running async code must `exec`, or build its lifecycles on a
//! clock of its own (a hostile review measured a 50 ms session reported 1.55 s old in such a
//! child).
//!
//! The atomics are `std`'s, not the loom shim's: the source is process-wide and outside every
//! model (the loom models run on a `ManualClock`).

use std::sync::OnceLock;
use std::sync::atomic::{
    AtomicBool, AtomicU64,
    Ordering::{AcqRel, Acquire, Relaxed, Release},
};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// How often the ticker refreshes the reading while it is read.
///
/// A coarse reading lags by at most this plus the ticker's scheduling delay. One millisecond
/// keeps that error within the "few milliseconds" the readers accept (session ages, which are
/// at least the grace when anyone looks at them) and is the finest period `thread::sleep`
/// honours on Linux, macOS and current Windows; it costs about a thousand short wake-ups a
/// second (well under 1% of a core), and only while something reads the clock.
pub(crate) const TICK: Duration = Duration::from_millis(1);

/// How long the reading must go unread before the ticker parks: it parks between one and two
/// of these after the last read.
///
/// A read that finds the ticker parked costs a clock read and a thread wake-up (a few
/// microseconds); with 100 ms, a process reading less often than that pays it at most ten
/// times a second, and one that stopped reading wakes at most 200 more times.
pub(crate) const IDLE: Duration = Duration::from_millis(100);

/// The low bit of [`Source::word`]: set while the ticker is parked (or was never started).
const PARKED: u64 = 1;

/// The largest number of nanoseconds the word holds (63 bits: 292 years after the base).
const MAX_NANOS: u64 = u64::MAX >> 1;

/// The process-wide source.
#[inline]
fn global() -> &'static Source {
    static GLOBAL: OnceLock<Source> = OnceLock::new();
    GLOBAL.get_or_init(|| Source::new(TICK, IDLE))
}

/// The process-wide coarse reading.
#[inline]
pub(crate) fn now() -> Instant {
    global().now()
}

/// The process-wide coarse reading as nanoseconds since its base: what [`now`] returns
/// before the conversion to an `Instant` (a division and a checked add), for a timestamp
/// stored on a hot path and read rarely (a named session's start). [`at`] converts it.
#[inline]
pub(crate) fn ticks() -> u64 {
    global().ticks()
}

/// The instant of a reading from [`ticks`].
pub(crate) fn at(ticks: u64) -> Instant {
    global().base + Duration::from_nanos(ticks)
}

/// A coarse time source: the process has one ([`now`]); tests make their own.
pub(crate) struct Source {
    /// The instant the readings count from.
    base: Instant,
    /// `nanoseconds since base << 1 | PARKED`.
    word: AtomicU64,
    /// Set by a read that finds it clear; cleared by the ticker at the end of each period.
    used: AtomicBool,
    /// The ticker, once the first read has spawned it; `None` inside if it could not be.
    ticker: OnceLock<Option<Thread>>,
    /// Starts the ticker ([`Source::spawn_ticker`]; tests swap in a failing one).
    spawn: fn(&'static Source) -> Option<Thread>,
    tick: Duration,
    idle: Duration,
}

impl Source {
    fn new(tick: Duration, idle: Duration) -> Self {
        Source {
            base: Instant::now(),
            word: AtomicU64::new(PARKED),
            used: AtomicBool::new(false),
            ticker: OnceLock::new(),
            spawn: Source::spawn_ticker,
            tick,
            idle,
        }
    }

    /// The coarse reading: the stored one while the ticker runs, else an exact one.
    #[inline]
    pub(crate) fn now(&'static self) -> Instant {
        self.base + Duration::from_nanos(self.ticks())
    }

    /// [`now`](Self::now) as nanoseconds since the base.
    #[inline]
    pub(crate) fn ticks(&'static self) -> u64 {
        let word = self.word.load(Acquire);
        if word & PARKED == 0 {
            if !self.used.load(Relaxed) {
                self.used.store(true, Relaxed);
            }
            return word >> 1;
        }
        self.wake()
    }

    /// The slow path: the ticker is parked (or not started, or cannot be).
    #[cold]
    #[inline(never)]
    fn wake(&'static self) -> u64 {
        let Some(ticker) = self.ticker.get_or_init(|| (self.spawn)(self)) else {
            return self.since_base(Instant::now());
        };
        let reading = Instant::now();
        let nanos = self.since_base(reading);
        let mut word = self.word.load(Acquire);
        loop {
            let stored = word >> 1;
            if word & PARKED == 0 && stored >= nanos {
                // another reader woke it, with a reading no older than ours
                return stored;
            }
            let next = stored.max(nanos);
            match self
                .word
                .compare_exchange_weak(word, next << 1, AcqRel, Acquire)
            {
                Ok(_) => {
                    if word & PARKED != 0 {
                        ticker.unpark();
                    }
                    return next;
                }
                Err(actual) => word = actual,
            }
        }
    }

    fn since_base(&self, reading: Instant) -> u64 {
        let nanos = reading.duration_since(self.base).as_nanos();
        u64::try_from(nanos).unwrap_or(MAX_NANOS).min(MAX_NANOS)
    }

    fn spawn_ticker(source: &'static Source) -> Option<Thread> {
        thread::Builder::new()
            .name("async-lifecycle-coarse-clock".into())
            .spawn(move || source.tick_while_read())
            .ok()
            .map(|handle| handle.thread().clone())
    }

    /// The ticker's body: parked until a read wakes it, then a reading every tick until a
    /// whole period goes unread.
    fn tick_while_read(&self) {
        loop {
            // `park` may return spuriously: only a waker's exchange ends the park
            while self.word.load(Acquire) & PARKED != 0 {
                thread::park();
            }
            let mut period = Instant::now();
            loop {
                thread::sleep(self.tick);
                let now = Instant::now();
                self.word.fetch_max(self.since_base(now) << 1, Release);
                if now.duration_since(period) >= self.idle {
                    period = now;
                    if self.end_period() {
                        break;
                    }
                }
            }
        }
    }

    /// Ends an idle-check period: parks the word (and returns true) if no read used it.
    fn end_period(&self) -> bool {
        if self.used.swap(false, Relaxed) {
            return false;
        }
        self.word.fetch_or(PARKED, Release);
        true
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier, Mutex};

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Phase {
        /// No read yet: no ticker.
        Unstarted,
        /// The word is live: reads return the stored reading.
        Running,
        /// The ticker parked: the next read is exact and wakes it.
        Parked,
        /// The ticker could not be spawned: every read is exact.
        Unavailable,
    }

    impl Source {
        fn phase(&self) -> Phase {
            match self.ticker.get() {
                None => Phase::Unstarted,
                Some(None) => Phase::Unavailable,
                Some(Some(_)) if self.word.load(Acquire) & PARKED != 0 => Phase::Parked,
                Some(Some(_)) => Phase::Running,
            }
        }

        /// The stored nanoseconds, without reading (so without waking).
        fn stored(&self) -> u64 {
            self.word.load(Acquire) >> 1
        }
    }

    /// A source of the test's own (its ticker parks, and then sleeps for good, when unused).
    fn source(idle: Duration) -> &'static Source {
        Box::leak(Box::new(Source::new(TICK, idle)))
    }

    /// Polls `condition` until it holds; fails after a minute (a bound, not a synchronization).
    fn eventually(what: &str, condition: impl Fn() -> bool) {
        let start = Instant::now();
        while !condition() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "timed out waiting until {what}"
            );
            thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn the_first_read_starts_the_ticker_with_an_exact_reading() {
        let source = source(IDLE);
        assert_eq!(source.phase(), Phase::Unstarted);
        let before = Instant::now();
        let read = source.now();
        assert!(read >= before);
        assert!(read <= Instant::now());
        assert_eq!(source.phase(), Phase::Running);
        // the ticker stores newer readings without anyone reading
        let first = source.stored();
        eventually("the ticker ticks", || source.stored() > first);
    }

    #[test]
    fn the_ticker_parks_when_unused_and_the_next_read_wakes_it_exactly() {
        let source = source(Duration::from_millis(5));
        source.now();
        eventually("the ticker parks", || source.phase() == Phase::Parked);
        for _ in 0..3 {
            // not the value from before the park: an exact reading, and running again
            let before = Instant::now();
            let read = source.now();
            assert!(read >= before);
            assert_eq!(source.phase(), Phase::Running);
            // the ticker really resumed: only it parks the word again
            eventually("the ticker parks again", || source.phase() == Phase::Parked);
        }
    }

    #[test]
    fn a_read_marks_the_period_used_and_an_unused_period_parks() {
        // no ticker here: the word is set by hand and the periods ended by hand
        let source = source(IDLE);
        source.word.store(42 << 1, Release);
        assert!(!source.used.load(Relaxed));
        assert_eq!(source.now(), source.base + Duration::from_nanos(42));
        assert!(source.used.load(Relaxed));
        assert_eq!(source.now(), source.base + Duration::from_nanos(42));
        assert!(!source.end_period(), "a used period keeps it running");
        assert!(!source.used.load(Relaxed), "and clears the flag");
        assert_eq!(source.word.load(Acquire), 42 << 1);
        assert!(source.end_period(), "an unused period parks it");
        assert_eq!(source.word.load(Acquire), 42 << 1 | PARKED);
    }

    #[test]
    fn without_a_ticker_every_read_is_exact() {
        let source: &'static Source = Box::leak(Box::new(Source {
            spawn: |_| None,
            ..Source::new(TICK, IDLE)
        }));
        let mut last = source.base;
        for _ in 0..1_000 {
            let before = Instant::now();
            let read = source.now();
            assert!(read >= before && read >= last);
            assert!(read <= Instant::now());
            last = read;
        }
        assert_eq!(source.phase(), Phase::Unavailable);
        assert_eq!(source.word.load(Acquire), PARKED);
    }

    #[test]
    fn a_waker_never_moves_the_reading_back() {
        // a reading stored ahead of the waker's own (as a racing reader's may be) stays; the
        // "ticker" is this thread, so nothing else writes the word
        let source: &'static Source = Box::leak(Box::new(Source {
            spawn: |_| Some(thread::current()),
            ..Source::new(TICK, IDLE)
        }));
        source.now();
        assert_eq!(source.phase(), Phase::Running);
        let ahead = source.stored() + 1_000_000_000;
        source.word.store(ahead << 1 | PARKED, Release);
        assert_eq!(source.now(), source.base + Duration::from_nanos(ahead));
        assert_eq!(source.stored(), ahead);
    }

    /// Many threads, reading in bursts with idle gaps so the ticker parks and wakes under
    /// them: no read is ahead of a clock read after it, none goes back on its thread, and none
    /// goes back behind one that happened before it on another thread (the shared `last`).
    #[test]
    fn reads_never_go_back_nor_ahead_across_parks_and_threads() {
        let source = source(Duration::from_millis(2));
        let last = Arc::new(Mutex::new(source.base));
        let threads = 4;
        let start = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (last, start) = (Arc::clone(&last), Arc::clone(&start));
                thread::spawn(move || {
                    start.wait();
                    let mut mine = source.base;
                    for round in 0..40 {
                        for i in 0..2_000 {
                            let read = if i % 64 == t {
                                let mut last = last.lock().unwrap();
                                let read = source.now();
                                assert!(read >= *last, "behind another thread's read");
                                *last = read;
                                read
                            } else {
                                source.now()
                            };
                            assert!(read >= mine, "went back");
                            assert!(read <= Instant::now(), "ahead of the clock");
                            mine = read;
                        }
                        if round % 4 == t % 4 {
                            // an idle gap: long enough for the ticker to park (not a sync)
                            thread::sleep(Duration::from_millis(5));
                        }
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
    }

    #[test]
    fn the_process_wide_reading_is_never_ahead_and_lags_less_than_a_second() {
        for _ in 0..10_000 {
            let before = Instant::now();
            let read = now();
            assert!(read <= Instant::now());
            assert!(read + Duration::from_secs(1) >= before, "lags a second");
        }
    }
}
