//! `Get-VM`: every VM of every host, or the named ones, with state, drives, guest OS
//! and components; a Proxmox VE VM also with its node and VMID (`node` and `vmid` in
//! JSON, `Node` and `VMID` columns in the table).

use clap::Args;
use vmguest::{Fleet, HResult, Settings};

use crate::args::{Common, OutputFormat};
use crate::pipeline::Target;
use crate::pool::{jobs, Job};
use crate::{errors, output};

const CMDLET: &str = "Get-VM";

#[derive(Args, Debug)]
pub struct GetVmArgs {
    /// VM names (default: all)
    #[arg(long = "name", value_name = "NAME", value_delimiter = ',')]
    pub name: Vec<String>,
    #[arg(value_name = "NAME", hide = true)]
    pub positional: Vec<String>,
}

pub fn exec(common: &Common, settings: Settings, a: GetVmArgs) -> i32 {
    let mut names = a.name;
    names.extend(a.positional);
    let targets: Vec<Target> = names.into_iter().map(Target::named).collect();
    let fleet = Fleet::open(settings);
    // Every VM of every host, or each name on every host; a host that cannot answer is
    // an error record of its own and the others go on.
    let found: Vec<Job<'_>> = if targets.is_empty() {
        fleet
            .virtual_machines()
            .into_iter()
            .map(|r| match r {
                Ok(vm) => Job::Vm(vm),
                Err(failure) => Job::Failed {
                    name: String::new(),
                    failure,
                },
            })
            .collect()
    } else {
        jobs(&fleet, &targets)
    };
    let mut first_error = None;
    let mut summaries = Vec::new();
    for job in found {
        let (target, result) = match job {
            Job::Vm(vm) => (vm.name().to_owned(), vm.summary()),
            Job::Failed { name, failure } => {
                let target = match (name.is_empty(), failure.host) {
                    (true, Some(host)) => host,
                    _ => name,
                };
                (target, Err(failure.failure))
            }
        };
        match result {
            Ok(s) => {
                if common.output_format == OutputFormat::Json {
                    output::json_line(&s);
                }
                summaries.push(s);
            }
            Err(f) => {
                if !errors::first_of(common, CMDLET, &target, &f, &mut first_error) {
                    break;
                }
            }
        }
    }
    if common.output_format == OutputFormat::Table {
        output::vm_summaries(common.output_format, &summaries);
    }
    first_error.map_or(0, HResult::exit_code)
}
