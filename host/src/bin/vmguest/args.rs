//! The command line: the common parameters, the parameter groups several cmdlets
//! share, the closed sets they take, and the list of cmdlets. Each cmdlet's own
//! parameters are in its file under `commands/`.
//!
//! PowerShell spelling (`Install-IntegrationComponents -VMName x -WhatIf`) is accepted
//! beside GNU spelling (`install-integration-components --vm-name x --what-if`):
//! [`normalize`] rewrites the former into the latter before clap parses.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use vmguest::kinds::GuestKind;
use vmguest::{HResult, Overrides};

use crate::commands::completions::CompletionsArgs;
use crate::commands::get_integration_components_iso::GetIsoArgs;
use crate::commands::get_vm::GetVmArgs;
use crate::commands::install_integration_components::InstallArgs;
use crate::commands::install_plugin::InstallPluginArgs;
use crate::commands::new_plugin::NewPluginArgs;
use crate::commands::repair_vm_media::RepairArgs;
use crate::commands::test_plugin::TestPluginArgs;

/// The exit code of a usage error, as clap's own.
pub const USAGE_ERROR: i32 = 2;

/// The outcomes table of `--help` and the man page, one line per [`HResult`].
fn exit_codes() -> String {
    let width = HResult::ALL
        .iter()
        .map(|h| h.name().len())
        .max()
        .unwrap_or(0)
        + 2;
    let mut text = String::from("Exit codes (one per outcome, stable):\n");
    for h in HResult::ALL {
        let line = if h.is_success() {
            format!("  {:<4}{}\n", h.exit_code(), h.name())
        } else {
            format!("  {:<4}{:<width$}{}\n", h.exit_code(), h.name(), h.hex())
        };
        text.push_str(&line);
    }
    text.push_str(&format!("  {USAGE_ERROR:<4}usage error\n"));
    text.push_str(
        "With several VMs, the exit code is that of the first VM, in input order, that failed.",
    );
    text
}

#[derive(Parser, Debug)]
#[command(
    name = "vmguest",
    version,
    about = "Install guest integration components into running virtual machines",
    after_help = exit_codes()
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmdlet: Cmdlet,
    #[command(flatten)]
    pub common: Common,
}

/// The common parameters every cmdlet takes.
#[derive(Args, Debug)]
pub struct Common {
    /// Directory of VM sockets (NAME.qmp, NAME.qga, NAME.toml) [env: VMGUEST_VM_DIR]
    /// [default: $XDG_RUNTIME_DIR/vmguest or /run/vmguest]
    #[arg(long, global = true, value_name = "DIR")]
    pub vm_dir: Option<PathBuf>,
    /// Show what happens (tracing at debug level; RUST_LOG overrides)
    #[arg(long, global = true)]
    pub verbose: bool,
    /// What to do when a VM fails
    #[arg(
        long,
        global = true,
        value_enum,
        ignore_case = true,
        default_value = "Continue"
    )]
    pub error_action: ErrorAction,
    /// Table for people, JSON (one object per line) for pipes
    #[arg(
        long,
        visible_alias = "output",
        global = true,
        value_enum,
        ignore_case = true,
        default_value = "Table"
    )]
    pub output_format: OutputFormat,
    /// Directory of plugin manifests, instead of $VMGUEST_PLUGIN_PATH, the config's
    /// plugin_dirs, or ~/.config/vmguest/plugins and /etc/vmguest/plugins
    #[arg(long, global = true, value_name = "DIR")]
    pub plugin_dir: Option<PathBuf>,
    /// Run without any plugin (troubleshooting)
    #[arg(long, global = true)]
    pub no_plugins: bool,
    /// libvirt hosts by URI (qemu:///system, qemu+ssh://HOST/system, qemu+tcp://…,
    /// qemu+unix:///system?socket=…); repeat or separate with commas [env:
    /// LIBVIRT_DEFAULT_URI]
    #[arg(
        long,
        short = 'c',
        visible_alias = "connect",
        global = true,
        value_name = "URI",
        value_delimiter = ','
    )]
    pub connection_uri: Vec<String>,
    /// libvirt hosts by name, reached as qemu+ssh://HOST/system (Hyper-V's spelling):
    /// [USER@]HOST[:PORT], HOST an RFC 1123 name, an IPv4 address or [IPv6]
    #[arg(
        long,
        global = true,
        value_name = "HOST",
        value_delimiter = ',',
        value_parser = computer_name
    )]
    pub computer_name: Vec<String>,
}

