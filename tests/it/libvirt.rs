//! The libvirt backend against real libvirt daemons started by the tests
//! (`libvirtd.rs`): every documented outcome through libvirt, two hosts in one
//! invocation, a host that is down, and a host reached over `qemu+ssh://`.

use serde_json::Value;

use crate::fixtures::{
    assert_file_not_found, assert_outcome, describe, good_installer, ic_iso, results, user_iso,
    vmguest_with, Cd, OutcomeMedia,
};
use crate::libvirtd::{DomainSpec, Libvirtd, Sshd};

fn run(uris: &[&str], args: &[&str], env: &[(&str, &str)]) -> (Vec<Value>, std::process::Output) {
    let joined = uris.join(",");
    let mut all: Vec<&str> = args.to_vec();
    if !uris.is_empty() {
        all.extend_from_slice(&["-ConnectionUri", &joined]);
    }
    all.extend_from_slice(&["-OutputFormat", "Json"]);
    let out = vmguest_with(&all, None, env);
    (results(&out), out)
}

fn install(uri: &str, vm: &str, extra: &[&str]) -> (Value, std::process::Output) {
    let mut args = vec!["Install-IntegrationComponents", vm];
    args.extend_from_slice(extra);
    let (mut r, out) = run(&[uri], &args, &[]);
    assert_eq!(r.len(), 1, "one result expected: {}", describe(&out));
    (r.remove(0), out)
}

