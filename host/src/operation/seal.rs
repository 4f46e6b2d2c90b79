//! How a run ends: a panic inside it turned into DISP_E_EXCEPTION, then the report timed,
//! filled from the operation's state and sealed.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use super::{InstallOptions, Operation};
use crate::hresult::{Failure, HResult};
use crate::progress::Progress;
use crate::settings::Settings;

/// Run `body` (which returns the success message, or `None` once a step failed) with a
/// panic turned into DISP_E_EXCEPTION, then time and seal the report.
pub(super) fn sealed<'a>(
    settings: &'a Settings,
    options: &'a InstallOptions,
    progress: &'a dyn Progress,
    vm_name: &str,
    body: impl FnOnce(&mut Operation<'a>) -> Option<String>,
) -> Operation<'a> {
    let started = Instant::now();
    let mut op = Operation::new(settings, options, progress, vm_name);
    let message = catch_unwind(AssertUnwindSafe(|| body(&mut op))).unwrap_or_else(|panic| {
        op.report.fail(panicked(panic.as_ref()));
        None
    });
    progress.finished(vm_name);
    op.report.total_ms = started.elapsed().as_millis() as u64;
    op.publish();
    op.report.seal(message.unwrap_or_default());
    op
}

/// A panic caught at the library's edge: a bug, reported as an unexpected error.
pub fn panicked(panic: &(dyn std::any::Any + Send)) -> Failure {
    Failure::msg(
        HResult::DispException,
        format!("internal error in vmguest: {}", panic_text(panic)),
    )
}

/// The message a panic carried, if it is text.
pub fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}
