#!/usr/bin/env python3
"""Benchmark: where an agent install's time goes, phase by phase, beside a hand-written peer.

One booted test guest (the busybox guest of tests/guest/build-guest.sh, and the Debian
guest of tests/guest/build-debian-guest.sh when it is built), an empty IDE CD drive, and a
small own-format IC ISO whose installer copies its manifest and writes a status file (the
tests' `good_installer`). Alternating, RUNS times each:

  vmguest  `Install-IntegrationComponents NAME -VMDir DIR -Path ISO -OutputFormat Json
           -NoPlugins -Force`, one process per run; each phase's ms from its JSON.
  peer     a Python script (qemu.qmp for QMP, raw JSON lines on the agent socket) doing the
           same work with tight polling (POLL_S): connect, query-status, agent sync,
           guest-get-osinfo and guest-info, query-block, the same durable journal write (temporary file, fsync, rename,
           fsync of the directory), blockdev-change-medium, wait for the media to become
           readable in the guest (its primary volume descriptor read from /dev/sr0, as
           vmguest looks for it), mount, run the installer and wait, write the same install
           record, umount, eject, close the tray. Each step timed inside the script; one
           process per run, so its wall time includes Python's start.

The peer's "media appears" step is the guest kernel's own media-change detection: its
tight polling is the floor for that wait. The guest is left idle between runs (--settle,
untimed), so that its own handling of the last eject (udev's, on Debian) is over. Every
run is checked: vmguest's result is S_OK, the peer's installer exits 0, and afterwards the
drive holds no media (through the test's own monitor socket, NAME.ctl). A failed run is
printed with its error and left out of the medians; an empty drive left with its tray open
is printed and the run kept.

Every QEMU this script starts is stopped by the pid it recorded.

Usage: scripts/bench-install.py [--runs 7] [--guest busybox|debian|both] [--poll-ms 10]
       [--settle 3]
Needs: cargo build --release -p vmguest; bash tests/guest/build-guest.sh target/vmguest-guest
(and tests/guest/build-debian-guest.sh for the Debian guest); apt-get install
qemu-system-x86 qemu-utils xorriso python3-venv. qemu.qmp is pip-installed into
target/bench-install-venv on first use.
"""

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "harness"))
import qemu_peer as q  # noqa: E402

VMGUEST = os.path.join(ROOT, "target", "release", "vmguest")
VENV = os.path.join(ROOT, "target", "bench-install-venv")
PY = os.path.join(VENV, "bin", "python")
BUSYBOX = os.path.join(ROOT, "target", "vmguest-guest")
DEBIAN = os.path.join(ROOT, "target", "vmguest-debian-guest")
VERSION = "1.0.0"
INSTALLER = ("#!/bin/sh\nset -e\nmkdir -p /opt/vmguest-ic\n"
             "cp \"$VMGUEST_IC_MEDIA/vmguest-ic.toml\" /opt/vmguest-ic/\n"
             f"echo \"installed {VERSION}\" > /opt/vmguest-ic/STATUS\n"
             f"echo \"components {VERSION} installed\"\n")

