//! Sessions: units of work that come and go (a connection, a request, a job). Everything on
//! the session path is in this file: the admission gate, the registry of named sessions,
//! their lock order, the census, the refusal mapping and the guard.
//!
//! # The gate
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
//! so every count read from it is exact.
//!
//! # The registry and the lock order
//!
//! Named sessions also have an entry (name, start) in the registry, a slab under a mutex,
//! which also keeps the sessions that ended by a panic. A named session begins *and* ends
//! under the registry lock, with its gate operation inside the critical section, so a census
//! (taken under the registry lock) sees the named entries and the live count agree for them;
//! only unnamed sessions can move while it looks, and they are counted, not named.
//!
//! Lock order: the shell's `core` → `registry`. A session's end takes `registry`, releases it,
//! and only then reports a drain through `core`.
//!
//! # Invariants
//!
//! - Once `C` is set, the word changes only by an exit: live only falls.
//! - "Drained" (closed and live = 0) is reported exactly once by the gate, by the operation
//!   that moved the word into that state: the close itself when nothing was live, or the exit
//!   that took live from 1 to 0.
//! - Every admitted session ends exactly once: by its guard's drop, or by
//!   [`Session::run`] catching a panic (the guard is then spent).
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
use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt;
use slab::Slab;

use crate::Refused;
use crate::complain;
use crate::loom::{AtomicU64, Mutex, Ordering, fence, lock};
use crate::machine::{NamedSession, PANICKED_KEPT, PanickedSession, SessionCensus};
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
        let admit =
            |word: u64| (word & CLOSED == 0).then(|| word.wrapping_add(LIVE_ONE | ADMIT_ONE));
        // Relaxed on both outcomes. Admission publishes nothing: the session's own work is
        // ordered by its thread's program order, and nothing it reads is written through the
        // gate. A refused caller learns why (draining or ended) from the `finished`
        // broadcast, an atomic with its own Acquire, not from this word.
        match self
            .word
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, admit)
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

/// A live named session.
#[derive(Debug)]
struct Entry {
    name: Cow<'static, str>,
    began: Instant,
    /// The name of the named session it was begun under, as it was then.
    under: Option<Cow<'static, str>>,
}

impl Entry {
    /// The session as a census or a snapshot shows it at `now`.
    fn to_named(&self, now: Instant) -> NamedSession {
        let named = NamedSession::new(self.name.clone(), now.saturating_duration_since(self.began));
        match &self.under {
            Some(parent) => named.with_parent(parent.clone()),
            None => named,
        }
    }
}

#[derive(Debug, Default)]
struct Registry {
    named: Slab<Entry>,
    /// The first `PANICKED_KEPT` sessions that ended by a panic.
    panicked: Vec<PanickedSession>,
    /// Every session that ended by a panic.
    panicked_count: u64,
    /// A census that may abandon the sessions (at or past the deadline: the lifecycle ends
    /// on it) was taken: children are refused from then on, so none is admitted after the
    /// count the report is written from.
    sealed: bool,
}

/// The lifecycle's sessions: the gate and the registry.
#[derive(Debug)]
pub(crate) struct Sessions {
    gate: Gate,
    /// Guards the names and start times of live named sessions, and the panicked ones.
    registry: Mutex<Registry>,
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
    pub(crate) fn new() -> Self {
        Sessions {
            gate: Gate::new(),
            registry: Mutex::new(Registry::default()),
        }
    }

    /// Admits an unnamed session: one compare-and-swap.
    #[inline]
    pub(crate) fn begin_unnamed(&self) -> Result<(), Closed> {
        self.gate.enter()
    }

    /// Admits a named session that began at `began`, returning its registry key.
    pub(crate) fn begin_named(
        &self,
        name: Cow<'static, str>,
        began: Instant,
    ) -> Result<usize, Closed> {
        let mut registry = lock(&self.registry);
        // Under the registry lock: a census sees the entry and the count together.
        self.gate.enter()?;
        Ok(registry.named.insert(Entry {
            name,
            began,
            under: None,
        }))
    }

