//! Sessions: units of work that come and go (a connection, a request, a job). Everything on
//! the session path is in this file: the admission gate, the registry of named sessions,
//! their lock order, the census, the refusal mapping and the guard.
//!
//! # Shards
//!
//! A lifecycle's sessions are split over shards (twice the available parallelism, a power
//! of two, 2 to 64), each with its own gate (counting unnamed sessions) and its own registry
//! (naming and counting named ones), on its own cache lines. A thread begins its sessions on the shard its number (taken when it first
//! begins one) picks, so threads on different shards never write to a shared line: admission
//! costs a counter on every core, not one contended word. A child session enters its
//! parent's shard (below), and a session ends on the shard it entered (its key says which).
//!
//! # The gate (one per shard)
//!
//! One atomic word, one read-modify-write per begin and per end:
//!
//! ```text
//!  63                33 32                 1   0
//! +--------------------+--------------------+---+
//! | admitted (31 bits) |   live (32 bits)   | C |
//! +--------------------+--------------------+---+
//! ```
//!
//! - `C` (closed): set once by [`Sessions::close`]; after it nothing is admitted.
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
//! admission, so a census taken then named a phantom straggler and computed
//! `admitted - refused` below zero. With the CAS a refused attempt never changes the word,
//! so every count read from it is exact. Sharding keeps that: each shard's word is exact, and
//! contention is what the shards remove, not what the CAS costs.
//!
//! # The registry (one per shard)
//!
//! A named session has an entry (name, start) in its shard's registry, a slab under a spin
//! lock, and is counted there, not by the gate: it begins and ends under that lock — one
//! compare-and-swap to take it, a plain store to release it, a slab insert or remove and a
//! count in between — so a named session costs the lock's two read-modify-writes and the
//! shard's reference count's two, as an unnamed one costs the gate's two and the count's
//! two (issue 12: the gate inside the registry's critical section made it eight). The
//! registry's counts (`named_live`, `named_admitted`) are written under the lock and read
//! without it by the drain's census. A registry, like a gate, is closed once by
//! [`Sessions::close`] (under its lock), after which it admits no named session.
//!
//! A child is counted where its parent is: a child (named or not) of a named session by the
//! registry, a child of an unnamed session by the gate (a named one with an entry in the
//! registry too, its key marked [`IN_GATE`]). So a child is admitted only where a live
//! session — its parent — is counted, which has not drained and cannot until both ended.
//!
//! # The drain across shards
//!
//! A gate or a registry is drained when it is closed with nothing it counts live; it reports
//! that exactly once, by the close (nothing was live) or by the exit that took its live count
//! from 1 to 0. The lifecycle's sessions are drained when every gate and every registry is:
//! `pending` starts at twice the number of shards plus one; each drained gate or registry
//! takes one, and the close takes the extra one after it has closed them all, so `pending`
//! reaches zero exactly once — never before everything is closed — and whoever takes it
//! there reports the drain. A child admitted after the close is counted where its parent is,
//! which has a live session (the parent) and so has not drained and cannot until both
//! ended: the invariant "once drained, nothing is admitted" holds for each count.
//!
//! # The lock order
//!
//! A census takes every shard's registry lock, in order, and reads the gates inside: a
//! session counted by a gate with an entry (a named child of an unnamed session) begins and
//! ends with its gate operation inside the lock, so the census sees the named entries and the
//! live counts agree for them; only unnamed sessions can move while it looks, and they are
//! counted, not named. The sessions that ended by a panic are kept under one more lock, taken
//! inside a shard's.
//!
//! Lock order: the shell's `core` → the shards' `registry`, in shard order → `panicked`. A
//! session's end takes its shard's `registry`, releases it, and only then reports a drain
//! through `core`. A thread that finds its shard's registry lock held moves to another shard
//! at once for a named session it begins ([`rehash`]); an end waits for its own shard's (a
//! few pauses, then it yields the time slice).
//!
//! # Invariants
//!
//! - Once a shard's `C` is set, its word changes only by an exit or by the admission of a
//!   child of one of its live sessions: its `live` reaches zero once, and stays there. The
//!   same holds for a registry's count once it is closed.
//! - "Drained" is reported exactly once, by the operation that took `pending` to zero: the
//!   close itself when nothing was live, or the exit that emptied the last live shard.
//! - Every admitted session ends exactly once, on the shard it entered: by its guard's drop,
//!   or by [`Session::run`] catching a panic (the guard is then spent).
//!
//! # Panics
//!
//! A guard dropped while its thread unwinds (the guard lives in a frame the panic unwinds
//! through: `block_on`, a thread, a synchronous handler — or a task whose executor drops
//! its future while the panic unwinds, as tokio does) ends the session as panicked, without
//! the message. An executor that catches a task's panic and drops the future afterwards
//! drops the guard normally: only [`Session::run`], which catches the panic inside the
//! session, sees those, and it always has the message. The check is one relaxed load of the process's panic count on the drop path.
//! It looks at the thread, not the session: a session begun *and* ended inside a `Drop` that
//! runs while the thread unwinds from an unrelated panic is counted as panicked too.

use std::any::Any;
use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Weak};
use std::time::Instant;

use futures_util::FutureExt;
use slab::Slab;

use crate::Refused;
use crate::clock::Clock;
use crate::complain;
use crate::loom::{
    AtomicBool, AtomicU64, Mutex, Ordering, SpinGuard, SpinLock, fence, lock, spin_lock, try_spin,
};
use crate::machine::{NamedSession, PANICKED_KEPT, PanickedSession, SessionCensus, StopCause};
use crate::service::{StopSignal, panic_text};
use crate::shared::Shared;

// ---- The gate ----