/// `-ComputerName` is pasted into a URI, so it must be a host name and nothing more.
fn computer_name(s: &str) -> Result<String, vmguest::settings::BadComputerName> {
    vmguest::settings::check_computer_name(s).map(|()| s.to_owned())
}

impl Common {
    /// What the command line sets of the run's settings.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            vm_dir: self.vm_dir.clone(),
            plugin_dir: self.plugin_dir.clone(),
            connection_uris: self.connection_uris(),
        }
    }

    /// `-ConnectionUri` then `-ComputerName`, as libvirt URIs.
    pub fn connection_uris(&self) -> Vec<String> {
        let names = self
            .computer_name
            .iter()
            .map(|h| vmguest::settings::computer_uri(h));
        self.connection_uri
            .iter()
            .cloned()
            .chain(names)
            .filter(|u| !u.is_empty())
            .collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ErrorAction {
    /// Stop at the first failure
    #[value(name = "Stop")]
    Stop,
    /// Write the error record and go on with the next VM
    #[value(name = "Continue")]
    Continue,
    /// Go on without writing error records
    #[value(name = "SilentlyContinue")]
    SilentlyContinue,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    #[value(name = "Table")]
    Table,
    #[value(name = "Json")]
    Json,
}

/// A kind of guest, given rather than asked from a guest agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GuestOs {
    Linux,
    Windows,
    Unknown,
}

impl From<GuestOs> for GuestKind {
    fn from(os: GuestOs) -> GuestKind {
        match os {
            GuestOs::Linux => GuestKind::Linux,
            GuestOs::Windows => GuestKind::Windows,
            GuestOs::Unknown => GuestKind::Unknown,
        }
    }
}

/// A plugin's settings and grants (Install-Plugin, Test-Plugin).
#[derive(Args, Debug)]
pub struct PluginInputs {
    /// A setting for the plugin, KEY=VALUE (repeatable)
    #[arg(long, value_name = "KEY=VALUE")]
    pub setting: Vec<String>,
    /// A read-only grant, GUEST_PATH=HOST_DIR (repeatable)
    #[arg(long, value_name = "GUEST=HOST")]
    pub grant: Vec<String>,
}

/// `-Setting` as given, and `-Grant` as guest path to host directory.
pub type SettingsAndGrants = (BTreeMap<String, String>, BTreeMap<String, PathBuf>);

impl PluginInputs {
    /// Both as maps; a pair that is not `KEY=VALUE` is reported on stderr.
    pub fn parse(&self, cmdlet: &str) -> Option<SettingsAndGrants> {
        match (pairs(&self.setting), pairs(&self.grant)) {
            (Ok(s), Ok(g)) => Some((s, g)),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("{cmdlet} : {e}");
                None
            }
        }
    }
}

/// `KEY=VALUE` pairs.
fn pairs<T: From<String>>(items: &[String]) -> Result<BTreeMap<String, T>, String> {
    items
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), T::from(v.to_owned())))
                .ok_or_else(|| format!("{kv:?} is not KEY=VALUE"))
        })
        .collect()
}

