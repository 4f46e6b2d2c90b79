//! The install operation, step by step and fault by fault, in process against the test
//! double in `fake.rs`. Every outcome and every step's failure is here, and every test
//! checks where the user's media ended up. The real-QEMU tests (`outcomes.rs`, `cli.rs`)
//! remain the acceptance; these make each path cheap to exercise.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;
use vmguest::{HResult, InstallOptions, InstallReport, Settings, Silent, VirtualPc};

use crate::fake::{drive, FakeHv, Fault, World, VM};
use crate::fixtures::ic_iso;

const USER_DISC: &str = "/srv/iso/user-disc.iso";

struct Case {
    _dir: TempDir,
    iso: PathBuf,
    hv: FakeHv,
}

fn case(world: World) -> Case {
    let dir = tempfile::tempdir().unwrap();
    let iso = ic_iso(dir.path(), "ic.iso", "2.0.0", "true\n");
    Case {
        _dir: dir,
        iso,
        hv: FakeHv::new(world),
    }
}

impl Case {
    fn install(&self, tweak: impl FnOnce(&mut InstallOptions)) -> InstallReport {
        let mut options = InstallOptions {
            iso: Some(self.iso.clone()),
            timeout: Duration::from_secs(30),
            agent_wait: Duration::ZERO,
            ..Default::default()
        };
        tweak(&mut options);
        vmguest::operation::install(
            &self.hv,
            &Settings::isolated("/nonexistent"),
            VM,
            &options,
            &Silent,
        )
    }

    fn ic(&self) -> String {
        self.iso.display().to_string()
    }
}

fn phases(r: &InstallReport) -> Vec<&'static str> {
    r.phases.iter().map(|p| p.phase).collect()
}

fn with_user_disc() -> World {
    let mut w = World::new();
    w.drives = vec![drive("dvd0", Some(USER_DISC))];
    w
}

fn replace(o: &mut InstallOptions) {
    o.replace_media = true;
}

#[test]
fn agent_install_runs_every_step_in_contract_order_and_empties_the_drive() {
    let c = case(World::new());
    let r = c.install(|_| {});
    assert_eq!(r.result, HResult::SOk, "{}", r.message);
    assert_eq!(
        phases(&r),
        [
            "resolve",
            "lock",
            "connect",
            "recover",
            "check-running",
            "connect-agent",
            "locate-iso",
            "choose-drive",
            "pre-install",
            "iso-digest",
            "stage-iso",
            "journal",
            "insert-ic",
            "prepare-guest",
            "run-installer",
            "unmount-in-guest",
            "eject-ic",
        ]
    );
    let w = c.hv.world();
    assert_eq!(w.media("dvd0"), None);
    assert!(!w.drives[0].tray_open, "the tray is closed again, as found");
    assert!(w.called("exec installer") && w.called("write /var/lib/vmguest"));
    assert!(
        r.message
            .contains("installed vmguest test components 2.0.0"),
        "{}",
        r.message
    );
}

#[test]
fn without_an_agent_the_media_stays_in_for_autorun() {
    let mut w = World::new();
    w.agent = false;
    let c = case(w);
    let r = c.install(|_| {});
    assert_eq!(r.result, HResult::SOk, "{}", r.message);
    assert_eq!(r.mode, Some(vmguest::Mode::Autorun));
    assert_eq!(c.hv.world().media("dvd0"), Some(c.ic()));
    assert!(r.message.contains("autorun"), "{}", r.message);
}

#[test]
fn an_agent_that_does_not_answer_falls_back_to_autorun_with_a_note() {
    let c = case(World::new().fault(Fault::AgentDown));
    let r = c.install(|_| {});
    assert_eq!(r.result, HResult::SOk, "{}", r.message);
    assert_eq!(c.hv.world().media("dvd0"), Some(c.ic()));
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("falling back to autorun")),
        "{:?}",
        r.notes
    );
}