# The peer. Steps are timed with perf_counter around exactly the calls that make them up
# and printed as one JSON object: {"steps": [[name, ms], ...], "attempts": {...}}.
PEER = r'''
import asyncio, base64, json, os, random, socket, sys, time
from qemu.qmp import ExecuteError, QMPClient

POLL_S = float(sys.argv[5])
MOUNT_POINT = "/run/vmguest-ic"
PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

class Qga:
    """The guest agent's wire protocol: one JSON line out, one JSON line back."""
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.settimeout(30)
        self.s.connect(path)
        self.buf = b""
    def _line(self):
        while b"\n" not in self.buf:
            data = self.s.recv(1 << 20)
            if not data:
                raise EOFError("agent closed")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)
    def sync(self):
        sid = random.randint(1, 1 << 30)
        self.s.sendall(b"\xff" + json.dumps({"execute": "guest-sync-delimited",
                                             "arguments": {"id": sid}}).encode() + b"\n")
        while True:
            while b"\xff" not in self.buf:
                self.buf += self.s.recv(1 << 20)
            self.buf = self.buf[self.buf.index(b"\xff") + 1:]
            if self._line().get("return") == sid:
                return
    def cmd(self, name, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.s.sendall(json.dumps(msg).encode() + b"\n")
        r = self._line()
        if "error" in r:
            raise RuntimeError(f"{name}: {r['error'].get('desc')}")
        return r["return"]
    def run(self, path, args, env=None):
        """guest-exec and guest-exec-status every POLL_S; returns (exitcode, out, err)."""
        a = {"path": path, "arg": args, "capture-output": True}
        if env:
            a["env"] = env
        pid = self.cmd("guest-exec", **a)["pid"]
        while True:
            st = self.cmd("guest-exec-status", pid=pid)
            if st["exited"]:
                dec = lambda k: base64.b64decode(st.get(k, "")).decode(errors="replace")
                return st.get("exitcode"), dec("out-data"), dec("err-data")
            time.sleep(POLL_S)
    def pvd(self, dev):
        h = self.cmd("guest-file-open", path=dev, mode="r")
        try:
            self.cmd("guest-file-seek", handle=h, offset=32768, whence="set")
            return base64.b64decode(self.cmd("guest-file-read", handle=h, count=2048)["buf-b64"])
        finally:
            self.cmd("guest-file-close", handle=h)

async def main(qmp_path, qga_path, iso, state):
    steps, attempts = [], {}
    t0 = time.perf_counter()
    def step(name, since):
        now = time.perf_counter()
        steps.append([name, (now - since) * 1000])
        return now
    with open(iso, "rb") as f:
        f.seek(32768)
        want = f.read(2048)
    qmp = QMPClient("peer")
    t = time.perf_counter()
    await qmp.connect(qmp_path)
    assert (await qmp.execute("query-status"))["status"] == "running"
    t = step("connect+check-running", t)
    ga = Qga(qga_path)
    ga.sync()
    # What vmguest asks before it relies on the agent: the guest's OS, and which calls
    # are switched off.
    ga.cmd("guest-get-osinfo")
    info = ga.cmd("guest-info")
    needed = {"guest-exec", "guest-exec-status", "guest-file-open", "guest-file-read"}
    assert all(c["enabled"] for c in info["supported_commands"] if c["name"] in needed)
    t = step("connect-agent", t)
    drives = await qmp.execute("query-block")
    drive = next(d for d in drives if d.get("qdev") == "cd0")
    assert "inserted" not in drive, drive
    t = step("choose-drive", t)
    # The same durable record vmguest's journal makes before the media change.
    os.makedirs(state, exist_ok=True)
    tmp, final = os.path.join(state, "entry.tmp"), os.path.join(state, "entry.json")
    with open(tmp, "wb") as f:
        f.write(json.dumps({"drive": "cd0", "ic": iso, "user": None}).encode())
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, final)
    d = os.open(state, os.O_RDONLY)
    os.fsync(d)
    os.close(d)
    t = step("journal", t)
    await qmp.execute("blockdev-change-medium", {"id": "cd0", "filename": iso, "format": "raw",
                                                 "read-only-mode": "read-only"})
    t = step("insert", t)
    n = 0
    while True:
        n += 1
        try:
            if ga.pvd("/dev/sr0") == want:
                break
        except RuntimeError:
            pass  # no medium yet: the kernel has not seen the change
        time.sleep(POLL_S)
    attempts["media-looks"] = n
    t = step("media-appears", t)
    n = 0
    while True:
        n += 1
        code, _, err = ga.run("/bin/sh", ["-c", 'mkdir -p "$1" && mount -t iso9660 -o ro "$2" "$1"',
                                          "sh", MOUNT_POINT, "/dev/sr0"])
        if code == 0:
            break
        if n >= 500:
            raise RuntimeError(f"mount: {err}")
        time.sleep(POLL_S)
    attempts["mounts"] = n
    t = step("mount", t)
    code, out, err = ga.run("/bin/sh", ["-c", 'cd "$VMGUEST_IC_MEDIA" && sh ./install.sh'],
                            [f"VMGUEST_IC_MEDIA={MOUNT_POINT}", PATH])
    assert code == 0, (code, out, err)
    t = step("installer", t)
    code, _, err = ga.run("/bin/sh", ["-c", 'mkdir -p "$1"', "sh", "/var/lib/vmguest"])
    assert code == 0, err
    h = ga.cmd("guest-file-open", path="/var/lib/vmguest/integration-components.toml", mode="w")
    ga.cmd("guest-file-write", handle=h, **{"buf-b64": base64.b64encode(
        b'iso_volume_id = "VMGUEST_IC_1_0_0"\n').decode()})
    ga.cmd("guest-file-close", handle=h)
    t = step("install-record", t)
    code, _, err = ga.run("/bin/sh", ["-c", 'umount "$1"', "sh", MOUNT_POINT])
    assert code == 0, err
    t = step("unmount", t)
    # Without force, as vmguest ejects: a guest that still holds the tray's lock refuses,
    # and is asked again.
    n = 0
    while True:
        n += 1
        try:
            await qmp.execute("eject", {"id": "cd0", "force": False})
            break
        except ExecuteError as e:
            if "is locked" not in str(e) or n >= 500:
                raise
        time.sleep(POLL_S)
    attempts["ejects"] = n
    t = step("eject", t)
    await qmp.execute("blockdev-close-tray", {"id": "cd0"})
    os.remove(final)
    t = step("close-tray+journal-close", t)
    await qmp.disconnect()
    ga.s.close()
    steps.append(["in-script total", (time.perf_counter() - t0) * 1000])
    print(json.dumps({"steps": steps, "attempts": attempts}))

asyncio.run(main(*sys.argv[1:5]))
'''

