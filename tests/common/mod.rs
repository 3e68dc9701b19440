//! What the model test and the fuzz targets share: the operation vocabulary, the reference
//! model, the two drivers (async shell, pure machine) and the side-by-side checker.
//!
//! The fuzz targets include this directory with `#[path]`, so none of it is public API.

pub(crate) mod check;
pub(crate) mod machine;
pub(crate) mod model;
pub(crate) mod op;
pub(crate) mod shell;

/// Keeps the planned panics of schedules (`How::Panic`, caught by the lifecycle) off standard
/// error, and leaves every other panic to the hook that was installed before (the test
/// harness's, or libFuzzer's, which aborts).
pub(crate) fn quiet_planned_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() != Some(&op::PANIC) {
                previous(info);
            }
        }));
    });
}