#[test]
fn an_unknown_vm_is_vm_unknown_and_nothing_is_touched() {
    let c = case(World::new());
    let r = vmguest::operation::install(
        &c.hv,
        &Settings::isolated("/nonexistent"),
        "nosuch",
        &InstallOptions::default(),
        &Silent,
    );
    assert_eq!(r.result, HResult::VmUnknown);
    assert!(c.hv.world().calls.is_empty());
}

#[test]
fn a_silent_monitor_or_a_paused_vm_is_not_running() {
    let c = case(World::new().fault(Fault::Connect));
    assert_eq!(c.install(|_| {}).result, HResult::VmNotRunning);
    let mut w = World::new();
    w.state = "paused".into();
    let c = case(w);
    let r = c.install(|_| {});
    assert_eq!(r.result, HResult::VmNotRunning);
    assert!(r.message.contains("is paused"), "{}", r.message);
    assert!(!c.hv.world().called("insert"));
}

#[test]
fn a_missing_iso_is_file_not_found() {
    let c = case(World::new());
    let r = c.install(|o| o.iso = Some("/nonexistent/ic.iso".into()));
    assert_eq!(r.result, HResult::FileNotFound);
    assert!(!c.hv.world().called("insert"));
}

#[test]
fn no_drive_or_only_occupied_drives_are_drive_invalid_and_the_disc_stays() {
    let mut w = World::new();
    w.drives.clear();
    assert_eq!(case(w).install(|_| {}).result, HResult::DriveInvalid);

    let c = case(with_user_disc());
    let r = c.install(|_| {});
    assert_eq!(r.result, HResult::DriveInvalid);
    assert!(r.message.contains("-ReplaceMedia"), "{}", r.message);
    assert_eq!(c.hv.world().media("dvd0").as_deref(), Some(USER_DISC));

    // Without an agent, a borrowed disc could never be put back.
    let mut w = with_user_disc();
    w.agent = false;
    let c = case(w);
    let r = c.install(replace);
    assert_eq!(r.result, HResult::DriveInvalid);
    assert!(r.message.contains("needs the guest agent"), "{}", r.message);
    assert_eq!(c.hv.world().media("dvd0").as_deref(), Some(USER_DISC));
}

#[test]
fn a_borrowed_disc_goes_back_after_a_good_install() {
    let c = case(with_user_disc());
    let r = c.install(replace);
    assert_eq!(r.result, HResult::SOk, "{}", r.message);
    assert_eq!(r.media_restored, Some(true));
    assert!(phases(&r).ends_with(&["eject-ic", "restore-media"]));
    assert_eq!(c.hv.world().media("dvd0").as_deref(), Some(USER_DISC));
}

#[test]
fn a_locked_tray_refuses_the_borrow_and_the_disc_never_leaves() {
    let c = case(with_user_disc().fault(Fault::TrayLocked));
    let r = c.install(replace);
    assert_eq!(r.result, HResult::MediaUnmountFail, "{}", r.message);
    assert!(r.message.contains("stays in"), "{}", r.message);
    assert!(!c.hv.world().called("insert"));
    assert_eq!(c.hv.world().media("dvd0").as_deref(), Some(USER_DISC));
}

#[test]
fn a_failed_insert_puts_the_borrowed_disc_straight_back() {
    let c = case(with_user_disc().fault(Fault::InsertIc));
    let r = c.install(replace);
    assert_eq!(r.result, HResult::DispException, "{}", r.message);
    assert!(phases(&r).ends_with(&["insert-ic", "restore-media"]));
    assert_eq!(r.media_restored, Some(true));
    assert_eq!(c.hv.world().media("dvd0").as_deref(), Some(USER_DISC));

    let c = case(World::new().fault(Fault::InsertIc));
    assert_eq!(c.install(|_| {}).result, HResult::DispException);
    assert_eq!(c.hv.world().media("dvd0"), None);
}

