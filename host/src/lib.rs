//! vmguest: install guest integration components into running virtual machines.
//!
//! The API mirrors Windows Virtual PC's COM shape, `IVMVirtualPC` → `IVMVirtualMachine`
//! → `IVMGuestOS::InstallIntegrationComponents`, and keeps its contract: every install
//! ends in exactly one of seven documented [`HResult`]s.
//!
//! ```no_run
//! use vmguest::{VirtualPc, InstallOptions};
//!
//! let host = VirtualPc::open("/run/vmguest");
//! let vm = host.find_virtual_machine("web1")?;
//! let report = vm.guest_os().install_integration_components(&InstallOptions::default());
//! println!("{} {}", report.result, report.message);
//! # Ok::<(), vmguest::Failure>(())
//! ```
//!
//! Layout, from the edge inwards:
//!
//! | module | what it holds |
//! |---|---|
//! | [`settings`] | everything read from the environment and config files, once |
//! | [`operation`] | the install, as typed steps that read as the contract |
//! | [`vm`] | VM access behind the [`Hypervisor`], [`vm::Vm`], [`vm::VmControl`] and [`vm::GuestAgent`] traits; one folder per backend |
//! | [`vm::qemu`] | the socket-directory backend: names to QMP and agent sockets |
//! | [`vm::libvirt`] | the libvirt backend: a host's domains, by URI |
//! | [`vm::libvirt::ffi`] | the libvirt C calls, loaded with `dlopen` on first use |
//! | [`fleet`] | many hosts in one run |
//! | [`guest`] | the steps inside the guest, through the agent |
//! | [`iso`] | locating the latest IC media by content |
//! | [`plugin`] | the sandboxed WebAssembly plugins |
//! | [`kinds`] | guest kinds and IC families, shared by config, ISO policy and plugins |
//! | [`config`] | the config files' schema and merge |
//! | [`report`] | the result object of an install |
//! | [`hresult`] | the error contract: seven outcomes, [`Failure`] with its cause chain |
//!
//! Plugins are opt-in for library users: pass
//! `InstallOptions { plugins: Some(Arc::new(PluginSet::discover(host.settings()))), .. }`.
//!
//! No function of this crate panics to its caller on bad input: installs catch a panic
//! (a bug) and report it as DISP_E_EXCEPTION, as every other unexpected error.
//!
//! Crates: `qapi-qmp`/`qapi-qga` provide the QMP and guest-agent command types generated
//! from QEMU's schema, so command names and argument shapes are not hand-typed; their
//! sync client is not used (see [`vm::channel`]). `indicatif` draws the progress spinner
//! in the CLI, `toml` reads VM definitions and IC manifests. `sha2` hashes the chosen ISO
//! for audit and pins plugin components. `wasmtime` and `wasmtime-wasi` (WASI p2) run the
//! plugins as components: the component model checks every value that crosses the
//! boundary, and epochs and resource limiters bound their time and memory. `etcetera`
//! finds the XDG base directories as the spec says (ignoring empty and relative values).
//! `thiserror` derives the typed errors at module boundaries, with their `source()`
//! chains. `libloading` opens libvirt's C library on the first libvirt URI
//! (see [`vm::libvirt::ffi`] for why) and `quick-xml` reads domain XML. `proptest` (tests only) drives the ISO reader and version property tests.

pub mod cancel;
pub mod config;
pub mod fleet;
pub mod guest;
pub mod hresult;
pub mod iso;
pub mod journal;
pub mod kinds;
pub mod lock;
pub mod manifest;
pub mod operation;
pub mod plugin;
pub mod progress;
pub mod report;
pub mod settings;
pub mod trust;
pub mod vm;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use serde::Serialize;

pub use fleet::Fleet;
pub use hresult::{Failure, HResult, Outcome};
pub use operation::InstallOptions;
pub use progress::{Progress, Silent};
pub use report::InstallReport;
pub use settings::{HostSpec, Overrides, Settings};
pub use vm::qemu::Inventory;
pub use vm::{DvdDrive, GuestOsInfo, Hypervisor};

use guest::InstalledComponents;
use vm::{GuestAgent, Vm, VmControl};

