#!/usr/bin/env python3
"""Benchmark: the media phase of an install, and Get-VM, beside peers doing the same work.

Media phase: resolve the VM, check it runs, choose the drive, insert the IC media, the
work of `Install-IntegrationComponents -NoWait` (no agent, so no guest steps). Timed as
one process per run, for each of:
  vmguest                       Install-IntegrationComponents -NoWait -NoPlugins
                                (it also hands QEMU the opened ISO with add-fd)
  python qemu.qmp               a script with the same QMP calls (qmp_capabilities,
                                query-status, query-block, blockdev-change-medium)
  socat                         the same four commands written raw to the socket
for a tiny ISO and a 600 MB ISO, with vmguest's digest cache cold (emptied before each
run) and warm. The media is ejected between runs (untimed), and each run's insert is
checked through QMP.

Get-VM: `vmguest Get-VM -OutputFormat Json` over 32 VMs (paused at start, so they use no
CPU), against a qemu.qmp script that asks each the same (query-status, query-block).

Also: cold hashing speed, vmguest's (host/examples/iso_digest.rs) against
`openssl dgst -sha256` over the same 600 MB file.

Every QEMU this script starts is stopped by the pid it recorded.

Usage: scripts/bench-media.py [--runs 9] [--vms 32]
Needs: cargo build --release --examples; apt-get install qemu-system-x86 xorriso socat
openssl; pip install qemu.qmp.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "harness"))
import qemu_peer as q  # noqa: E402

VMGUEST = os.path.join(ROOT, "target", "release", "vmguest")
DIGEST = os.path.join(ROOT, "target", "release", "examples", "iso_digest")

QMP_SCRIPT = r'''
import asyncio, sys
from qemu.qmp import QMPClient
async def main(sock, iso):
    qmp = QMPClient("bench")
    await qmp.connect(sock)
    assert (await qmp.execute("query-status"))["status"] == "running"
    drives = await qmp.execute("query-block")
    empty = next(d for d in drives if "tray_open" in d and "inserted" not in d)
    await qmp.execute("blockdev-change-medium", {"id": empty["qdev"], "filename": iso,
                      "format": "raw", "read-only-mode": "read-only"})
    await qmp.disconnect()
asyncio.run(main(sys.argv[1], sys.argv[2]))
'''

GET_VM_SCRIPT = r'''
import asyncio, json, sys
from qemu.qmp import QMPClient
async def main(socks):
    for sock in socks:
        qmp = QMPClient("bench")
        await qmp.connect(sock)
        status = await qmp.execute("query-status")
        drives = await qmp.execute("query-block")
        print(json.dumps({"name": sock, "state": status["status"], "drives": len(drives)}))
        await qmp.disconnect()
asyncio.run(main(sys.argv[1:]))
'''


def start(vm_dir, name, paused):
    args = ["qemu-system-x86_64", "-accel", "tcg", "-nodefaults", "-no-user-config",
            "-display", "none", "-m", "64", "-no-reboot",
            "-qmp", f"unix:{vm_dir}/{name}.qmp,server=on,wait=off",
            "-device", "ide-cd,id=cd0,bus=ide.1"]
    if paused:
        args.append("-S")
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    deadline = time.time() + 30
    while True:
        try:
            q.qmp(f"{vm_dir}/{name}.qmp").close()
            return proc
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"QEMU for {name} did not start")
            time.sleep(0.05)


def eject(sock):
    p = q.qmp(sock)
    p.cmd("eject", id="cd0", force=False)
    p.close()


def inserted(sock, pid):
    """The files in the drives, as QEMU has them open: vmguest hands QEMU its ISO as a
    descriptor (add-fd), which query-block names /dev/fdset/N; the file behind it is read
    from QEMU's own /proc/PID/fd."""
    p = q.qmp(sock)
    try:
        files = [d["inserted"]["file"] for d in p.cmd("query-block") if "inserted" in d]
        sets = {s["fdset-id"]: s["fds"] for s in p.cmd("query-fdsets")}
    finally:
        p.close()
    def real(f):
        if not f.startswith("/dev/fdset/"):
            return f
        fd = sets[int(f[len("/dev/fdset/"):])][0]["fd"]
        return os.readlink(f"/proc/{pid}/fd/{fd}")
    return [real(f) for f in files]


def timed(cmd, env=None, stdin=None):
    t = time.perf_counter()
    out = subprocess.run(cmd, env=env, input=stdin, capture_output=True)
    took = time.perf_counter() - t
    if out.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({out.returncode}): {out.stderr.decode()[-500:]}")
    return took, out