# vmguest's phases, in order, beside the peer's steps that do the same work.
MAP = [
    ("resolve", []), ("lock", []), ("connect", ["connect+check-running"]), ("recover", []),
    ("check-running", []), ("connect-agent", ["connect-agent"]), ("locate-iso", []),
    ("choose-drive", ["choose-drive"]), ("pre-install", []), ("iso-digest", []),
    ("stage-iso", []), ("journal", ["journal"]), ("insert-ic", ["insert"]),
    ("prepare-guest", ["media-appears", "mount"]),
    ("run-installer", ["installer", "install-record"]),
    ("unmount-in-guest", ["unmount"]), ("eject-ic", ["eject"]),
]


def venv():
    if not os.path.exists(PY):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run([PY, "-m", "pip", "install", "-q", "qemu.qmp"], check=True)
    return subprocess.run([PY, "-c", "import importlib.metadata as m; print(m.version('qemu.qmp'))"],
                          capture_output=True, text=True, check=True).stdout.strip()


def start_guest(vm_dir, name, kind):
    d = vm_dir
    args = ["qemu-system-x86_64", "-accel", "tcg", "-nodefaults", "-no-user-config",
            "-display", "none", "-no-reboot",
            "-qmp", f"unix:{d}/{name}.qmp,server=on,wait=off",
            "-qmp", f"unix:{d}/{name}.ctl,server=on,wait=off",
            "-serial", f"file:{d}/{name}.console"]
    if kind == "debian":
        overlay = os.path.join(d, f"{name}-root.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                        os.path.join(DEBIAN, "root.img"), overlay], check=True)
        args += ["-kernel", os.path.join(DEBIAN, "vmlinuz"), "-initrd", os.path.join(DEBIAN, "initrd.img"),
                 "-append", "console=ttyS0 panic=-1 systemd.unit=multi-user.target", "-m", "512",
                 "-drive", f"if=none,id=rootdisk,format=qcow2,file={overlay}",
                 "-device", "virtio-blk-pci,drive=rootdisk"]
    else:
        args += ["-kernel", os.path.join(BUSYBOX, "vmlinuz"), "-initrd", os.path.join(BUSYBOX, "initrd.img"),
                 "-append", "console=ttyS0 panic=-1", "-m", "256"]
    args += ["-chardev", f"socket,path={d}/{name}.qga,server=on,wait=off,id=qga0",
             "-device", "virtio-serial-pci",
             "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
             "-device", "ide-cd,id=cd0,bus=ide.1"]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    q.record(proc.pid)
    return proc


def wait_ready(proc, vm_dir, name, within):
    deadline = time.time() + 30
    while True:
        try:
            q.qmp(f"{vm_dir}/{name}.ctl").close()
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"QEMU for {name} did not start")
            time.sleep(0.05)
    t = time.perf_counter()
    q.qga(f"{vm_dir}/{name}.qga", ready_within=within).close()
    return time.perf_counter() - t


