#!/usr/bin/env python3
"""Independent harness: reproduces the seven documented outcomes on real QEMU VMs laid out
as vmguest's VM directory (NAME.qmp, NAME.qga, NAME.toml), judging only by the JSON fields
`vm`, `result` and `hresult` of `vmguest ... -OutputFormat Json` and by what QMP and the
guest agent show. Usage: outcomes.py VMGUEST_BINARY GUEST_IMAGE_DIR"""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qemu_peer as q  # noqa: E402

HRESULTS = {
    "S_OK": "0x00000000",
    "VM_E_VM_NOT_RUNNING": "0xA0040206",
    "VM_E_VM_UNKNOWN": "0xA0040207",
    "VM_E_DRIVE_INVALID": "0xA0040502",
    "VM_E_MEDIA_UNMOUNT_FAIL": "0xA0040508",
    "DISP_E_EXCEPTION": "0x80020009",
    "HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND)": "0x80070002",
}

passed, failed = 0, 0


def check(label, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"PASS {label}")
    else:
        failed += 1
        print(f"FAIL {label} {detail}")


def vmguest(binary, vm_dir, name, *extra):
    # A config home that does not exist: no user config leaks in, nothing to clean up.
    # Its own state directory: as root, vmguest's default journal is /var/lib/vmguest.
    env = dict(os.environ, XDG_CONFIG_HOME=os.path.join(vm_dir, "no-config-home"),
               XDG_CACHE_HOME=os.path.join(vm_dir, "cache"),
               VMGUEST_STATE_DIR=os.path.join(vm_dir, "state"))
    env.pop("VMGUEST_VM_DIR", None)
    out = subprocess.run([binary, "Install-IntegrationComponents", "-VMName", name, "-VMDir", vm_dir,
                          "-OutputFormat", "Json", *extra], capture_output=True, text=True, env=env, timeout=900)
    lines = [json.loads(l) for l in out.stdout.splitlines() if l.strip()]
    return (lines[0] if lines else {}), out


def expect(label, binary, vm_dir, name, outcome, *extra):
    r, out = vmguest(binary, vm_dir, name, *extra)
    ok = r.get("vm") == name and r.get("result") == outcome and r.get("hresult") == HRESULTS[outcome]
    check(f"{label}: {outcome}", ok, f"got {r.get('result')} {r.get('hresult')}: {r.get('message')} / {out.stderr[-400:]}")
    return r


def main():
    binary, image = sys.argv[1], sys.argv[2]
    kernel, initrd = os.path.join(image, "vmlinuz"), os.path.join(image, "initrd.img")
    procs = []
    with tempfile.TemporaryDirectory(prefix="vmg-harness") as work:
        vm_dir = os.path.join(work, "vms")
        os.mkdir(vm_dir)
        try:
            src = os.path.join(work, "ic")
            os.mkdir(src)
            with open(os.path.join(src, "vmguest-ic.toml"), "w") as f:
                f.write('[components]\nfamily = "vmguest"\nname = "harness components"\nversion = "9.8.7"\n'
                        '[install.linux]\ncommand = "sh ./install.sh"\n')
            with open(os.path.join(src, "install.sh"), "w") as f:
                f.write("#!/bin/sh\nmkdir -p /opt/harness && echo 9.8.7 > /opt/harness/VERSION\n")
            good_iso = os.path.join(work, "good.iso")
            q.build_ic_iso(good_iso, src)
            with open(os.path.join(src, "install.sh"), "w") as f:
                f.write("#!/bin/sh\necho broken >&2\nexit 7\n")
            bad_iso = os.path.join(work, "bad.iso")
            q.build_ic_iso(bad_iso, src)

            procs.append(q.start_vm(vm_dir, "booted", kernel, initrd))
            procs.append(q.start_vm(vm_dir, "paused"))
            procs.append(q.start_vm(vm_dir, "nodrive", cd=None))
            open(os.path.join(vm_dir, "stopped.toml"), "w").close()
            p = q.qmp(os.path.join(vm_dir, "paused.qmp"))
            p.cmd("stop")
            p.close()

            expect("unknown VM", binary, vm_dir, "ghost", "VM_E_VM_UNKNOWN", "-Path", good_iso)
            expect("paused VM", binary, vm_dir, "paused", "VM_E_VM_NOT_RUNNING", "-Path", good_iso)
            expect("defined, stopped VM", binary, vm_dir, "stopped", "VM_E_VM_NOT_RUNNING", "-Path", good_iso)
            expect("VM without a DVD drive", binary, vm_dir, "nodrive", "VM_E_DRIVE_INVALID", "-Path", good_iso)
            expect("missing ISO", binary, vm_dir, "nodrive", "HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND)",
                   "-Path", os.path.join(work, "absent.iso"))

            qga_path = os.path.join(vm_dir, "booted.qga")
            qmp_path = os.path.join(vm_dir, "booted.qmp")
            q.qga(qga_path).close()  # wait for boot
            expect("good installer", binary, vm_dir, "booted", "S_OK", "-Path", good_iso)
            code, out = q.guest_sh(qga_path, "cat /opt/harness/VERSION")
            check("installed version seen in the guest", code == 0 and out.strip() == "9.8.7", out)
            check("drive empty after S_OK", "inserted" not in q.drives(qmp_path)["cd0"])
            expect("failing installer", binary, vm_dir, "booted", "DISP_E_EXCEPTION", "-Path", bad_iso)
            check("drive empty after DISP_E_EXCEPTION", "inserted" not in q.drives(qmp_path)["cd0"])

            p = q.qmp(qmp_path)
            p.cmd("blockdev-change-medium", id="cd0", filename=good_iso, format="raw", **{"read-only-mode": "read-only"})
            p.close()
            code, _ = q.guest_sh(qga_path, "eject -i on /dev/sr0")
            check("guest locked the tray", code == 0)
            expect("borrowing a guest-locked drive", binary, vm_dir, "booted", "VM_E_MEDIA_UNMOUNT_FAIL",
                   "-Path", bad_iso, "-ReplaceMedia")
            check("user media still in after VM_E_MEDIA_UNMOUNT_FAIL",
                  q.drives(qmp_path)["cd0"].get("inserted", {}).get("file") == good_iso)
        finally:
            q.stop_all(procs)
    print(f"harness: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
