#!/usr/bin/env python3
"""Benchmark: installs across a fleet, one pipeline against one process per VM.

1. The media phase (`Install-IntegrationComponents -NoWait`) on 64 running VMs (TCG,
   firmware only, one empty CD drive each): one vmguest pipeline (-ThrottleLimit 16)
   against 64 separate vmguest runs, one after another, as a shell loop would do it.
2. Full agent installs on 8 booted test guests whose installer sleeps 2 s: one
   pipeline over the 8 (-ThrottleLimit 8) against a single install on one guest.

Medians of RUNS runs each; media are ejected between runs (untimed) and every insert is
checked through QMP. Every QEMU started here is stopped by the pid recorded at start.

Usage: scripts/bench-fleet.py [--runs 5] [--vms 64] [--guests 8]
Needs: cargo build --release; bash tests/guest/build-guest.sh target/vmguest-guest;
apt-get install qemu-system-x86 xorriso.
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
IMAGE = os.path.join(ROOT, "target", "vmguest-guest")


def ic(work, name, script):
    src = os.path.join(work, name + ".d")
    os.makedirs(src)
    with open(os.path.join(src, "vmguest-ic.toml"), "w") as f:
        f.write('[components]\nfamily = "vmguest"\nname = "bench"\nversion = "1.0.0"\n'
                '[install.linux]\ncommand = "sh ./install.sh"\n')
    with open(os.path.join(src, "install.sh"), "w") as f:
        f.write(script)
    iso = os.path.join(work, name + ".iso")
    q.build_ic_iso(iso, src)
    return iso


def eject_all(vm_dir, names):
    for n in names:
        p = q.qmp(f"{vm_dir}/{n}.qmp")
        drives = p.cmd("query-block")
        assert any("inserted" in d for d in drives if d.get("qdev") == "cd0"), f"{n}: nothing inserted"
        p.cmd("eject", id="cd0", force=False)
        p.close()


def timed(cmd, env):
    t = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    took = time.perf_counter() - t
    results = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
    bad = [r for r in results if r["result"] != "S_OK"]
    if out.returncode != 0 or bad:
        raise RuntimeError(f"{cmd[:2]}: exit {out.returncode}: {bad[:1]} {out.stderr[-400:]}")
    return took, len(results)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--vms", type=int, default=64)
    ap.add_argument("--guests", type=int, default=8)
    a = ap.parse_args()
    for tool in ["qemu-system-x86_64", "xorriso", VMGUEST, os.path.join(IMAGE, "vmlinuz")]:
        if not shutil.which(tool) and not os.path.exists(tool):
            sys.exit(f"{tool} not found (see the usage in this script's docstring)")
    procs = []
    with tempfile.TemporaryDirectory(prefix="vmguest-bench-") as work:
        env = dict(os.environ, XDG_CACHE_HOME=os.path.join(work, "cache"),
                   XDG_CONFIG_HOME=os.path.join(work, "cfg"),
                   VMGUEST_STATE_DIR=os.path.join(work, "state"))
        env.pop("RUST_LOG", None)
        try:
            # 1. The media phase on many VMs.
            fleet = os.path.join(work, "fleet")
            os.makedirs(fleet)
            names = [f"vm{i:02d}" for i in range(a.vms)]
            for n in names:
                procs.append(q.start_vm(fleet, n))
            iso = ic(work, "tiny", "true\n")
            base = [VMGUEST, "Install-IntegrationComponents", "-VMDir", fleet, "-Path", iso,
                    "-NoWait", "-NoPlugins", "-OutputFormat", "Json"]
            timed(base + names[:1], env)  # warms the digest cache and the page cache
            eject_all(fleet, names[:1])
            pipeline, separate = [], []
            for _ in range(a.runs):
                took, n = timed(base + ["-ThrottleLimit", "16"] + names, env)
                assert n == a.vms
                pipeline.append(took)
                eject_all(fleet, names)
                t = time.perf_counter()
                for name in names:
                    timed(base + [name], env)
                separate.append(time.perf_counter() - t)
                eject_all(fleet, names)

            # 2. Agent installs on booted guests, whose installer sleeps 2 s.
            guests_dir = os.path.join(work, "guests")
            os.makedirs(guests_dir)
            guests = [f"g{i}" for i in range(a.guests)]
            kernel, initrd = os.path.join(IMAGE, "vmlinuz"), os.path.join(IMAGE, "initrd.img")
            for g in guests:
                procs.append(q.start_vm(guests_dir, g, kernel, initrd))
            for g in guests:
                q.qga(f"{guests_dir}/{g}.qga").close()
            slow = ic(work, "slow", "sleep 2\n")
            base = [VMGUEST, "Install-IntegrationComponents", "-VMDir", guests_dir, "-Path",
                    slow, "-NoPlugins", "-OutputFormat", "Json"]
            single = [timed(base + guests[:1], env)[0] for _ in range(a.runs)]
            many = [timed(base + ["-ThrottleLimit", str(a.guests)] + guests, env)[0]
                    for _ in range(a.runs)]
        finally:
            q.stop_all(procs)

    cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
                         capture_output=True, text=True).stdout.strip()
    med = statistics.median
    print(f"machine: {os.cpu_count()} cores, {cpu}, {platform.platform()}; median of {a.runs} runs\n")
    print("| work | one pipeline | one process per VM, or one install | ratio |")
    print("|---|---|---|---|")
    print(f"| media phase, {a.vms} running VMs | {med(pipeline) * 1000:.0f} ms (-ThrottleLimit 16) "
          f"| {med(separate) * 1000:.0f} ms ({a.vms} runs) | {med(separate) / med(pipeline):.1f}x faster |")
    print(f"| agent install, installer sleeps 2 s | {med(many) * 1000:.0f} ms for {a.guests} guests "
          f"| {med(single) * 1000:.0f} ms for 1 guest | {med(many) / med(single):.2f}x the single |")


if __name__ == "__main__":
    main()