    /// Admits a named child of the live session `parent` (its registry key, or [`UNNAMED`]),
    /// even after admission closed, returning its registry key.
    /// Refused (`Err`) once the final census was taken.
    pub(crate) fn begin_named_child(
        &self,
        name: Cow<'static, str>,
        began: Instant,
        parent: usize,
    ) -> Result<usize, Closed> {
        let mut registry = lock(&self.registry);
        if registry.sealed {
            return Err(self.gate.refuse());
        }
        let under = registry.named.get(parent).map(|entry| entry.name.clone());
        // Under the registry lock: a census sees the entry and the count together.
        self.gate.enter_child();
        Ok(registry.named.insert(Entry { name, began, under }))
    }

    /// Admits an unnamed child of a live session, even after admission closed; refused
    /// (`Err`) once the final census was taken. Under the registry lock, for that.
    pub(crate) fn begin_unnamed_child(&self) -> Result<(), Closed> {
        let registry = lock(&self.registry);
        if registry.sealed {
            return Err(self.gate.refuse());
        }
        self.gate.enter_child();
        drop(registry);
        Ok(())
    }

    /// Ends an unnamed session normally. Returns whether that drained the gate.
    #[inline]
    pub(crate) fn end_unnamed(&self) -> bool {
        self.gate.exit()
    }

    /// Ends a session (named: `key`; unnamed: `UNNAMED`) by a panic, with the payload's
    /// text if it was caught. Returns whether that drained the gate, and the session's name.
    fn end_panicked(
        &self,
        key: usize,
        message: Option<String>,
    ) -> (bool, Option<Cow<'static, str>>) {
        let mut registry = lock(&self.registry);
        let name = (key != UNNAMED)
            .then(|| registry.named.try_remove(key))
            .flatten()
            .map(|entry| entry.name);
        registry.panicked_count += 1;
        if registry.panicked.len() < PANICKED_KEPT {
            registry
                .panicked
                .push(PanickedSession::new(name.clone(), message));
        }
        // Under the registry lock, so a census sees the name and the count agree.
        let drained = self.gate.exit();
        (drained, name)
    }

    /// Ends a named session normally: the common named path, without the panic
    /// bookkeeping. Returns whether that drained the gate.
    fn end_named(&self, key: usize) -> bool {
        let mut registry = lock(&self.registry);
        let entry = registry.named.try_remove(key);
        // Under the registry lock, so a census sees the name and the count agree.
        let drained = self.gate.exit();
        drop(registry);
        // The name (an owned `String`, maybe) is freed outside the lock.
        drop(entry);
        drained
    }

    /// Closes admission. Returns whether nothing was live at that moment.
    pub(crate) fn close(&self) -> bool {
        self.gate.close()
    }

    /// Sessions live now.
    pub(crate) fn live(&self) -> u64 {
        self.gate.live()
    }

    /// Counts the sessions at `now`, naming the live ones if `names` (see
    /// `Machine::census_needs_names`: only a census that may abandon them needs it; the
    /// others would walk every live session at each stop for nothing). Takes `registry`
    /// (under `core`: the allowed order).
    pub(crate) fn census(&self, now: Instant, names: bool) -> SessionCensus {
        let mut registry = lock(&self.registry);
        // Named only for the census the lifecycle ends on: no child after it.
        registry.sealed |= names;
        let (live, admitted) = self.gate.live_and_admitted();
        let named: Vec<NamedSession> = if !names {
            Vec::new()
        } else {
            // `take`: a slab's iterator walks every slot of its capacity, vacant ones too;
            // this stops at the last live one (at once when none is: the census after the
            // last end costs the same after 100,000 sessions as after 1).
            let live = registry.named.len();
            registry
                .named
                .iter()
                .take(live)
                .map(|(_, s)| s.to_named(now))
                .collect()
        };
        SessionCensus {
            admitted,
            refused: self.gate.refused(),
            live_unnamed: live.saturating_sub(named.len() as u64),
            live: named,
            panicked: registry.panicked.clone(),
            panicked_count: registry.panicked_count,
        }
    }

