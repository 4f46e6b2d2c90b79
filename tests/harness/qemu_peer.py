"""Minimal QMP and guest-agent clients, written independently of vmguest's Rust code,
plus QEMU launching for the test guest. Used by the outcome harness and the demo."""
import base64
import json
import os
import random
import socket
import subprocess
import time


class Peer:
    def __init__(self, path, timeout=30):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(path)
        self.timeout = timeout
        self.buf = b""

    def _fill(self, timeout):
        self.s.settimeout(max(0.01, timeout))
        data = self.s.recv(65536)
        if not data:
            raise EOFError("peer closed")
        self.buf += data

    def line(self, timeout=None):
        end = time.time() + (timeout or self.timeout)
        while b"\n" not in self.buf:
            self._fill(end - time.time())
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, name, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.s.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            reply = self.line()
            if "event" in reply:
                continue
            if "error" in reply:
                raise RuntimeError(f"{name}: {reply['error']}")
            return reply["return"]

    def close(self):
        self.s.close()


def qmp(path):
    p = Peer(path)
    p.line()  # greeting
    p.cmd("qmp_capabilities")
    return p


def qga(path, ready_within=180):
    p = Peer(path)
    give_up = time.time() + ready_within
    while True:
        sync_id = random.randint(1, 1 << 30)
        p.s.sendall(b"\xff" + json.dumps({"execute": "guest-sync-delimited", "arguments": {"id": sync_id}}).encode() + b"\n")
        end = time.time() + 2
        try:
            while True:
                while b"\xff" not in p.buf:
                    p._fill(end - time.time())
                p.buf = p.buf[p.buf.index(b"\xff") + 1:]
                if p.line(max(0.01, end - time.time())).get("return") == sync_id:
                    return p
        except socket.timeout:
            if time.time() > give_up:
                raise TimeoutError("guest agent never answered")


def guest_sh(qga_path, script):
    p = qga(qga_path)
    pid = p.cmd("guest-exec", path="/bin/sh", arg=["-c", script], **{"capture-output": True})["pid"]
    while True:
        st = p.cmd("guest-exec-status", pid=pid)
        if st["exited"]:
            p.close()
            out = base64.b64decode(st.get("out-data", "")).decode()
            return st.get("exitcode"), out
        time.sleep(0.1)


def drives(qmp_path):
    p = qmp(qmp_path)
    blocks = p.cmd("query-block")
    p.close()
    return {b["qdev"]: b for b in blocks if "tray_open" in b}


def _ledger(pid):
    """Where scripts/test.sh looks for QEMUs this suite started ($VMGUEST_TEST_PIDS)."""
    d = os.environ.get("VMGUEST_TEST_PIDS")
    return os.path.join(d, str(pid)) if d else None


def _start_time(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[19]


def record(pid):
    """Note a started QEMU by pid and start time, so a leak is found by pid, never by name."""
    path = _ledger(pid)
    if path:
        with open(path, "w") as f:
            f.write(_start_time(pid))


def forget(pid):
    path = _ledger(pid)
    if path and os.path.exists(path):
        os.remove(path)


def start_vm(vm_dir, name, kernel=None, initrd=None, cd="empty"):
    """Start QEMU with its sockets laid out as vmguest's VM directory expects."""
    args = ["qemu-system-x86_64", "-accel", "tcg", "-nodefaults", "-no-user-config",
            "-display", "none", "-m", "256", "-no-reboot",
            "-qmp", f"unix:{vm_dir}/{name}.qmp,server=on,wait=off",
            "-serial", f"file:{vm_dir}/{name}.console"]
    if kernel:
        args += ["-kernel", kernel, "-initrd", initrd, "-append", "console=ttyS0 panic=-1",
                 "-chardev", f"socket,path={vm_dir}/{name}.qga,server=on,wait=off,id=qga0",
                 "-device", "virtio-serial-pci",
                 "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0"]
    if cd == "empty":
        args += ["-device", "ide-cd,id=cd0,bus=ide.1"]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    record(proc.pid)
    deadline = time.time() + 20
    while True:
        try:
            qmp(f"{vm_dir}/{name}.qmp").close()
            return proc
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"QEMU for {name} did not start")
            time.sleep(0.05)


def build_ic_iso(out_iso, src_dir):
    subprocess.run(["xorriso", "-as", "mkisofs", "-R", "-J", "-V", "VMGUEST_IC", "-o", out_iso, src_dir],
                   check=True, stderr=subprocess.DEVNULL)


def stop_all(procs):
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
        forget(p.pid)


if __name__ == "__main__":
    # `qemu_peer.py boot VM_DIR NAME IMAGE_DIR`: boot the test guest detached, wait for its
    # agent, print QEMU's pid (the caller stops it).
    import sys
    if len(sys.argv) != 5 or sys.argv[1] != "boot":
        sys.exit("usage: qemu_peer.py boot VM_DIR NAME IMAGE_DIR")
    vm_dir, name, image = sys.argv[2:]
    proc = start_vm(vm_dir, name, os.path.join(image, "vmlinuz"), os.path.join(image, "initrd.img"))
    try:
        qga(os.path.join(vm_dir, f"{name}.qga")).close()
    except BaseException:
        stop_all([proc])
        raise
    print(proc.pid)