#[derive(Subcommand, Debug)]
pub enum Cmdlet {
    /// Locate and install the latest Integration Components into the guest OS
    #[command(
        name = "Install-IntegrationComponents",
        visible_alias = "install-integration-components"
    )]
    InstallIntegrationComponents(InstallArgs),
    /// List VMs with run state, DVD drives, guest OS and installed components
    #[command(name = "Get-VM", visible_alias = "get-vm")]
    GetVm(GetVmArgs),
    /// List the candidate IC ISOs, what each is, and which one wins and why
    #[command(
        name = "Get-IntegrationComponentsIso",
        visible_alias = "get-integration-components-iso"
    )]
    GetIntegrationComponentsIso(GetIsoArgs),
    /// Put back media that an interrupted install borrowed, from the journal
    #[command(name = "Repair-VMMedia", visible_alias = "repair-vm-media")]
    RepairVmMedia(RepairArgs),
    /// List the plugins: version, WIT version, what each implements, grants, hash, cache
    #[command(name = "Get-Plugin", visible_alias = "get-plugin")]
    GetPlugin,
    /// Load a component in the sandbox and show what it decides on a sample context
    #[command(name = "Test-Plugin", visible_alias = "test-plugin")]
    TestPlugin(TestPluginArgs),
    /// Install a component: check its world and WIT version, pin its SHA-256, write the
    /// manifest, precompile
    #[command(name = "Install-Plugin", visible_alias = "install-plugin")]
    InstallPlugin(InstallPluginArgs),
    /// Write a buildable plugin skeleton: WIT, code, build script, manifest, README
    #[command(name = "New-Plugin", visible_alias = "new-plugin")]
    NewPlugin(NewPluginArgs),
    /// Print a completion script: vmguest completions bash > /etc/bash_completion.d/vmguest
    #[command(name = "completions")]
    Completions(CompletionsArgs),
    /// Print the man page (roff): vmguest man > vmguest.1
    #[command(name = "man")]
    Man,
}

/// The arguments as text; the first one that is not UTF-8 is a usage error.
pub fn utf8(args: impl IntoIterator<Item = OsString>) -> Result<Vec<String>, OsString> {
    args.into_iter().map(OsString::into_string).collect()
}

