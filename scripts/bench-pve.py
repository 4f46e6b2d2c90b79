#!/usr/bin/env python3
"""Benchmark: Get-VM and the media phase through the Proxmox VE API, beside proxmoxer.

The PVE API emulation (tests/harness/pve_emulation.py, HTTPS on loopback, as the tests
start it) runs in front of N firmware-only QEMU VMs laid out as qemu-server starts them
(`ide2` on `drive-ide2`, an empty CD drive), all on node pve1 of the emulated cluster,
with a token holding every privilege vmguest uses and a CA and leaf certificate made
here with the openssl CLI. Timed, each as one whole process per run:

- Get-VM: `vmguest Get-VM -ConnectionUri pve://127.0.0.1:PORT -OutputFormat Json`,
  beside a proxmoxer script making the same HTTP calls in the same order;
- the media phase: one `vmguest Install-IntegrationComponents -VMName <all N> -Path ISO
  -NoWait -NoPlugins` (look every VM up, check that it runs, read its drives, ask the
  monitor whether the guest holds the tray, find the ISO on the node's storage, insert
  it with a config PUT carrying the digest), beside a proxmoxer script making the same
  calls for each VM, one VM after the other, on one session.

The "same calls" peers mirror the emulation's request log of a vmguest run (its
`METHOD PATH` lines): every run's calls are counted from that log and must match
vmguest's, call for call. The "minimal calls" peers make only the calls a hand-written
script needs for the same checks; the script prints both call lists.

The IC ISO lies outside the storage, so vmguest uploads it once to pve1's storage
(`vmguest-ic-<sha256>.iso`) in an untimed cold install of all N VMs, which must make
exactly one upload (the other workers wait for it); the timed runs find it
there (`storage/local/content`), so they measure the media phase, not the upload, and
vmguest's digest cache is warm. Each tool's first run is untimed; medians of RUNS runs.
Between runs every drive is emptied, untimed, through the API as qemu-server does it
(`ide2=none,media=cdrom`, a forced eject); every insert is checked through QMP on each
VM's own second monitor socket (VMID.ctl, which the emulation never uses), and so is
every eject.

Everything is measured twice: against the emulation as the tests run it, and against
the same emulation with TCP_NODELAY on its sockets (set by a launcher here; its code is
unchanged). It writes an answer's headers and body separately, so without TCP_NODELAY
every answer waits for the client's delayed ACK (about 40 ms): those figures count calls
more than they time clients. Every process started here is stopped by the pid recorded
at its start.

Usage: scripts/bench-pve.py [--runs 5] [--vms 8]
Needs: cargo build --release -p vmguest; qemu-system-x86_64, xorriso, openssl, python3
with venv; proxmoxer and requests are installed from PyPI into target/bench-pve-venv.
"""

import argparse
import collections
import ctypes
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VMGUEST = os.path.join(ROOT, "target", "release", "vmguest")
EMULATION = os.path.join(ROOT, "tests", "harness", "pve_emulation.py")
VENV = os.path.join(ROOT, "target", "bench-pve-venv")
NODE = "pve1"
STORAGE = "local"
TOKEN_ID = "vmguest@pve!bench"
# What the tests' Token::full holds (tests/it/pve_emulation.rs ALL_PRIVILEGES).
PRIVILEGES = ["Sys.Audit", "VM.Audit", "VM.Config.CDROM", "VM.GuestAgent.Audit",
              "VM.GuestAgent.Unrestricted", "VM.GuestAgent.FileRead", "Datastore.Audit",
              "Datastore.AllocateSpace", "Datastore.AllocateTemplate", "Datastore.Allocate"]
EMPTY = "none,media=cdrom"