const CLOSED: u64 = 1;
const LIVE_ONE: u64 = 1 << 1;
const LIVE_MASK: u64 = ((1 << 32) - 1) << 1;
const ADMIT_SHIFT: u32 = 33;
const ADMIT_ONE: u64 = 1 << ADMIT_SHIFT;
const ADMIT_FIELD_MAX: u64 = u64::MAX >> ADMIT_SHIFT;
/// The word of a closed gate with exactly one live session.
const CLOSED_LAST: u64 = CLOSED | LIVE_ONE;

#[derive(Debug)]
struct Gate {
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
    fn new() -> Self {
        Gate {
            word: AtomicU64::new(0),
            wraps: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// Admits one session, or refuses it if the gate is closed.
    #[inline]
    fn enter(&self) -> Result<(), Closed> {
        // Relaxed on both outcomes. Admission publishes nothing: the session's own work is
        // ordered by its thread's program order, and nothing it reads is written through the
        // gate. A refused caller learns why (draining or ended) from the `finished`
        // broadcast, an atomic with its own Acquire, not from this word.
        let mut word = self.word.load(Ordering::Relaxed);
        loop {
            if word & CLOSED != 0 {
                return Err(self.refuse());
            }
            match self.word.compare_exchange_weak(
                word,
                word.wrapping_add(LIVE_ONE | ADMIT_ONE),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(prev) => {
                    if prev >> ADMIT_SHIFT == ADMIT_FIELD_MAX {
                        self.count_wrap();
                    }
                    return Ok(());
                }
                Err(actual) => {
                    // Another thread wrote the word (or a spurious failure): this thread
                    // moves to another shard for its next sessions.
                    rehash();
                    word = actual;
                }
            }
        }
    }

    /// Admits a child of a live session, closed gate or not: its parent is live, so `live`
    /// is at least 1 and the drain cannot have been reported — nor can it be until the
    /// parent and this child have both ended. One `fetch_add`.
    #[inline]
    fn enter_child(&self) {
        // Relaxed: as `enter`.
        let prev = self.word.fetch_add(LIVE_ONE | ADMIT_ONE, Ordering::Relaxed);
        debug_assert!(prev & LIVE_MASK != 0, "a child of no live session");
        if prev >> ADMIT_SHIFT == ADMIT_FIELD_MAX {
            self.count_wrap();
        }
    }

    /// Ends one admitted session. Returns whether the gate is now drained (closed, no live
    /// session): the caller must then report it.
    #[inline]
    fn exit(&self) -> bool {
        // Release: the session's work happens-before whoever acquires the word later — the
        // census (`live`, Acquire), the close (Acquire) or the last exit's fence below.
        let prev = self.word.fetch_sub(LIVE_ONE, Ordering::Release);
        debug_assert!(prev & LIVE_MASK != 0, "session ended twice");
        let drained = prev & (CLOSED | LIVE_MASK) == CLOSED_LAST;
        if drained {
            // The exits form one release sequence on the word; this Acquire fence makes every
            // earlier session's work happen-before the drain this caller now reports (and so
            // before the report and every `wait()` it resolves). Explicit, rather than left
            // to the locks taken afterwards, which order only this thread's own session.
            fence(Ordering::Acquire);
        }
        drained
    }

    /// Closes admission. Returns whether no session was live at that moment (drained).
    fn close(&self) -> bool {
        // Acquire: pairs with the exits' Release, so when nothing is live the sessions' work
        // happens-before the drain the closer reports. No Release: refused callers do not
        // read through this word (see `enter`).
        let prev = self.word.fetch_or(CLOSED, Ordering::Acquire);
        prev & LIVE_MASK == 0
    }

    /// Sessions admitted and not yet ended.
    fn live(&self) -> u64 {
        (self.word.load(Ordering::Acquire) & LIVE_MASK) >> 1
    }

    /// Sessions admitted so far (refusals excluded).
    #[cfg(all(test, not(loom)))]
    fn admitted(&self) -> u64 {
        self.live_and_admitted().1
    }

    /// Sessions live and admitted, read from one load of the word, so the two agree (a
    /// snapshot never shows a session admitted but neither live nor ended).
    fn live_and_admitted(&self) -> (u64, u64) {
        // Acquire on the word: pairs with the exits' Release (see `exit`). Relaxed on
        // `wraps`: a statistic, bumped by the admission that wrapped the field.
        let word = self.word.load(Ordering::Acquire);
        let wraps = self.wraps.load(Ordering::Relaxed);
        let live = (word & LIVE_MASK) >> 1;
        (live, wraps * (ADMIT_FIELD_MAX + 1) + (word >> ADMIT_SHIFT))
    }

    /// Attempts refused because admission was closed.
    fn refused(&self) -> u64 {
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

/// When a named session began: the process's coarse reading as it is stored (no
/// conversion on the session's path), or the lifecycle's clock's `coarse_now`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Began {
    /// [`coarse::ticks`](crate::coarse::ticks): the lifecycle's clock is the default
    /// [`SystemClock`](crate::SystemClock), whose coarse reading this is.
    Ticks(u64),
    /// Any other clock's [`coarse_now`](Clock::coarse_now).
    At(Instant),
}

impl Began {
    fn instant(self) -> Instant {
        match self {
            Began::Ticks(ticks) => crate::coarse::at(ticks),
            Began::At(at) => at,
        }
    }
}

/// A live named session.
#[derive(Debug)]
struct Entry {
    name: Cow<'static, str>,
    began: Began,
    /// The name of the named session it was begun under, as it was then.
    under: Option<Cow<'static, str>>,
}

impl Entry {
    /// The session as a census or a snapshot shows it at `now`.
    fn to_named(&self, now: Instant) -> NamedSession {
        let named = NamedSession::new(
            self.name.clone(),
            now.saturating_duration_since(self.began.instant()),
        );
        match &self.under {
            Some(parent) => named.with_parent(parent.clone()),
            None => named,
        }
    }
}

/// One shard's named sessions.
#[derive(Debug, Default)]
struct Registry {
    named: Slab<Entry>,
    /// A census that may abandon the sessions (at or past the deadline: the lifecycle ends
    /// on it) was taken: children are refused from then on, so none is admitted after the
    /// count the report is written from.
    sealed: bool,
    /// Admission closed ([`Sessions::close`]): no named session is admitted here from then
    /// on, but a child of one still live (it is counted here, so the count is not zero).
    closed: bool,
    /// The sessions of this shard that ended by a panic, counted under its lock with their
    /// exit, so a snapshot's per-shard counts add up.
    panicked: u64,
}

/// The sessions that ended by a panic (all shards': a cold path).
#[derive(Debug, Default)]
struct Panicked {
    /// The first `PANICKED_KEPT`.
    kept: Vec<PanickedSession>,
    /// Every one.
    count: u64,
}

/// What every shard of a lifecycle shares: the drain count, the panicked sessions, and what
/// a session needs of its lifecycle without holding it.
#[derive(Debug)]
struct Common {
    /// Shards not yet drained, plus one held by the close until it has closed every shard:
    /// the operation that takes it to zero reports the drain (see [`Sessions::close`]).
    pending: AtomicU64,
    /// Guards the sessions that ended by a panic; taken inside a shard's registry lock.
    panicked: Mutex<Panicked>,
    /// Set (under `panicked`) with the first session that ended by a panic, before its exit:
    /// the census without locks skips `panicked` while it is clear (the drain's completion
    /// path, issue 12).
    any_panicked: AtomicBool,
    /// Set under the lifecycle's lock when the drain begins (before the stop broadcast
    /// fires): [`Session::is_stopped`] without the lifecycle, and `Lifecycle::is_stopped`.
    stopped: AtomicBool,
    /// The stop's cause, set with `stopped`: a stand-in's signal carries it once the
    /// lifecycle is gone.
    cause: std::sync::OnceLock<StopCause>,
    /// The lifecycle, to report the drain to; gone, nobody waits for it.
    shared: Weak<Shared>,
    /// The lifecycle's clock, for a child's start.
    clock: Arc<dyn Clock>,
    /// The clock is the default `SystemClock`: a named session's start is the process's
    /// coarse reading, stored as it is read ([`Began::Ticks`]). Set once, by the builder,
    /// before any session can begin.
    process_coarse: AtomicBool,
}

impl Common {
    /// A named session's start: a coarse reading (a straggler's age is at least the grace,
    /// so a few milliseconds of lag do not matter; issue 12).
    #[inline]
    fn stamp(&self) -> Began {
        // Relaxed: set before the lifecycle was handed out.
        if self.process_coarse.load(Ordering::Relaxed) {
            #[cfg(feature = "sim")]
            crate::sim::out_of_reach("the system clock (`SystemClock::coarse_now`)");
            Began::Ticks(crate::coarse::ticks())
        } else {
            Began::At(self.clock.coarse_now())
        }
    }
}

impl Common {
    /// One shard drained (closed, nothing live on it): returns whether it was the last.
    #[cold]
    fn shard_drained(&self) -> bool {
        // AcqRel: each shard's drain (whose exit fenced in its sessions' work) is released
        // to the operation that takes the count to zero, which acquires them all.
        self.pending.fetch_sub(1, Ordering::AcqRel) == 1
    }

    /// Tells the lifecycle its sessions drained, if it still exists.
    #[cold]
    fn report_drained(&self) {
        if let Some(shared) = self.shared.upgrade() {
            shared.sessions_drained();
        }
    }
}

/// One shard: a gate and the registry of the named sessions that entered through it. Its
/// own allocation and cache lines — the reference count a session holds included — so that
/// threads on different shards never write to a shared line.
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct Shard {
    gate: Gate,
    registry: SpinLock<Registry>,
    /// The sessions counted by the registry (named sessions, and the children of the ones
    /// it counts) that are live, and all it admitted. Written only under the registry's lock
    /// (a load and a store: the lock orders them), read without it by the drain's census.
    named_live: AtomicU64,
    named_admitted: AtomicU64,
    common: Arc<Common>,
}

impl Shard {
    /// Counts one session in the registry's count: under its lock.
    #[inline]
    fn count_in(&self) {
        // Relaxed load, Release store: the lock orders the writers; the store publishes the
        // count to the census that reads it without the lock (`Sessions::counted`).
        // Admitted first: a census without the lock reads `named_live` (Acquire) before
        // `named_admitted`, so it never sees more live than admitted (a hostile review's
        // finding: the other order made a census with `live > admitted`).
        let admitted = self.named_admitted.load(Ordering::Relaxed);
        self.named_admitted.store(admitted + 1, Ordering::Release);
        let live = self.named_live.load(Ordering::Relaxed);
        self.named_live.store(live + 1, Ordering::Release);
    }

    /// Ends one session of the registry's count: under its lock. Returns whether the
    /// registry is now drained (closed, nothing it counts live): the caller must report it.
    #[inline]
    fn count_out(&self, registry: &Registry) -> bool {
        let live = self.named_live.load(Ordering::Relaxed);
        debug_assert!(live != 0, "a named session ended twice");
        self.named_live.store(live - 1, Ordering::Release);
        registry.closed && live == 1
    }

    /// Admits a named session (not a child) under the registry's lock, or refuses it once
    /// admission closed. Returns its key.
    #[inline]
    fn admit_named(
        &self,
        registry: &mut Registry,
        name: Cow<'static, str>,
        began: Began,
    ) -> Result<usize, Closed> {
        if registry.closed {
            return Err(self.gate.refuse());
        }
        self.count_in();
        Ok(registry.named.insert(Entry {
            name,
            began,
            under: None,
        }))
    }

    /// Closes the registry's admission. Returns whether nothing it counts was live: its
    /// drain, reported by the close.
    fn close_registry(&self) -> bool {
        let mut registry = spin_lock(&self.registry);
        registry.closed = true;
        self.named_live.load(Ordering::Relaxed) == 0
    }

    /// Admits a named child of the live session `parent` (its key in this shard), even
    /// after admission closed, returning its key. It is counted where its parent is (the
    /// gate for an unnamed session and its children, the registry for a named one and its
    /// children), which has a live session — the parent — so it has not reported its drain
    /// and cannot until both ended. Refused (`Err`) once the final census was taken.
    fn begin_named_child(
        &self,
        name: Cow<'static, str>,
        began: Began,
        parent: usize,
    ) -> Result<usize, Closed> {
        debug_assert!(parent != ENDED, "a child of an ended session");
        let mut registry = spin_lock(&self.registry);
        if registry.sealed {
            return Err(self.gate.refuse());
        }
        let under = is_named(parent)
            .then(|| registry.named.get(slab_key(parent)))
            .flatten()
            .map(|entry| entry.name.clone());
        // Under the registry lock: a census sees the entry and the count together.
        let key = registry.named.insert(Entry { name, began, under });
        if in_gate(parent) {
            self.gate.enter_child();
            Ok(key | IN_GATE)
        } else {
            self.count_in();
            Ok(key)
        }
    }

    /// Admits an unnamed child of the live session `parent` of this shard, even after
    /// admission closed, counted where its parent is (see `begin_named_child`); refused
    /// (`Err`) once the final census was taken. Under the registry lock, for that. Returns
    /// its key ([`UNNAMED`] or [`UNNAMED_IN_REGISTRY`]).
    fn begin_unnamed_child(&self, parent: usize) -> Result<usize, Closed> {
        debug_assert!(parent != ENDED, "a child of an ended session");
        let registry = spin_lock(&self.registry);
        if registry.sealed {
            return Err(self.gate.refuse());
        }
        if in_gate(parent) {
            self.gate.enter_child();
            Ok(UNNAMED)
        } else {
            self.count_in();
            Ok(UNNAMED_IN_REGISTRY)
        }
    }

    /// Ends an unnamed session counted by the gate normally. Returns whether that drained
    /// the lifecycle's sessions.
    #[inline]
    fn end_unnamed(&self) -> bool {
        self.gate.exit() && self.common.shard_drained()
    }

    /// Removes the entry of the session `key` (any but [`ENDED`]), if it is named: under the
    /// registry's lock.
    fn take_entry(registry: &mut Registry, key: usize) -> Option<Entry> {
        is_named(key)
            .then(|| registry.named.try_remove(slab_key(key)))
            .flatten()
    }

    /// Ends the count of the session `key` (any but [`ENDED`]) where it was counted: under
    /// the registry's lock, after its entry was removed, so a census sees the name and the
    /// count agree. Returns whether that drained its count (gate or registry).
    fn exit_locked(&self, registry: &Registry, key: usize) -> bool {
        if in_gate(key) {
            self.gate.exit()
        } else {
            self.count_out(registry)
        }
    }

    /// Ends a session by a panic, with the payload's text if it was caught. Returns whether
    /// that drained the sessions, and its name.
    fn end_panicked(
        &self,
        key: usize,
        message: Option<String>,
    ) -> (bool, Option<Cow<'static, str>>) {
        let mut registry = spin_lock(&self.registry);
        let (name, under) = match Self::take_entry(&mut registry, key) {
            Some(entry) => (Some(entry.name), entry.under),
            None => (None, None),
        };
        {
            // Inside the shard's lock (the order: shard, then panicked), so a census, which
            // takes every shard's lock first, sees the name and the count agree. And before
            // the exit: the census without locks (`Sessions::counted`) reads the counts and
            // then `panicked`, so a session it no longer sees live is already recorded
            // (a hostile review's finding: recorded after the exit, a panicked session
            // could be reported completed).
            registry.panicked += 1;
            let mut panicked = lock(&self.common.panicked);
            panicked.count += 1;
            // Relaxed: published by the exit below (a release), as the count is.
            self.common.any_panicked.store(true, Ordering::Relaxed);
            if panicked.kept.len() < PANICKED_KEPT {
                panicked
                    .kept
                    .push(PanickedSession::new(name.clone(), message));
            }
        }
        let drained = self.exit_locked(&registry, key);
        drop(registry);
        // Its parent's name (an owned `String`, maybe) is freed outside the lock.
        drop(under);
        (drained && self.common.shard_drained(), name)
    }

    /// Ends a session that is not an unnamed one counted by the gate (a named session, or
    /// an unnamed child of one) normally: without the panic bookkeeping. Returns whether
    /// that drained the sessions.
    #[inline]
    fn end_named(&self, key: usize) -> bool {
        let mut registry = spin_lock(&self.registry);
        let entry = Self::take_entry(&mut registry, key);
        let drained = self.exit_locked(&registry, key);
        drop(registry);
        // The name (an owned `String`, maybe) is freed outside the lock.
        drop(entry);
        drained && self.common.shard_drained()
    }

    fn name(&self, key: usize) -> Option<String> {
        spin_lock(&self.registry)
            .named
            .get(slab_key(key))
            .map(|s| s.name.to_string())
    }
}

// ---- Keys ----

/// The key of a session without a name, counted by its shard's gate (a slab never hands
/// out `usize::MAX`).
const UNNAMED: usize = usize::MAX;
/// The key of a session already ended by [`Session::run`].
const ENDED: usize = usize::MAX - 1;
/// The key of an unnamed child of a named session: counted by the registry, as its parent.
const UNNAMED_IN_REGISTRY: usize = usize::MAX - 2;
/// Set in a named session's key when it is counted by the gate (a named child of an
/// unnamed session); clear when the registry counts it. Its slab key is the rest.
const IN_GATE: usize = 1 << (usize::BITS - 2);

/// Whether `key` is a named session's.
#[inline]
fn is_named(key: usize) -> bool {
    key < UNNAMED_IN_REGISTRY
}

/// Whether the session `key` is counted by its shard's gate (else by its registry).
#[inline]
fn in_gate(key: usize) -> bool {
    key == UNNAMED || (is_named(key) && key & IN_GATE != 0)
}

/// A named session's key in its shard's slab.
#[inline]
fn slab_key(key: usize) -> usize {
    key & !IN_GATE
}
/// The most shards a lifecycle has.
const MAX_SHARDS: usize = 64;

/// How many shards a lifecycle gets: twice the available parallelism, a power of two, 2 to
/// [`MAX_SHARDS`] (2 under loom: two model threads on two shards).
fn shard_count() -> usize {
    #[cfg(loom)]
    {
        2.min(MAX_SHARDS)
    }
    #[cfg(not(loom))]
    {
        static COUNT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        *COUNT.get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            (cores * 2).next_power_of_two().clamp(2, MAX_SHARDS)
        })
    }
}

/// This thread's shard number (reduced modulo a lifecycle's shard count): threads take
/// consecutive numbers as they first begin a session, so the first threads of a process
/// land on distinct shards; a thread that finds its shard contended moves ([`rehash`]).
#[cfg(not(loom))]
#[inline]
fn thread_number() -> usize {
    HOME.with(std::cell::Cell::get)
}

#[cfg(not(loom))]
static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[cfg(not(loom))]
thread_local! {
    // Relaxed: a number, not a publication.
    static HOME: std::cell::Cell<usize> =
        std::cell::Cell::new(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
}

/// This thread found its shard contended (a compare-and-swap lost to another thread, or
/// the registry lock held): it begins its next sessions on another shard, picked by a
/// step of xorshift on its number, so two threads that collided (their numbers equal modulo
/// the shard count) take different steps and part. With twice as many shards as cores,
/// threads that run at once settle on shards of their own, whatever their numbers
/// (Java's `Striped64` moves its cells the same way).
#[cfg(not(loom))]
#[cold]
fn rehash() {
    HOME.with(|home| {
        // Never zero (xorshift's fixed point): the number plus one, mixed.
        let mut x = home.get() as u64 | 1 << 63;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        home.set(x as usize >> 1);
    });
}

/// Under loom the shards are fixed by the model thread (see `thread_number`).
#[cfg(loom)]
fn rehash() {}

/// Under loom: the model thread's index (loom's thread ids count from 0 in every execution),
/// so the models put their threads on different shards, deterministically.
#[cfg(loom)]
fn thread_number() -> usize {
    let id = format!("{:?}", loom::thread::current().id());
    id.chars()
        .filter(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or(0)
}

/// The lifecycle's sessions: one gate and one registry per shard.
#[derive(Debug)]
pub(crate) struct Sessions {
    shards: Box<[Arc<Shard>]>,
    /// `shards.len() - 1` (a power of two).
    mask: usize,
    common: Arc<Common>,
}

/// What [`Sessions::snapshot`] sees.
#[derive(Debug)]
pub(crate) struct Counts {
    pub(crate) live: u64,
    pub(crate) admitted: u64,
    pub(crate) refused: u64,
    pub(crate) panicked: u64,
    pub(crate) oldest: Vec<NamedSession>,
}

impl Sessions {
    /// The sessions of the lifecycle `shared` (being built), on its `clock`.
    pub(crate) fn new(shared: Weak<Shared>, clock: Arc<dyn Clock>) -> Self {
        let count = shard_count();
        let common = Arc::new(Common {
            // A gate and a registry per shard, and the close's own one.
            pending: AtomicU64::new(2 * count as u64 + 1),
            panicked: Mutex::new(Panicked::default()),
            any_panicked: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            cause: std::sync::OnceLock::new(),
            shared,
            clock,
            process_coarse: AtomicBool::new(false),
        });
        let shards: Box<[Arc<Shard>]> = (0..count)
            .map(|_| {
                Arc::new(Shard {
                    gate: Gate::new(),
                    registry: SpinLock::new(Registry::default()),
                    named_live: AtomicU64::new(0),
                    named_admitted: AtomicU64::new(0),
                    common: common.clone(),
                })
            })
            .collect();
        Sessions {
            shards,
            mask: count - 1,
            common,
        }
    }

    /// The drain begins (under the lifecycle's lock, before the stop fires): sessions and
    /// the lifecycle say they are stopped from now on, so whoever calls `stop` — the one
    /// that began the drain, or one that found it begun — sees it when its call returns.
    pub(crate) fn mark_stopped(&self, cause: Option<&StopCause>) {
        if let Some(cause) = cause {
            let _ = self.common.cause.set(cause.clone());
        }
        // Release: pairs with `is_stopped`'s Acquire.
        self.common.stopped.store(true, Ordering::Release);
    }

    /// Whether the drain began (or the lifecycle ended).
    pub(crate) fn is_stopped(&self) -> bool {
        self.common.stopped.load(Ordering::Acquire)
    }

    /// The shard this thread begins its sessions on.
    #[inline]
    fn home(&self) -> usize {
        thread_number() & self.mask
    }

    /// Admits an unnamed session: one compare-and-swap on this thread's shard. Returns the
    /// shard.
    #[inline]
    pub(crate) fn begin_unnamed(&self) -> Result<&Arc<Shard>, Closed> {
        let shard = &self.shards[self.home()];
        shard.gate.enter()?;
        Ok(shard)
    }

    /// The lifecycle's clock is the default `SystemClock` (by the builder, before the
    /// lifecycle is handed out): named sessions take the process's coarse reading directly.
    pub(crate) fn use_process_coarse_clock(&self) {
        self.common.process_coarse.store(true, Ordering::Relaxed);
    }

    /// Admits a named session, stamped with its start, returning its shard and key.
    pub(crate) fn begin_named(
        &self,
        name: Cow<'static, str>,
    ) -> Result<(&Arc<Shard>, usize), Closed> {
        let began = self.common.stamp();
        let mut shard = &self.shards[self.home()];
        let mut registry = match try_spin(&shard.registry) {
            Some(registry) => registry,
            None => {
                // Another thread holds it: this thread moves to another shard, now.
                rehash();
                shard = &self.shards[self.home()];
                spin_lock(&shard.registry)
            }
        };
        // Under the registry lock: a census sees the entry and the count together.
        let key = shard.admit_named(&mut registry, name, began)?;
        Ok((shard, key))
    }

    /// Closes admission on every shard. Returns whether nothing was live at that moment
    /// (the drain, reported by the close itself).
    ///
    /// The drain across shards: `pending` starts at the number of shards plus one. A shard
    /// the close finds empty is drained at once; any other is drained by the exit that
    /// takes its live count to zero (its gate says so exactly once). Each drained shard
    /// takes one from `pending`, and the close takes its own one after closing every shard,
    /// so the count reaches zero exactly once — by the close if nothing was live, else by
    /// the last exit — and never before every shard is closed.
    pub(crate) fn close(&self) -> bool {
        let empty = self
            .shards
            .iter()
            .map(|shard| u64::from(shard.gate.close()) + u64::from(shard.close_registry()))
            .sum::<u64>();
        // AcqRel: as in `shard_drained`.
        self.common.pending.fetch_sub(empty + 1, Ordering::AcqRel) == empty + 1
    }

    /// Sessions live now (a sum over the shards, each read at its own moment).
    pub(crate) fn live(&self) -> u64 {
        self.shards
            .iter()
            .map(|shard| shard.gate.live() + shard.named_live.load(Ordering::Acquire))
            .sum()
    }

    /// Counts the sessions at `now`, naming the live ones if `names` (see
    /// `Machine::census_needs_names`: only a census that may abandon them needs it; the
    /// others would walk every live session at each stop for nothing). Takes every shard's
    /// registry lock, in order, then `panicked` (under `core`: the allowed order), so the
    /// named sessions, the counts and the panicked ones agree.
    pub(crate) fn census(&self, now: Instant, names: bool) -> SessionCensus {
        if !names {
            return self.counted();
        }
        let mut registries: Vec<SpinGuard<'_, Registry>> = self
            .shards
            .iter()
            .map(|shard| spin_lock(&shard.registry))
            .collect();
        let (mut live, mut admitted, mut refused) = (0, 0, 0);
        let mut named: Vec<NamedSession> = Vec::new();
        for (shard, registry) in self.shards.iter().zip(registries.iter_mut()) {
            // Named only for a census the lifecycle may end on: no child after it.
            registry.sealed = true;
            let (shard_live, shard_admitted) = shard.gate.live_and_admitted();
            live += shard_live + shard.named_live.load(Ordering::Acquire);
            admitted += shard_admitted + shard.named_admitted.load(Ordering::Acquire);
            refused += shard.gate.refused();
            // `take`: a slab's iterator walks every slot of its capacity, vacant ones too;
            // this stops at the last live one (at once when none is).
            let count = registry.named.len();
            named.extend(
                registry
                    .named
                    .iter()
                    .take(count)
                    .map(|(_, s)| s.to_named(now)),
            );
        }
        let panicked = lock(&self.common.panicked);
        SessionCensus {
            admitted,
            refused,
            live_unnamed: live.saturating_sub(named.len() as u64),
            live: named,
            panicked: panicked.kept.clone(),
            panicked_count: panicked.count,
        }
    }

    /// The census that names nobody, which can only end the lifecycle by finding nothing live
    /// (one that may abandon sessions names them): the gates' and registries' counts, read
    /// shard by shard without a registry lock — on the drain's path, where a lock per shard
    /// would be most of its cost. A sum of readings taken at different moments is still exact
    /// for what this census decides: once closed, a gate's or a registry's live count only
    /// falls until it reaches zero and stays there (a child needs a live parent counted in
    /// the same place), so a sum of zero means everything drained; a registry's admitted
    /// count is stored before its live count and read after it, so no reading has more live
    /// than admitted; and a session that ended by a panic was recorded before its exit,
    /// which the `panicked` read (after the counts') then sees.
    fn counted(&self) -> SessionCensus {
        let (mut live, mut admitted, mut refused) = (0, 0, 0);
        for shard in self.shards.iter() {
            let (shard_live, shard_admitted) = shard.gate.live_and_admitted();
            live += shard_live + shard.named_live.load(Ordering::Acquire);
            admitted += shard_admitted + shard.named_admitted.load(Ordering::Acquire);
            refused += shard.gate.refused();
        }
        // Relaxed: a session that ended by a panic set this before its exit, which the
        // counts' Acquire reads above saw if they no longer count it live.
        if !self.common.any_panicked.load(Ordering::Relaxed) {
            return SessionCensus {
                admitted,
                refused,
                live_unnamed: live,
                live: Vec::new(),
                panicked: Vec::new(),
                panicked_count: 0,
            };
        }
        let panicked = lock(&self.common.panicked);
        SessionCensus {
            admitted,
            refused,
            live_unnamed: live,
            live: Vec::new(),
            panicked: panicked.kept.clone(),
            panicked_count: panicked.count,
        }
    }

    /// The counts now and the `oldest` oldest named sessions, for a snapshot. One pass over
    /// the live named sessions of each shard under its lock, keeping the `oldest` oldest in
    /// a small sorted buffer: O(n) with no allocation proportional to n.
    pub(crate) fn counts(&self, now: Instant, oldest: usize) -> Counts {
        let mut kept: Vec<NamedSession> = Vec::with_capacity(oldest + 1);
        let mut began: Vec<Instant> = Vec::with_capacity(oldest + 1);
        // One conversion per entry at most; none when no oldest are asked for.
        let (mut live, mut admitted, mut refused, mut panicked) = (0, 0, 0, 0);
        for shard in self.shards.iter() {
            let registry = spin_lock(&shard.registry);
            panicked += registry.panicked;
            // `take`: as in `census`.
            for (_, entry) in registry.named.iter().take(registry.named.len()) {
                if oldest == 0 {
                    break;
                }
                let entry_began = entry.began.instant();
                if kept.len() < oldest || began.last().is_some_and(|last| entry_began < *last) {
                    let at = began.partition_point(|b| *b <= entry_began);
                    began.insert(at, entry_began);
                    kept.insert(at, entry.to_named(now));
                    began.truncate(oldest);
                    kept.truncate(oldest);
                }
            }
            let (shard_live, shard_admitted) = shard.gate.live_and_admitted();
            live += shard_live + shard.named_live.load(Ordering::Relaxed);
            admitted += shard_admitted + shard.named_admitted.load(Ordering::Relaxed);
            refused += shard.gate.refused();
        }
        Counts {
            live,
            admitted,
            refused,
            panicked,
            oldest: kept,
        }
    }
}

/// Turns a closed gate into the refusal the caller sees. Cold: only while stopping.
#[cold]
pub(crate) fn refuse(shared: &Shared) -> Refused {
    // The machine's state, under its lock (the gate's word publishes nothing): from the
    // moment the machine ended, every refusal says so, as `service()` does.
    if shared.state().is_terminal() {
        Refused::Ended
    } else {
        Refused::Draining
    }
}

/// One unit of in-flight work. Dropping it ends the session.
///
/// Obtained from [`Lifecycle::session`](crate::Lifecycle::session) (named: a straggler
/// report names it) or [`Lifecycle::unnamed_session`](crate::Lifecycle::unnamed_session)
/// (cheapest: counted, not named). While any session is live, a draining lifecycle waits
/// for it — until the grace deadline, when it is abandoned and reported.
///
/// A session can learn that the stop was requested with [`Session::stop_signal`], to wrap up
/// early (answer with `Connection: close`, finish the current job and take no other).
///
/// A session that ends by a panic is counted (and named) apart in the report and complained
/// about: [`Session::run`] catches the panic inside the session, with its payload, on every
/// executor; a guard dropped while its thread unwinds is also seen (see the module notes in
/// the crate docs).
///
/// # Examples
///
/// ```
/// use async_lifecycle::Lifecycle;
///
/// let lc = Lifecycle::new();
/// let session = lc.session("job 42").expect("admitted while running");
/// assert!(!session.is_stopped());
/// lc.stop("deploy");
/// assert!(session.is_stopped());
/// drop(session); // the session ends; the lifecycle can terminate
/// let report = futures::executor::block_on(lc.wait());
/// assert_eq!(report.sessions().completed(), 1);
/// assert_eq!(report.exit_code(), 0);
/// ```
#[must_use = "dropping a session ends it at once"]
pub struct Session {
    /// The shard it entered, not the lifecycle: its reference count is the shard's own, so
    /// sessions on different threads do not contend on one count (the lifecycle is reached
    /// through the shard, weakly, only to report the drain).
    shard: Arc<Shard>,
    /// Its registry key in the shard, [`UNNAMED`] or [`ENDED`]: sentinels rather than an
    /// `Option` keep the guard at two words.
    key: usize,
}

impl Session {
    #[inline]
    pub(crate) fn unnamed(shard: &Arc<Shard>) -> Self {
        Session {
            shard: shard.clone(),
            key: UNNAMED,
        }
    }

    pub(crate) fn named(shard: &Arc<Shard>, key: usize) -> Self {
        debug_assert!(is_named(key));
        Session {
            shard: shard.clone(),
            key,
        }
    }

    /// Whether this session has a name (and is not ended).
    fn is_named(&self) -> bool {
        is_named(self.key)
    }

    /// Begins a named session under this one: a request under its connection, a step
    /// under its job. It is admitted while this session is live even when the lifecycle is
    /// draining — the connection's work is not over until its requests are — and refused
    /// only once the lifecycle has ended ([`Refused::Ended`]). It counts as a session of its
    /// own (the drain waits for it) and the report and the live view name it with its
    /// parent ([`NamedSession::parent`]).
    ///
    /// A child may outlive its parent: it stays a live session until it ends, the drain
    /// waits for it as for any other, and it keeps its parent's name as it was when it
    /// began (the parent of an unnamed session has none).
    ///
    /// # Errors
    ///
    /// [`Refused::Ended`] once the lifecycle has ended.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_lifecycle::Lifecycle;
    ///
    /// let lc = Lifecycle::new();
    /// let conn = lc.session("conn 10.0.0.7:5123")?;
    /// lc.stop("deploy");
    /// assert!(lc.session("conn 10.0.0.8:4000").is_err(), "no new connection");
    /// // The request its connection had already delivered is still served.
    /// let request = conn.child("GET /")?;
    /// assert_eq!(lc.snapshot().oldest_sessions()[1].parent(), Some("conn 10.0.0.7:5123"));
    /// drop(request);
    /// drop(conn);
    /// let report = futures::executor::block_on(lc.wait());
    /// assert_eq!(report.sessions().completed(), 2);
    /// # Ok::<(), async_lifecycle::Refused>(())
    /// ```
    pub fn child(&self, name: impl Into<Cow<'static, str>>) -> Result<Session, Refused> {
        // Coarse, as a named session's (`Lifecycle::session`).
        let began = self.shard.common.stamp();
        match self.shard.begin_named_child(name.into(), began, self.key) {
            Ok(key) => Ok(Session::named(&self.shard, key)),
            Err(_sealed) => Err(Refused::Ended),
        }
    }

    /// Begins an unnamed session under this one: counted, not named; see
    /// [`child`](Session::child).
    ///
    /// # Errors
    ///
    /// [`Refused::Ended`] once the lifecycle has ended.
    pub fn unnamed_child(&self) -> Result<Session, Refused> {
        match self.shard.begin_unnamed_child(self.key) {
            Ok(key) => Ok(Session {
                shard: self.shard.clone(),
                key,
            }),
            Err(_sealed) => Err(Refused::Ended),
        }
    }

    /// A future that resolves once the lifecycle's stop was requested (see [`StopSignal`]).
    pub fn stop_signal(&self) -> StopSignal {
        match self.shard.common.shared.upgrade() {
            Some(shared) => StopSignal::new(shared),
            // Every handle on the lifecycle is gone, so it was stopped: a fired signal of a
            // stand-in, stopped with the same cause.
            None => {
                let stand_in = crate::Lifecycle::builder()
                    .clock(crate::ManualClock::new())
                    .build();
                let cause = self.shard.common.cause.get().cloned();
                stand_in.stop(cause.unwrap_or(StopCause::HandlesDropped));
                stand_in.stop_signal()
            }
        }
    }

    /// Whether the lifecycle's stop was requested (it is draining or has ended).
    pub fn is_stopped(&self) -> bool {
        // Acquire: pairs with `Sessions::mark_stopped`.
        self.shard.common.stopped.load(Ordering::Acquire)
    }

    /// The name this session was started with, if it has one.
    pub fn name(&self) -> Option<String> {
        if !self.is_named() {
            return None;
        }
        self.shard.name(self.key)
    }

    /// Runs `work` as this session: the session ends when `work` completes, or when it
    /// panics — then the panic is caught, the session is counted (and named) as panicked in
    /// the report, complained about, and returned as a [`SessionPanic`] with its payload.
    ///
    /// # Errors
    ///
    /// [`SessionPanic`] when `work` panicked; resume it with
    /// [`std::panic::resume_unwind`]`(panic.into_payload())` to propagate it.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_lifecycle::Lifecycle;
    ///
    /// let lc = Lifecycle::new();
    /// let session = lc.session("GET /boom").unwrap();
    /// let outcome = futures::executor::block_on(session.run(async {
    ///     if true {
    ///         panic!("index out of bounds");
    ///     }
    ///     200
    /// }));
    /// assert_eq!(outcome.unwrap_err().message(), "index out of bounds");
    /// lc.stop("done");
    /// let report = futures::executor::block_on(lc.wait());
    /// assert_eq!(report.sessions().panicked(), 1);
    /// assert_eq!(report.sessions().panicked_sessions()[0].name(), Some("GET /boom"));
    /// ```
    pub fn run<F: Future>(self, work: F) -> impl Future<Output = Result<F::Output, SessionPanic>> {
        let mut session = self;
        AssertUnwindSafe(work)
            .catch_unwind()
            .map(move |outcome| match outcome {
                Ok(output) => Ok(output),
                Err(payload) => {
                    let message = panic_text(&*payload);
                    session.end_by_panic(Some(message.clone()));
                    Err(SessionPanic { message, payload })
                }
            })
    }

    /// Ends the session by a panic (with the payload's text if it was caught). Out of line.
    #[inline(never)]
    fn end_by_panic(&mut self, message: Option<String>) {
        let key = std::mem::replace(&mut self.key, ENDED);
        if self.end_panicked(key, message) {
            self.shard.common.report_drained();
        }
    }

    /// Ends a named session (or an unnamed child of one) normally: the common named path,
    /// out of line and apart from the panic's, so it stays small.
    #[inline(never)]
    fn end_named(&mut self) {
        let key = std::mem::replace(&mut self.key, ENDED);
        if self.shard.end_named(key) {
            self.shard.common.report_drained();
        }
    }

    /// Ends the session as panicked, and complains. Returns whether that drained the gate.
    #[cold]
    fn end_panicked(&self, key: usize, message: Option<String>) -> bool {
        let shown = message.clone();
        let (drained, name) = self.shard.end_panicked(key, message);
        complain::session_panicked(name.as_deref(), shown.as_deref());
        drained
    }
}

impl Drop for Session {
    #[inline]
    fn drop(&mut self) {
        if std::thread::panicking() {
            if self.key != ENDED {
                self.end_by_panic(None);
            }
        } else if self.key == UNNAMED {
            if self.shard.end_unnamed() {
                self.shard.common.report_drained();
            }
        } else if self.key != ENDED {
            self.end_named();
        }
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("named", &self.is_named())
            .finish_non_exhaustive()
    }
}

/// A panic caught inside a session by [`Session::run`].
pub struct SessionPanic {
    message: String,
    payload: Box<dyn Any + Send>,
}

impl SessionPanic {
    /// The payload's text (the message for `&str` and `String` payloads).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The payload itself, for [`std::panic::resume_unwind`].
    pub fn into_payload(self) -> Box<dyn Any + Send> {
        self.payload
    }
}

impl fmt::Debug for SessionPanic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionPanic")
            .field("message", &self.message)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for SessionPanic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "session panicked: {}", self.message)
    }
}

impl std::error::Error for SessionPanic {}

#[cfg(all(test, not(loom)))]
mod gate_tests {
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
