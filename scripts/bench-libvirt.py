#!/usr/bin/env python3
"""Benchmark: the media phase on libvirt domains, beside virsh and libvirt-python.

One libvirt daemon (started here, in a private mount namespace, as the tests do) runs
N firmware-only domains, each with one empty CD drive. The media phase (look the
domain up, check that it runs, find the drive, insert the ISO) is timed for all N:

- vmguest: one `Install-IntegrationComponents -NoWait` over the N domains;
- virsh: `virsh change-media NAME hdc ISO --insert --live`, once per domain, as a shell
  loop does it;
- libvirt-python: one process, one connection, the same lookup, state, XML and
  updateDeviceFlags calls for each domain.

Each over the daemon's unix socket and over ssh (an sshd on a loopback port with a key
made here, `qemu+ssh://...&proxy=netcat`). Medians of RUNS runs; the media are ejected
between runs, untimed, and every insert is checked. Every process started here is
stopped by the pid recorded at start.

Usage: scripts/bench-libvirt.py [--runs 5] [--domains 8]
Needs: cargo build --release; scripts/deps.sh; apt-get install python3-libvirt.
"""

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VMGUEST = os.path.join(ROOT, "target", "release", "vmguest")
BINDS = [("etc", "/etc/libvirt"), ("lib", "/var/lib/libvirt"), ("run", "/run/libvirt"),
         ("log", "/var/log/libvirt"), ("cache", "/var/cache/libvirt")]

PY_PEER = r'''
import sys, libvirt
uri, iso, names = sys.argv[1], sys.argv[2], sys.argv[3:]
libvirt.registerErrorHandler(lambda *a: None, None)
conn = libvirt.open(uri)
for name in names:
    dom = conn.lookupByName(name)
    state, _ = dom.state()
    assert state == libvirt.VIR_DOMAIN_RUNNING
    xml = dom.XMLDesc(0)
    assert "device='cdrom'" in xml
    dom.updateDeviceFlags(
        "<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>"
        f"<source file='{iso}'/><target dev='hdc' bus='ide'/><readonly/></disk>",
        libvirt.VIR_DOMAIN_AFFECT_LIVE)
conn.close()
'''


class Daemon:
    def __init__(self, work):
        self.dir = os.path.join(work, "libvirt")
        for ours, _ in BINDS:
            os.makedirs(os.path.join(self.dir, ours))
        with open(os.path.join(self.dir, "etc/libvirtd.conf"), "w") as f:
            f.write('unix_sock_rw_perms = "0700"\nauth_unix_rw = "none"\n')
        with open(os.path.join(self.dir, "etc/qemu.conf"), "w") as f:
            f.write('user = "root"\ngroup = "root"\nsecurity_driver = "none"\n'
                    'dynamic_ownership = 0\nremember_owner = 0\ncgroup_controllers = [ ]\n'
                    'namespaces = [ ]\nstdio_handler = "file"\n')
        script = ('set -e; d=$1; shift; while [ $# -gt 0 ]; do mkdir -p "$2"; '
                  'mount --bind "$d/$1" "$2"; shift 2; done; '
                  'exec libvirtd -f "$d/etc/libvirtd.conf" -p "$d/run/libvirtd.pid"')
        args = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                self.dir]
        for ours, system in BINDS:
            args += [ours, system]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.socket = os.path.join(self.dir, "run/libvirt-sock")
        self.uri = "qemu+unix:///system?socket=" + self.socket
        self.qemus = []
        deadline = time.time() + 60
        while subprocess.run(["virsh", "-c", self.uri, "list"], capture_output=True).returncode:
            if time.time() > deadline:
                raise SystemExit("libvirtd never answered")
            time.sleep(0.2)

    def start(self, name, qemu):
        xml = (f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>"
               "<vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os>"
               f"<devices><emulator>{qemu}</emulator><disk type='file' device='cdrom'>"
               "<driver name='qemu' type='raw'/><target dev='hdc' bus='ide'/><readonly/>"
               "</disk><controller type='usb' model='none'/><memballoon model='none'/>"
               "</devices></domain>")
        path = os.path.join(self.dir, name + ".xml")
        with open(path, "w") as f:
            f.write(xml)
        virsh(self.uri, "create", path)
        with open(os.path.join(self.dir, "run/qemu", name + ".pid")) as f:
            self.qemus.append(int(f.read().strip()))

    def stop(self, names):
        for name in names:
            subprocess.run(["virsh", "-c", self.uri, "destroy", name], capture_output=True)
        for pid in self.qemus:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.kill()
        self.proc.wait()


