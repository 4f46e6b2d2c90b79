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
//! The API, from the host inwards:
//!
//! | type | what it is |
//! |---|---|
//! | [`VirtualPc`] | a host: a socket directory, a libvirt URI, or any [`Hypervisor`] |
//! | [`VirtualMachine`] | one VM of a host; [`VirtualMachine::summary`] is what `Get-VM` shows ([`VmSummary`]) |
//! | [`GuestOs`] | the VM's guest, and [`GuestOs::install_integration_components`] |
//! | [`InstallOptions`], [`InstallReport`] | what an install is asked to do, and what it did |
//! | [`HResult`], [`Failure`], [`Outcome`] | the error contract: seven outcomes, a failure with its cause chain |
//! | [`Settings`], [`Overrides`], [`HostSpec`] | everything read from the environment and config files, once per run |
//! | [`Fleet`] | many hosts in one run: each name on every host, a down host fails only its part |
//! | [`Progress`], [`Silent`] | progress callbacks of an install |
//! | [`Hypervisor`], [`Vm`], [`VmControl`], [`GuestAgent`] | the traits another backend, or a test double, implements |
//!
//! Plugins are opt-in for library users: pass
//! `InstallOptions { plugins: Some(Arc::new(PluginSet::discover(host.settings()))), .. }`.
//!
//! No function of this crate panics to its caller on bad input: installs catch a panic
//! (a bug) and report it as DISP_E_EXCEPTION, as every other unexpected error.
//!
//! Crates: `qapi-qmp`/`qapi-qga` provide the QMP and guest-agent command types generated
//! from QEMU's schema, so command names and argument shapes are not hand-typed; their
//! sync client is not used (the channel adds deadlines). `indicatif` draws the progress spinner
//! in the CLI, `toml` reads VM definitions and IC manifests. `sha2` hashes the chosen ISO
//! for audit and pins plugin components. `wasmtime` and `wasmtime-wasi` (WASI p2) run the
//! plugins as components: the component model checks every value that crosses the
//! boundary, and epochs and resource limiters bound their time and memory. `etcetera`
//! finds the XDG base directories as the spec says (ignoring empty and relative values).
//! `thiserror` derives the typed errors at module boundaries, with their `source()`
//! chains. `libloading` opens libvirt's C library on the first libvirt URI
//! (`vm/libvirt/ffi.rs` says why) and `quick-xml` reads domain XML. `proptest` (tests only) drives the ISO reader and
//! version property tests.

// Every item of the public surface says what it is; the doc(hidden) internals are exempt.
#![warn(missing_docs)]

// The COM-shaped API and the types its signatures name; everything `cargo doc` shows.
mod config;
mod fleet;
mod guest;
mod hresult;
mod journal;
mod progress;
mod report;
mod trust;
mod virtual_pc;

pub use cancel::{Cancel, Cancelled};
pub use fleet::{Fleet, HostFailure};
pub use guest::InstalledComponents;
pub use hresult::{Failure, HResult, Outcome};
pub use iso::manifest::Components;
pub use journal::{Entry as JournalEntry, Journal, JournalError};
pub use operation::InstallOptions;
pub use plugin::{PluginRecord, PluginSet};
pub use progress::{Progress, Silent};
pub use report::{ErrorDetail, InstallReport, InstallerRun, Mode, PhaseTiming};
pub use settings::{HostSpec, Overrides, Settings};
pub use virtual_pc::{GuestOs, VersionStatus, VirtualMachine, VirtualPc, VmSummary};
pub use vm::{
    CallError, DvdDrive, ExecStatus, FsInfo, GuestAgent, GuestOsInfo, Hypervisor, Media, Placement,
    Vm, VmControl, VmError,
};

// The internals. They stay reachable for the `vmguest` binary, the integration tests,
// the examples and the fuzz targets, which are other crates; they are not the API.
#[doc(hidden)]
pub mod cancel;
#[doc(hidden)]
pub mod iso;
#[doc(hidden)]
pub mod kinds;
#[doc(hidden)]
pub mod lock;
#[doc(hidden)]
pub mod operation;
#[doc(hidden)]
pub mod plugin;
#[doc(hidden)]
pub mod settings;
#[doc(hidden)]
pub mod vm;