# The peers take: host port user token_name token_value ca [...]. The "same calls"
# peers make exactly the calls of vmguest's runs, in the order the emulation's request
# log shows for one VM at a time (checked for every run, call for call); the "minimal"
# peers make only the calls a hand-written script needs for the same checks.
PEER_COMMON = r"""
import json, sys
from proxmoxer import ProxmoxAPI
host, port, user, token_name, token_value, ca = sys.argv[1:7]
px = ProxmoxAPI(host, port=int(port), user=user, token_name=token_name,
                token_value=token_value, verify_ssl=ca, service="PVE", timeout=60)

def qemu_vms():
    return [r for r in px.cluster.resources.get(type="vm") if r["type"] == "qemu"]

def tray_locked(info_block, drive):
    lines = info_block.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(f"drive-{drive}:"):
            for more in lines[i + 1:]:
                if not more.startswith(" "):
                    break
                if "Removable device:" in more:
                    return "not locked" not in more
    return False

def cd_drives(conf):
    return {k: v for k, v in conf.items()
            if k.rstrip("0123456789") in ("ide", "sata", "scsi") and "media=cdrom" in str(v)}

# The node's first ISO storage and the volids on it, asked once per node.
def node_isos(isos, node):
    if node not in isos:
        storages = px.nodes(node).storage.get(content="iso", enabled=1)
        storage = next(s["storage"] for s in storages if "iso" in s["content"].split(","))
        content = px.nodes(node).storage(storage).content.get(content="iso")
        isos[node] = (storage, {v["volid"] for v in content})
    return isos[node]

def row(vm, st, conf, block):
    return {"name": vm.get("name"), "node": vm["node"], "vmid": vm["vmid"],
            "state": st.get("qmpstatus") or st["status"],
            "dvd_drives": {k: {"value": v, "locked": tray_locked(block, k)}
                           for k, v in cd_drives(conf).items()}}
"""

# Get-VM as vmguest does it: the VM list once (each VM is opened by its name from it),
# the cluster's name once; then per VM, in name order, status, config, `info block`.
PEER_GET_VM = PEER_COMMON + r"""
listed = qemu_vms()
for i, name in enumerate(sorted(r.get("name") or str(r["vmid"]) for r in listed)):
    vm = next(r for r in listed if r.get("name") == name)
    if i == 0:
        cluster = px.cluster.status.get()
    q = px.nodes(vm["node"]).qemu(vm["vmid"])
    st = q.status.current.get()
    conf = q.config.get(current=1)
    block = q.monitor.post(command="info block")
    print(json.dumps(row(vm, st, conf, block)))
"""

# Get-VM with the calls it needs: the list once; status, config, `info block` per VM.
PEER_GET_VM_MIN = PEER_COMMON + r"""
for vm in sorted(qemu_vms(), key=lambda r: r.get("name") or str(r["vmid"])):
    q = px.nodes(vm["node"]).qemu(vm["vmid"])
    st = q.status.current.get()
    conf = q.config.get(current=1)
    block = q.monitor.post(command="info block")
    print(json.dumps(row(vm, st, conf, block)))
"""

# The media phase as vmguest does it, one VM after the other on one session: the VM
# list once (each VM opened by its name from it), the cluster's name once; then per VM
# status, config, `info block`, the node's ISO storage and the storage's ISO list once
# per node (the ISO is there: no upload), config again for a fresh digest, `info
# block` again right before the change, the config PUT with that digest, status.
PEER_MEDIA = PEER_COMMON + r"""
iso_name, drive = sys.argv[7], "ide2"
names = sys.argv[8:]
listed = qemu_vms()
opened = []
for i, name in enumerate(names):
    matches = [r for r in listed if r.get("name") == name]
    assert len(matches) == 1, (name, matches)
    if i == 0:
        cluster = px.cluster.status.get()
    opened.append(matches[0])
isos = {}
for vm in opened:
    q = px.nodes(vm["node"]).qemu(vm["vmid"])
    st = q.status.current.get()
    assert st["status"] == "running" and st.get("qmpstatus") == "running", st
    conf = q.config.get(current=1)
    assert conf.get(drive) == "none,media=cdrom", conf
    assert not tray_locked(q.monitor.post(command="info block"), drive)
    storage, volids = node_isos(isos, vm["node"])
    volid = f"{storage}:iso/{iso_name}"
    assert volid in volids, volids
    conf = q.config.get(current=1)
    assert "lock" not in conf, conf
    assert not tray_locked(q.monitor.post(command="info block"), drive)
    q.config.put(**{drive: f"{volid},media=cdrom"}, digest=conf["digest"])
    st = q.status.current.get()
    assert st["status"] == "running", st
"""