#[test]
fn guest_side_failures_eject_the_ic_media_and_restore_the_disc() {
    for fault in [
        Fault::InstallerFails,
        Fault::Mount,
        Fault::AgentDiesDuringInstall,
    ] {
        let c = case(with_user_disc().fault(fault));
        let r = c.install(replace);
        assert_eq!(r.result, HResult::DispException, "{fault:?}: {}", r.message);
        let p = phases(&r);
        assert!(
            p.ends_with(&["eject-ic", "restore-media"]),
            "{fault:?}: {p:?}"
        );
        assert_eq!(r.media_restored, Some(true), "{fault:?}");
        assert_eq!(
            c.hv.world().media("dvd0").as_deref(),
            Some(USER_DISC),
            "{fault:?}"
        );
    }
}

#[test]
fn a_failing_installer_is_reported_with_its_exit_code_and_not_recorded() {
    let c = case(World::new().fault(Fault::InstallerFails));
    let r = c.install(|_| {});
    assert_eq!(r.result, HResult::DispException);
    assert!(r.message.contains("exit code 3"), "{}", r.message);
    assert_eq!(r.installer.as_ref().and_then(|i| i.exit_code), Some(3));
    assert!(!c.hv.world().called("write /var/lib/vmguest"));
    assert_eq!(c.hv.world().media("dvd0"), None);
}

/// The guest locks the tray after the IC media went in: the eject fails, and the
/// borrowed disc cannot go back. The report says both, and that the components went in.
#[test]
fn a_tray_locked_after_the_install_is_media_unmount_fail() {
    let c = case(with_user_disc().fault(Fault::LocksTrayOnInstall));
    let r = c.install(replace);
    assert_eq!(r.result, HResult::MediaUnmountFail, "{}", r.message);
    assert!(r.message.contains("were installed"), "{}", r.message);
    assert!(r.message.contains("could not be put back"), "{}", r.message);
    assert_eq!(r.media_restored, Some(false));
    assert_eq!(c.hv.world().media("dvd0"), Some(c.ic()));
}

#[test]
fn a_failed_restore_is_reported_and_media_restored_is_false() {
    let c = case(with_user_disc().fault(Fault::Restore));
    let r = c.install(replace);
    assert_eq!(r.result, HResult::DispException, "{}", r.message);
    assert_eq!(r.media_restored, Some(false));
    assert!(
        r.message.contains("putting borrowed media"),
        "{}",
        r.message
    );
}

#[test]
fn a_vm_that_vanishes_after_the_insert_fails_the_autorun() {
    let mut w = World::new().fault(Fault::DiesAfterInsert);
    w.agent = false;
    let c = case(w);
    let r = c.install(|_| {});
    assert_eq!(r.result, HResult::DispException, "{}", r.message);
    assert!(
        phases(&r).ends_with(&["autorun", "eject-ic"]),
        "{:?}",
        phases(&r)
    );
    assert!(
        r.notes.iter().any(|n| n.contains("still in drive dvd0")),
        "{:?}",
        r.notes
    );
}

#[test]
fn what_if_decides_everything_and_changes_nothing() {
    let c = case(with_user_disc());
    let r = c.install(|o| {
        o.what_if = true;
        o.replace_media = true;
    });
    assert_eq!(r.result, HResult::SOk, "{}", r.message);
    assert!(
        r.message.starts_with("What if: would insert"),
        "{}",
        r.message
    );
    assert!(r.message.contains("borrowing its media"), "{}", r.message);
    let w = c.hv.world();
    assert!(!w.called("insert") && !w.called("eject") && !w.called("exec"));
}

#[test]
fn a_panic_inside_the_operation_is_disp_e_exception_not_an_unwind() {
    let c = case(World::new().fault(Fault::QueryBlockPanics));
    let r = c.install(|_| {});
    assert_eq!(r.result, HResult::DispException);
    assert!(
        r.message.contains("internal error in vmguest"),
        "{}",
        r.message
    );
    let json: Value = serde_json::to_value(&r).unwrap();
    assert_eq!(json["hresult"], "0x80020009");
}

#[test]
fn every_outcome_but_success_carries_its_cause_chain() {
    let c = case(World::new().fault(Fault::Connect));
    let r = c.install(|_| {});
    let causes = &r.error.as_ref().expect("an error record").causes;
    assert_eq!(
        causes.last().map(String::as_str),
        Some("connection closed by peer")
    );
}

