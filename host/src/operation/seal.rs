//! How a run ends: a panic inside it turned into DISP_E_EXCEPTION, then the report timed,
//! filled from the operation's state and sealed.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use super::{InstallOptions, Operation, Target};
use crate::hresult::{Failure, HResult};
use crate::progress::Progress;
use crate::report::InstallReport;
use crate::settings::Settings;

/// Run `body` on `target` (it returns the success message, or `None` once a step
/// failed) with a panic turned into DISP_E_EXCEPTION, then time the run and build its
/// sealed report. The operation comes back too, for the post-install hooks.
pub(super) fn sealed<'a, 't>(
    target: Target<'t>,
    settings: &'a Settings,
    options: &'a InstallOptions,
    progress: &'a dyn Progress,
    body: impl FnOnce(&mut Operation<'a>, Target<'t>) -> Option<String>,
) -> (Operation<'a>, InstallReport) {
    let started = Instant::now();
    let vm_name = target.name().to_owned();
    let mut op = Operation::new(settings, options, progress, &vm_name);
    let message =
        catch_unwind(AssertUnwindSafe(|| body(&mut op, target))).unwrap_or_else(|panic| {
            op.fail(panicked(panic.as_ref()));
            None
        });
    progress.finished(&vm_name);
    op.state.total_ms = started.elapsed().as_millis() as u64;
    let report = op.publish(message.unwrap_or_default());
    (op, report)
}

impl Operation<'_> {
    /// The report, built once from what the operation decided and learnt, and sealed
    /// with its outcome: the first failure, else `success_message`.
    fn publish(&mut self, success_message: String) -> InstallReport {
        let s = &mut self.state;
        let mut r = InstallReport::new(&self.vm);
        r.what_if = self.options.what_if;
        r.mode = s.mode;
        if let Some(iso) = &s.located {
            r.iso = Some(iso.path.clone());
            r.iso_volume_id = Some(iso.volume_id.clone());
            r.iso_source = Some(iso.source.clone());
            r.iso_family = Some(iso.family.clone());
            r.iso_version = iso.version.clone();
            r.iso_sha256 = iso.sha256.clone();
            r.iso_reason = Some(iso.reason.clone());
        }
        r.drive = s.drive.id.clone();
        r.borrowed_media = s.drive.borrowed.clone();
        r.media_restored = s.drive.restored;
        r.recovered = s.recovered.clone();
        r.journal_pending = s.journal_pending;
        r.guest_os = s.guest_os.clone();
        r.components = s.components.clone();
        r.installer = s.installer.clone();
        r.version_before = s.versions.before.clone();
        r.version_after = s.versions.after.clone();
        r.verified = s.versions.verified;
        r.reboot_required = s.reboot_required;
        r.restarted = s.restarted;
        r.phases = s.phases.clone();
        r.total_ms = s.total_ms;
        r.notes = s.notes.clone();
        r.plugins = s.plugins.clone();
        r.failure = s.failure.take();
        r.seal(success_message);
        r
    }
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
