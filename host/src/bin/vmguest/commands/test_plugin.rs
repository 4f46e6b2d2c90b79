//! `Test-Plugin`: load a component in the sandbox and show what it decides, on a sample
//! context or on a real VM's (which is never changed).

use std::path::{Path, PathBuf};

use clap::Args;
use vmguest::kinds::GuestKind;
use vmguest::plugin::{context, probe};
use vmguest::{Fleet, Settings};

use crate::args::{Common, GuestOs, PluginInputs, USAGE_ERROR};
use crate::commands::guest_info;
use crate::{errors, output};

const CMDLET: &str = "Test-Plugin";

#[derive(Args, Debug)]
pub struct TestPluginArgs {
    /// The component (.wasm), with no manifest
    #[arg(
        long,
        value_name = "WASM",
        required_unless_present = "manifest",
        conflicts_with = "manifest"
    )]
    pub path: Option<PathBuf>,
    /// A plugin manifest: its component, settings, grants and limits, checked as an
    /// install would (a pin that does not match is a warning)
    #[arg(long, value_name = "TOML")]
    pub manifest: Option<PathBuf>,
    /// Candidates from this directory's ISOs (as VMGUEST_IC_PATH would give) instead
    /// of the sample store
    #[arg(long, value_name = "DIR")]
    pub iso_path: Option<PathBuf>,
    /// Run for this VM: its guest OS from its agent, and the ISOs an install would
    /// find (unless -IsoPath); nothing is changed, and post-install does not run
    #[arg(long = "vm-name", value_name = "NAME")]
    pub vm_name: Option<String>,
    #[command(flatten)]
    pub inputs: PluginInputs,
    /// The guest when no VM is given
    #[arg(
        long,
        value_name = "OS",
        value_enum,
        default_value = "windows",
        ignore_case = true
    )]
    pub guest_os: GuestOs,
}

impl TestPluginArgs {
    /// What to load: the manifest if given, else the bare component.
    fn subject(&self) -> Option<probe::Subject> {
        match (&self.manifest, &self.path) {
            (Some(m), _) => Some(probe::Subject::Manifest(m.clone())),
            (None, Some(p)) => Some(probe::Subject::Component(p.clone())),
            (None, None) => None,
        }
    }
}

pub fn exec(common: &Common, run: Settings, a: TestPluginArgs) -> i32 {
    let Some((settings, grants)) = a.inputs.parse(CMDLET) else {
        return USAGE_ERROR;
    };
    // clap requires one of the two; this only keeps a usage error a usage error.
    let Some(subject) = a.subject() else {
        eprintln!("{CMDLET} : give -Path or -Manifest");
        return USAGE_ERROR;
    };
    let (probe::Subject::Manifest(shown) | probe::Subject::Component(shown)) = subject.clone();
    let cache = run.plugin_cache().map(Path::to_owned);
    let mut target = probe::Target::sample(a.guest_os.into());
    let mut search = run.clone();
    if let Some(dir) = &a.iso_path {
        search.ic_path = Some(vec![dir.clone()]);
        target.store = format!("-IsoPath {}", dir.display());
    }
    if let Some(name) = &a.vm_name {
        let fleet = Fleet::open(run);
        let info = match guest_info(&fleet, name) {
            Ok(info) => info,
            Err(f) => return errors::one_result(common, CMDLET, &shown, Err::<(), _>(f), |_| ()),
        };
        target.vm = name.clone();
        target.guest = context::guest_os(info.as_ref());
        target.live = true;
        if a.iso_path.is_none() {
            target.store = format!("what an install on {name} finds");
        }
        target.selection.guest = GuestKind::of(info.as_ref());
    }
    if a.iso_path.is_some() || a.vm_name.is_some() {
        target.selection = vmguest::iso::survey(&search, None, target.selection.guest);
    }
    let probed = probe::probe(&subject, settings, grants, target, cache.as_deref());
    errors::one_result(common, CMDLET, &shown, probed, |report| {
        output::probe(common.output_format, &report)
    })
}