#[test]
fn get_vm_opens_one_monitor_and_one_agent_connection_per_vm() {
    let c = case(with_user_disc());
    let host = VirtualPc::with_hypervisor(c.hv.clone(), Settings::isolated("/nonexistent"));
    let vm = host.find_virtual_machine(VM).unwrap();
    let s = vm.summary().unwrap();
    assert_eq!(s.state, "running");
    assert_eq!(s.dvd_drives.len(), 1);
    assert!(s.guest_os.is_some());
    let w = c.hv.world();
    assert_eq!((w.control_connections, w.agent_connections), (1, 1));
    drop(w);
    assert_eq!(
        host.find_virtual_machine("nosuch").err().map(|f| f.hresult),
        Some(HResult::VmUnknown)
    );
    // The library's read calls never panic to their caller either.
    c.hv.world().faults.insert(Fault::QueryBlockPanics);
    let f = vm.dvd_drives().unwrap_err();
    assert_eq!(f.hresult, HResult::DispException);
}

/// The audit digest comes from the digest cache while the ISO is unchanged, so a warm
/// install does not re-read the image; a changed ISO is hashed again.
#[test]
fn the_iso_digest_comes_from_the_cache_until_the_file_changes() {
    let c = case(World::new());
    let cache = tempfile::tempdir().unwrap();
    let mut settings = Settings::isolated("/nonexistent");
    settings.digest_cache = Some(cache.path().to_owned());
    let options = InstallOptions {
        iso: Some(c.iso.clone()),
        no_wait: true,
        ..Default::default()
    };
    let install = || vmguest::operation::install(&c.hv, &settings, VM, &options, &Silent);
    let eject = || c.hv.world().drives[0].media = None;
    let real = vmguest::iso::sha256_file(&c.iso).unwrap();
    assert_eq!(install().iso_sha256.as_deref(), Some(real.as_str()));
    eject();
    // Prove the second install reads the entry: make it say something else.
    let entry = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_none())
        .expect("a digest entry");
    let text = std::fs::read_to_string(&entry).unwrap();
    let planted = "a".repeat(64);
    std::fs::write(&entry, text.replace(&real, &planted)).unwrap();
    assert_eq!(install().iso_sha256.as_deref(), Some(planted.as_str()));
    eject();
    // Any change to the file (here its ctime, through a chmod) retires the entry.
    std::thread::sleep(Duration::from_millis(20));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&c.iso, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(install().iso_sha256.as_deref(), Some(real.as_str()));
}

mod journal {
    //! The crash journal and the per-VM lock, in process. The real-QEMU tests
    //! in `crash.rs` kill a real vmguest; these cover each branch of the recovery.

    use super::*;
    use vmguest::vm::Media;
    use vmguest::{Journal, JournalEntry as Entry};

    fn media(file: &str) -> Media {
        Media::iso(file)
    }

    struct Stateful {
        c: Case,
        state: TempDir,
    }

    impl Stateful {
        fn new(world: World) -> Stateful {
            Stateful {
                c: case(world),
                state: tempfile::tempdir().unwrap(),
            }
        }

        fn settings(&self) -> Settings {
            let mut s = Settings::isolated("/nonexistent");
            s.state_dir = Some(self.state.path().to_owned());
            s
        }

        fn journal(&self) -> Journal {
            Journal::new(self.state.path())
        }

        fn install(&self, tweak: impl FnOnce(&mut InstallOptions)) -> InstallReport {
            let mut options = InstallOptions {
                iso: Some(self.c.iso.clone()),
                timeout: Duration::from_secs(5),
                ..Default::default()
            };
            tweak(&mut options);
            vmguest::operation::install(&self.c.hv, &self.settings(), VM, &options, &Silent)
        }

        /// What a run killed mid-install leaves: the IC media in, the entry open.
        fn crashed_run(&self, user: Option<&str>) {
            let ic = self.c.ic();
            let entry = Entry::new(VM, "fake:vm1", "dvd0", user.map(media), &ic);
            self.journal().record(&entry).unwrap();
            self.c.hv.world().drives = vec![drive("dvd0", Some(&ic))];
        }
    }

