//! The crate's one waker registry: a set of registered wakers, each with a piece of data (a
//! deadline, or nothing), under keys that make a stale key harmless.
//!
//! Used by the stop and finished broadcasts ([`Broadcast`](super::Broadcast)), the drivers
//! waiting on the service queue ([`Queue`](super::Queue)) and the sleepers of
//! [`ManualClock`](crate::ManualClock). It is a plain data structure: each user keeps it under
//! its own mutex (`crate::loom::Mutex` for the first two, so loom keeps modelling them), and
//! nothing in here locks, blocks or wakes.
//!
//! # Shape
//!
//! - A slab: a `Vec` of entries with a free list, so a registration reuses a vacant slot and
//!   allocates only when the set grows past its high-water mark.
//! - Keys are generation-checked: every registration gets a serial number from a counter the
//!   set never resets, kept both in its entry and in its [`Key`]. A key names its
//!   registration only while that registration is in the set; once it was cancelled or taken
//!   the key names nothing, even when its slot holds a newer registration, so a stale key is
//!   harmless: [`register`](WakerSet::register) registers anew, [`cancel`](WakerSet::cancel)
//!   is a no-op.
//! - Two buffers: [`take_all`](WakerSet::take_all) swaps the entries with an empty spare
//!   buffer (no allocation, no copy, whatever the number of wakers) and hands them out as a
//!   [`Taken`]; the caller wakes them after releasing its lock and hands the emptied buffer
//!   back with [`recycle`](WakerSet::recycle), so the buffers are reused instead of freed and
//!   allocated again, and freeing is never on the waking path.
//!
//! # Invariants
//!
//! - `len` is the number of occupied entries; `free` is a vacant slot, or `entries.len()`
//!   when there is none, and the vacant entries chain from it.
//! - `spare` is always empty (only its capacity is kept).
//! - No two registrations ever get the same serial (2^64 of them will not happen).
//!
//! # Deadlock safety
//!
//! No waker is woken or dropped in here: every waker that leaves the set (replaced, cancelled,
//! taken) is returned for the caller to wake or drop after releasing its lock. Only the data
//! `D` is dropped in place, so it should be plain data (an `Instant`, `()`).

use std::task::Waker;
use std::{fmt, mem};

/// A registration's key: its slot and its serial number. Callers keep an `Option<Key>`,
/// `None` while not registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Key {
    slot: usize,
    serial: u64,
}

impl Key {
    /// The slot alone, for a caller that stores slot numbers (see [`WakerSet::key_at`]).
    pub(crate) fn slot(self) -> usize {
        self.slot
    }
}

enum Entry<D> {
    Occupied { serial: u64, data: D, waker: Waker },
    Vacant { next: usize },
}

/// Registered wakers with their data `D`, keyed by [`Key`]. See the module docs.
pub(crate) struct WakerSet<D = ()> {
    entries: Vec<Entry<D>>,
    /// The first vacant slot, `entries.len()` when there is none.
    free: usize,
    /// The number of occupied entries.
    len: usize,
    /// The serial number of the next registration.
    next_serial: u64,
    /// An empty buffer, swapped in by `take_all`.
    spare: Vec<Entry<D>>,
}

impl<D> Default for WakerSet<D> {
    fn default() -> Self {
        Self::new()
    }
}

impl<D> WakerSet<D> {
    pub(crate) const fn new() -> Self {
        WakerSet {
            entries: Vec::new(),
            free: 0,
            len: 0,
            next_serial: 0,
            spare: Vec::new(),
        }
    }

    /// The number of registered wakers.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Registers `waker` with `data` under `key`, or refreshes the registration `key` names.
    ///
    /// A refresh replaces the data and, for another task, the waker, returning the one it
    /// replaced (drop it after releasing the lock); it never allocates, and clones nothing
    /// when the registered waker [`will_wake`](Waker::will_wake) the same task. A `None` or
    /// stale key registers anew (cloning the waker) and is set to the new key.
    pub(crate) fn register(
        &mut self,
        key: &mut Option<Key>,
        data: D,
        waker: &Waker,
    ) -> Option<Waker> {
        if let Some(Key { slot, serial }) = *key {
            if let Some(Entry::Occupied {
                serial: registered,
                data: old_data,
                waker: old_waker,
            }) = self.entries.get_mut(slot)
            {
                if *registered == serial {
                    *old_data = data;
                    return (!old_waker.will_wake(waker))
                        .then(|| mem::replace(old_waker, waker.clone()));
                }
            }
        }
        *key = Some(self.insert(data, waker.clone()));
        None
    }