class Sshd:
    def __init__(self, work):
        self.dir = os.path.join(work, "ssh")
        os.makedirs(self.dir)
        for key in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                            os.path.join(self.dir, key)], check=True)
        os.link(os.path.join(self.dir, "client_key.pub"), os.path.join(self.dir, "authorized_keys"))
        os.makedirs("/run/sshd", exist_ok=True)
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        d = self.dir
        with open(os.path.join(d, "sshd_config"), "w") as f:
            f.write(f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\n"
                    f"PidFile {d}/sshd.pid\nAuthorizedKeysFile {d}/authorized_keys\n"
                    "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
                    "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n")
        with open(os.path.join(d, "ssh"), "w") as f:
            f.write(f"#!/bin/sh\nexec ssh -o UserKnownHostsFile={d}/known_hosts "
                    "-o StrictHostKeyChecking=no -o BatchMode=yes -o LogLevel=ERROR \"$@\"\n")
        os.chmod(os.path.join(d, "ssh"), 0o755)
        self.proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f",
                                      os.path.join(d, "sshd_config")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise SystemExit("sshd never listened")
                time.sleep(0.05)

    def uri(self, daemon):
        d = self.dir
        return (f"qemu+ssh://root@127.0.0.1:{self.port}/system?socket={daemon.socket}"
                f"&keyfile={d}/client_key&command={d}/ssh&proxy=netcat&no_verify=1")

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def virsh(uri, *args):
    out = subprocess.run(["virsh", "-c", uri, *args], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"virsh {' '.join(args)}: {out.stderr}")
    return out.stdout


def eject_all(uri, names, iso):
    for name in names:
        assert iso in virsh(uri, "domblklist", name), f"{name}: the ISO was not inserted"
        virsh(uri, "change-media", name, "hdc", "--eject", "--live")


def timed(fn):
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--domains", type=int, default=8)
    args = ap.parse_args()
    qemu = "/usr/bin/qemu-system-x86_64"
    work = tempfile.mkdtemp(prefix="vmg-bench-lv")
    iso = os.path.join(work, "ic.iso")
    src = os.path.join(work, "ic.d")
    os.makedirs(src)
    with open(os.path.join(src, "vmguest-ic.toml"), "w") as f:
        f.write('[components]\nfamily = "vmguest"\nname = "bench"\nversion = "1.0.0"\n'
                '[install.linux]\ncommand = "true"\n')
    subprocess.run(["xorriso", "-as", "mkisofs", "-V", "VMGUEST_IC_1_0_0", "-o", iso, src],
                   check=True, capture_output=True)
    names = [f"bench{i}" for i in range(args.domains)]
    daemon = Daemon(work)
    sshd = Sshd(work)
    env = dict(os.environ, VMGUEST_STATE_DIR=os.path.join(work, "state"),
               XDG_CACHE_HOME=os.path.join(work, "cache"))
    env.pop("LIBVIRT_DEFAULT_URI", None)
    try:
        for name in names:
            daemon.start(name, qemu)
        results = {}
        for transport, uri in (("unix", daemon.uri), ("ssh", sshd.uri(daemon))):
            def run_vmguest():
                out = subprocess.run([VMGUEST, "Install-IntegrationComponents", "-c", uri,
                                      *names, "-Path", iso, "-NoWait", "-NoPlugins",
                                      "-OutputFormat", "Json"],
                                     capture_output=True, text=True, env=env)
                rows = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
                assert len(rows) == len(names) and all(r["result"] == "S_OK" for r in rows), out.stderr

            def run_virsh():
                for name in names:
                    virsh(uri, "change-media", name, "hdc", iso, "--insert", "--live")

            def run_python():
                subprocess.run(["/usr/bin/python3", "-c", PY_PEER, uri, iso, *names], check=True)

            for label, fn in (("vmguest", run_vmguest), ("virsh loop", run_virsh),
                              ("libvirt-python", run_python)):
                fn()  # warm: the daemon's first answers, the page cache
                eject_all(daemon.uri, names, iso)
                ms = []
                for _ in range(args.runs):
                    ms.append(timed(fn))
                    eject_all(daemon.uri, names, iso)
                results[(transport, label)] = statistics.median(ms)
        print(f"machine: {platform.node()}, {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
              f"{args.domains} domains, median of {args.runs}")
        print("| transport | tool | all domains (ms) | per domain (ms) | vs vmguest |")
        print("|---|---|---|---|---|")
        for (transport, label), ms in results.items():
            ratio = ms / results[(transport, "vmguest")]
            print(f"| {transport} | {label} | {ms:.0f} | {ms / args.domains:.1f} | {ratio:.2f}× |")
    finally:
        daemon.stop(names)
        sshd.stop()


if __name__ == "__main__":
    main()