    #[test]
    fn the_next_install_puts_back_the_disc_a_killed_run_borrowed() {
        let s = Stateful::new(World::new());
        s.crashed_run(Some(USER_DISC));
        let r = s.install(replace);
        assert_eq!(r.result, HResult::SOk, "{}", r.message);
        let recovered = r.recovered.as_ref().expect("the record says it recovered");
        assert_eq!(
            recovered.user_media.as_ref().map(|m| m.file.as_str()),
            Some(USER_DISC)
        );
        assert!(
            r.notes.iter().any(|n| n.contains("finished its restore")),
            "{:?}",
            r.notes
        );
        // The IC media was never taken for the user's disc: it borrowed the real one.
        assert_eq!(
            r.borrowed_media.as_ref().map(|m| m.file.as_str()),
            Some(USER_DISC)
        );
        assert_eq!(s.c.hv.world().media("dvd0").as_deref(), Some(USER_DISC));
        assert!(s.journal().list().is_empty());
    }

    #[test]
    fn without_replace_media_a_leftover_ic_no_longer_blocks_the_drive() {
        let s = Stateful::new(World::new());
        s.crashed_run(None);
        let r = s.install(|_| {});
        assert_eq!(r.result, HResult::SOk, "{}", r.message);
        assert!(r.recovered.is_some());
        assert_eq!(s.c.hv.world().media("dvd0"), None);
        assert!(s.journal().list().is_empty());
    }

    #[test]
    fn a_guest_that_still_holds_the_ic_media_keeps_the_entry() {
        let s = Stateful::new(World::new().fault(Fault::TrayLocked));
        s.crashed_run(Some(USER_DISC));
        let r = s.install(replace);
        assert_eq!(r.result, HResult::MediaUnmountFail, "{}", r.message);
        assert!(
            r.message.contains("the journal keeps the entry"),
            "{}",
            r.message
        );
        assert!(
            r.message.contains("goes back once the guest lets go"),
            "{}",
            r.message
        );
        assert_eq!(s.journal().list().len(), 1);
        // Once the guest lets go, the next run finishes the restore.
        s.c.hv.world().faults.clear();
        let r = s.install(|o| o.what_if = true);
        assert!(
            r.notes.iter().any(|n| n.contains("would eject it")),
            "{:?}",
            r.notes
        );
        assert_eq!(s.journal().list().len(), 1, "-WhatIf changes nothing");
        let r = s.install(replace);
        assert_eq!(r.result, HResult::SOk, "{}", r.message);
        assert_eq!(s.c.hv.world().media("dvd0").as_deref(), Some(USER_DISC));
        assert!(s.journal().list().is_empty());
    }

    #[test]
    fn an_install_that_cannot_restore_leaves_its_entry_for_the_next_run() {
        let s = Stateful::new(with_user_disc().fault(Fault::LocksTrayOnInstall));
        let r = s.install(replace);
        assert_eq!(r.result, HResult::MediaUnmountFail, "{}", r.message);
        assert!(r.journal_pending);
        let open = s.journal().list();
        assert_eq!(open.len(), 1);
        assert_eq!(
            open[0].user_media.as_ref().map(|m| m.file.as_str()),
            Some(USER_DISC)
        );
        s.c.hv.world().faults.clear();
        let r = s.install(replace);
        assert_eq!(r.result, HResult::SOk, "{}", r.message);
        assert!(r.recovered.is_some());
        assert_eq!(s.c.hv.world().media("dvd0").as_deref(), Some(USER_DISC));
        assert!(s.journal().list().is_empty());
    }

    #[test]
    fn a_drive_someone_else_changed_since_is_left_alone() {
        let s = Stateful::new(World::new());
        s.crashed_run(Some(USER_DISC));
        s.c.hv.world().drives = vec![drive("dvd0", Some("/srv/iso/admin-chose-this.iso"))];
        let r = s.install(|_| {});
        assert_eq!(r.result, HResult::DriveInvalid, "{}", r.message);
        assert!(
            r.notes.iter().any(|n| n.contains("left as it is")),
            "{:?}",
            r.notes
        );
        assert_eq!(
            s.c.hv.world().media("dvd0").as_deref(),
            Some("/srv/iso/admin-chose-this.iso")
        );
        assert!(s.journal().list().is_empty());
    }

