//! `vmguest`: PowerShell-style cmdlets over the vmguest library.

mod args;
mod output;
mod pipeline;
mod signals;
mod spinner;

use std::io::IsTerminal;
use std::time::Duration;

use clap::Parser;
use vmguest::fleet::HostFailure;
use vmguest::kinds::GuestKind;
use vmguest::plugin::{context, PluginSet};
use vmguest::{
    Failure, Fleet, HResult, InstallOptions, InstallReport, Overrides, Settings, VirtualMachine,
};

use std::sync::atomic::{AtomicBool, Ordering};

use args::{
    Cli, Cmdlet, Common, ErrorAction, GetIsoArgs, GetVmArgs, InstallArgs, InstallPluginArgs,
    NewPluginArgs, RepairArgs, TestPluginArgs,
};
use pipeline::Target;

fn main() {
    let args = match args::utf8(std::env::args_os()) {
        Ok(args) => args,
        Err(bad) => {
            eprintln!("vmguest : argument {bad:?} is not valid UTF-8");
            std::process::exit(2);
        }
    };
    let cli = Cli::parse_from(args::normalize(args));
    // Test-Plugin is for authors: what their plugin logs shows without -Verbose.
    let plugin_log = matches!(cli.cmdlet, Cmdlet::TestPlugin(_));
    init_tracing(cli.common.verbose, plugin_log);
    // A panic is a bug; it still ends as DISP_E_EXCEPTION, not as a crash trace.
    std::panic::set_hook(Box::new(|info| tracing::error!("internal error: {info}")));
    // Settings are read once, here, and passed down.
    let settings = Settings::resolve(Overrides {
        vm_dir: cli.common.vm_dir.clone(),
        plugin_dir: cli.common.plugin_dir.clone(),
        connection_uris: cli.common.connection_uris(),
    });
    let c = &cli.common;
    let code = match cli.cmdlet {
        Cmdlet::InstallIntegrationComponents(a) => install(c, settings, a),
        Cmdlet::GetVm(a) => get_vm(c, settings, a),
        Cmdlet::GetIntegrationComponentsIso(a) => get_iso(c, settings, a),
        Cmdlet::RepairVmMedia(a) => repair(c, settings, a),
        Cmdlet::GetPlugin => get_plugin(c, &settings),
        Cmdlet::TestPlugin(a) => test_plugin(c, settings, a),
        Cmdlet::InstallPlugin(a) => install_plugin(c, &settings, a),
        Cmdlet::NewPlugin(a) => new_plugin(c, a),
        Cmdlet::Completions { shell } => {
            args::completions(shell, &mut std::io::stdout());
            0
        }
        Cmdlet::Man => match args::man(&mut std::io::stdout()) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("vmguest : writing the man page: {e}");
                HResult::DispException.exit_code()
            }
        },
    };
    std::process::exit(code);
}

fn init_tracing(verbose: bool, plugin_log: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(f) if !f.is_empty() => EnvFilter::new(f),
        _ if verbose => EnvFilter::new("vmguest=debug"),
        _ if plugin_log => EnvFilter::new(format!(
            "vmguest=warn,{}=info",
            vmguest::plugin::sandbox::LOG_TARGET
        )),
        _ => EnvFilter::new("vmguest=warn"),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(spinner::Stderr)
        // Fields may quote guests and plugins: no escape sequences reach the terminal.
        .fmt_fields(spinner::PrintableFields)
        // Colour for people; plain text for logs and pipes.
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

/// Names from the arguments, else from stdin (the pipeline).
fn vm_names(cmdlet: &str, named: Vec<String>, positional: Vec<String>) -> Result<Vec<Target>, i32> {
    let mut names = named;
    names.extend(positional);
    if !names.is_empty() {
        return Ok(names.into_iter().map(Target::named).collect());
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("{cmdlet} : missing -VMName (give it, or pipe names or Get-VM -OutputFormat Json into it)");
        return Err(2);
    }
    match pipeline::read_names(stdin.lock()) {
        Ok(names) if !names.is_empty() => Ok(names),
        Ok(_) => {
            eprintln!("{cmdlet} : no VM names on stdin");
            Err(2)
        }
        Err(e) => {
            eprintln!("{cmdlet} : cannot read pipeline input: {e:#}");
            Err(2)
        }
    }
}

/// Apply -ErrorAction to one outcome; returns whether to go on.
fn report_error(common: &Common, cmdlet: &str, target: &str, failure: &Failure) -> bool {
    if common.error_action != ErrorAction::SilentlyContinue {
        output::error_record(
            cmdlet,
            target,
            failure.hresult,
            &format!("{:#}", failure.error),
            &failure.causes(),
        );
    }
    common.error_action != ErrorAction::Stop
}

/// [`report_error`], remembering the first outcome for the exit code.
fn first_error_of(
    common: &Common,
    cmdlet: &str,
    target: &str,
    failure: &Failure,
    first: &mut Option<HResult>,
) -> bool {
    first.get_or_insert(failure.hresult);
    report_error(common, cmdlet, target, failure)
}

/// What one line of a pipeline acts on: a VM found on a host, or why there is none.
enum Job<'f> {
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
    fn report(self, f: impl FnOnce(&VirtualMachine<'_>) -> InstallReport) -> InstallReport {
        match self {
            Job::Vm(vm) => f(&vm),
            Job::Failed { name, failure } => failed_report(&name, failure),
        }
    }
}

/// Each target on every host searched, in input order.
fn jobs<'f>(fleet: &'f Fleet, targets: &[Target]) -> Vec<Job<'f>> {
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

