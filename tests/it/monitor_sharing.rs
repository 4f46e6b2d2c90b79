//! The socket-directory backend on a Proxmox node: QEMU serves one QMP client at a
//! time, and qemu-server's QMP client (`PVE::QMPClient`, used by pvestatd every few
//! seconds) connects once per command. vmguest therefore connects for each media step
//! and lets go of the socket across the installer's wait.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmguest::vm::qmp::Qmp;

use crate::fixtures::*;

/// How long one poll may take: a pvestatd-like client must never wait on vmguest for
/// longer than this.
const POLL_BOUND: Duration = Duration::from_secs(2);

#[test]
fn a_second_qmp_client_is_answered_throughout_a_long_install() {
    let vm = TestVm::booted("shared");
    // Long enough that a monitor held across the wait would keep every poll of it waiting.
    let script = format!("#!/bin/sh\nsleep 8\n{}", good_installer("5.0.0"));
    let iso = ic_iso(vm.dir.path(), "ic.iso", "5.0.0", &script);
    let dir = vm.dir.path().to_str().unwrap().to_owned();
    let socket = vm.path("qmp");

    let done = Arc::new(AtomicBool::new(false));
    let poller = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut polls = Vec::new();
            while !done.load(Ordering::SeqCst) {
                let start = Instant::now();
                // As qemu-server does it: connect, one command, close.
                let answered = Qmp::connect(&socket, Duration::from_secs(30))
                    .and_then(|mut q| q.execute(qapi_qmp::query_status {}).map(|_| ()));
                polls.push((start, start.elapsed(), answered.map_err(|e| e.to_string())));
                std::thread::sleep(Duration::from_secs(1));
            }
            polls
        })
    };
    let started = Instant::now();
    let run = spawn_vmguest(
        &[
            "Install-IntegrationComponents",
            "-VMName",
            "shared",
            "-VMDir",
            &dir,
            "-Path",
            iso.to_str().unwrap(),
            "-OutputFormat",
            "Json",
        ],
        &[],
    );
    let out = run.finish();
    let ended = Instant::now();
    done.store(true, Ordering::SeqCst);
    let polls = poller.join().expect("the poller thread");

    let r = &results(&out)[0];
    assert_outcome(r, &out, "S_OK", "0x00000000", 0);
    let during: Vec<_> = polls
        .iter()
        .filter(|(at, _, _)| *at >= started && *at <= ended)
        .collect();
    for (at, took, answered) in &during {
        assert!(
            answered.is_ok() && *took <= POLL_BOUND,
            "a poll {:?} into the install took {took:?} ({answered:?}); all: {during:?}",
            at.duration_since(started)
        );
    }
    // The installer alone sleeps 8 s: a poll a second must have fallen inside it.
    assert!(during.len() >= 6, "polls during the install: {during:?}");
}