# The media phase with the calls it needs: the VM list and the node's ISO storage and
# its ISO list once; per VM status, config (drive, lock, digest), `info block`, PUT.
PEER_MEDIA_MIN = PEER_COMMON + r"""
iso_name, drive = sys.argv[7], "ide2"
names = sys.argv[8:]
vms = {r.get("name"): r for r in qemu_vms()}
isos = {}
for name in names:
    vm = vms[name]
    q = px.nodes(vm["node"]).qemu(vm["vmid"])
    st = q.status.current.get()
    assert st["status"] == "running" and st.get("qmpstatus") == "running", st
    conf = q.config.get(current=1)
    assert conf.get(drive) == "none,media=cdrom" and "lock" not in conf, conf
    assert not tray_locked(q.monitor.post(command="info block"), drive)
    storage, volids = node_isos(isos, vm["node"])
    volid = f"{storage}:iso/{iso_name}"
    assert volid in volids, volids
    q.config.put(**{drive: f"{volid},media=cdrom"}, digest=conf["digest"])
"""

# The emulation as the tests run it, but with TCP_NODELAY on its connections: it writes
# a response's headers and body in two writes, so without it every answer waits for the
# client's delayed ACK (about 40 ms on Linux). Only that socket option differs.
NODELAY_LAUNCHER = r"""
import runpy, sys
path = sys.argv[1]
sys.argv = sys.argv[1:]
ns = runpy.run_path(path, run_name="pve_emulation")
ns["Handler"].disable_nagle_algorithm = True
ns["main"]()
"""


def die_with_parent():
    """PR_SET_PDEATHSIG: a child of this script dies with it, even if it is killed."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)


class Processes:
    """Every process started here, stopped by the pid recorded at its start."""

    def __init__(self):
        self.procs = []

    def start(self, args, **kw):
        proc = subprocess.Popen(args, preexec_fn=die_with_parent, **kw)
        self.procs.append(proc)
        return proc

    def stop_all(self):
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.kill()  # this pid's own SIGKILL, nothing found by name
            proc.wait()


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_tls(work):
    """A CA (as pve-root-ca.pem) and a leaf for 127.0.0.1 signed by it, P-256."""
    d = os.path.join(work, "tls")
    os.makedirs(d)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", "ca.key", "-out", "pve-root-ca.pem", "-days", "2",
            "-subj", "/CN=PVE bench CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "pve-ssl.key", "-out", "pve-ssl.csr", "-subj", "/CN=pve1.bench.invalid",
            cwd=d)
    with open(os.path.join(d, "leaf.ext"), "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
                "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
    openssl("x509", "-req", "-in", "pve-ssl.csr", "-CA", "pve-root-ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "leaf.ext", "-out", "pve-ssl.pem", cwd=d)
    return {k: os.path.join(d, f) for k, f in
            (("ca", "pve-root-ca.pem"), ("cert", "pve-ssl.pem"), ("key", "pve-ssl.key"))}


def wait_for(path, what, timeout=30):
    deadline = time.time() + timeout
    while not os.path.exists(path):
        if time.time() > deadline:
            raise SystemExit(f"{what} never appeared: {path}")
        time.sleep(0.05)


def qmp(path, cmd):
    """One QMP command on the VM's own control socket (not the emulation's)."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(path)
    f = s.makefile("rwb")
    try:
        json.loads(f.readline())  # greeting
        for req in ({"execute": "qmp_capabilities"}, {"execute": cmd}):
            f.write(json.dumps(req).encode() + b"\n")
            f.flush()
            while True:
                msg = json.loads(f.readline())
                if "event" in msg:
                    continue
                if "error" in msg:
                    raise SystemExit(f"QMP {cmd}: {msg['error']}")
                break
        return msg["return"]
    finally:
        f.close()
        s.close()


def ide2_file(ctl):
    for dev in qmp(ctl, "query-block"):
        qdev = dev.get("qdev", "").rstrip("/").split("/")[-1]
        if qdev == "ide2" or dev.get("device") == "drive-ide2":
            ins = dev.get("inserted")
            return ins["file"] if ins else None
    raise SystemExit(f"{ctl}: no ide2 in query-block")