    #[test]
    fn a_second_install_on_the_same_vm_waits_for_the_first() {
        let s = Stateful::new(World::new());
        let held =
            vmguest::lock::acquire(s.state.path(), VM, "fake:vm1", Duration::ZERO, || {}).unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(400));
            drop(held);
        });
        let r = s.install(|_| {});
        release.join().unwrap();
        assert_eq!(r.result, HResult::SOk, "{}", r.message);
        assert!(
            r.notes
                .iter()
                .any(|n| n.contains("waited for another vmguest install")),
            "{:?}",
            r.notes
        );
        // A holder that never lets go: the wait ends at the limit, and no media moved.
        let _held =
            vmguest::lock::acquire(s.state.path(), VM, "fake:vm1", Duration::ZERO, || {}).unwrap();
        let r = s.install(|o| o.timeout = Duration::from_millis(300));
        assert_eq!(r.result, HResult::DispException, "{}", r.message);
        assert!(
            r.message.contains("another vmguest install"),
            "{}",
            r.message
        );
    }
}

/// SIGINT, SIGTERM or SIGHUP while the installer runs: the installer is killed, the IC
/// media comes out and the borrowed disc goes back.
#[test]
fn a_cancel_request_mid_install_kills_the_installer_and_restores_the_disc() {
    let c = case(with_user_disc().fault(Fault::InstallerHangs));
    let cancel = vmguest::Cancel::new();
    let asker = cancel.clone();
    let hv = c.hv.clone();
    let signal = std::thread::spawn(move || {
        while !hv.world().called("exec installer") {
            std::thread::sleep(Duration::from_millis(10));
        }
        asker.request(libc::SIGTERM);
    });
    let r = c.install(|o| {
        o.replace_media = true;
        o.cancel = cancel;
    });
    signal.join().unwrap();
    assert_eq!(r.result, HResult::DispException, "{}", r.message);
    assert!(
        r.message.contains("interrupted by SIGTERM"),
        "{}",
        r.message
    );
    assert!(r.message.contains("was killed"), "{}", r.message);
    assert_eq!(c.hv.world().killed, 1);
    assert!(phases(&r).ends_with(&["unmount-in-guest", "eject-ic", "restore-media"]));
    assert_eq!(c.hv.world().media("dvd0").as_deref(), Some(USER_DISC));
}

#[test]
fn a_cancel_request_before_the_media_moves_changes_nothing() {
    let c = case(with_user_disc());
    let cancel = vmguest::Cancel::new();
    cancel.request(libc::SIGINT);
    let r = c.install(|o| {
        o.replace_media = true;
        o.cancel = cancel;
    });
    assert_eq!(r.result, HResult::DispException);
    assert!(r.message.contains("interrupted by SIGINT"), "{}", r.message);
    assert!(!c.hv.world().called("eject") && !c.hv.world().called("insert"));
}

/// A VM paused under the installer is named as the cause at the next poll, not after
/// the agent's timeouts, and the guest is asked nothing more.
#[test]
fn a_vm_paused_mid_install_is_named_and_fails_fast() {
    let c = case(with_user_disc().fault(Fault::PausesDuringInstall));
    let started = std::time::Instant::now();
    let r = c.install(replace);
    assert_eq!(r.result, HResult::DispException, "{}", r.message);
    assert!(r.message.contains("the VM is paused"), "{}", r.message);
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("not unmounting in the guest")),
        "{:?}",
        r.notes
    );
    // The locked tray is not retried: a paused guest cannot let go of it.
    let ejects =
        c.hv.world()
            .calls
            .iter()
            .filter(|c| c.starts_with("eject"))
            .count();
    assert_eq!(
        ejects,
        2,
        "one borrow, one eject attempt: {:?}",
        c.hv.world().calls
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r.media_restored, Some(false));
}