fn install(common: &Common, settings: Settings, a: InstallArgs) -> i32 {
    const CMDLET: &str = "Install-IntegrationComponents";
    let targets = match vm_names(CMDLET, a.vm_name, a.positional) {
        Ok(n) => n,
        Err(code) => return code,
    };
    let fleet = Fleet::open(settings);
    let host = &fleet;
    let options = InstallOptions {
        iso: a.path,
        replace_media: a.replace_media,
        no_wait: a.no_wait,
        timeout: Duration::from_secs(a.timeout_sec),
        what_if: a.what_if,
        plugins: (!common.no_plugins)
            .then(|| std::sync::Arc::new(PluginSet::discover(host.settings()))),
        cancel: vmguest::cancel::Cancel::new(),
        install_command: a.install_command,
        force: a.force,
        restart: a.restart,
    };
    signals::stop_on_signals(&options.cancel);
    pipeline(
        common,
        CMDLET,
        jobs(&fleet, &targets),
        a.throttle_limit,
        |job, progress| job.report(|vm| vm.guest_os().install_with_progress(&options, progress)),
    )
}

fn repair(common: &Common, settings: Settings, a: RepairArgs) -> i32 {
    const CMDLET: &str = "Repair-VMMedia";
    let mut names = a.vm_name;
    names.extend(a.positional);
    if names.is_empty() {
        names = settings
            .state_dir
            .as_deref()
            .map(vmguest::journal::Journal::new)
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
    pipeline(
        common,
        CMDLET,
        jobs(&fleet, &targets),
        args::DEFAULT_THROTTLE,
        |job, progress| job.report(|vm| vm.repair_media(&options, progress)),
    )
}

/// Run `each` for every VM, `throttle` at a time (one at a time with -ErrorAction Stop,
/// so that nothing starts after the first failure). Results stream as each VM ends: a
/// JSON line, or the table at the end in input order. The exit code is that of the
/// first VM in input order that failed.
fn pipeline(
    common: &Common,
    cmdlet: &str,
    jobs: Vec<Job<'_>>,
    throttle: u16,
    each: impl Fn(Job<'_>, &dyn vmguest::Progress) -> InstallReport + Sync,
) -> i32 {
    let throttle = match common.error_action {
        ErrorAction::Stop => 1,
        _ => usize::from(throttle).clamp(1, jobs.len().max(1)),
    };
    let names: Vec<String> = jobs.iter().map(|j| j.name().to_owned()).collect();
    let bars = spinner::Bars::new(!common.verbose);
    // Taken in input order, each by one worker.
    let queue = std::sync::Mutex::new(jobs.into_iter().enumerate());
    let stop = AtomicBool::new(false);
    let mut slots: Vec<Option<InstallReport>> = names.iter().map(|_| None).collect();
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::channel();
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
                report_error(common, cmdlet, &names[i], f);
            }
            if common.output_format == args::OutputFormat::Json {
                output::json_line(&report);
            }
            slots[i] = Some(report);
        }
    });
    drop(bars);
    let reports: Vec<InstallReport> = slots.into_iter().flatten().collect();
    if common.output_format == args::OutputFormat::Table {
        output::install_reports(common.output_format, &reports);
    }
    reports
        .iter()
        .find(|r| !r.result.is_success())
        .map_or(0, |r| r.result.exit_code())
}

/// A report for a VM whose install could not even start.
fn failed_report(name: &str, failure: HostFailure) -> InstallReport {
    let mut r = InstallReport::new(name);
    r.host = failure.host;
    r.fail(failure.failure);
    r.seal(String::new());
    r
}

