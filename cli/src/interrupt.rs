//! Ctrl-C as a request to stop: the first one sets a flag that long work checks between steps
//! (a batch of images, one duplicate action), so nothing is left half done and what was done is
//! saved; a second one ends the process at once. Installed first thing, so that a Ctrl-C at any
//! moment is seen.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

/// Installs the handler (once, from `main`).
pub fn install() {
    let _ = ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            std::process::exit(crate::exit::Code::Interrupted as i32);
        }
    });
}

/// The flag that library calls taking a `stop` check.
pub fn flag() -> &'static AtomicBool {
    &STOP
}

/// Whether Ctrl-C was pressed.
pub fn requested() -> bool {
    STOP.load(Ordering::SeqCst)
}