/// One booted domain (agent channel, empty cdrom) carries the outcomes that need a
/// guest, in turn; firmware-only domains carry the rest.
#[test]
fn every_outcome_through_libvirt() {
    let mut host = Libvirtd::start();
    let uri = host.uri();
    let media = OutcomeMedia::new();
    let (isos, good_s, bad, user) = (&media.dir, media.good_s(), &media.bad, &media.user);

    host.domain(
        "guest",
        DomainSpec {
            boot: true,
            agent: true,
            ..Default::default()
        },
    );
    host.domain("paused", DomainSpec::default());
    host.set_paused("paused", true);
    host.domain(
        "off",
        DomainSpec {
            shut_off: true,
            ..Default::default()
        },
    );
    host.domain(
        "nocd",
        DomainSpec {
            cd: Cd::None,
            ..Default::default()
        },
    );
    host.domain(
        "full",
        DomainSpec {
            cd: Cd::With(user.clone()),
            ..Default::default()
        },
    );
    host.domain("noagent", DomainSpec::default());

    // Firmware-only domains first: they need no guest.
    let (r, out) = install(&uri, "paused", &["-Path", good_s]);
    assert_outcome(&r, &out, "VM_E_VM_NOT_RUNNING", "0xA0040206", 10);
    assert!(
        r["message"].as_str().unwrap().contains("paused"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        host.media("paused"),
        None,
        "nothing inserted into a paused domain"
    );

    let (r, out) = install(&uri, "off", &["-Path", good_s]);
    assert_outcome(&r, &out, "VM_E_VM_NOT_RUNNING", "0xA0040206", 10);

    let (r, out) = install(&uri, "nosuch", &["-Path", good_s]);
    assert_outcome(&r, &out, "VM_E_VM_UNKNOWN", "0xA0040207", 11);
    assert!(
        r["message"].as_str().unwrap().contains(&uri),
        "{}",
        describe(&out)
    );

    let (r, out) = install(&uri, "nocd", &["-Path", good_s]);
    assert_outcome(&r, &out, "VM_E_DRIVE_INVALID", "0xA0040502", 12);

    let (r, out) = install(&uri, "full", &["-Path", good_s]);
    assert_outcome(&r, &out, "VM_E_DRIVE_INVALID", "0xA0040502", 12);
    assert_eq!(
        host.media("full").as_deref(),
        user.to_str(),
        "the user's disc stays"
    );

    let missing = isos.path().join("missing.iso");
    let (r, out) = install(&uri, "noagent", &["-Path", missing.to_str().unwrap()]);
    assert_file_not_found(&r, &out);

    // No agent channel: the media stays in for the guest's autorun.
    let (r, out) = install(&uri, "noagent", &["-Path", good_s]);
    assert_outcome(&r, &out, "S_OK", "0x00000000", 0);
    assert_eq!(r["mode"], "autorun", "{}", describe(&out));
    assert_eq!(r["host"], uri.as_str());
    assert_eq!(host.media("noagent").as_deref(), Some(good_s));

    // The booted guest, through libvirt's agent channel, once its agent answers (the
    // guest boots in seconds under TCG; an agent that is not up yet means autorun).
    let (code, _) = host.guest_sh("guest", "true");
    assert_eq!(code, 0);
    let (r, out) = install(&uri, "guest", &["-Path", good_s]);
    assert_outcome(&r, &out, "S_OK", "0x00000000", 0);
    assert_eq!(r["mode"], "agent", "{}", describe(&out));
    assert_eq!(host.media("guest"), None, "the drive is empty again");
    let (code, status) = host.guest_sh("guest", "cat /opt/vmguest-ic/STATUS");
    assert_eq!((code, status.trim()), (0, "installed 1.0.0"));

    let (r, out) = install(&uri, "guest", &["-Path", bad.to_str().unwrap()]);
    assert_outcome(&r, &out, "DISP_E_EXCEPTION", "0x80020009", 14);
    assert_eq!(r["installer"]["exit_code"], 3, "{}", describe(&out));
    assert_eq!(
        host.media("guest"),
        None,
        "the IC media came out after the failure"
    );

    // The user's disc in the drive: borrowed with -ReplaceMedia and put back.
    insert(&host, "guest", user);
    let (r, out) = install(&uri, "guest", &["-Path", good_s, "-ReplaceMedia"]);
    assert_outcome(&r, &out, "S_OK", "0x00000000", 0);
    assert_eq!(r["media_restored"], true, "{}", describe(&out));
    assert!(
        r["message"].as_str().unwrap().contains("holds"),
        "{}",
        describe(&out)
    );
    assert_eq!(host.media("guest").as_deref(), user.to_str());

    // vmguest killed mid-install: the journal (keyed by host and UUID) lets the next run
    // stop the installer, take the IC media out and put the user's disc back.
    let state = tempfile::tempdir().unwrap();
    let env = [("VMGUEST_STATE_DIR", state.path().to_str().unwrap())];
    let slow = ic_iso(
        isos.path(),
        "slow.iso",
        "2.0.0",
        "echo LV-SLOW-STARTED > /dev/ttyS0\nsleep 61\n",
    );
    let running = crate::fixtures::spawn_vmguest(
        &[
            "Install-IntegrationComponents",
            "guest",
            "-c",
            &uri,
            "-Path",
            slow.to_str().unwrap(),
            "-ReplaceMedia",
        ],
        &env,
    );
    host.wait_for_console("guest", "LV-SLOW-STARTED");
    running.signal(libc::SIGKILL);
    let out = running.finish();
    assert_eq!(out.status.code(), None, "killed: {}", describe(&out));
    assert_eq!(
        host.media("guest").as_deref(),
        slow.to_str(),
        "the IC media is still in"
    );
    let out = vmguest_with(
        &[
            "Repair-VMMedia",
            "guest",
            "-c",
            &uri,
            "-OutputFormat",
            "Json",
        ],
        None,
        &env,
    );
    let r = results(&out);
    assert_eq!(r.len(), 1, "{}", describe(&out));
    assert_eq!(r[0]["result"], "S_OK", "{}", describe(&out));
    assert_eq!(
        r[0]["recovered"]["user_media"]["file"],
        user.to_str().unwrap(),
        "{}",
        describe(&out)
    );
    assert_eq!(
        host.media("guest").as_deref(),
        user.to_str(),
        "the user's disc is back"
    );

    // The guest mounts the user's disc, so its tray is locked: libvirt gives up after
    // about 5 s, and the disc stays where it is.
    let (code, mounted) = host.guest_sh(
        "guest",
        "mkdir -p /mnt/user; for i in $(seq 20); do mount -t iso9660 -o ro /dev/sr0 /mnt/user && break; sleep 0.5; done; grep -c /mnt/user /proc/mounts",
    );
    assert_eq!(
        (code, mounted.trim()),
        (0, "1"),
        "the guest mounted the user's disc"
    );
    let (r, out) = install(&uri, "guest", &["-Path", good_s, "-ReplaceMedia"]);
    assert_outcome(&r, &out, "VM_E_MEDIA_UNMOUNT_FAIL", "0xA0040508", 13);
    assert_eq!(host.media("guest").as_deref(), user.to_str());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("code=operationfailed (9)"),
        "libvirt's code is kept in the cause: {stderr}"
    );
}

