#!/usr/bin/env python3
"""Benchmark: locate the IC ISO among 1,000 candidates.

Builds 1,000 sparse candidate ISOs (small xorriso images of every family, extended to
700 MB with holes), then times, in the same run:
  vmguest Get-IntegrationComponentsIso over the whole store,
  a shell loop of `isoinfo -d` (genisoimage) over the same files,
  a shell loop of `blkid -p` over the same files.
Each command runs RUNS times; the median wall time is reported, with the bytes the
command read (rchar of the shell and its reaped children, from /proc/<pid>/io).

Usage: scripts/bench-locate.py [--runs 5] [--count 1000]   (after `cargo build --release`)
"""

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VMGUEST = os.path.join(ROOT, "target", "release", "vmguest")


def pe(version):
    a, b, c, d = version
    return (b"MZ" + b"\0" * 30 + (0xFEEF04BD).to_bytes(4, "little") + (0x10000).to_bytes(4, "little")
            + ((a << 16) | b).to_bytes(4, "little") + ((c << 16) | d).to_bytes(4, "little") + b"\0" * 32)


def template(work, name, volid, files):
    src = os.path.join(work, name + ".d")
    for path, data in files.items():
        p = os.path.join(src, path)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
    iso = os.path.join(work, name + ".iso")
    subprocess.run(["xorriso", "-as", "mkisofs", "-R", "-J", "-V", volid, "-o", iso, src],
                   check=True, capture_output=True)
    return iso


def build_store(work, count):
    templates = []
    for i, v in enumerate(["0.1.240", "0.1.262", "0.1.266"]):
        templates.append(template(work, f"virtio{i}", f"virtio-win-{v}",
                                  {"virtio-win-guest-tools.exe": pe((0, 1, 0, 0))}))
    templates.append(template(work, "vbox", "VBox_GAs_7.0.12",
                              {"VBoxLinuxAdditions.run": b"#!/bin/sh\n",
                               "VBoxWindowsAdditions.exe": pe((7, 0, 12, 0))}))
    templates.append(template(work, "vmware", "VMware Tools", {"setup64.exe": pe((12, 3, 0, 1))}))
    templates.append(template(work, "hyperv", "IC", {"support/amd64/setup.exe": pe((6, 3, 9600, 18080))}))
    for i, v in enumerate(["1.2.0", "1.10.0"]):
        templates.append(template(work, f"own{i}", "VMGUEST_IC", {
            "vmguest-ic.toml": (f'[components]\nfamily = "vmguest"\nname = "x"\nversion = "{v}"\n'
                                '[install.linux]\ncommand = "sh ./install.sh"\n').encode()}))
    store = os.path.join(work, "store")
    os.makedirs(store)
    for i in range(count):
        dst = os.path.join(store, f"candidate-{i:04d}.iso")
        shutil.copyfile(templates[i % len(templates)], dst)
        os.truncate(dst, 700 * 1024 * 1024)  # sparse: a realistic size, no disk use
    return store


def measure(script, env, runs):
    """Median wall seconds and the bytes read (rchar) of `sh -c script` and its children."""
    times, rchar = [], None
    for _ in range(runs):
        full = script + ' >/dev/null 2>&1; grep ^rchar: /proc/$$/io'
        t = time.perf_counter()
        out = subprocess.run(["sh", "-c", full], env=env, capture_output=True, text=True, check=True)
        times.append(time.perf_counter() - t)
        rchar = int(out.stdout.split()[1])
    return statistics.median(times), rchar


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--count", type=int, default=1000)
    a = ap.parse_args()
    for tool in ["xorriso", "isoinfo", "blkid", VMGUEST]:
        if not shutil.which(tool):
            sys.exit(f"{tool} not found (apt-get install xorriso genisoimage util-linux; cargo build --release)")
    with tempfile.TemporaryDirectory(prefix="vmguest-bench-") as work:
        store = build_store(work, a.count)
        cfg = os.path.join(work, "config")
        os.makedirs(os.path.join(cfg, "vmguest"))
        with open(os.path.join(cfg, "vmguest", "config.toml"), "w") as f:
            f.write("search_well_known = false\n")
        env = dict(os.environ, VMGUEST_IC_PATH=store, XDG_CONFIG_HOME=cfg, STORE=store, VMGUEST=VMGUEST)
        env.pop("RUST_LOG", None)
        # One untimed pass warms the page cache for every command alike.
        subprocess.run(["sh", "-c", 'for f in "$STORE"/*.iso; do head -c 65536 "$f"; done >/dev/null'],
                       env=env, check=True)
        baseline = measure("true", env, a.runs)[1]
        rows = []
        for label, script in [
            ("vmguest Get-IntegrationComponentsIso", '"$VMGUEST" Get-IntegrationComponentsIso -GuestOS windows -OutputFormat Json'),
            ("sh loop: isoinfo -d -i", 'for f in "$STORE"/*.iso; do isoinfo -d -i "$f"; done'),
            ("sh loop: blkid -p", 'for f in "$STORE"/*.iso; do blkid -p -o export "$f"; done'),
        ]:
            secs, rchar = measure(script, env, a.runs)
            rows.append((label, secs, (rchar - baseline) / a.count))
        out = subprocess.run([VMGUEST, "Get-IntegrationComponentsIso", "-GuestOS", "windows",
                              "-OutputFormat", "Json"], env=env, capture_output=True, text=True)
        own = [int(l.split('"bytes_read":')[1].split(",")[0].rstrip("}")) for l in out.stdout.splitlines()]
        cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
                             capture_output=True, text=True).stdout.strip()
        print(f"machine: {platform.node()}, {os.cpu_count()} cores, {cpu}, {platform.platform()}")
        print(f"store: {a.count} sparse candidate ISOs of 700 MB; median of {a.runs} runs; page cache warm\n")
        print("| command | median wall time | per candidate | bytes read per candidate (rchar) |")
        print("|---|---|---|---|")
        for label, secs, per in rows:
            print(f"| {label} | {secs * 1000:.0f} ms | {secs * 1e6 / a.count:.0f} µs | {per:,.0f} |")
        print(f"\nvmguest's own count of image bytes read per candidate: "
              f"median {statistics.median(own):,.0f}, max {max(own):,}")


if __name__ == "__main__":
    main()