def start_vms(procs, work, n):
    vms = []
    qemu = "/usr/bin/qemu-system-x86_64"
    for i in range(n):
        vmid = 100 + i
        d = os.path.join(work, "vms")
        os.makedirs(d, exist_ok=True)
        base = os.path.join(d, str(vmid))
        procs.start([qemu, "-accel", "tcg", "-nodefaults", "-no-user-config", "-display", "none",
                     "-m", "64", "-nic", "none", "-name", f"bench{i}",
                     "-qmp", f"unix:{base}.qmp,server=on,wait=off",
                     "-qmp", f"unix:{base}.ctl,server=on,wait=off",
                     "-drive", "if=none,id=drive-ide2,media=cdrom",
                     "-device", "ide-cd,bus=ide.1,unit=0,drive=drive-ide2,id=ide2"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=open(base + ".stderr", "w"))
        vms.append({"vmid": vmid, "name": f"bench{i}", "qmp": base + ".qmp", "ctl": base + ".ctl"})
    for vm in vms:
        wait_for(vm["qmp"], "QMP socket")
        wait_for(vm["ctl"], "QMP control socket")
        assert ide2_file(vm["ctl"]) is None
    return vms


def local_node():
    short = socket.gethostname().split(".")[0].lower()
    if not short or short in ("pve1", "pve2"):
        raise SystemExit(f"this host name ({short!r}) cannot name the emulation's local node")
    return short


class Emulation:
    def __init__(self, procs, work, tls, vms, secret, nodelay):
        self.dir = os.path.join(work, "emulation-nodelay" if nodelay else "emulation")
        os.makedirs(self.dir)
        nodes = [local_node(), NODE, "pve2"]
        self.log = os.path.join(self.dir, "requests.log")
        self.iso_dirs = {n: os.path.join(self.dir, f"storage-{STORAGE}-{n}") for n in nodes}
        cfg = {
            "cluster": "benchcluster", "local_node": nodes[0], "nodes": nodes,
            "cert": tls["cert"], "key": tls["key"], "port": 0, "request_log": self.log,
            "unauthorized_delay": 3,
            "storages": [{"id": STORAGE, "path": self.iso_dirs[nodes[0]],
                          "node_paths": self.iso_dirs, "content": ["iso", "vztmpl"],
                          "enabled": True, "nodes": None, "shared": False}],
            "tokens": {TOKEN_ID: {"secret": secret, "privileges": PRIVILEGES}},
            "vms": [{"vmid": vm["vmid"], "node": NODE, "qmp": vm["qmp"], "qga": None,
                     "config": {"name": vm["name"], "memory": "64", "ostype": "l26",
                                "ide2": EMPTY}} for vm in vms],
        }
        path = os.path.join(self.dir, "emulation.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        argv = ["python3", "-c", NODELAY_LAUNCHER] if nodelay else ["python3"]
        self.proc = procs.start([*argv, EMULATION, path], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE,
                                stderr=open(os.path.join(self.dir, "stderr"), "w"), text=True)
        line = self.proc.stdout.readline().strip()
        if not line.startswith("PORT "):
            raise SystemExit(f"the emulation did not start: {line!r}")
        self.port = int(line.split()[1])
        self.ctx = ssl.create_default_context(cafile=tls["ca"])
        self.auth = f"PVEAPIToken={TOKEN_ID}={secret}"

    def iso_dir(self, node):
        return os.path.join(self.iso_dirs[node], "template", "iso")

    def requests(self):
        try:
            with open(self.log) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def call(self, method, path, body=None):
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=60)
        headers = {"Authorization": self.auth}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, "/api2/json" + path, body=data, headers=headers)
        resp = conn.getresponse()
        text = resp.read()
        conn.close()
        if resp.status != 200:
            raise SystemExit(f"{method} {path}: {resp.status} {resp.reason} {text!r}")
        return json.loads(text)["data"]

    def eject(self, vm):
        """What qemu-server does for `qm set VMID --ide2 none,media=cdrom`: a forced eject."""
        self.call("PUT", f"/nodes/{NODE}/qemu/{vm['vmid']}/config", {"ide2": EMPTY})