def drive_empty(vm_dir, name):
    p = q.qmp(f"{vm_dir}/{name}.ctl")
    try:
        cd = next(b for b in p.cmd("query-block") if b.get("qdev") == "cd0")
    finally:
        p.close()
    return "inserted" not in cd and not cd.get("tray_open", False)


def drive_state(vm_dir, name):
    p = q.qmp(f"{vm_dir}/{name}.ctl")
    try:
        cd = next(b for b in p.cmd("query-block") if b.get("qdev") == "cd0")
    finally:
        p.close()
    return json.dumps({"tray_open": cd.get("tray_open"), "locked": cd.get("locked"),
                       "inserted": cd.get("inserted", {}).get("file")})


def clean(vm_dir, name):
    """After a failed peer run: unmount in the guest, eject (forced), close the tray."""
    q.guest_sh(f"{vm_dir}/{name}.qga", "umount /run/vmguest-ic 2>/dev/null; true")
    p = q.qmp(f"{vm_dir}/{name}.ctl")
    try:
        p.cmd("eject", id="cd0", force=True)
        p.cmd("blockdev-close-tray", id="cd0")
    finally:
        p.close()


def run_vmguest(vm_dir, name, iso, env):
    t = time.perf_counter()
    out = subprocess.run([VMGUEST, "Install-IntegrationComponents", name, "-VMDir", vm_dir,
                          "-Path", iso, "-OutputFormat", "Json", "-NoPlugins", "-Force"],
                         env=env, capture_output=True, text=True)
    wall = (time.perf_counter() - t) * 1000
    recs = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    if len(recs) != 1:
        raise RuntimeError(f"vmguest printed no result ({out.returncode}): {out.stderr[-800:]}")
    r = recs[0]
    if r.get("result") != "S_OK":
        return "; ".join(r.get("error", {}).get("causes", [])) or r.get("result")
    phases = {}
    for p in r["phases"]:
        phases[p["phase"]] = phases.get(p["phase"], 0) + p["ms"]
    return wall, phases, r.get("total_ms"), r.get("notes", [])


def run_peer(vm_dir, name, iso, state, poll_s):
    t = time.perf_counter()
    out = subprocess.run([PY, "-c", PEER, f"{vm_dir}/{name}.qmp", f"{vm_dir}/{name}.qga", iso,
                          state, str(poll_s)], capture_output=True, text=True)
    wall = (time.perf_counter() - t) * 1000
    if out.returncode != 0:
        return out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"
    r = json.loads(out.stdout)
    return wall, {k: v for k, v in r["steps"]}, r["attempts"]


