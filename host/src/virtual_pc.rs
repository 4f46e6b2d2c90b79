//! The COM-shaped API: the host (`IVMVirtualPC`), its VMs (`IVMVirtualMachine`) and
//! their guest OS (`IVMGuestOS`), with Get-VM's summary of a VM.
//!
//! It sits above `operation`, `vm`, `iso` and `guest`, and below `fleet`, which opens
//! one [`VirtualPc`] per host.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use serde::Serialize;

use crate::guest::{self, InstalledComponents};
use crate::hresult::{Failure, HResult, Outcome};
use crate::operation::{self, InstallOptions};
use crate::progress::{Progress, Silent};
use crate::report::InstallReport;
use crate::settings::{HostSpec, Overrides, Settings};
use crate::vm::qemu::Inventory;
use crate::vm::{self, DvdDrive, GuestAgent, GuestOsInfo, Hypervisor, Vm, VmControl};
use crate::{iso, journal, kinds};

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
            HostSpec::Pve(uri) => Box::new(pve_host(uri, &settings)),
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

    /// The settings of this run.
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

/// A Proxmox VE host of the run: its URI read, and its settings.
fn pve_host(uri: &str, settings: &Settings) -> vm::pve::PveHost {
    let address = crate::settings::PveAddress::parse(uri);
    let authority = address
        .as_ref()
        .map(|a| a.authority.clone())
        .unwrap_or_default();
    let endpoint = address
        .map(|a| vm::pve::Endpoint {
            host: a.host,
            port: a.port,
            authority: a.authority,
        })
        .map_err(|e| e.into());
    let options = pve_options(&authority, settings);
    vm::pve::PveHost::new(uri, endpoint, options, vm::Timeouts::default())
}

/// One Proxmox VE host's settings: the environment's `$PVE_*` first, as settings of
/// this run, then the host's `[pve."AUTHORITY"]` table in the config files.
fn pve_options(authority: &str, settings: &Settings) -> vm::pve::PveOptions {
    use vm::pve::TokenSource;
    let table = settings
        .config
        .pve_host(authority)
        .map(|(t, _)| t)
        .unwrap_or_default();
    let env = &settings.pve;
    let token = match (&env.token, table.token_file) {
        (Some(secret), _) => Some(TokenSource::Env(secret.expose().to_owned())),
        (None, Some(file)) => Some(TokenSource::File(file)),
        (None, None) => None,
    };
    vm::pve::PveOptions {
        token,
        ca_file: env.ca_file.clone().or(table.ca_file),
        fingerprint: env.fingerprint.clone().or(table.fingerprint),
        storage: table.storage,
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
    /// The VM's name on its host.
    pub name: String,
    /// The host it came from: a libvirt or Proxmox VE URI, or a socket directory.
    pub host: String,
    /// Its node and VMID, for a VM of a Proxmox VE cluster.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub placement: Option<vm::Placement>,
    /// QEMU's run state, or "not-running" when QMP does not answer.
    pub state: String,
    /// The VM's DVD drives and their media.
    pub dvd_drives: Vec<DvdDrive>,
    /// What the guest agent reports of the OS; `None` without an agent.
    pub guest_os: Option<GuestOsInfo>,
    /// The components vmguest installed last, as the guest records them.
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
    /// Why parts are missing: no monitor, no agent, an unreadable version.
    pub notes: Vec<String>,
}

/// How the guest's components compare with the newest in the store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VersionStatus {
    /// The guest runs the newest version in the store.
    Current,
    /// The store holds a newer version than the guest runs.
    UpgradeAvailable,
    /// The guest runs no components of the family an install would choose.
    NotInstalled,
    #[default]
    /// Not known: no agent, no media in the store, or an unreadable version.
    Unknown,
}

impl VersionStatus {
    /// PowerCLI's spelling.
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
    /// The VM's name on its host.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host this VM was found on.
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

    /// The VM's DVD drives; VM_E_VM_NOT_RUNNING if QEMU does not answer.
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
                placement: self.handle().ok().and_then(|h| h.placement()),
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

    /// [`GuestOs::install_integration_components`], reporting each step to `progress`.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Effective, Loaded, PveHost};
    use crate::vm::pve::TokenSource;

    /// The environment wins over the host's table, key by key; the table is found by
    /// the URI's authority.
    #[test]
    fn pve_settings_come_from_the_environment_then_the_hosts_table() {
        let mut settings = Settings::isolated("/nonexistent");
        let mut config = Config::default();
        config.pve.insert(
            "pve1:8006".into(),
            PveHost {
                token_file: Some("/etc/vmguest/pve.token".into()),
                ca_file: Some("/etc/vmguest/ca.pem".into()),
                fingerprint: Some("AA".into()),
                storage: Some("isos".into()),
            },
        );
        settings.config = Effective {
            files: vec![Loaded {
                path: "/etc/vmguest/config.toml".into(),
                config,
            }],
            problems: Vec::new(),
        };
        let o = pve_options("pve1:8006", &settings);
        assert!(matches!(o.token, Some(TokenSource::File(ref p)) if p.ends_with("pve.token")));
        assert_eq!(o.fingerprint.as_deref(), Some("AA"));
        assert_eq!(o.storage.as_deref(), Some("isos"));
        settings.pve.token = Some(crate::settings::Secret::new("u@pve!t=x"));
        settings.pve.fingerprint = Some("BB".into());
        let o = pve_options("pve1:8006", &settings);
        assert!(matches!(o.token, Some(TokenSource::Env(_))));
        assert_eq!(o.fingerprint.as_deref(), Some("BB"));
        assert_eq!(o.ca_file, Some("/etc/vmguest/ca.pem".into()));
        // Another host has no table.
        assert_eq!(pve_options("pve2", &settings).storage, None);
    }
}
