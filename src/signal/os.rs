//! The one unsafe module of the crate: the process's SIGINT and SIGTERM dispositions, saved,
//! replaced and given back with `sigaction(2)`.
//!
//! # Why unsafe
//!
//! No safe crate can give a disposition back. signal-hook (through signal-hook-registry)
//! installs its OS-level handler once and never removes it: once its last action is
//! unregistered it chains to the disposition it saved only if that was a function, so a saved
//! `SIG_DFL` is not emulated and SIGTERM would be silently ignored from then on; and a default
//! action kept registered to make up for it runs before any handler the program registers
//! later (signal-hook runs actions in registration order) and turns an inherited `SIG_IGN`
//! fatal. Putting back exactly what was there takes `sigaction` itself.
//!
//! # What it does
//!
//! [`activate`] saves the dispositions it finds and installs [`on_signal`], which writes one
//! byte per delivery (the signal number) to a non-blocking socket; [`deactivate`] puts the
//! saved dispositions back and waits until no handler still runs its write, so every byte of
//! an activation is in the socket before the caller marks its end. While active, a previous
//! disposition that was a function is called after the byte is written (chained), as
//! signal-hook does.
//!
//! If someone installed a handler over ours while it was active, [`deactivate`] leaves theirs
//! in place (restoring ours' predecessor would remove it); ours stays in their chain, and while
//! inactive it only chains on to the disposition it saved. A later [`activate`] then reuses it
//! there rather than installing a second copy (unless the disposition is `SIG_DFL` or
//! `SIG_IGN` by then, which chain to nothing: then it installs afresh).
//!
//! [`on_signal`] is async-signal-safe: it touches only atomics, `write(2)` and the chained
//! handler, and keeps `errno` as it found it.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::RawFd;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use libc::{c_int, c_void, siginfo_t};

/// The signals handled, in the order of the per-signal tables below.
pub(super) const SIGNALS: [c_int; 2] = [libc::SIGINT, libc::SIGTERM];

/// A `SA_SIGINFO` handler, the kind [`on_signal`] is.
type Action = extern "C" fn(c_int, *mut siginfo_t, *mut c_void);
/// A plain handler, for chaining to one installed without `SA_SIGINFO`.
type Plain = extern "C" fn(c_int);

/// Where [`on_signal`] writes a delivery: the socket's write end while active, `-1` (write
/// nothing, only chain) otherwise.
static WRITE_FD: AtomicI32 = AtomicI32::new(-1);
/// How many [`on_signal`]s are between reading [`WRITE_FD`] and finishing their write.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// The disposition [`on_signal`] chains to, readable from a signal handler.
struct Chain {
    /// `sa_sigaction` of the saved disposition (`SIG_DFL`, `SIG_IGN` or a function).
    action: AtomicUsize,
    /// Whether that function takes `SA_SIGINFO` arguments.
    siginfo: AtomicBool,
}

static CHAIN: [Chain; 2] = [const {
    Chain {
        action: AtomicUsize::new(libc::SIG_DFL),
        siginfo: AtomicBool::new(false),
    }
}; 2];

/// Where [`on_signal`] stands for one signal.
#[derive(Clone, Copy)]
enum Place {
    /// Not installed: the program's own disposition is in force.
    Absent,
    /// Installed by us, with the disposition it replaced (restored by [`deactivate`]).
    Installed(libc::sigaction),
    /// Someone installed a handler over ours; we leave theirs alone and run in its chain. With
    /// the disposition ours had replaced, in case ours is put back at the top.
    Displaced(libc::sigaction),
}

/// Per signal, in the order of [`SIGNALS`]; only normal threads touch it.
static PLACES: Mutex<[Place; 2]> = Mutex::new([Place::Absent; 2]);

fn places() -> MutexGuard<'static, [Place; 2]> {
    PLACES.lock().unwrap_or_else(|e| e.into_inner())
}

fn handler_address() -> usize {
    on_signal as Action as usize
}