fn get_vm(common: &Common, settings: Settings, a: GetVmArgs) -> i32 {
    const CMDLET: &str = "Get-VM";
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
                if common.output_format == args::OutputFormat::Json {
                    output::json_line(&s);
                }
                summaries.push(s);
            }
            Err(f) => {
                if !first_error_of(common, CMDLET, &target, &f, &mut first_error) {
                    break;
                }
            }
        }
    }
    if common.output_format == args::OutputFormat::Table {
        output::vm_summaries(common.output_format, &summaries);
    }
    first_error.map_or(0, HResult::exit_code)
}

fn get_iso(common: &Common, settings: Settings, a: GetIsoArgs) -> i32 {
    const CMDLET: &str = "Get-IntegrationComponentsIso";
    let mut first_error = None;
    let target = a.vm_name.clone().unwrap_or_default();
    let explicit = a.guest_os.as_deref().and_then(GuestKind::parse);
    let fleet = Fleet::open(settings);
    let host = &fleet;
    let info = match (&a.vm_name, explicit) {
        (Some(name), None) => match guest_info(&fleet, name) {
            Ok(info) => info,
            Err(f) => {
                first_error_of(common, CMDLET, name, &f, &mut first_error);
                return f.hresult.exit_code();
            }
        },
        _ => None,
    };
    let kind = explicit.unwrap_or_else(|| GuestKind::of(info.as_ref()));
    let mut selection = vmguest::iso::survey(host.settings(), a.path.as_deref(), kind);
    // The same choice Install-IntegrationComponents makes: policy plugins included.
    let mut decisions = Vec::new();
    let plugins = if common.no_plugins {
        Ok(())
    } else {
        let set = PluginSet::discover(host.settings());
        let guest = match &info {
            Some(i) => context::guest_os(Some(i)),
            None => context::guest_of_kind(kind),
        };
        set.check_admitted().and_then(|()| {
            set.apply_policy_to(
                &context::vm_info(&target),
                &guest,
                false,
                &mut selection,
                &mut decisions,
            )
        })
    };
    let mut views: Vec<_> = selection.candidates.iter().map(|c| c.view()).collect();
    // When the plugins fail, there is no choice: an install would fail too.
    if plugins.is_err() {
        views.iter_mut().for_each(|v| v.selected = false);
    }
    // The chosen ISO's digest, through the same cache an install uses.
    let chosen = plugins.is_ok().then_some(selection.chosen).flatten();
    if let Some(view) = chosen.and_then(|i| views.get_mut(i)) {
        let cache = host.settings().digest_cache.as_deref();
        view.sha256 = vmguest::iso::open_iso(std::path::Path::new(&view.path))
            .ok()
            .and_then(|f| vmguest::iso::digest::sha256(&f, cache).ok())
            .map(|(sha, _)| sha);
    }
    output::iso_candidates(common.output_format, &views);
    let failure = plugins.err().or_else(|| {
        selection
            .chosen
            .is_none()
            .then(|| vmguest::iso::not_found(&selection))
    });
    if let Some(f) = failure {
        first_error_of(common, CMDLET, &target, &f, &mut first_error);
    }
    first_error.map_or(0, HResult::exit_code)
}

fn get_plugin(common: &Common, settings: &Settings) -> i32 {
    let set = PluginSet::discover(settings);
    output::plugins(common.output_format, &set.infos());
    0
}

/// `KEY=VALUE` pairs.
fn pairs<T: From<String>>(
    items: &[String],
) -> Result<std::collections::BTreeMap<String, T>, String> {
    items
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), T::from(v.to_owned())))
                .ok_or_else(|| format!("{kv:?} is not KEY=VALUE"))
        })
        .collect()
}

type SettingsAndGrants = (
    std::collections::BTreeMap<String, String>,
    std::collections::BTreeMap<String, std::path::PathBuf>,
);

/// `-Setting KEY=VALUE` and `-Grant GUEST=HOST`; a malformed pair is reported.
fn settings_and_grants(
    cmdlet: &str,
    setting: &[String],
    grant: &[String],
) -> Option<SettingsAndGrants> {
    match (pairs(setting), pairs(grant)) {
        (Ok(s), Ok(g)) => Some((s, g)),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("{cmdlet} : {e}");
            None
        }
    }
}