    /// Removes the registration `key` names, if any, and returns its waker (drop it after
    /// releasing the lock). `key` is `None` afterwards.
    pub(crate) fn cancel(&mut self, key: &mut Option<Key>) -> Option<Waker> {
        let Key { slot, serial } = key.take()?;
        let registered = matches!(
            self.entries.get(slot),
            Some(Entry::Occupied { serial: registered, .. }) if *registered == serial
        );
        match registered.then(|| self.vacate(slot))? {
            Entry::Occupied { waker, .. } => Some(waker),
            Entry::Vacant { .. } => None,
        }
    }

    /// The key of the registration in `slot` now, if any.
    ///
    /// This skips the generation check: it is only for a caller whose slot numbers cannot go
    /// stale, i.e. one whose registrations leave the set only through their own key (or all at
    /// once, after which that caller registers nothing).
    pub(crate) fn key_at(&self, slot: usize) -> Option<Key> {
        match self.entries.get(slot) {
            Some(Entry::Occupied { serial, .. }) => Some(Key {
                slot,
                serial: *serial,
            }),
            _ => None,
        }
    }

    /// Takes every registration out, in O(1) and without allocating: the entries go out
    /// whole and the spare buffer takes their place. Every key there was is stale afterwards.
    ///
    /// Wake (or drop) what it returns after releasing the lock, then hand its buffer back
    /// with [`recycle`](Self::recycle).
    pub(crate) fn take_all(&mut self) -> Taken<D> {
        if self.len == 0 {
            // Vacant entries only: keep them (and their free list) where they are.
            return Taken {
                entries: Vec::new(),
                len: 0,
            };
        }
        let entries = mem::replace(&mut self.entries, mem::take(&mut self.spare));
        self.free = 0; // == self.entries.len(): the spare buffer is empty
        Taken {
            entries,
            len: mem::replace(&mut self.len, 0),
        }
    }

    /// Takes out the one registration there is, in place (no buffer changes hands, so there
    /// is nothing to recycle); `None` when the set holds more than one, or none. Its key is
    /// stale afterwards. Wake (or drop) it after releasing the lock.
    pub(crate) fn take_single(&mut self) -> Option<(D, Waker)> {
        if self.len != 1 {
            return None;
        }
        let slot = self
            .entries
            .iter()
            .position(|entry| matches!(entry, Entry::Occupied { .. }))?;
        match self.vacate(slot) {
            Entry::Occupied { data, waker, .. } => Some((data, waker)),
            Entry::Vacant { .. } => unreachable!("an occupied slot was vacated"),
        }
    }

    /// Takes out the registrations whose data satisfies `pred`; their keys are stale
    /// afterwards, every other key stays valid. The taken ones are moved into the spare
    /// buffer, which allocates only while it is too small for them.
    ///
    /// Wake (or drop) what it returns after releasing the lock, then hand its buffer back
    /// with [`recycle`](Self::recycle).
    pub(crate) fn take_where(&mut self, mut pred: impl FnMut(&D) -> bool) -> Taken<D> {
        let mut taken = mem::take(&mut self.spare);
        for slot in 0..self.entries.len() {
            if matches!(&self.entries[slot], Entry::Occupied { data, .. } if pred(data)) {
                taken.push(self.vacate(slot));
            }
        }
        let len = taken.len();
        Taken {
            entries: taken,
            len,
        }
    }

    /// Hands back the buffer of a [`Taken`], to be reused by the next `take_all` or
    /// `take_where` (the larger of it and the current spare buffer is kept).
    pub(crate) fn recycle(&mut self, emptied: Emptied<D>) {
        if emptied.0.capacity() > self.spare.capacity() {
            self.spare = emptied.0;
        }
    }

