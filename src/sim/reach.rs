//! What a simulated run cannot control, detected: the thread's run marker, the hooks the
//! real clocks and spawners call, and the panic hook that keeps caught panics quiet.

use std::cell::{Cell, RefCell};
use std::sync::Once;

thread_local! {
    /// The id of the run this thread is driving; 0 when none.
    static RUN: Cell<u64> = const { Cell::new(0) };
    /// The first thing out of reach that the run touched, for the executor to report.
    static VIOLATION: RefCell<Option<String>> = const { RefCell::new(None) };
    /// The last panic seen on this thread during a run: its message and location.
    static PANIC: RefCell<Option<(String, String)>> = const { RefCell::new(None) };
}

/// The run this thread is driving, if any.
pub(crate) fn current_run() -> u64 {
    RUN.with(Cell::get)
}

/// Marks this thread as driving run `id` until the guard is dropped.
pub(crate) fn enter(id: u64) -> Entered {
    assert!(
        RUN.with(Cell::get) == 0,
        "async_lifecycle::sim: a simulated run inside another simulated run"
    );
    RUN.with(|run| run.set(id));
    install_panic_hook();
    VIOLATION.with(|v| v.borrow_mut().take());
    PANIC.with(|p| p.borrow_mut().take());
    Entered(())
}

/// Leaves the run on drop, panicking or not.
#[derive(Debug)]
pub(crate) struct Entered(());

impl Drop for Entered {
    fn drop(&mut self) {
        RUN.with(|run| run.set(0));
    }
}

/// Takes the recorded out-of-reach use, if any.
pub(crate) fn take_violation() -> Option<String> {
    VIOLATION.with(|v| v.borrow_mut().take())
}

/// Takes the last panic's message and location, if one was seen.
pub(crate) fn take_panic() -> Option<(String, String)> {
    PANIC.with(|p| p.borrow_mut().take())
}

/// Records an out-of-reach use for the run and panics (unless already unwinding), so the
/// code that reached out stops there and the run is reported as out of reach.
///
/// Called by the real clocks and spawners; outside a simulated run it is one thread-local
/// read.
#[inline]
pub(crate) fn out_of_reach(what: &str) {
    if RUN.with(Cell::get) != 0 {
        violated(what);
    }
}

#[cold]
#[inline(never)]
fn violated(what: &str) {
    let message = format!(
        "{what} inside a simulated run: it reads real time or runs outside the simulator, so \
         the run could not be replayed. Build lifecycles with `Env::lifecycle` or \
         `Env::builder` (the simulated clock and spawner), sleep with `Env::sleep` and spawn \
         with `Env::spawn`"
    );
    VIOLATION.with(|v| {
        v.borrow_mut().get_or_insert_with(|| message.clone());
    });
    if !std::thread::panicking() {
        panic!("async_lifecycle::sim: {message}");
    }
}

/// A handle on a run that has ended (`what`: an `Env`, a lifecycle it built) was used: in
/// another run, that run fails as out of reach; outside any run, a plain panic. Panics
/// unless already unwinding.
#[cold]
#[inline(never)]
pub(crate) fn stale(what: &str) {
    let current = RUN.with(Cell::get);
    let message = format!(
        "{what} from an earlier simulated run was used {}: an `Env`, and the lifecycles and \
         tasks it made, belong to the one run whose scenario it was given to. Keep the `Env` \
         inside the run's scenario (not in a global, or a variable that outlives the run)",
        if current == 0 {
            "after that run ended"
        } else {
            "in a later run"
        }
    );
    if current != 0 {
        VIOLATION.with(|v| {
            v.borrow_mut().get_or_insert_with(|| message.clone());
        });
    }
    if !std::thread::panicking() {
        panic!("async_lifecycle::sim: {message}");
    }
}

/// Panics on a thread driving a run are caught and reported by the run (or by the
/// lifecycle, for a service), so the default hook's message would only be noise, once per
/// run of a search: this hook records them instead and leaves every other thread's to the
/// hook that was there before.
fn install_panic_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if RUN.with(Cell::get) == 0 {
                return previous(info);
            }
            let message = crate::service::panic_text(info.payload());
            let location = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            PANIC.with(|p| *p.borrow_mut() = Some((message, location)));
        }));
    });
}