/// The host: a hypervisor and the settings of this run (`IVMVirtualPC`).
pub struct VirtualPc {
    hypervisor: Box<dyn Hypervisor + Send + Sync>,
    settings: Arc<Settings>,
}

impl VirtualPc {
    /// The socket directory `vm_dir`, with settings read from the environment.
    pub fn open(vm_dir: impl Into<PathBuf>) -> VirtualPc {
        VirtualPc::with_settings(Settings::resolve(Overrides {
            vm_dir: Some(vm_dir.into()),
            ..Overrides::default()
        }))
    }

    /// The socket directory the settings name.
    pub fn with_settings(settings: Settings) -> VirtualPc {
        let spec = HostSpec::Sockets(settings.vm_dir.clone());
        VirtualPc::on(&spec, Arc::new(settings))
    }

    /// A libvirt host by its URI (`qemu:///system`, `qemu+ssh://host/system`, ...);
    /// nothing is connected until a VM is looked up.
    pub fn connect(uri: &str, settings: Settings) -> VirtualPc {
        VirtualPc::on(&HostSpec::Libvirt(uri.to_owned()), Arc::new(settings))
    }

    /// One host of a run, sharing the run's settings with the others.
    pub fn on(spec: &HostSpec, settings: Arc<Settings>) -> VirtualPc {
        let hypervisor: Box<dyn Hypervisor + Send + Sync> = match spec {
            HostSpec::Sockets(dir) => Box::new(Inventory::new(dir.clone())),
            HostSpec::Libvirt(uri) => Box::new(vm::libvirt::LibvirtHost::new(
                uri.clone(),
                vm::Timeouts::default(),
            )),
        };
        VirtualPc {
            hypervisor,
            settings,
        }
    }

    /// Any backend, or a test double.
    pub fn with_hypervisor(
        hypervisor: impl Hypervisor + Send + Sync + 'static,
        settings: Settings,
    ) -> VirtualPc {
        VirtualPc {
            hypervisor: Box::new(hypervisor),
            settings: Arc::new(settings),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Where this host's VMs live: its libvirt URI or its socket directory.
    pub fn location(&self) -> String {
        self.hypervisor.location()
    }

    /// `FindVirtualMachine`: VM_E_VM_UNKNOWN if there is no such VM.
    pub fn find_virtual_machine(&self, name: &str) -> Outcome<VirtualMachine<'_>> {
        let handle = self.hypervisor.open(name)?;
        Ok(VirtualMachine {
            host: self,
            name: name.to_owned(),
            handle: OnceLock::from(handle),
        })
    }

    /// The media journal of this host's state directory, if there is one.
    pub fn journal(&self) -> Option<journal::Journal> {
        self.settings
            .state_dir
            .as_deref()
            .map(journal::Journal::new)
    }

    /// All VMs of the hypervisor (`-ComputerName`'s host, or the socket directory).
    pub fn virtual_machines(&self) -> Outcome<Vec<VirtualMachine<'_>>> {
        let names = self.hypervisor.names()?;
        Ok(names
            .into_iter()
            .map(|name| VirtualMachine {
                host: self,
                name,
                handle: OnceLock::new(),
            })
            .collect())
    }
}

/// One VM (`IVMVirtualMachine`).
pub struct VirtualMachine<'a> {
    host: &'a VirtualPc,
    name: String,
    /// Resolved once, on first use (a listed VM) or when found by name.
    handle: OnceLock<Box<dyn Vm>>,
}

/// A read-only snapshot of a VM, as `Get-VM` shows it.
#[derive(Debug, Serialize)]
pub struct VmSummary {
    pub name: String,
    /// The host it came from: a libvirt URI or a socket directory.
    pub host: String,
    /// QEMU's run state, or "not-running" when QMP does not answer.
    pub state: String,
    pub dvd_drives: Vec<DvdDrive>,
    pub guest_os: Option<GuestOsInfo>,
    pub integration_components: Option<InstalledComponents>,
    /// Media an earlier run borrowed and has not yet put back (`Repair-VMMedia`).
    pub pending_restore: Option<journal::Entry>,
    /// The version the guest runs of the family an install would choose, where it can
    /// be read (the family's own tool, else vmguest's record).
    pub installed_version: Option<String>,
    /// The newest version in the IC store for this guest's OS.
    pub latest_version: Option<String>,
    /// PowerCLI's ToolsVersionStatus: `current`, `upgrade available`, `not installed`
    /// or `unknown`.
    pub version_status: VersionStatus,
    pub notes: Vec<String>,
}