def media_phase(vm_dir, pid, iso, runs, cache, env):
    sock = f"{vm_dir}/bench.qmp"
    raw = "".join(json.dumps(c) + "\n" for c in [
        {"execute": "qmp_capabilities"},
        {"execute": "query-status"},
        {"execute": "query-block"},
        {"execute": "blockdev-change-medium", "arguments": {
            "id": "cd0", "filename": iso, "format": "raw", "read-only-mode": "read-only"}}])
    vm_cmd = [VMGUEST, "Install-IntegrationComponents", "bench", "-Path", iso, "-NoWait",
              "-NoPlugins", "-VMDir", vm_dir, "-OutputFormat", "Json"]
    methods = {
        "vmguest, digest cache cold": (vm_cmd, True),
        "vmguest, digest cache warm": (vm_cmd, False),
        "python qemu.qmp": (["python3", "-c", QMP_SCRIPT, sock, iso], False),
        # socat waits (-t) for QEMU's last reply after stdin ends; QEMU closes first.
        "socat, raw QMP": (["socat", "-t", "5", "-", f"UNIX-CONNECT:{sock}"], False),
    }
    results = {}
    for label, (cmd, cold) in methods.items():
        samples = []
        for _ in range(runs):
            if cold:
                shutil.rmtree(cache, ignore_errors=True)
            stdin = raw.encode() if cmd[0] == "socat" else None
            took, out = timed(cmd, env, stdin)
            if cmd[0] == VMGUEST:
                r = json.loads(out.stdout)
                assert r["result"] == "S_OK", r
            got = inserted(sock, pid)
            assert got == [iso], f"{label}: drive holds {got}, expected {iso}"
            eject(sock)
            samples.append(took)
        results[label] = statistics.median(samples)
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--vms", type=int, default=32)
    a = ap.parse_args()
    for tool in ["qemu-system-x86_64", "xorriso", "socat", "openssl", VMGUEST, DIGEST]:
        if not shutil.which(tool):
            sys.exit(f"{tool} not found (see the usage in this script's docstring)")
    procs = []
    with tempfile.TemporaryDirectory(prefix="vmguest-bench-") as work:
        try:
            src = os.path.join(work, "ic.d")
            os.makedirs(src)
            with open(os.path.join(src, "vmguest-ic.toml"), "w") as f:
                f.write('[components]\nfamily = "vmguest"\nname = "bench"\nversion = "1.0.0"\n'
                        '[install.linux]\ncommand = "true"\n')
            tiny = os.path.join(work, "tiny.iso")
            q.build_ic_iso(tiny, src)
            big = os.path.join(work, "big.iso")
            shutil.copyfile(tiny, big)
            with open(big, "ab") as f:  # real data, not holes: hashing reads every byte
                for _ in range(600):
                    f.write(os.urandom(1 << 20))
            subprocess.run(["cat", big], stdout=subprocess.DEVNULL, check=True)  # page cache
            vm_dir = os.path.join(work, "vms")
            os.makedirs(vm_dir)
            cache = os.path.join(work, "cache")
            env = dict(os.environ, XDG_CACHE_HOME=cache, XDG_CONFIG_HOME=os.path.join(work, "cfg"),
                       VMGUEST_STATE_DIR=os.path.join(work, "state"))
            env.pop("RUST_LOG", None)
            procs.append(start(vm_dir, "bench", paused=False))
            rows = []
            for name, iso in [("tiny (%d KB)" % (os.path.getsize(tiny) // 1024), tiny),
                              ("600 MB", big)]:
                for label, secs in media_phase(vm_dir, procs[0].pid, iso, a.runs,
                                               os.path.join(cache, "vmguest"), env).items():
                    rows.append((name, label, secs))

            # Cold hashing speed over the same 600 MB file.
            digest = statistics.median(
                timed([DIGEST, big])[0] for _ in range(5))
            openssl = statistics.median(
                timed(["openssl", "dgst", "-sha256", big])[0] for _ in range(5))

            # Get-VM over many VMs, paused at start.
            many = os.path.join(work, "many")
            os.makedirs(many)
            for i in range(a.vms):
                procs.append(start(many, f"vm{i:02d}", paused=True))
            socks = [f"{many}/vm{i:02d}.qmp" for i in range(a.vms)]
            get_vm = statistics.median(
                timed([VMGUEST, "Get-VM", "-VMDir", many, "-OutputFormat", "Json"], env)[0]
                for _ in range(a.runs))
            py_get_vm = statistics.median(
                timed(["python3", "-c", GET_VM_SCRIPT] + socks)[0] for _ in range(a.runs))
        finally:
            for p in procs:  # by the pid recorded at start
                if p.poll() is None:
                    p.kill()
                p.wait()

    cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
                         capture_output=True, text=True).stdout.strip()
    print(f"machine: {os.cpu_count()} cores, {cpu}, {platform.platform()}; "
          f"median of {a.runs} runs, one process per run\n")
    print("| ISO | command | median |")
    print("|---|---|---|")
    for name, label, secs in rows:
        print(f"| {name} | {label} | {secs * 1000:.1f} ms |")
    by = {(n, l): s for n, l, s in rows}
    tiny_warm = by[(rows[0][0], "vmguest, digest cache warm")]
    big_warm = by[("600 MB", "vmguest, digest cache warm")]
    big_py = by[("600 MB", "python qemu.qmp")]
    print(f"\nwarm 600 MB / warm tiny: {big_warm / tiny_warm:.2f}x; "
          f"warm 600 MB / python qemu.qmp: {big_warm / big_py:.2f}x")
    print(f"\ncold SHA-256 of 600 MB, median of 5: vmguest {digest * 1000:.0f} ms, "
          f"openssl dgst -sha256 {openssl * 1000:.0f} ms ({openssl / digest:.2f}x vmguest's speed)")
    print(f"\nGet-VM over {a.vms} VMs: vmguest {get_vm * 1000:.1f} ms, "
          f"python qemu.qmp {py_get_vm * 1000:.1f} ms ({py_get_vm / get_vm:.1f}x)")


if __name__ == "__main__":
    main()