def make_iso(work):
    src = os.path.join(work, "ic.d")
    os.makedirs(src)
    with open(os.path.join(src, "vmguest-ic.toml"), "w") as f:
        f.write('[components]\nfamily = "vmguest"\nname = "bench"\nversion = "1.0.0"\n'
                '[install.linux]\ncommand = "true"\n')
    iso = os.path.join(work, "ic.iso")
    subprocess.run(["xorriso", "-as", "mkisofs", "-R", "-J", "-V", "VMGUEST_IC_1_0_0", "-o",
                    iso, src], check=True, capture_output=True)
    return iso


def venv_python():
    py = os.path.join(VENV, "bin", "python3")
    if not os.path.exists(py):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    if subprocess.run([py, "-c", "import proxmoxer, requests"], capture_output=True).returncode:
        subprocess.run([py, "-m", "pip", "install", "-q", "proxmoxer", "requests"], check=True)
    return py


def timed(fn):
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--vms", type=int, default=8)
    args = ap.parse_args()
    load_before = os.getloadavg()
    py = venv_python()
    versions = subprocess.run(
        [py, "-c", "import proxmoxer, requests, sys; "
         "print(proxmoxer.__version__, requests.__version__, sys.version.split()[0])"],
        capture_output=True, text=True, check=True).stdout.split()
    work = tempfile.mkdtemp(prefix="vmg-bench-pve")
    procs = Processes()
    try:
        tls = make_tls(work)
        iso = make_iso(work)
        secret = os.urandom(16).hex()
        vms = start_vms(procs, work, args.vms)
        names = [vm["name"] for vm in vms]
        results = {}
        logs = {}
        for mode, nodelay in (("as in the tests", False), ("TCP_NODELAY", True)):
            emu = Emulation(procs, work, tls, vms, secret, nodelay)
            measure(args, py, emu, tls, iso, secret, vms, names, work, mode, results, logs)
            emu.proc.kill()  # by its recorded pid; procs.stop_all() reaps it
            emu.proc.wait()
        # Process start and imports alone, for the reader: what a Python peer pays first.
        imports = statistics.median(timed(lambda: subprocess.run(
            [py, "-c", "import proxmoxer, requests"], check=True)) for _ in range(args.runs))
        help_ms = statistics.median(timed(lambda: subprocess.run(
            [VMGUEST, "--help"], check=True, capture_output=True)) for _ in range(args.runs))
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()

    print(f"machine: {platform.node()}, {os.cpu_count()} cores, {cpu_model()}; {args.vms} VMs "
          f"on node {NODE}; median of {args.runs} runs; proxmoxer {versions[0]}, requests "
          f"{versions[1]}, Python {versions[2]}; load average (1 min) {load_before[0]:.2f} "
          f"before, {load_after[0]:.2f} after")
    for op in ("Get-VM", "media phase"):
        mine = logs[("as in the tests", op, "vmguest")]
        least = logs[("as in the tests", op, "proxmoxer, minimal calls")]
        print(f"\n{op}: calls per run of vmguest (= the 'same calls' peer): "
              f"{sum(mine.values())}; of the 'minimal calls' peer: {sum(least.values())}")
        for line, n in sorted(mine.items(), key=lambda kv: (-kv[1], kv[0])):
            print(f"  {n:3} {least.get(line, 0):3} {line}")
    print()
    print("| emulation | work | tool | calls | all VMs (ms) | per VM (ms) | min–max (ms) "
          "| vs vmguest |")
    print("|---|---|---|---|---|---|---|---|")
    for (mode, op, label), (med, lo, hi) in results.items():
        ratio = med / results[(mode, op, "vmguest")][0]
        n = sum(logs[(mode, op, label)].values())
        print(f"| {mode} | {op} | {label} | {n} | {med:.0f} | {med / args.vms:.1f} | "
              f"{lo:.0f}–{hi:.0f} | {ratio:.2f}× |")
    print(f"\nprocess start alone: `python3 -c 'import proxmoxer, requests'` {imports:.0f} ms, "
          f"`vmguest --help` {help_ms:.1f} ms (medians of {args.runs})")