    /// The data of every registration, in slot order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &D> + '_ {
        self.entries.iter().filter_map(|entry| match entry {
            Entry::Occupied { data, .. } => Some(data),
            Entry::Vacant { .. } => None,
        })
    }

    fn insert(&mut self, data: D, waker: Waker) -> Key {
        let serial = self.next_serial;
        self.next_serial += 1;
        let entry = Entry::Occupied {
            serial,
            data,
            waker,
        };
        let slot = self.free;
        if slot == self.entries.len() {
            self.entries.push(entry);
            self.free = self.entries.len();
        } else {
            let Entry::Vacant { next } = mem::replace(&mut self.entries[slot], entry) else {
                unreachable!("the free list names an occupied slot")
            };
            self.free = next;
        }
        self.len += 1;
        Key { slot, serial }
    }

    /// Empties the occupied `slot` and returns its entry.
    fn vacate(&mut self, slot: usize) -> Entry<D> {
        let entry = mem::replace(&mut self.entries[slot], Entry::Vacant { next: self.free });
        self.free = slot;
        self.len -= 1;
        entry
    }
}

/// Registrations taken out of a [`WakerSet`], in the buffer that held them.
pub(crate) struct Taken<D = ()> {
    /// Occupied and vacant entries (`take_all`) or occupied ones only (`take_where`).
    entries: Vec<Entry<D>>,
    /// The number of occupied entries.
    len: usize,
}

impl<D> Taken<D> {
    /// The number of registrations taken.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The taken data and wakers, in slot order (`take_all`), leaving the buffer empty.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = (D, Waker)> + '_ {
        self.len = 0;
        self.entries.drain(..).filter_map(|entry| match entry {
            Entry::Occupied { data, waker, .. } => Some((data, waker)),
            Entry::Vacant { .. } => None,
        })
    }

    /// The emptied buffer, to hand back with [`WakerSet::recycle`]; `None` when there is none
    /// to hand back. Drops whatever was not drained, so call it outside the lock.
    pub(crate) fn emptied(mut self) -> Option<Emptied<D>> {
        self.entries.clear();
        (self.entries.capacity() > 0).then_some(Emptied(self.entries))
    }
}

/// The empty buffer of a drained [`Taken`] (empty by construction, so handing it back under
/// a lock drops no waker).
pub(crate) struct Emptied<D>(Vec<Entry<D>>);

// Sizes only, like `slab::Slab`'s: a set can hold 100,000 wakers (and `ManualClock`, which
// holds one, is public and `Debug`).
impl<D> fmt::Debug for WakerSet<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WakerSet")
            .field("len", &self.len)
            .field("capacity", &self.entries.capacity())
            .finish_non_exhaustive()
    }
}

impl<D> fmt::Debug for Taken<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Taken")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl<D> fmt::Debug for Emptied<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Emptied")
            .field("capacity", &self.0.capacity())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
