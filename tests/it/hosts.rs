//! Hosts named on stdin choose only among the hosts of the run; `-ComputerName` takes
//! host names only; an admin's own `-ConnectionUri`, parameters and all, stays trusted.
//!
//! The hostile strings are the ones a pipeline object or a careless paste could carry:
//! libvirt's `ext` transport runs `command=`, and a socket directory's `NAME.toml` can
//! point QMP at any socket. Each test plants a program or a socket and checks that it
//! was never run or connected to.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use crate::fixtures::{describe, good_installer, ic_iso, results, vmguest_with};
use crate::libvirtd::{DomainSpec, Libvirtd};

/// A program that leaves `marker` behind if anything runs it.
fn planted_program(dir: &Path) -> (PathBuf, PathBuf) {
    let marker = dir.join("ran");
    let program = dir.join("p");
    std::fs::write(
        &program,
        format!("#!/bin/sh\ntouch '{}'\nsleep 1\n", marker.display()),
    )
    .unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    (program, marker)
}

#[test]
fn a_piped_host_cannot_run_a_program_or_pick_a_socket() {
    let work = tempfile::tempdir().unwrap();
    let vm_dir = work.path().join("vms");
    std::fs::create_dir(&vm_dir).unwrap();
    let (program, marker) = planted_program(work.path());

    // A directory of the attacker's whose definition points QMP at a socket of theirs.
    let evil = work.path().join("evil");
    std::fs::create_dir(&evil).unwrap();
    let sock = work.path().join("qmp.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    listener.set_nonblocking(true).unwrap();
    std::fs::write(evil.join("x.toml"), format!("qmp = '{}'\n", sock.display())).unwrap();

    let stdin = format!(
        "{{\"name\":\"x\",\"host\":\"qemu+ext:///system?command={}\"}}\n\
         {{\"name\":\"x\",\"host\":\"{}\"}}\n",
        program.display(),
        evil.display()
    );
    let vm_dir_s = vm_dir.to_str().unwrap();
    let out = vmguest_with(
        &[
            "Install-IntegrationComponents",
            "-WhatIf",
            "-VMDir",
            vm_dir_s,
            "-OutputFormat",
            "Json",
        ],
        Some(&stdin),
        &[],
    );
    let r = results(&out);
    assert_eq!(r.len(), 2, "{}", describe(&out));
    // Results stream in the order the VMs finish, so each host is looked for among all.
    let messages: Vec<&str> = r
        .iter()
        .map(|rec| rec["message"].as_str().unwrap())
        .collect();
    for rec in &r {
        assert_eq!(rec["result"], "VM_E_VM_UNKNOWN", "{}", describe(&out));
    }
    for msg in &messages {
        assert!(msg.contains("not one of this run's hosts"), "{msg}");
        assert!(msg.contains(vm_dir_s), "the run's hosts are listed: {msg}");
    }
    for host in [
        format!("qemu+ext:///system?command={}", program.display()),
        evil.display().to_string(),
    ] {
        let quoted = format!("{host:?}");
        assert!(
            messages.iter().any(|m| m.contains(&quoted)),
            "no record names {quoted}: {messages:?}"
        );
    }
    assert_eq!(out.status.code(), Some(11), "{}", describe(&out));
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(!marker.exists(), "a piped host ran a program");
    assert!(
        listener.accept().is_err(),
        "a piped socket directory made vmguest connect to its socket"
    );
}

#[test]
fn computer_name_takes_a_host_name_only() {
    let work = tempfile::tempdir().unwrap();
    let (program, marker) = planted_program(work.path());
    let hostile = format!("h/system?command={}#", program.display());
    for bad in [hostile.as_str(), "-oProxyCommand=x", "h:0", "a b"] {
        let flag = format!("--computer-name={bad}");
        let out = vmguest_with(&["Get-VM", &flag], None, &[]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("-ComputerName takes [USER@]HOST[:PORT]"),
            "the usage error names the rule: {stderr}"
        );
    }
    assert!(!marker.exists(), "-ComputerName ran a program");
}

/// An admin's `-ConnectionUri` is trusted as given, `?socket=` included, and a pipeline
/// between two runs naming the same host keeps working. A piped host that is not one of
/// the receiving run's hosts is refused.
#[test]
fn an_admins_uri_with_parameters_works_and_pipes_between_runs() {
    let mut host = Libvirtd::start();
    host.domain("web1", DomainSpec::default());
    let uri = host.uri();
    assert!(uri.contains("?socket="), "{uri}");
    let isos = tempfile::tempdir().unwrap();
    let iso = ic_iso(isos.path(), "ic.iso", "1.0.0", &good_installer("1.0.0"));

    let listed = vmguest_with(
        &["Get-VM", "-ConnectionUri", &uri, "-OutputFormat", "Json"],
        None,
        &[],
    );
    assert_eq!(listed.status.code(), Some(0), "{}", describe(&listed));
    let rows = results(&listed);
    assert_eq!(rows.len(), 1, "{}", describe(&listed));
    assert_eq!(rows[0]["host"], uri.as_str());
    let piped = String::from_utf8(listed.stdout.clone()).unwrap();

    let install = |hosts: &[&str]| {
        let mut args = vec![
            "Install-IntegrationComponents",
            "-Path",
            iso.to_str().unwrap(),
            "-WhatIf",
            "-OutputFormat",
            "Json",
        ];
        args.extend_from_slice(hosts);
        let out = vmguest_with(&args, Some(&piped), &[]);
        (results(&out), out)
    };
    let (r, out) = install(&["-ConnectionUri", &uri]);
    assert_eq!(r.len(), 1, "{}", describe(&out));
    assert_eq!(r[0]["result"], "S_OK", "{}", describe(&out));
    assert_eq!(r[0]["host"], uri.as_str(), "{}", describe(&out));

    // The same objects into a run of other hosts: refused, not connected.
    let elsewhere = tempfile::tempdir().unwrap();
    let (r, out) = install(&["-VMDir", elsewhere.path().to_str().unwrap()]);
    assert_eq!(r.len(), 1, "{}", describe(&out));
    assert_eq!(r[0]["result"], "VM_E_VM_UNKNOWN", "{}", describe(&out));
    assert!(
        r[0]["message"]
            .as_str()
            .unwrap()
            .contains("not one of this run's hosts"),
        "{}",
        describe(&out)
    );
    assert_eq!(host.media("web1"), None, "-WhatIf changed nothing");
}
