//! SIGINT, SIGTERM and SIGHUP during an install: the first asks every running install to
//! stop, which puts the user's media back where the guest allows it (the journal keeps
//! what it does not); a second exits at once, leaving the rest to the journal.

use std::sync::atomic::Ordering;

use vmguest::cancel::{encoded, was_requested, Cancel};

/// Route the three signals to `cancel`. Failing to register leaves the default action,
/// which the journal covers too.
pub fn stop_on_signals(cancel: &Cancel) {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        let flag = cancel.flag();
        // SAFETY: the handler only swaps an atomic and may call `_exit`, both
        // async-signal-safe.
        let registered = unsafe {
            signal_hook::low_level::register(sig, move || {
                if was_requested(flag.swap(encoded(sig), Ordering::SeqCst)) {
                    signal_hook::low_level::exit(128 + sig);
                }
            })
        };
        if let Err(e) = registered {
            tracing::warn!("cannot handle signal {sig}: {e}");
        }
    }
}