def bench(kind, work, iso, runs, poll_s, settle, env):
    vm_dir = os.path.join(work, f"vms-{kind}")
    os.makedirs(vm_dir)
    name = f"bench-{kind}"
    proc = start_guest(vm_dir, name, kind)
    try:
        boot = wait_ready(proc, vm_dir, name, 600 if kind == "debian" else 180)
        vm_runs, peer_runs, failed = [], [], []
        # One untimed install of each first, so that caches in the guest and on the host are
        # warm. A failed run is recorded (with its error) and left out of the medians.
        for i in range(-1, runs):
            for who, go, into in [
                    ("vmguest", lambda: run_vmguest(vm_dir, name, iso, env), vm_runs),
                    ("peer", lambda: run_peer(vm_dir, name, iso, os.path.join(work, "peer-state"),
                                              poll_s), peer_runs)]:
                got = go()
                if not drive_empty(vm_dir, name):
                    state = drive_state(vm_dir, name)
                    failed.append((i, who, f"left the drive as {state}"))
                    clean(vm_dir, name)
                    # An empty drive with its tray open still timed a whole install: kept,
                    # and reported above. Media left in is a failed run.
                    if not isinstance(got, str) and json.loads(state)["inserted"]:
                        got = "the IC media was left in"
                if isinstance(got, str):
                    failed.append((i, who, got))
                elif i >= 0:
                    into.append(got)
                print(f"{kind} run {i} {who}: "
                      f"{got if isinstance(got, str) else round(got[0])}", file=sys.stderr, flush=True)
                assert drive_empty(vm_dir, name), f"{who}: the drive could not be emptied"
                # The guest idle, untimed, so that the guest's own handling of the last
                # eject (udev's, on Debian) is over before the next run.
                time.sleep(settle)
    finally:
        if proc.poll() is None:  # by the pid recorded at start
            proc.kill()
        proc.wait()
        q.forget(proc.pid)
    return boot, vm_runs, peer_runs, failed


def med(xs):
    return statistics.median(xs) if xs else 0.0


def table(kind, vm_runs, peer_runs):
    if not vm_runs or not peer_runs:
        print(f"\n### {kind} guest: too few successful runs for a table")
        return
    print(f"\n### {kind} guest: medians of the successful runs (ms)\n")
    print("| vmguest phase | vmguest | min–max | peer step(s) | peer | min–max |")
    print("|---|---|---|---|---|---|")
    seen = set()
    for phase, steps in MAP:
        seen.add(phase)
        vals = [r[1].get(phase) for r in vm_runs]
        vals = [v for v in vals if v is not None]
        if not vals and not steps:
            continue
        pv = [sum(r[1][s] for s in steps) for r in peer_runs] if steps else []
        vcell = f"{med(vals):.0f}" if vals else "—"
        vrange = f"{min(vals)}–{max(vals)}" if vals else ""
        pcell = f"{med(pv):.1f}" if pv else "—"
        prange = f"{min(pv):.1f}–{max(pv):.1f}" if pv else ""
        print(f"| {phase} | {vcell} | {vrange} | {' + '.join(steps) or '—'} | {pcell} | {prange} |")
    extra = sorted({p for r in vm_runs for p in r[1]} - seen)
    for phase in extra:
        vals = [r[1].get(phase, 0) for r in vm_runs]
        print(f"| {phase} | {med(vals):.0f} | {min(vals)}–{max(vals)} | — | — | |")
    for s in ["media-appears", "mount", "installer", "install-record", "close-tray+journal-close"]:
        pv = [r[1][s] for r in peer_runs]
        print(f"| (peer step) | | | {s} | {med(pv):.1f} | {min(pv):.1f}–{max(pv):.1f} |")
    vt = [r[2] for r in vm_runs if r[2] is not None]
    print(f"| sum of phases (`total_ms`) | {med(vt):.0f} | {min(vt)}–{max(vt)} | in-script total | "
          f"{med([r[1]['in-script total'] for r in peer_runs]):.1f} | |")
    print(f"| whole process (wall) | {med([r[0] for r in vm_runs]):.0f} | "
          f"{min(r[0] for r in vm_runs):.0f}–{max(r[0] for r in vm_runs):.0f} | whole process (wall) | "
          f"{med([r[0] for r in peer_runs]):.0f} | "
          f"{min(r[0] for r in peer_runs):.0f}–{max(r[0] for r in peer_runs):.0f} |")
    looks = [r[2]["media-looks"] for r in peer_runs]
    mounts = [r[2]["mounts"] for r in peer_runs]
    ejects = [r[2]["ejects"] for r in peer_runs]
    print(f"\npeer: PVD looks until the media was readable {looks}; mount attempts {mounts}; "
          f"eject attempts {ejects}")
    notes = {n for r in vm_runs for n in r[3]}
    if notes:
        print(f"vmguest notes: {sorted(notes)}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--guest", choices=["busybox", "debian", "both"], default="both")
    ap.add_argument("--poll-ms", type=float, default=10.0, help="the peer's poll interval")
    ap.add_argument("--settle", type=float, default=3.0,
                    help="seconds the guest is left idle between runs (untimed)")
    a = ap.parse_args()
    # A TERM (or an INT to a background job, which ignores it) must still run the clean-up
    # that stops the QEMUs by their pids.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    for tool in ["qemu-system-x86_64", "qemu-img", "xorriso", VMGUEST]:
        if not shutil.which(tool):
            sys.exit(f"{tool} not found (see the usage in this script's docstring)")
    qmp_version = venv()
    kinds = []
    if a.guest in ("busybox", "both"):
        kinds.append("busybox")
    if a.guest in ("debian", "both"):
        if all(os.path.exists(os.path.join(DEBIAN, f)) for f in ["vmlinuz", "initrd.img", "root.img", "stamp"]):
            kinds.append("debian")
        else:
            print(f"Debian guest not built ({DEBIAN}): skipped", file=sys.stderr)
    load_before = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory(prefix="vmguest-bench-install-") as work:
        src = os.path.join(work, "ic.d")
        os.makedirs(src)
        with open(os.path.join(src, "vmguest-ic.toml"), "w") as f:
            f.write('[components]\nfamily = "vmguest"\nname = "vmguest test components"\n'
                    f'version = "{VERSION}"\n\n[install.linux]\ncommand = "sh ./install.sh"\n')
        with open(os.path.join(src, "install.sh"), "w") as f:
            f.write(INSTALLER)
        iso = os.path.join(work, "ic.iso")
        subprocess.run(["xorriso", "-as", "mkisofs", "-R", "-J", "-V", "VMGUEST_IC_1_0_0",
                        "-o", iso, src], check=True, stderr=subprocess.DEVNULL)
        env = dict(os.environ, XDG_CACHE_HOME=os.path.join(work, "cache"),
                   XDG_CONFIG_HOME=os.path.join(work, "cfg"),
                   VMGUEST_STATE_DIR=os.path.join(work, "state"))
        env.pop("RUST_LOG", None)
        for kind in kinds:
            boot, vm_runs, peer_runs, failed = bench(kind, work, iso, a.runs, a.poll_ms / 1000,
                                                     a.settle, env)
            results.append((kind, boot, vm_runs, peer_runs, os.getloadavg(), failed))
            report(a, qmp_version, load_before, results[-1:])
    if len(results) > 1:
        report(a, qmp_version, load_before, results)