/// An own-format ISO whose `[verify.linux]` the double answers with `World::version`.
fn verified_case(world: World) -> Case {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("v.d");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("vmguest-ic.toml"),
        "[components]\nfamily = \"vmguest\"\nname = \"verified tools\"\nversion = \"2.0.0\"\n\n\
         [install.linux]\ncommand = \"sh ./install.sh\"\n\n\
         [verify.linux]\ncommand = \"cat /opt/vmguest-ic/VERSION\"\n",
    )
    .unwrap();
    std::fs::write(src.join("install.sh"), "true\n").unwrap();
    let iso = crate::fixtures::mkisofs(&src, &dir.path().join("v.iso"), "VERIFIED_2_0_0");
    Case {
        _dir: dir,
        iso,
        hv: FakeHv::new(world),
    }
}

fn noted(r: &InstallReport, text: &str) -> bool {
    r.notes.iter().any(|n| n.contains(text))
}

/// A guest that just booted: its agent channel is there, the agent answers only after a
/// few attempts. It gets the unattended install, and the note says it was waited for.
#[test]
fn an_agent_that_answers_late_is_waited_for() {
    let mut w = World::new();
    w.agent_late = 2;
    let c = case(w);
    let r = c.install(|o| o.agent_wait = Duration::from_secs(20));
    assert_eq!(r.result, HResult::SOk, "{}", r.message);
    assert_eq!(r.mode, Some(vmguest::Mode::Agent));
    assert!(noted(&r, "then it answered"), "{:?}", r.notes);
    assert!(c.hv.world().called("exec installer"));
    assert_eq!(c.hv.world().media("dvd0"), None);
}

/// A channel with no agent behind it: autorun once -AgentWaitSec has passed, not sooner
/// and not much later.
#[test]
fn a_channel_without_an_agent_gets_autorun_after_the_wait() {
    let c = case(World::new().fault(Fault::AgentDown));
    let t = std::time::Instant::now();
    let r = c.install(|o| o.agent_wait = Duration::from_secs(2));
    let took = t.elapsed();
    assert_eq!(r.result, HResult::SOk, "{}", r.message);
    assert_eq!(r.mode, Some(vmguest::Mode::Autorun));
    assert!(noted(&r, "never answered"), "{:?}", r.notes);
    assert!(noted(&r, "falling back to autorun"), "{:?}", r.notes);
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(c.hv.world().media("dvd0"), Some(c.ic()));
}

/// `guest-exec` switched off (`--block-rpcs`): refused by name, with how to allow it,
/// before the media moved; -NoWait still inserts for autorun.
#[test]
fn an_agent_with_exec_switched_off_is_refused_before_anything_changes() {
    let c = case(with_user_disc().fault(Fault::BlocksExec));
    let r = c.install(replace);
    assert_eq!(r.result, HResult::DispException, "{}", r.message);
    for text in [
        "guest-exec, guest-exec-status",
        "block-rpcs",
        "qemu-ga.conf",
        "-NoWait",
    ] {
        assert!(r.message.contains(text), "{text}: {}", r.message);
    }
    assert!(!c.hv.world().called("eject") && !c.hv.world().called("insert"));
    assert_eq!(c.hv.world().media("dvd0").as_deref(), Some(USER_DISC));

    let c = case(World::new().fault(Fault::BlocksExec));
    let r = c.install(|o| o.no_wait = true);
    assert_eq!(r.result, HResult::SOk, "{}", r.message);
    assert_eq!(r.mode, Some(vmguest::Mode::Autorun));
}

/// Only the file calls switched off: the message names exactly those, and what they
/// are for.
#[test]
fn an_agent_with_the_file_calls_switched_off_names_them() {
    let c = case(World::new().fault(Fault::BlocksFiles));
    let r = c.install(|_| {});
    assert_eq!(r.result, HResult::DispException, "{}", r.message);
    assert!(
        r.message
            .contains("guest-file-open, guest-file-read, guest-file-close switched off"),
        "{}",
        r.message
    );
    assert!(!r.message.contains("guest-exec"), "{}", r.message);
    assert!(!c.hv.world().called("insert"));
}

