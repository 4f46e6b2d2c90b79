//! A request to stop an install early: the CLI sets it from SIGINT, SIGTERM and SIGHUP.
//! The operation checks it before every forward step and while it waits (for the media
//! to appear, for the installer); a cancelled install then runs its normal clean-up, so
//! the IC media comes out and the user's media goes back when the guest allows it, and
//! the journal keeps the entry when it does not.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

/// Shared between the signal handlers and the installs; cloning shares it.
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<AtomicI32>);

/// The install was stopped by a request, named by its signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("interrupted by {}", signal_name(*.0))]
pub struct Cancelled(pub i32);

pub fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGHUP => "SIGHUP".into(),
        0 => "a cancel request".into(),
        n => format!("signal {n}"),
    }
}

impl Cancel {
    /// A token nobody has asked to stop yet.
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// The raw flag, for a signal handler: it may only store into it.
    pub fn flag(&self) -> Arc<AtomicI32> {
        self.0.clone()
    }

    /// Ask every install sharing this token to stop; `why` is a signal number (0: none).
    pub fn request(&self, why: i32) {
        self.0.store(encoded(why.max(0)), Ordering::SeqCst);
    }

    /// The signal that asked to stop, if any.
    pub fn requested(&self) -> Option<i32> {
        let v = self.0.load(Ordering::SeqCst);
        (v & REQUESTED != 0).then_some(v & !REQUESTED)
    }

    /// [`Cancelled`] once a stop was asked for.
    pub fn check(&self) -> Result<(), Cancelled> {
        match self.requested() {
            Some(sig) => Err(Cancelled(sig)),
            None => Ok(()),
        }
    }
}

/// Set in the flag once a stop was asked for; the low bits hold the signal (0 is valid).
const REQUESTED: i32 = 1 << 30;

/// The value a signal handler stores for `sig`, as [`Cancel::request`] does.
pub fn encoded(sig: i32) -> i32 {
    sig | REQUESTED
}

/// Does a raw flag value say a stop was already asked for?
pub fn was_requested(v: i32) -> bool {
    v & REQUESTED != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_seen_by_every_clone_with_its_signal() {
        let c = Cancel::new();
        let other = c.clone();
        assert_eq!(other.check(), Ok(()));
        c.request(libc::SIGTERM);
        assert_eq!(other.check(), Err(Cancelled(libc::SIGTERM)));
        assert_eq!(
            Cancelled(libc::SIGTERM).to_string(),
            "interrupted by SIGTERM"
        );
        let raw = Cancel::new();
        raw.flag().store(encoded(libc::SIGHUP), Ordering::SeqCst);
        assert_eq!(raw.requested(), Some(libc::SIGHUP));
    }
}