def measure(args, py, emu, tls, iso, secret, vms, names, work, mode, results, logs):
    uri = f"pve://127.0.0.1:{emu.port}"
    env = dict(os.environ, PVE_API_TOKEN=f"{TOKEN_ID}={secret}", PVE_CA_FILE=tls["ca"],
               VMGUEST_STATE_DIR=os.path.join(work, "state"),
               XDG_CACHE_HOME=os.path.join(work, "cache"))
    for k in ("PVE_FINGERPRINT", "VMGUEST_CONFIG"):
        env.pop(k, None)
    user, token_name = TOKEN_ID.split("!")
    peer_args = ["127.0.0.1", str(emu.port), user, token_name, secret, tls["ca"]]
    stored = {}

    def run(argv, what):
        out = subprocess.run(argv, capture_output=True, text=True, env=env)
        if out.returncode:
            raise SystemExit(f"{what} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]

    def get_vm_rows(rows):
        assert sorted(r["name"] for r in rows) == sorted(names), rows
        assert all(r["state"] == "running" for r in rows), rows
        assert all(len(r["dvd_drives"]) == 1 for r in rows), rows

    def vmguest_get_vm():
        get_vm_rows(run([VMGUEST, "Get-VM", "-ConnectionUri", uri, "-OutputFormat", "Json"],
                        "vmguest Get-VM"))

    def peer_get_vm(code):
        return lambda: get_vm_rows(run([py, "-c", code, *peer_args], "proxmoxer Get-VM"))

    def vmguest_media(which):
        rows = run([VMGUEST, "Install-IntegrationComponents", "-VMName", ",".join(which),
                    "-ConnectionUri", uri, "-Path", iso, "-NoWait", "-NoPlugins",
                    "-OutputFormat", "Json"], "vmguest Install-IntegrationComponents")
        assert len(rows) == len(which) and all(r["result"] == "S_OK" for r in rows), rows

    def peer_media(code):
        return lambda: run([py, "-c", code, *peer_args, stored["name"], *names],
                           "proxmoxer media phase")

    def inserted(which):
        want = os.path.join(emu.iso_dir(NODE), stored["name"])
        for vm in which:
            got = ide2_file(vm["ctl"])
            assert got == want, f"{vm['name']}: ide2 holds {got!r}, not {want!r}"

    def eject(which):
        for vm in which:
            emu.eject(vm)
            assert ide2_file(vm["ctl"]) is None, f"{vm['name']}: not ejected"

    def uploads():
        return sum(1 for line in emu.requests() if line.endswith("/upload"))

    # Untimed: a cold install of every VM at once uploads the ISO to pve1's storage, once
    # (the other workers wait for that upload), for every later run.
    vmguest_media(names)
    isos = os.listdir(emu.iso_dir(NODE))
    assert len(isos) == 1 and isos[0].startswith("vmguest-ic-"), isos
    stored["name"] = isos[0]
    assert uploads() == 1, f"a cold install of {len(names)} VMs uploaded {uploads()} times"
    inserted(vms)
    eject(vms)

    for op, tools in (
            ("Get-VM", (("vmguest", vmguest_get_vm),
                        ("proxmoxer, same calls", peer_get_vm(PEER_GET_VM)),
                        ("proxmoxer, minimal calls", peer_get_vm(PEER_GET_VM_MIN)))),
            ("media phase", (("vmguest", lambda: vmguest_media(names)),
                             ("proxmoxer, same calls", peer_media(PEER_MEDIA)),
                             ("proxmoxer, minimal calls", peer_media(PEER_MEDIA_MIN))))):
        for label, fn in tools:
            ms = []
            for i in range(args.runs + 1):  # the first run warms, untimed
                before = len(emu.requests())
                t = timed(fn)
                c = collections.Counter(emu.requests()[before:])
                if op == "media phase":
                    inserted(vms)
                    eject(vms)
                if i:
                    ms.append(t)
                key = (mode, op, label)
                if key in logs and logs[key] != c:
                    raise SystemExit(f"{mode}, {op}, {label}: the calls changed between runs")
                logs[key] = c
            results[(mode, op, label)] = (statistics.median(ms), min(ms), max(ms))
        mine, peer = logs[(mode, op, "vmguest")], logs[(mode, op, "proxmoxer, same calls")]
        if mine != peer:
            raise SystemExit(f"{op}: the peer's calls differ from vmguest's: "
                             f"only vmguest {mine - peer}, only the peer {peer - mine}")
    assert uploads() == 1, "a timed run uploaded"


if __name__ == "__main__":
    main()