def report(a, qmp_version, load_before, results):
    """Print the tables of `results` (each guest's as soon as it is measured, so that a
    later guest's failure does not lose it)."""
    cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
                         capture_output=True, text=True).stdout.strip()
    print(f"machine: {os.cpu_count()} cores, {cpu}, {platform.platform()}; qemu.qmp {qmp_version}, "
          f"Python {platform.python_version()}; peer poll {a.poll_ms:g} ms; {a.settle:g} s idle "
          f"between runs; load average "
          f"{load_before[0]:.2f} at start, {results[-1][4][0]:.2f} after {results[-1][0]}")
    for kind, boot, vm_runs, peer_runs, _, failed in results:
        print(f"\n{kind}: agent answered {boot:.1f} s after QEMU started; "
              f"{len(vm_runs)} vmguest and {len(peer_runs)} peer runs timed")
        for i, who, why in failed:
            print(f"run {i if i >= 0 else 'warm-up'}, {who}: {why}")
        table(kind, vm_runs, peer_runs)
        print("\nraw vmguest phases per run:")
        for r in vm_runs:
            print("  ", json.dumps(r[1]), f"wall {r[0]:.0f}")
        print("raw peer steps per run:")
        for r in peer_runs:
            print("  ", json.dumps({k: round(v, 1) for k, v in r[1].items()}), f"wall {r[0]:.0f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