/// How the guest's components compare with the newest in the store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VersionStatus {
    Current,
    UpgradeAvailable,
    NotInstalled,
    #[default]
    Unknown,
}

impl VersionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            VersionStatus::Current => "current",
            VersionStatus::UpgradeAvailable => "upgrade available",
            VersionStatus::NotInstalled => "not installed",
            VersionStatus::Unknown => "unknown",
        }
    }
}

/// Run `f`, turning a panic (a bug) into DISP_E_EXCEPTION instead of unwinding.
fn no_panic<T>(f: impl FnOnce() -> Outcome<T>) -> Outcome<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| Err(operation::panicked(p.as_ref())))
}

impl<'a> VirtualMachine<'a> {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn host(&self) -> &VirtualPc {
        self.host
    }

    /// The resolved VM: looked up once, then kept.
    fn handle(&self) -> Outcome<&dyn Vm> {
        if let Some(h) = self.handle.get() {
            return Ok(h.as_ref());
        }
        let opened = self.host.hypervisor.open(&self.name)?;
        Ok(self.handle.get_or_init(|| opened).as_ref())
    }

    fn control(&self) -> Outcome<Box<dyn VmControl>> {
        Ok(self.handle()?.control()?)
    }

    /// QEMU's run state; VM_E_VM_NOT_RUNNING if QEMU does not answer.
    pub fn state(&self) -> Outcome<String> {
        no_panic(|| run_state(self.control()?.as_mut()))
    }

    pub fn dvd_drives(&self) -> Outcome<Vec<DvdDrive>> {
        no_panic(|| Ok(self.control()?.dvd_drives().context("query-block")?))
    }

    /// The journal entry an earlier run left for this VM, if any.
    pub fn pending_restore(&self) -> Option<journal::Entry> {
        let handle = self.handle().ok()?;
        self.host.journal()?.get(handle.identity()).ok().flatten()
    }

    /// `Repair-VMMedia`: finish an earlier run's restore, if one is pending.
    pub fn repair_media(&self, options: &InstallOptions, progress: &dyn Progress) -> InstallReport {
        let host = self.host;
        let mut report = operation::repair_target(self.target(), &host.settings, options, progress);
        report.host = Some(host.location());
        report
    }

    /// What the operation runs on: this VM's handle when it is resolved already, else
    /// its name, resolved by the operation's first step.
    fn target(&self) -> operation::Target<'_> {
        match self.handle.get() {
            Some(vm) => operation::Target::Resolved {
                vm: vm.as_ref(),
                location: self.host.location(),
            },
            None => operation::Target::Named {
                hypervisor: self.host.hypervisor.as_ref(),
                name: &self.name,
            },
        }
    }

    /// `GuestOS`.
    pub fn guest_os(&self) -> GuestOs<'_> {
        GuestOs { vm: self }
    }

    /// Everything `Get-VM` shows, over one monitor and one agent connection. Parts that
    /// cannot be known (no agent) are `None`.
    pub fn summary(&self) -> Outcome<VmSummary> {
        no_panic(|| {
            let mut s = VmSummary {
                name: self.name.clone(),
                host: self.host.location(),
                state: "not-running".into(),
                dvd_drives: Vec::new(),
                guest_os: None,
                integration_components: None,
                pending_restore: self.pending_restore(),
                installed_version: None,
                latest_version: None,
                version_status: VersionStatus::Unknown,
                notes: Vec::new(),
            };
            let running = self.control().and_then(|mut vm| {
                let state = run_state(vm.as_mut())?;
                Ok((state, vm))
            });
            let mut vm = match running {
                Ok((state, vm)) => {
                    s.state = state;
                    vm
                }
                Err(f) if f.hresult == HResult::VmNotRunning => {
                    s.notes.push(format!("{:#}", f.error));
                    return Ok(s);
                }
                Err(f) => return Err(f),
            };
            s.dvd_drives = vm.dvd_drives().context("query-block")?;
            let agent = self.guest_os().agent();
            let mut agent = match agent {
                Ok(Some(a)) => a,
                Ok(None) => return Ok(s),
                Err(f) => {
                    s.notes.push(format!("guest agent: {:#}", f.error));
                    return Ok(s);
                }
            };
            match agent.os_info() {
                Ok(info) => s.guest_os = Some(info),
                Err(e) => {
                    s.notes
                        .push(format!("guest agent: {:#}", anyhow::Error::new(e)));
                    return Ok(s);
                }
            }
            match guest::installed(agent.as_mut()) {
                Ok(ic) => s.integration_components = ic,
                Err(e) => s.notes.push(format!("guest agent: {e:#}")),
            }
            self.version_status(&mut s, agent.as_mut());
            Ok(s)
        })
    }
}