fn install_plugin(common: &Common, run: &Settings, a: InstallPluginArgs) -> i32 {
    const CMDLET: &str = "Install-Plugin";
    let Some((settings, grants)) = settings_and_grants(CMDLET, &a.setting, &a.grant) else {
        return 2;
    };
    let dir = if a.scope.eq_ignore_ascii_case("system") {
        Some(std::path::PathBuf::from(vmguest::settings::SYSTEM_PLUGINS))
    } else {
        run.user_plugin_dir.clone()
    };
    let Some(dir) = dir else {
        eprintln!("{CMDLET} : no user plugin directory (no home directory); use -Scope System");
        return 2;
    };
    let req = vmguest::plugin::install::Request {
        component: a.path.clone(),
        dir,
        name: a.name,
        version: a.version,
        order: a.order,
        settings,
        grants,
        force: a.force,
    };
    if a.what_if {
        println!(
            "What if: installing {} into {}",
            req.component.display(),
            req.dir.display()
        );
        return 0;
    }
    let installed = vmguest::plugin::install::install(&req, run.plugin_cache());
    one_result(common, CMDLET, &a.path, installed, |mut info| {
        if run.plugin_dirs.contains(&req.dir) {
            info.directory_from = run.plugin_dirs_from.clone();
        } else {
            tracing::warn!(
                "installed, but plugins are read from {} only ({}): this one will not run",
                run.plugin_dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":"),
                run.plugin_dirs_from
            );
        }
        output::plugins(common.output_format, &[info]);
    })
}

fn new_plugin(common: &Common, a: NewPluginArgs) -> i32 {
    use vmguest::plugin::skeleton;
    let dir = a.path.unwrap_or_else(|| std::path::PathBuf::from(&a.name));
    let made = skeleton::create(&a.name, a.language, a.world, &dir, a.force, a.what_if);
    one_result(common, "New-Plugin", &dir, made, |s| {
        if a.what_if {
            println!(
                "What if: writing {} into {}",
                s.files.join(", "),
                dir.display()
            );
        } else {
            output::skeleton(common.output_format, &s);
        }
    })
}

/// What the VM's guest agent says about its OS (none without an agent).
fn guest_info(fleet: &Fleet, name: &str) -> Result<Option<vmguest::GuestOsInfo>, Failure> {
    fleet
        .find(name, None)
        .into_iter()
        .next()
        .map_or_else(
            || {
                Err(Failure::msg(
                    HResult::VmUnknown,
                    format!("no VM named {name:?}"),
                ))
            },
            |r| r.map_err(|h| h.failure),
        )
        .and_then(|vm| vm.guest_os().os_info())
}

fn test_plugin(common: &Common, run: Settings, a: TestPluginArgs) -> i32 {
    use vmguest::plugin::probe::{self, Subject, Target};
    const CMDLET: &str = "Test-Plugin";
    let Some((settings, grants)) = settings_and_grants(CMDLET, &a.setting, &a.grant) else {
        return 2;
    };
    let subject = match (a.manifest, a.path) {
        (Some(m), _) => Subject::Manifest(m),
        (None, Some(p)) => Subject::Component(p),
        (None, None) => unreachable!("clap requires -Path or -Manifest"),
    };
    let (Subject::Manifest(shown) | Subject::Component(shown)) = subject.clone();
    let cache = run.plugin_cache().map(std::path::Path::to_owned);
    let mut target = Target::sample(GuestKind::parse(&a.guest_os).unwrap_or(GuestKind::Unknown));
    let mut search = run.clone();
    if let Some(dir) = &a.iso_path {
        search.ic_path = Some(vec![dir.clone()]);
        target.store = format!("-IsoPath {}", dir.display());
    }
    if let Some(name) = &a.vm_name {
        let fleet = Fleet::open(run);
        let info = match guest_info(&fleet, name) {
            Ok(info) => info,
            Err(f) => return one_result(common, CMDLET, &shown, Err::<(), _>(f), |_| ()),
        };
        target.vm = name.clone();
        target.guest = vmguest::plugin::context::guest_os(info.as_ref());
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
    one_result(common, CMDLET, &shown, probed, |report| {
        output::probe(common.output_format, &report)
    })
}

/// A cmdlet of one result: shown, or its error record; the exit code either way.
fn one_result<T>(
    common: &Common,
    cmdlet: &str,
    target: &std::path::Path,
    result: Result<T, vmguest::Failure>,
    show: impl FnOnce(T),
) -> i32 {
    match result {
        Ok(v) => {
            show(v);
            0
        }
        Err(f) => {
            let mut first_error = None;
            first_error_of(
                common,
                cmdlet,
                &target.display().to_string(),
                &f,
                &mut first_error,
            );
            first_error.map_or(0, HResult::exit_code)
        }
    }
}
