//! Progress callbacks. The library never draws; the CLI turns these into a spinner.

use std::time::Duration;

/// Shared by the installs of a parallel pipeline, so it must be `Sync`.
pub trait Progress: Sync {
    /// A new phase of the operation on `vm` started.
    fn phase(&self, _vm: &str, _phase: &str) {}
    /// Still waiting for `what`, `elapsed` of at most `limit`.
    fn waiting(&self, _vm: &str, _what: &str, _elapsed: Duration, _limit: Duration) {}
    /// The operation on `vm` ended.
    fn finished(&self, _vm: &str) {}
}

/// No progress output.
pub struct Silent;

impl Progress for Silent {}