impl VirtualMachine<'_> {
    /// The newest IC version in the store for this guest, against what the guest runs:
    /// the family's own version tool where it has one, else vmguest's record of its
    /// last install of that family.
    fn version_status(&self, s: &mut VmSummary, agent: &mut dyn GuestAgent) {
        let kind = kinds::GuestKind::of(s.guest_os.as_ref());
        let selection = iso::survey(&self.host.settings, None, kind);
        let Some(latest) = selection.chosen().and_then(|c| c.identity.as_ref().ok()) else {
            return;
        };
        let Some(latest_version) = latest.version.clone() else {
            return;
        };
        s.latest_version = Some(latest_version.to_string());
        let probe = match kind {
            kinds::GuestKind::Unknown => None,
            k => latest.recipe.version_probe(k == kinds::GuestKind::Windows),
        };
        let installed = match probe {
            Some(probe) => match guest::read_version(agent, &probe) {
                Ok(v) => v,
                Err(e) => {
                    s.notes
                        .push(format!("reading the installed version: {e:#}"));
                    return;
                }
            },
            None => s
                .integration_components
                .as_ref()
                .filter(|ic| ic.components.family == latest.family.as_str())
                .map(|ic| ic.components.version.clone()),
        };
        s.version_status = match &installed {
            None => VersionStatus::NotInstalled,
            Some(v) => match iso::Version::parse(v) {
                Some(have) if have >= latest_version => VersionStatus::Current,
                Some(_) => VersionStatus::UpgradeAvailable,
                None if guest::same_version(v, &latest_version.to_string()) => {
                    VersionStatus::Current
                }
                None => VersionStatus::Unknown,
            },
        };
        s.installed_version = installed;
    }
}

fn run_state(vm: &mut dyn VmControl) -> Outcome<String> {
    vm.run_state()
        .context("query-status")
        .map_err(|e| Failure::new(HResult::VmNotRunning, e))
}

/// The guest OS of a VM (`IVMGuestOS`).
pub struct GuestOs<'a> {
    vm: &'a VirtualMachine<'a>,
}

impl GuestOs<'_> {
    fn agent(&self) -> Outcome<Option<Box<dyn GuestAgent>>> {
        Ok(self.vm.handle()?.agent().context("guest agent")?)
    }

    /// What the guest agent reports; `None` without an agent.
    pub fn os_info(&self) -> Outcome<Option<GuestOsInfo>> {
        no_panic(|| match self.agent()? {
            Some(mut a) => Ok(Some(a.os_info().context("guest-get-osinfo")?)),
            None => Ok(None),
        })
    }

    /// The components vmguest installed last, where the guest records them.
    pub fn integration_components(&self) -> Outcome<Option<InstalledComponents>> {
        no_panic(|| match self.agent()? {
            Some(mut a) => Ok(guest::installed(a.as_mut())?),
            None => Ok(None),
        })
    }

    /// `InstallIntegrationComponents`. The report's `result` is the outcome.
    pub fn install_integration_components(&self, options: &InstallOptions) -> InstallReport {
        self.install_with_progress(options, &Silent)
    }

    pub fn install_with_progress(
        &self,
        options: &InstallOptions,
        progress: &dyn Progress,
    ) -> InstallReport {
        let host = self.vm.host;
        let mut report =
            operation::install_target(self.vm.target(), &host.settings, options, progress);
        report.host = Some(host.location());
        report
    }
}
