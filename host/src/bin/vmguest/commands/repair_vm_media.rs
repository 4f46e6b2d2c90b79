//! `Repair-VMMedia`: put back media that an interrupted install borrowed.

use clap::Args;
use vmguest::Journal;
use vmguest::{Fleet, InstallOptions, Settings};

use crate::args::Common;
use crate::pipeline::Target;
use crate::{pool, signals};

const CMDLET: &str = "Repair-VMMedia";

#[derive(Args, Debug)]
pub struct RepairArgs {
    /// VM names (default: every VM with a pending restore in the journal)
    #[arg(long = "vm-name", value_name = "NAME", value_delimiter = ',')]
    pub vm_name: Vec<String>,
    #[arg(value_name = "VMNAME", hide = true)]
    pub positional: Vec<String>,
    /// Show what would be put back; change nothing
    #[arg(long)]
    pub what_if: bool,
}

pub fn exec(common: &Common, settings: Settings, a: RepairArgs) -> i32 {
    let mut names = a.vm_name;
    names.extend(a.positional);
    if names.is_empty() {
        names = settings
            .state_dir
            .as_deref()
            .map(Journal::new)
            .map(|j| j.list().into_iter().map(|e| e.vm).collect())
            .unwrap_or_default();
    }
    let targets: Vec<Target> = names.into_iter().map(Target::named).collect();
    let fleet = Fleet::open(settings);
    let options = InstallOptions {
        what_if: a.what_if,
        ..InstallOptions::default()
    };
    signals::stop_on_signals(&options.cancel);
    pool::run(
        common,
        CMDLET,
        pool::jobs(&fleet, &targets),
        pool::DEFAULT_THROTTLE,
        |job, progress| job.report(|vm| vm.repair_media(&options, progress)),
    )
}