fn insert(host: &Libvirtd, name: &str, iso: &std::path::Path) {
    let conn = host.connect();
    let dom = virt::domain::Domain::lookup_by_name(&conn, name).unwrap();
    let xml = format!(
        "<disk type='file' device='cdrom'><driver name='qemu' type='raw'/><source file='{}'/>\
         <target dev='hdc' bus='ide'/><readonly/></disk>",
        iso.display()
    );
    dom.update_device_flags(&xml, virt::sys::VIR_DOMAIN_AFFECT_LIVE)
        .expect("inserting the user's disc");
}

/// Two daemons stand for two hosts, one of them reached over ssh: one invocation
/// installs on both, `Get-VM` lists both, a host that is down fails only its own part,
/// and a name found nowhere names every host searched.
#[test]
fn fleet_over_two_hosts_one_by_ssh() {
    let mut a = Libvirtd::start();
    let mut b = Libvirtd::start();
    let sshd = Sshd::start();
    a.domain("web1", DomainSpec::default());
    b.domain("web2", DomainSpec::default());
    let isos = tempfile::tempdir().unwrap();
    let iso = ic_iso(isos.path(), "ic.iso", "1.0.0", &good_installer("1.0.0"));
    let iso_s = iso.to_str().unwrap();
    let uri_a = a.uri();
    let uri_b = sshd.uri(&b);

    let (rows, out) = run(&[&uri_a, &uri_b], &["Get-VM"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let hosts: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().into(),
                r["host"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        hosts,
        vec![
            ("web1".to_owned(), uri_a.clone()),
            ("web2".to_owned(), uri_b.clone())
        ]
    );

    let (mut r, out) = run(
        &[&uri_a, &uri_b],
        &[
            "Install-IntegrationComponents",
            "web1",
            "web2",
            "-Path",
            iso_s,
            "-NoWait",
        ],
        &[],
    );
    // JSON lines stream in the order the VMs finish.
    r.sort_by_key(|x| x["vm"].as_str().map(str::to_owned));
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(r.len(), 2, "{}", describe(&out));
    assert_eq!(
        (r[0]["vm"].as_str(), r[0]["host"].as_str()),
        (Some("web1"), Some(uri_a.as_str()))
    );
    assert_eq!(
        (r[1]["vm"].as_str(), r[1]["host"].as_str()),
        (Some("web2"), Some(uri_b.as_str()))
    );
    assert_eq!(a.media("web1").as_deref(), Some(iso_s));
    assert_eq!(b.media("web2").as_deref(), Some(iso_s));

    // A host that is down: its part fails with its URI and libvirt's message; the
    // others go on.
    let down = format!(
        "qemu+unix:///system?socket={}",
        isos.path().join("nobody-here").display()
    );
    let eject = |host: &Libvirtd, name: &str| {
        let conn = host.connect();
        let dom = virt::domain::Domain::lookup_by_name(&conn, name).unwrap();
        dom.update_device_flags(
            "<disk type='file' device='cdrom'><target dev='hdc' bus='ide'/><readonly/></disk>",
            virt::sys::VIR_DOMAIN_AFFECT_LIVE,
        )
        .unwrap();
    };
    eject(&a, "web1");
    let (r, out) = run(
        &[&down, &uri_a],
        &[
            "Install-IntegrationComponents",
            "web1",
            "-Path",
            iso_s,
            "-NoWait",
        ],
        &[],
    );
    let by_host = |h: &str| r.iter().find(|x| x["host"] == h).cloned();
    let failed =
        by_host(&down).unwrap_or_else(|| panic!("no record for the down host: {}", describe(&out)));
    assert_eq!(failed["result"], "DISP_E_EXCEPTION");
    assert!(
        failed["message"].as_str().unwrap().contains(&down),
        "{failed}"
    );
    assert_eq!(
        by_host(&uri_a).unwrap()["result"],
        "S_OK",
        "{}",
        describe(&out)
    );
    assert_eq!(
        out.status.code(),
        Some(14),
        "the down host decides the exit code"
    );
    assert_eq!(a.media("web1").as_deref(), Some(iso_s));

    let (r, out) = run(
        &[&uri_a, &uri_b],
        &["Install-IntegrationComponents", "nowhere", "-Path", iso_s],
        &[],
    );
    assert_eq!(r.len(), 1, "{}", describe(&out));
    assert_outcome(&r[0], &out, "VM_E_VM_UNKNOWN", "0xA0040207", 11);
    let msg = r[0]["message"].as_str().unwrap();
    assert!(msg.contains(&uri_a) && msg.contains(&uri_b), "{msg}");

    // A pipeline object pins its host among the run's; LIBVIRT_DEFAULT_URI is a host
    // without flags.
    eject(&b, "web2");
    let piped = format!("{{\"name\":\"web2\",\"host\":\"{uri_b}\"}}\n");
    let both = format!("{uri_a},{uri_b}");
    let out = crate::fixtures::vmguest_with(
        &[
            "Install-IntegrationComponents",
            "-ConnectionUri",
            &both,
            "-Path",
            iso_s,
            "-NoWait",
            "-OutputFormat",
            "Json",
        ],
        Some(&piped),
        &[],
    );
    let r = results(&out);
    assert_eq!(r.len(), 1, "{}", describe(&out));
    assert_eq!(
        (r[0]["result"].as_str(), r[0]["host"].as_str()),
        (Some("S_OK"), Some(uri_b.as_str())),
        "{}",
        describe(&out)
    );
    let (rows, out) = run(&[], &["Get-VM"], &[("LIBVIRT_DEFAULT_URI", &uri_a)]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(rows.len(), 1, "{}", describe(&out));
    assert_eq!(rows[0]["name"], "web1");

    // No flags and no environment on a libvirt host: inside daemon A's mount namespace
    // its socket is /run/libvirt/libvirt-sock, as on a host where libvirt runs.
    eject(&a, "web1");
    let state = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("nsenter")
        .arg(format!("--mount=/proc/{}/ns/mnt", a.pid()))
        .args([
            "--",
            env!("CARGO_BIN_EXE_vmguest"),
            "Install-IntegrationComponents",
            "web1",
        ])
        .args([
            "-Path",
            iso_s,
            "-NoWait",
            "-ReplaceMedia",
            "-OutputFormat",
            "Json",
        ])
        .env_remove("LIBVIRT_DEFAULT_URI")
        .env_remove("VMGUEST_VM_DIR")
        .env_remove("XDG_RUNTIME_DIR")
        .env("VMGUEST_STATE_DIR", state.path())
        .output()
        .expect("nsenter");
    let r = results(&out);
    assert_eq!(r.len(), 1, "{}", describe(&out));
    assert_eq!(
        (r[0]["result"].as_str(), r[0]["host"].as_str()),
        (Some("S_OK"), Some("qemu:///system")),
        "{}",
        describe(&out)
    );
}

/// libvirt is opened only for a libvirt host (`vm::libvirt::ffi`): a socket-directory command
/// must not pay for loading it and its ~55 libraries at every start. glibc's loader
/// names each library it initialises under `LD_DEBUG=libs`. libvirt's built-in
/// `test:///default` driver runs inside the client, so no daemon is needed here.
#[test]
fn libvirt_is_loaded_only_for_a_libvirt_host() {
    let loaded = |args: &[&str]| {
        let out = vmguest_with(args, None, &[("LD_DEBUG", "libs")]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (
            out,
            stderr.contains("calling init: ") && stderr.contains("libvirt.so.0"),
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let (out, with_dir) = loaded(&["Get-VM", "-VMDir", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(!with_dir, "a socket-directory Get-VM loaded libvirt");

    let (out, with_uri) = loaded(&[
        "Get-VM",
        "-ConnectionUri",
        "test:///default",
        "-OutputFormat",
        "Json",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(with_uri, "a libvirt Get-VM did not load libvirt");
    let vms = results(&out);
    assert_eq!(
        vms[0]["name"], "test",
        "libvirt's test driver answered: {vms:?}"
    );
}

/// A host of the run defines a domain with the UUID of another host's domain, has
/// vmguest borrow its drive and leave a journal entry (killed mid-install). A later
/// repair on the honest host must not put that host's "media" (here a stand-in for
/// `/etc/shadow`) into the honest domain: journal entries are keyed by host and UUID.
#[test]
fn a_domain_claiming_another_hosts_uuid_gets_nothing_from_its_journal_entry() {
    const UUID: &str = "6f1c9e0a-3b7d-4e52-9a1f-0c2d4e6f8a10";
    let mut honest = Libvirtd::start();
    let mut hostile = Libvirtd::start();
    let isos = tempfile::tempdir().unwrap();
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = user_iso(secret_dir.path());
    honest.domain(
        "victim",
        DomainSpec {
            uuid: Some(UUID.into()),
            ..Default::default()
        },
    );
    hostile.domain(
        "claimer",
        DomainSpec {
            boot: true,
            agent: true,
            cd: Cd::With(secret.clone()),
            uuid: Some(UUID.into()),
            ..Default::default()
        },
    );
    let (uri_h, uri_x) = (honest.uri(), hostile.uri());
    let state = tempfile::tempdir().unwrap();
    let env = [("VMGUEST_STATE_DIR", state.path().to_str().unwrap())];
    let slow = ic_iso(
        isos.path(),
        "slow.iso",
        "2.0.0",
        "echo LV-CLAIM-STARTED > /dev/ttyS0\nsleep 61\n",
    );
    let (code, _) = hostile.guest_sh("claimer", "true");
    assert_eq!(code, 0);
    let running = crate::fixtures::spawn_vmguest(
        &[
            "Install-IntegrationComponents",
            "claimer",
            "-c",
            &uri_x,
            "-Path",
            slow.to_str().unwrap(),
            "-ReplaceMedia",
        ],
        &env,
    );
    hostile.wait_for_console("claimer", "LV-CLAIM-STARTED");
    running.signal(libc::SIGKILL);
    let out = running.finish();
    assert_eq!(out.status.code(), None, "killed: {}", describe(&out));
    assert_eq!(hostile.media("claimer").as_deref(), slow.to_str());

    // The honest host's domain: nothing to repair, and nothing inserted.
    let (r, out) = run(&[&uri_h], &["Repair-VMMedia", "victim"], &env);
    assert_eq!(r.len(), 1, "{}", describe(&out));
    assert_eq!(r[0]["result"], "S_OK", "{}", describe(&out));
    assert!(r[0]["recovered"].is_null(), "{}", describe(&out));
    assert_eq!(
        honest.media("victim"),
        None,
        "another host's journal entry was restored here: {}",
        describe(&out)
    );
    let (rows, out) = run(&[&uri_h], &["Get-VM", "victim"], &env);
    assert!(rows[0]["pending_restore"].is_null(), "{}", describe(&out));

    // The entry still belongs to its own host, and names it.
    let (rows, out) = run(&[&uri_x], &["Get-VM", "claimer"], &env);
    assert_eq!(
        rows[0]["pending_restore"]["host"],
        uri_x.as_str(),
        "{}",
        describe(&out)
    );
    let (r, out) = run(&[&uri_x], &["Repair-VMMedia", "claimer"], &env);
    assert_eq!(r[0]["result"], "S_OK", "{}", describe(&out));
    assert_eq!(hostile.media("claimer").as_deref(), secret.to_str());
}

/// libvirt's live XML with every `index='N'` left out: libvirt numbers each new source.
fn without_index(xml: &str) -> String {
    let mut out = String::new();
    let mut rest = xml;
    while let Some(at) = rest.find(" index='") {
        out.push_str(&rest[..at]);
        let tail = &rest[at + " index='".len()..];
        rest = tail.split_once('\'').map_or("", |(_, after)| after);
    }
    out.push_str(rest);
    out
}

/// A cdrom holding a storage-pool volume (no `file`, no `dev` in its `<source>`) holds
/// media: without -ReplaceMedia it is not taken, and with it the volume goes back exactly
/// (pool, volume, `startupPolicy`), or the drive is refused untouched.
#[test]
fn a_pool_volume_in_the_drive_is_media_and_goes_back_exactly() {
    let mut host = Libvirtd::start();
    let uri = host.uri();
    let isos = tempfile::tempdir().unwrap();
    let good = ic_iso(isos.path(), "ic.iso", "1.0.0", &good_installer("1.0.0"));
    let good_s = good.to_str().unwrap();
    let user = std::fs::read(user_iso(isos.path())).unwrap();
    host.dir_pool_volume("isos", "user.iso", &user);
    host.domain(
        "vol",
        DomainSpec {
            boot: true,
            agent: true,
            cd_xml: Some(
                "<disk type='volume' device='cdrom'><driver name='qemu' type='raw'/>\
                 <source pool='isos' volume='user.iso' startupPolicy='optional'/>\
                 <target dev='hdc' bus='ide'/><readonly/></disk>"
                    .into(),
            ),
            ..Default::default()
        },
    );
    let before = host.cdrom_xml("vol");
    assert!(
        before.contains("pool='isos'") && before.contains("startupPolicy='optional'"),
        "{before}"
    );

    let (r, out) = install(&uri, "vol", &["-Path", good_s]);
    assert_outcome(&r, &out, "VM_E_DRIVE_INVALID", "0xA0040502", 12);
    assert_eq!(host.cdrom_xml("vol"), before, "the volume stays as it was");

    let (code, _) = host.guest_sh("vol", "true");
    assert_eq!(code, 0);
    let (r, out) = install(&uri, "vol", &["-Path", good_s, "-ReplaceMedia"]);
    println!("-ReplaceMedia on a pool volume: {}", r["result"]);
    match r["result"].as_str() {
        Some("S_OK") => {
            assert_eq!(r["media_restored"], true, "{}", describe(&out));
            let (code, status) = host.guest_sh("vol", "cat /opt/vmguest-ic/STATUS");
            assert_eq!((code, status.trim()), (0, "installed 1.0.0"));
        }
        Some("VM_E_DRIVE_INVALID") => {
            assert_eq!(out.status.code(), Some(12), "{}", describe(&out))
        }
        _ => panic!("{}", describe(&out)),
    }
    assert_eq!(
        without_index(&host.cdrom_xml("vol")),
        without_index(&before),
        "the volume is back exactly: {}",
        describe(&out)
    );
}