/// The current disposition of `signal`.
fn query(signal: c_int) -> io::Result<libc::sigaction> {
    // SAFETY: an all-zero `sigaction` is a valid value (integers, a zeroed mask, a `None`
    // function pointer where there is one); it is only an output buffer here.
    let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null `act` only reads the disposition; `current` is a valid, writable
    // `sigaction`.
    if unsafe { libc::sigaction(signal, ptr::null(), &mut current) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(current)
}

/// Installs `action` for `signal`, returning the disposition it replaced.
fn replace(signal: c_int, action: &libc::sigaction) -> io::Result<libc::sigaction> {
    // SAFETY: as in `query`: a zeroed output buffer.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: `action` is a fully initialised `sigaction` (ours from `ours`, or one the OS
    // handed us), `old` a writable one.
    if unsafe { libc::sigaction(signal, action, &mut old) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(old)
}

/// The disposition that installs [`on_signal`].
fn ours() -> libc::sigaction {
    // SAFETY: as in `query`; every field that matters is set below.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = handler_address();
    // SAFETY: `sa_mask` is a valid, writable `sigset_t`.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    action.sa_flags = (libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK) as _;
    action
}

fn set_chain(index: usize, to: &libc::sigaction) {
    CHAIN[index].siginfo.store(
        to.sa_flags as c_int & libc::SA_SIGINFO != 0,
        Ordering::SeqCst,
    );
    CHAIN[index].action.store(to.sa_sigaction, Ordering::SeqCst);
}

/// Installs [`on_signal`] for `signal` over `before`, chaining to it.
fn install(index: usize, signal: c_int, before: &libc::sigaction) -> io::Result<libc::sigaction> {
    // Chain to it before the handler can run.
    set_chain(index, before);
    replace(signal, &ours())
}

/// Installs [`on_signal`] for SIGINT and SIGTERM, writing each delivery to `fd` from now on.
/// On error nothing stays installed.
pub(super) fn activate(fd: RawFd) -> io::Result<()> {
    let mut places = places();
    // First, so that no delivery after the install finds nowhere to go.
    WRITE_FD.store(fd, Ordering::SeqCst);
    for (index, &signal) in SIGNALS.iter().enumerate() {
        let installed = match places[index] {
            Place::Installed(_) => continue,
            Place::Displaced(previous) => match query(signal) {
                // Back at the top: whoever replaced it put it back.
                Ok(now) if now.sa_sigaction == handler_address() => {
                    places[index] = Place::Installed(previous);
                    continue;
                }
                // `SIG_DFL` or `SIG_IGN` chain to nothing: install afresh.
                Ok(now)
                    if now.sa_sigaction == libc::SIG_DFL || now.sa_sigaction == libc::SIG_IGN =>
                {
                    install(index, signal, &now)
                }
                // A function, which chains to ours as it found it: stay in its chain.
                Ok(_) => continue,
                Err(e) => Err(e),
            },
            Place::Absent => query(signal).and_then(|before| install(index, signal, &before)),
        };
        match installed {
            Ok(previous) => {
                // Changed by another thread between the query and the install: chain to
                // what was really replaced.
                set_chain(index, &previous);
                places[index] = Place::Installed(previous);
            }
            Err(e) => {
                drop(places);
                deactivate();
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Gives SIGINT and SIGTERM back the dispositions [`activate`] found, then waits until no
/// [`on_signal`] is still writing: when this returns, every delivery that reached the handler
/// is in the socket, and later ones take the restored disposition.
pub(super) fn deactivate() {
    let mut places = places();
    for (index, &signal) in SIGNALS.iter().enumerate() {
        let Place::Installed(previous) = places[index] else {
            continue;
        };
        places[index] = match query(signal) {
            Ok(now) if now.sa_sigaction == handler_address() => match replace(signal, &previous) {
                Ok(_) => Place::Absent,
                // Cannot fail for a valid signal and disposition; if it did, ours stays
                // and, inactive, chains to the saved one, which is the best left to do.
                Err(_) => Place::Displaced(previous),
            },
            _ => Place::Displaced(previous),
        };
    }
    // Only now, so that a delivery between the restore and here is still written; the one
    // that raced the restore is re-raised by the reader.
    WRITE_FD.store(-1, Ordering::SeqCst);
    // SeqCst against `on_signal`'s increment-then-load: either it saw -1, or we see it here.
    while IN_FLIGHT.load(Ordering::SeqCst) != 0 {
        std::thread::yield_now();
    }
}

/// Sends `signal` to the calling thread, synchronously: it takes the disposition in force.
pub(super) fn raise(signal: c_int) {
    // SAFETY: `raise` has no memory-safety preconditions.
    unsafe { libc::raise(signal) };
}

/// The signal handler. Async-signal-safe: atomics, `write(2)`, the chained handler.
extern "C" fn on_signal(signal: c_int, info: *mut siginfo_t, context: *mut c_void) {
    let errno = errno::errno();
    let index = match signal {
        libc::SIGINT => 0,
        libc::SIGTERM => 1,
        _ => return,
    };
    IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
    let fd = WRITE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let byte = signal as u8;
        // SAFETY: writes one byte from a live local to a descriptor that is never closed (the
        // socket lives as long as the process). Non-blocking: a full socket drops the byte
        // rather than hang the handler. `write` is async-signal-safe.
        unsafe { libc::write(fd, (&raw const byte).cast(), 1) };
    }
    IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    let action = CHAIN[index].action.load(Ordering::SeqCst);
    if action != libc::SIG_DFL && action != libc::SIG_IGN && action != handler_address() {
        let address = action as *mut ();
        if CHAIN[index].siginfo.load(Ordering::SeqCst) {
            // SAFETY: `action` is the `sa_sigaction` of a disposition the OS reported for
            // this signal with `SA_SIGINFO`: a function of this type, called as the OS would
            // have called it, with the arguments we were given.
            let previous = unsafe { std::mem::transmute::<*mut (), Action>(address) };
            previous(signal, info, context);
        } else {
            // SAFETY: as above, for a handler installed without `SA_SIGINFO`.
            let previous = unsafe { std::mem::transmute::<*mut (), Plain>(address) };
            previous(signal);
        }
    }
    errno::set_errno(errno);
}

/// Whether [`on_signal`] is the disposition of `signal` now (for the tests).
#[cfg(test)]
pub(super) fn installed(signal: c_int) -> bool {
    query(signal).is_ok_and(|now| now.sa_sigaction == handler_address())
}

/// Whether the disposition of `signal` is `SIG_DFL` now (for the tests).
#[cfg(test)]
pub(super) fn is_default(signal: c_int) -> bool {
    query(signal).is_ok_and(|now| now.sa_sigaction == libc::SIG_DFL)
}