fn squash(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '-' && *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Rewrite PowerShell-style words into the GNU spelling clap knows:
/// cmdlet names case-insensitively, `-ParamName` and `-ParamName:value` into `--param-name`.
/// After `--` nothing is rewritten, so a VM named `-x` can be given as `-- -x`.
pub fn normalize(args: Vec<String>) -> Vec<String> {
    let cmd = Cli::command();
    let mut cmdlets: Vec<(String, String)> = Vec::new();
    let mut longs: Vec<(String, String)> = Vec::new();
    let mut collect = |c: &clap::Command| {
        for a in c.get_arguments() {
            for l in a.get_long_and_visible_aliases().into_iter().flatten() {
                longs.push((squash(l), l.to_owned()));
            }
        }
    };
    collect(&cmd);
    for sub in cmd.get_subcommands() {
        collect(sub);
        let name = sub.get_name().to_owned();
        cmdlets.push((squash(&name), name.clone()));
        for alias in sub.get_all_aliases() {
            cmdlets.push((squash(alias), name.clone()));
        }
    }
    let lookup = |table: &[(String, String)], word: &str| {
        let key = squash(word);
        table
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone())
    };
    let mut out = Vec::with_capacity(args.len());
    let mut seen_cmdlet = false;
    let mut options_ended = false;
    for (i, arg) in args.into_iter().enumerate() {
        if i == 0 || options_ended {
            out.push(arg);
            continue;
        }
        if arg == "--" {
            options_ended = true;
            out.push(arg);
            continue;
        }
        let single_dash = arg.len() > 2
            && arg.starts_with('-')
            && !arg.starts_with("--")
            && arg.as_bytes()[1].is_ascii_alphabetic();
        if single_dash {
            let body = &arg[1..];
            let (name, value) = match body.split_once(':') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            if let Some(long) = lookup(&longs, name) {
                match value {
                    Some("$false") => {}
                    Some("$true") | None => out.push(format!("--{long}")),
                    Some(v) => out.push(format!("--{long}={v}")),
                }
                continue;
            }
        } else if !seen_cmdlet && !arg.starts_with('-') {
            if let Some(name) = lookup(&cmdlets, &arg) {
                seen_cmdlet = true;
                out.push(name);
                continue;
            }
        }
        out.push(arg);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn powershell_spelling_becomes_gnu_spelling() {
        assert_eq!(
            normalize(words(
                "vmguest install-integrationcomponents -VMName web1 -WhatIf -ErrorAction:Stop -outputformat json"
            )),
            words("vmguest Install-IntegrationComponents --vm-name web1 --what-if --error-action=Stop --output-format json")
        );
        assert_eq!(
            normalize(words("vmguest GET-VM -Verbose:$false --output json")),
            words("vmguest Get-VM --output json")
        );
    }

    #[test]
    fn normalized_words_parse() {
        let cli = Cli::try_parse_from(normalize(words(
            "vmguest Install-IntegrationComponents web1 -TimeoutSec 30 -ReplaceMedia -OutputFormat JSON",
        )))
        .unwrap();
        assert_eq!(cli.common.output_format, OutputFormat::Json);
        match cli.cmdlet {
            Cmdlet::InstallIntegrationComponents(a) => {
                assert_eq!(a.positional, vec!["web1"]);
                assert_eq!(a.timeout_sec, 30);
                assert!(a.replace_media);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hosts_by_uri_and_by_computer_name() {
        let cli = Cli::try_parse_from(normalize(words(
            "vmguest Get-VM -ConnectionUri qemu:///system,qemu+tcp://h/system -c qemu+ssh://x/system -ComputerName kvm1,kvm2",
        )))
        .unwrap();
        assert_eq!(
            cli.common.connection_uris(),
            vec![
                "qemu:///system",
                "qemu+tcp://h/system",
                "qemu+ssh://x/system",
                "qemu+ssh://kvm1/system",
                "qemu+ssh://kvm2/system"
            ]
        );
        let cli = Cli::try_parse_from(normalize(words(
            "vmguest Install-IntegrationComponents --connect qemu:///system -VMName web1,db1",
        )))
        .unwrap();
        assert_eq!(cli.common.connection_uris(), vec!["qemu:///system"]);
        match cli.cmdlet {
            Cmdlet::InstallIntegrationComponents(a) => assert_eq!(a.vm_name, vec!["web1", "db1"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn double_dash_ends_the_options() {
        let words = words("vmguest Install-IntegrationComponents -WhatIf -- -VMName -x");
        let cli = Cli::try_parse_from(normalize(words.clone())).unwrap();
        match cli.cmdlet {
            Cmdlet::InstallIntegrationComponents(a) => {
                assert!(a.what_if);
                assert_eq!(a.positional, ["-VMName", "-x"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn non_utf8_arguments_are_refused_not_a_panic() {
        use std::os::unix::ffi::OsStringExt;
        let bad = OsString::from_vec(vec![b'v', 0xff, b'm']);
        assert_eq!(utf8([OsString::from("vmguest"), bad.clone()]), Err(bad));
        assert_eq!(utf8([OsString::from("a")]), Ok(vec!["a".to_owned()]));
    }

    #[test]
    fn completions_and_the_man_page_cover_every_cmdlet() {
        let mut bash = Vec::new();
        crate::commands::completions::write(clap_complete::Shell::Bash, &mut bash);
        let mut page = Vec::new();
        crate::commands::man::write(&mut page).unwrap();
        let (bash, page) = (
            String::from_utf8(bash).unwrap(),
            String::from_utf8(page).unwrap(),
        );
        for cmdlet in [
            "Install\\-IntegrationComponents",
            "Get\\-VM",
            "Test\\-Plugin",
        ] {
            assert!(page.contains(cmdlet), "man page lacks {cmdlet}");
        }
        for word in ["Install-IntegrationComponents", "get-vm", "--replace-media"] {
            assert!(bash.contains(word), "bash completion lacks {word}");
        }
        assert!(
            page.contains("VM_E_DRIVE_INVALID"),
            "the exit codes are in the man page"
        );
    }

    #[test]
    fn the_outcomes_table_has_every_hresult() {
        let help = Cli::command().render_long_help().to_string();
        for h in HResult::ALL {
            let line = help
                .lines()
                .find(|l| l.split_whitespace().nth(1) == Some(h.name()))
                .unwrap_or_else(|| panic!("--help lacks {}", h.name()));
            assert!(
                line.trim_start().starts_with(&h.exit_code().to_string()),
                "{line}"
            );
            assert_eq!(line.ends_with(&h.hex()), !h.is_success(), "{line}");
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