    /// The counts now and the `oldest` oldest named sessions, for a snapshot. One pass over
    /// the live named sessions under the registry lock, keeping the `oldest` oldest in a
    /// small sorted buffer: O(n) with no allocation proportional to n.
    pub(crate) fn counts(&self, now: Instant, oldest: usize) -> Counts {
        let registry = lock(&self.registry);
        let mut kept: Vec<&Entry> = Vec::with_capacity(oldest + 1);
        // `take`: as in `census`.
        for (_, entry) in registry.named.iter().take(registry.named.len()) {
            if kept.len() < oldest || kept.last().is_some_and(|last| entry.began < last.began) {
                let at = kept.partition_point(|k| k.began <= entry.began);
                kept.insert(at, entry);
                kept.truncate(oldest);
            }
        }
        let (live, admitted) = self.gate.live_and_admitted();
        Counts {
            live,
            admitted,
            refused: self.gate.refused(),
            panicked: registry.panicked_count,
            oldest: kept.into_iter().map(|s| s.to_named(now)).collect(),
        }
    }

    fn name(&self, key: usize) -> Option<String> {
        lock(&self.registry)
            .named
            .get(key)
            .map(|s| s.name.to_string())
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
    shared: Arc<Shared>,
    /// The registry key of a named session, [`UNNAMED`], or [`ENDED`]: a sentinel rather
    /// than an `Option` keeps the guard at two words.
    key: usize,
}

/// The key of a session without a name (a slab never hands out `usize::MAX`).
const UNNAMED: usize = usize::MAX;
/// The key of a session already ended by [`Session::run`].
const ENDED: usize = usize::MAX - 1;

impl Session {
    #[inline]
    pub(crate) fn unnamed(shared: Arc<Shared>) -> Self {
        Session {
            shared,
            key: UNNAMED,
        }
    }

    pub(crate) fn named(shared: Arc<Shared>, key: usize) -> Self {
        debug_assert!(key < ENDED);
        Session { shared, key }
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
        let began = self.shared.clock.now();
        let parent = if self.key < ENDED { self.key } else { UNNAMED };
        match self
            .shared
            .sessions
            .begin_named_child(name.into(), began, parent)
        {
            Ok(key) => Ok(Session::named(self.shared.clone(), key)),
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
        match self.shared.sessions.begin_unnamed_child() {
            Ok(()) => Ok(Session::unnamed(self.shared.clone())),
            Err(_sealed) => Err(Refused::Ended),
        }
    }

    /// A future that resolves once the lifecycle's stop was requested (see [`StopSignal`]).
    pub fn stop_signal(&self) -> StopSignal {
        StopSignal::new(self.shared.clone())
    }

    /// Whether the lifecycle's stop was requested (it is draining or has ended).
    pub fn is_stopped(&self) -> bool {
        self.shared.stop.is_fired()
    }

    /// The name this session was started with, if it has one.
    pub fn name(&self) -> Option<String> {
        if self.key >= ENDED {
            return None;
        }
        self.shared.sessions.name(self.key)
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
                    session.end_slow(Some(Some(message.clone())));
                    Err(SessionPanic { message, payload })
                }
            })
    }

    /// Ends the session the slow way: named, or ended by a panic. Out of line, so the
    /// unnamed path stays small.
    #[inline(never)]
    fn end_slow(&mut self, panic: Option<Option<String>>) {
        let key = std::mem::replace(&mut self.key, ENDED);
        let drained = match panic {
            None => self.shared.sessions.end_named(key),
            Some(message) => self.end_panicked(key, message),
        };
        if drained {
            self.shared.sessions_drained();
        }
    }

    /// Ends the session as panicked, and complains. Returns whether that drained the gate.
    #[cold]
    fn end_panicked(&self, key: usize, message: Option<String>) -> bool {
        let shown = message.clone();
        let (drained, name) = self.shared.sessions.end_panicked(key, message);
        complain::session_panicked(name.as_deref(), shown.as_deref());
        drained
    }
}

impl Drop for Session {
    #[inline]
    fn drop(&mut self) {
        let unwinding = std::thread::panicking();
        if self.key == UNNAMED && !unwinding {
            if self.shared.sessions.end_unnamed() {
                self.shared.sessions_drained();
            }
        } else if self.key != ENDED {
            self.end_slow(unwinding.then_some(None));
        }
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("named", &(self.key < ENDED))
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
