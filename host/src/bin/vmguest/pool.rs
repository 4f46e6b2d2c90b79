//! The worker pool: one cmdlet's work on many VMs, a few at a time, results in input
//! order.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};

use vmguest::HostFailure;
use vmguest::{Fleet, InstallReport, Progress, VirtualMachine};

use crate::args::{Common, ErrorAction, OutputFormat};
use crate::pipeline::Target;
use crate::{errors, output, spinner};

/// ForEach-Object -Parallel's default.
pub const DEFAULT_THROTTLE: u16 = 5;

/// What one line of a pipeline acts on: a VM found on a host, or why there is none.
pub enum Job<'f> {
    Vm(VirtualMachine<'f>),
    Failed { name: String, failure: HostFailure },
}

impl Job<'_> {
    fn name(&self) -> &str {
        match self {
            Job::Vm(vm) => vm.name(),
            Job::Failed { name, .. } => name,
        }
    }

    /// Run `f` on the VM, or report why there is none.
    pub fn report(self, f: impl FnOnce(&VirtualMachine<'_>) -> InstallReport) -> InstallReport {
        match self {
            Job::Vm(vm) => f(&vm),
            Job::Failed { name, failure } => failed_report(&name, failure),
        }
    }
}

/// Each target on every host searched, in input order.
pub fn jobs<'f>(fleet: &'f Fleet, targets: &[Target]) -> Vec<Job<'f>> {
    let mut jobs = Vec::new();
    for t in targets {
        for found in fleet.find(&t.name, t.host.as_deref()) {
            jobs.push(match found {
                Ok(vm) => Job::Vm(vm),
                Err(failure) => Job::Failed {
                    name: t.name.clone(),
                    failure,
                },
            });
        }
    }
    jobs
}

/// A report for a VM whose install could not even start.
fn failed_report(name: &str, failure: HostFailure) -> InstallReport {
    let mut r = InstallReport::new(name);
    r.host = failure.host;
    r.fail(failure.failure);
    r.seal(String::new());
    r
}

/// Run `each` for every VM, `throttle` at a time (one at a time with -ErrorAction Stop,
/// so that nothing starts after the first failure). Results stream as each VM ends: a
/// JSON line, or the table at the end in input order. The exit code is that of the
/// first VM in input order that failed.
pub fn run(
    common: &Common,
    cmdlet: &str,
    jobs: Vec<Job<'_>>,
    throttle: u16,
    each: impl Fn(Job<'_>, &dyn Progress) -> InstallReport + Sync,
) -> i32 {
    let throttle = match common.error_action {
        ErrorAction::Stop => 1,
        _ => usize::from(throttle).clamp(1, jobs.len().max(1)),
    };
    let names: Vec<String> = jobs.iter().map(|j| j.name().to_owned()).collect();
    let bars = spinner::Bars::new(!common.verbose);
    // Taken in input order, each by one worker.
    let queue = Mutex::new(jobs.into_iter().enumerate());
    let stop = AtomicBool::new(false);
    let mut slots: Vec<Option<InstallReport>> = names.iter().map(|_| None).collect();
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel();
        for _ in 0..throttle {
            let tx = tx.clone();
            let (queue, stop, bars, each) = (&queue, &stop, &bars, &each);
            let stops = common.error_action == ErrorAction::Stop;
            scope.spawn(move || loop {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let next = queue.lock().map(|mut q| q.next());
                let Ok(Some((i, job))) = next else {
                    break;
                };
                let report = each(job, bars);
                // Decided here, before the next VM is taken, not when the result is read.
                if stops && report.failure.is_some() {
                    stop.store(true, Ordering::SeqCst);
                }
                if tx.send((i, report)).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        for (i, report) in rx {
            if let Some(f) = &report.failure {
                errors::report(common, cmdlet, &names[i], f);
            }
            if common.output_format == OutputFormat::Json {
                output::json_line(&report);
            }
            slots[i] = Some(report);
        }
    });
    drop(bars);
    let reports: Vec<InstallReport> = slots.into_iter().flatten().collect();
    if common.output_format == OutputFormat::Table {
        output::install_reports(common.output_format, &reports);
    }
    reports
        .iter()
        .find(|r| !r.result.is_success())
        .map_or(0, |r| r.result.exit_code())
}