pub(crate) mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use super::*;

    /// A waker that counts its wakes (the sync primitives' tests share it).
    pub(crate) struct Count(pub(crate) AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    pub(crate) fn counting() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (count.clone(), Waker::from(count))
    }

    fn wakes(count: &Count) -> usize {
        count.0.load(Ordering::SeqCst)
    }

    /// Takes with `take`, wakes what it took and hands the buffer back, as the users do;
    /// returns the data taken.
    fn wake_all<D>(
        set: &mut WakerSet<D>,
        take: impl FnOnce(&mut WakerSet<D>) -> Taken<D>,
    ) -> Vec<D> {
        let taken = take(set);
        wake(set, taken)
    }

    fn wake<D>(set: &mut WakerSet<D>, mut taken: Taken<D>) -> Vec<D> {
        let data = taken
            .drain()
            .map(|(data, waker)| {
                waker.wake();
                data
            })
            .collect();
        if let Some(emptied) = taken.emptied() {
            set.recycle(emptied);
        }
        data
    }

    #[test]
    fn register_refreshes_in_place() {
        let mut set = WakerSet::new();
        let (a, waker_a) = counting();
        let (b, waker_b) = counting();
        let mut key = None;
        assert!(set.register(&mut key, 1, &waker_a).is_none());
        let first = key;
        // The same task: no replacement, no clone.
        assert!(set.register(&mut key, 2, &waker_a).is_none());
        assert_eq!((key, set.len()), (first, 1));
        // Another task: the old waker comes back to be dropped outside the lock.
        let replaced = set.register(&mut key, 3, &waker_b).expect("replaced");
        assert!(replaced.will_wake(&waker_a));
        assert_eq!((key, set.len()), (first, 1));
        assert_eq!(set.iter().copied().collect::<Vec<_>>(), [3]);
        assert_eq!(wake_all(&mut set, WakerSet::take_all), [3]);
        assert_eq!((wakes(&a), wakes(&b)), (0, 1));
    }

    #[test]
    fn a_stale_key_after_take_all_is_harmless() {
        let mut set = WakerSet::new();
        let (old, waker_old) = counting();
        let (new, waker_new) = counting();
        let mut stale = None;
        set.register(&mut stale, (), &waker_old);
        wake_all(&mut set, WakerSet::take_all);
        assert_eq!(wakes(&old), 1);
        let mut fresh = None;
        set.register(&mut fresh, (), &waker_new);
        assert_eq!(
            fresh.unwrap().slot(),
            stale.unwrap().slot(),
            "the slot is reused"
        );
        assert_ne!(fresh, stale);
        // The stale key neither refreshes nor cancels the newer registration.
        let mut refreshed = stale;
        assert!(set.register(&mut refreshed, (), &waker_old).is_none());
        assert_ne!(refreshed, fresh, "a stale key registers anew");
        assert_eq!(set.len(), 2);
        let mut cancelled = stale;
        assert!(set.cancel(&mut cancelled).is_none());
        assert_eq!((cancelled, set.len()), (None, 2));
        set.cancel(&mut refreshed);
        assert_eq!(set.len(), 1);
        wake_all(&mut set, WakerSet::take_all);
        assert_eq!((wakes(&old), wakes(&new)), (1, 1));
    }

    #[test]
    fn cancel_removes_only_its_registration() {
        let mut set = WakerSet::new();
        let (count, waker) = counting();
        let mut keys = [None; 3];
        for (n, key) in keys.iter_mut().enumerate() {
            set.register(key, n, &waker);
        }
        let removed = set.cancel(&mut keys[1]).expect("registered");
        assert!(removed.will_wake(&waker));
        assert_eq!((keys[1], set.len()), (None, 2));
        assert!(
            set.cancel(&mut keys[1]).is_none(),
            "a second cancel is a no-op"
        );
        // The vacated slot is reused; the other keys still name their registrations.
        let mut again = None;
        set.register(&mut again, 9, &waker);
        assert_eq!(again.unwrap().slot(), 1);
        assert!(set.register(&mut keys[0], 0, &waker).is_none());
        assert_eq!(set.len(), 3);
        assert_eq!(set.key_at(1), again);
        assert_eq!(set.key_at(7), None);
        let mut data = wake_all(&mut set, WakerSet::take_all);
        data.sort_unstable();
        assert_eq!(data, [0, 2, 9]);
        assert_eq!(wakes(&count), 3);
    }

    #[test]
    fn take_where_takes_exactly_the_matching_ones() {
        let mut set = WakerSet::new();
        let counts: Vec<_> = (0..5).map(|_| counting()).collect();
        let mut keys = [None; 5];
        for (deadline, ((_, waker), key)) in counts.iter().zip(&mut keys).enumerate() {
            set.register(key, deadline, waker);
        }
        assert_eq!(set.iter().min(), Some(&0));
        let mut due = wake_all(&mut set, |set| set.take_where(|deadline| *deadline <= 2));
        due.sort_unstable();
        assert_eq!(due, [0, 1, 2]);
        let woken: Vec<usize> = counts.iter().map(|(count, _)| wakes(count)).collect();
        assert_eq!(woken, [1, 1, 1, 0, 0]);
        assert_eq!((set.len(), set.iter().min()), (2, Some(&3)));
        // The taken keys are stale, the others still valid, even once the slots are reused.
        let (_, late) = counting();
        let mut newcomer = None;
        set.register(&mut newcomer, 7, &late);
        assert!(set.cancel(&mut keys[0]).is_none());
        assert!(set.cancel(&mut keys[1]).is_none());
        assert!(set.cancel(&mut keys[2]).is_none());
        assert!(set.cancel(&mut keys[3]).is_some());
        assert_eq!(set.iter().count(), 2);
        assert!(wake_all(&mut set, |set| set.take_where(|_| false)).is_empty());
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn storage_is_reused_without_reallocating() {
        let mut set = WakerSet::new();
        let (_count, waker) = counting();
        let mut keys = vec![None; 100];
        let fill = |set: &mut WakerSet, keys: &mut [Option<Key>]| {
            for key in keys.iter_mut() {
                set.register(key, (), &waker);
            }
        };
        fill(&mut set, &mut keys);
        // take_all moves the buffer out whole and the (empty) spare in: nothing allocated.
        let (capacity, buffer) = (set.entries.capacity(), set.entries.as_ptr());
        let mut taken = set.take_all();
        assert_eq!(
            (taken.len(), set.len(), set.entries.capacity()),
            (100, 0, 0)
        );
        assert_eq!(taken.entries.as_ptr(), buffer);
        assert_eq!(taken.drain().count(), 100);
        set.recycle(taken.emptied().expect("a buffer"));
        assert_eq!(
            (set.spare.capacity(), set.spare.as_ptr()),
            (capacity, buffer)
        );

        // The next round fills a fresh buffer once; after that the two buffers alternate.
        fill(&mut set, &mut keys);
        wake_all(&mut set, WakerSet::take_all);
        let mut buffers = [set.entries.as_ptr(), set.spare.as_ptr()];
        for _ in 0..3 {
            fill(&mut set, &mut keys);
            assert_eq!(set.entries.capacity(), capacity);
            wake_all(&mut set, WakerSet::take_all);
            let mut now = [set.entries.as_ptr(), set.spare.as_ptr()];
            now.sort();
            buffers.sort();
            assert_eq!(now, buffers, "no buffer was allocated or freed");
        }

        // Cancel and register again: slots are reused, the buffer is not grown.
        fill(&mut set, &mut keys);
        let buffer = set.entries.as_ptr();
        for _ in 0..10 {
            for key in &mut keys {
                set.cancel(key);
            }
            fill(&mut set, &mut keys);
        }
        assert_eq!((set.entries.as_ptr(), set.entries.len()), (buffer, 100));

        // take_where moves what it takes into the spare buffer, which is big enough.
        let spare = set.spare.as_ptr();
        let taken = set.take_where(|()| true);
        assert_eq!((taken.len(), taken.entries.as_ptr()), (100, spare));
        wake(&mut set, taken);
        assert_eq!(set.spare.as_ptr(), spare);
    }

    #[test]
    fn taking_from_an_empty_set_hands_out_no_buffer() {
        let mut set: WakerSet = WakerSet::new();
        let (_count, waker) = counting();
        let mut key = None;
        set.register(&mut key, (), &waker);
        drop(set.cancel(&mut key));
        let taken = set.take_all();
        assert_eq!(taken.len(), 0);
        assert!(taken.emptied().is_none());
        // The vacant slot stayed, and is reused.
        set.register(&mut key, (), &waker);
        assert_eq!(key.unwrap().slot(), 0);
        assert_eq!(set.entries.len(), 1);
        assert_eq!(
            format!("{set:?}"),
            format!(
                "WakerSet {{ len: 1, capacity: {}, .. }}",
                set.entries.capacity()
            )
        );
    }

    #[test]
    fn undrained_wakers_are_dropped_with_the_taken() {
        let mut set = WakerSet::new();
        let (count, waker) = counting();
        let mut key = None;
        set.register(&mut key, (), &waker);
        let taken = set.take_all();
        assert_eq!(Arc::strong_count(&count), 3);
        assert!(taken.emptied().is_some());
        assert_eq!((Arc::strong_count(&count), wakes(&count)), (2, 0));
    }
}