/// The agent restarted under the installer (a new instance refuses the old pid), and
/// the media's version reads back: S_OK with a note, and the drive empty again.
#[test]
fn an_agent_restarted_mid_install_is_a_success_when_the_version_verifies() {
    let mut w = World::new().fault(Fault::AgentRestartsDuringInstall);
    w.installs = Some("2.0.0".into());
    let c = verified_case(w);
    let r = c.install(|_| {});
    assert_eq!(r.result, HResult::SOk, "{}", r.message);
    assert!(
        noted(&r, "the guest agent restarted during the install"),
        "{:?}",
        r.notes
    );
    let w = c.hv.world();
    assert!(w.called("exec umount"), "{:?}", w.calls);
    assert_eq!(w.media("dvd0"), None);
}

/// The same restart, but nothing tells the outcome: never a false S_OK.
#[test]
fn an_agent_restarted_mid_install_without_verification_is_an_unknown_outcome() {
    // The probe reads nothing.
    let c = verified_case(World::new().fault(Fault::AgentRestartsDuringInstall));
    let r = c.install(|_| {});
    assert_eq!(r.result, HResult::DispException, "{}", r.message);
    assert!(
        r.message.contains("the outcome is unknown"),
        "{}",
        r.message
    );
    assert!(
        r.message.contains("tells no installed version"),
        "{}",
        r.message
    );
    assert_eq!(c.hv.world().media("dvd0"), None, "clean-up ran");

    // The probe reads the old version.
    let mut w = World::new().fault(Fault::AgentRestartsDuringInstall);
    w.installs = Some("1.9.0".into());
    let c = verified_case(w);
    let r = c.install(|_| {});
    assert_eq!(r.result, HResult::DispException, "{}", r.message);
    assert!(
        r.message.contains("still runs verified tools 1.9.0"),
        "{}",
        r.message
    );

    // -Force over the version the guest already ran: reading it back proves nothing.
    let mut w = World::new().fault(Fault::AgentRestartsDuringInstall);
    w.version = Some("2.0.0".into());
    let c = verified_case(w);
    let r = c.install(|o| o.force = true);
    assert_eq!(r.result, HResult::DispException, "{}", r.message);
    assert!(
        r.message.contains("before the install too"),
        "{}",
        r.message
    );

    // No version check at all.
    let c = case(World::new().fault(Fault::AgentRestartsDuringInstall));
    let r = c.install(|_| {});
    assert_eq!(r.result, HResult::DispException, "{}", r.message);
    assert!(
        r.message.contains("the outcome is unknown"),
        "{}",
        r.message
    );
    assert!(r.message.contains("no version check"), "{}", r.message);
}

/// The agent stops answering under the installer and never comes back within
/// -TimeoutSec: the guest is asked nothing more, and the journal keeps the entry for the
/// next run (the guest still holds the media).
#[test]
fn an_agent_that_never_comes_back_leaves_clean_up_to_the_journal() {
    let c = case(
        with_user_disc()
            .fault(Fault::AgentNeverBack)
            .fault(Fault::LocksTrayOnInstall),
    );
    let state = tempfile::tempdir().unwrap();
    let mut settings = Settings::isolated("/nonexistent");
    settings.state_dir = Some(state.path().to_owned());
    let options = InstallOptions {
        iso: Some(c.iso.clone()),
        replace_media: true,
        timeout: Duration::from_secs(2),
        agent_wait: Duration::ZERO,
        ..Default::default()
    };
    let t = std::time::Instant::now();
    let r = vmguest::operation::install(&c.hv, &settings, VM, &options, &Silent);
    assert_eq!(r.result, HResult::DispException, "{}", r.message);
    assert!(r.message.contains("did not answer again"), "{}", r.message);
    assert!(noted(&r, "not unmounting in the guest"), "{:?}", r.notes);
    assert!(r.journal_pending, "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
}
