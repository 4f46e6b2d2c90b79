#!/usr/bin/env python3
"""PVE API emulation: the Proxmox VE REST API (/api2/json) served over HTTPS on loopback,
in front of REAL QEMU VMs (their QMP and qemu-ga sockets) running the real test guest.

No real Proxmox VE server can run on the test machines, so the tests talk to this
emulation instead. It is not Proxmox VE: it is a small model of a cluster (the node the
endpoint runs on plus others, all reached through the one endpoint as the real API
proxies to the VM's node) that follows, endpoint by endpoint, what the Proxmox VE
sources do. Each handler names the
file and function it follows; the sources read were, at the commits current when this
was written:
  qemu-server       e6352be67f70042a7433a3a3c712b36d02f9f7cb (src/PVE/...)
  pve-manager       14a22df35955d97dfc1af21e117dc894a29df0c9 (PVE/...)
  pve-storage       (src/PVE/API2/Storage/{Status,Content,Config}.pm, src/PVE/Storage.pm)
  pve-http-server   (src/PVE/APIServer/AnyEvent.pm, Formatter/Standard.pm)
  pve-access-control (src/PVE/AccessControl.pm, src/PVE/RPCEnvironment.pm)
The emulated version is PVE 9 (the guest-agent privileges VM.GuestAgent.*, and the
monitor endpoint's HMPPerms rules, both of PVE 9).

Stdlib only. Usage:
    pve_emulation.py CONFIG.json
prints "PORT <n>" on stdout once it listens on 127.0.0.1 (port 0 in the config picks a
free one), and appends one line per authenticated-or-not HTTP request to the config's
"request_log" (so a test can assert that no request was ever sent).

Config (JSON):
  cluster: name; local_node: the node this endpoint runs on; nodes: [names]
  cert, key: PEM files for TLS
  request_log: path; unauthorized_delay: seconds (pve-http-server waits 3)
  storages: [{id, path, content: ["iso"], enabled: bool, nodes: [..] or null, shared}]
  tokens: {"USER@REALM!TOKENID": {"secret": s, "privileges": [priv | [path, priv]]}}
      a bare privilege holds on every path; [path, priv] on path and below
      (ACLs propagate, RPCEnvironment::permissions). "root@pam!..." tokens are not
      special here: a token is privilege-separated, its privileges are the listed ones.
  vms: [{vmid, node, qmp: socket, qga: socket or null, config: {key: value}}]
      config entries in the PVE config format, e.g. {"name": "alpha",
      "ide2": "none,media=cdrom", "agent": "1", "lock": "backup"}
"""

import base64
import email.parser
import email.policy
import hashlib
import json
import os
import re
import socket
import ssl
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

API = "/api2/json"


class ApiError(Exception):
    """An error as PVE::Exception carries it: an HTTP code, a message, per-parameter
    errors. A plain Perl `die` becomes code 500 in pve-manager PVE/HTTPServer.pm
    rest_handler; raise_perm_exc is 403; raise_param_exc is 400."""

    def __init__(self, msg, code=500, errors=None):
        super().__init__(msg)
        self.msg = msg
        self.code = code
        self.errors = errors


def die(msg):
    return ApiError(msg if msg.endswith("\n") else msg + "\n", 500)


def perm_exc(what):
    # pve-common PVE/Exception.pm raise_perm_exc: "Permission check failed ($what)".
    return ApiError(f"Permission check failed ({what})\n", 403)


def param_exc(errors):
    # pve-common PVE/Exception.pm raise_param_exc: 400 "Parameter verification failed."
    return ApiError("Parameter verification failed.\n", 400, errors)


# --- QMP and qemu-ga clients -----------------------------------------------------------


class QmpError(Exception):
    pass


def _read_json_line(sock, buf):
    while b"\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise QmpError("connection closed")
        buf += data
    line, rest = buf.split(b"\n", 1)
    return json.loads(line), rest


def qmp_cmd(path, cmd, args=None, timeout=10):
    """One QMP command on a fresh connection, closed at once: qemu-server's
    PVE/QMPClient.pm connects per command ("qemu can only handle 1 connection")."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    try:
        s.connect(path)
        buf = b""
        _, buf = _read_json_line(s, buf)  # greeting
        s.sendall(b'{"execute":"qmp_capabilities"}\n')
        while True:
            msg, buf = _read_json_line(s, buf)
            if "event" not in msg:
                break
        req = {"execute": cmd}
        if args:
            req["arguments"] = args
        s.sendall(json.dumps(req).encode() + b"\n")
        while True:
            msg, buf = _read_json_line(s, buf)
            if "event" in msg:
                continue
            if "error" in msg:
                raise QmpError(msg["error"].get("desc", "QMP error"))
            return msg.get("return")
    finally:
        s.close()


def qmp_alive(path):
    try:
        qmp_cmd(path, "query-status", timeout=3)
        return True
    except (OSError, QmpError, ValueError):
        return False


class AgentError(Exception):
    """An error object the agent returned ({"error": {"desc": ...}})."""


def qga_cmd(path, cmd, args=None, timeout=30):
    """One qemu-ga command, preceded by guest-sync-delimited as qemu-server's
    PVE/QMPClient.pm does for guest-* commands (it discards what precedes the 0xFF
    sentinel and waits for its own sync id)."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    try:
        s.connect(path)
        sync_id = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
        s.sendall(json.dumps({"execute": "guest-sync-delimited",
                              "arguments": {"id": sync_id}}).encode() + b"\n")
        buf = b""
        while True:
            while b"\n" not in buf:
                data = s.recv(65536)
                if not data:
                    raise QmpError("agent connection closed")
                buf += data
            if b"\xff" in buf:
                buf = buf.split(b"\xff")[-1]
                continue
            line, buf = buf.split(b"\n", 1)
            if not line.strip():
                continue
            msg = json.loads(line)
            if msg.get("return") == sync_id:
                break
        req = {"execute": cmd}
        if args is not None:
            req["arguments"] = args
        s.sendall(json.dumps(req).encode() + b"\n")
        while True:
            msg, buf = _read_json_line(s, buf)
            if "error" in msg:
                raise AgentError(msg["error"].get("desc", "agent error"))
            if "return" in msg:
                return msg["return"]
    finally:
        s.close()


# --- the VM config, as qemu-server keeps it ---------------------------------------------


def config_text(conf, pending):
    """qemu-server PVE/QemuServer.pm write_vm_config: `key: value` lines sorted by key,
    then a [PENDING] section; digest, description and the sections are not lines."""

    def gen(c):
        return "".join(f"{k}: {c[k]}\n" for k in sorted(c)
                       if k not in ("digest", "description", "pending", "snapshots"))

    raw = gen(conf)
    if pending:
        raw += "\n[PENDING]\n" + gen(pending)
    return raw


def parse_drive(value):
    """The parts of a drive property string that matter here
    (qemu-server PVE/QemuServer/Drive.pm parse_drive: the first, key-less part is
    `file`)."""
    parts = value.split(",")
    drive = {"file": parts[0]}
    for p in parts[1:]:
        if "=" in p:
            k, v = p.split("=", 1)
            drive[k] = v
    return drive


def drive_is_cdrom(drive):
    # qemu-server PVE/QemuServer/Drive.pm drive_is_cdrom: media eq 'cdrom'.
    return drive.get("media") == "cdrom"


DRIVE_RE = re.compile(r"^(ide|sata|scsi|virtio)(\d+)$")


class Task:
    def __init__(self, upid, node, user, kind, vmid):
        self.upid = upid
        self.node = node
        self.user = user
        self.kind = kind
        self.vmid = vmid
        self.status = "running"
        self.exitstatus = None
        self.starttime = int(time.time())


class Emulation:
    def __init__(self, cfg):
        self.cfg = cfg
        self.lock = threading.RLock()
        self.vm_locks = {}
        self.tasks = {}
        self.task_counter = 0
        self.vms = {}
        for vm in cfg["vms"]:
            vmid = int(vm["vmid"])
            self.vms[vmid] = {
                "vmid": vmid,
                "node": vm["node"],
                "qmp": vm["qmp"],
                "qga": vm.get("qga"),
                "conf": dict(vm.get("config", {})),
                "pending": {},
            }
            self.vm_locks[vmid] = threading.RLock()
        self.storages = {s["id"]: s for s in cfg.get("storages", [])}

    # --- permissions: pve-access-control PVE/RPCEnvironment.pm ---------------------------

    def privileges(self, tokenid, path):
        """RPCEnvironment::permissions: ACLs on a path hold for its children (propagate)."""
        privs = set()
        for p in self.cfg["tokens"][tokenid].get("privileges", []):
            if isinstance(p, str):
                privs.add(p)
            else:
                acl_path, priv = p
                if acl_path == "/" or path == acl_path or path.startswith(acl_path.rstrip("/") + "/"):
                    privs.add(priv)
        return privs

    def check(self, tokenid, path, privs):
        # RPCEnvironment::check: every privilege; raise_perm_exc("$path, $priv").
        have = self.privileges(tokenid, path)
        for priv in privs:
            if priv not in have:
                raise perm_exc(f"{path}, {priv}")

    def check_any(self, tokenid, path, privs):
        # RPCEnvironment::check_any: raise_perm_exc("$path, " . join("|", @$privs)).
        have = self.privileges(tokenid, path)
        if not any(p in have for p in privs):
            raise perm_exc(f"{path}, " + "|".join(privs))

    def has(self, tokenid, path, privs):
        have = self.privileges(tokenid, path)
        return all(p in have for p in privs)

    # --- VMs ----------------------------------------------------------------------------

    def vm_on(self, node, vmid):
        """PVE::QemuConfig->load_config on `node` (the API proxies to it, proxyto =>
        'node'): pve-guest-common PVE/AbstractConfig.pm load_config dies with
        "Configuration file '...' does not exist" when the VM is not on that node."""
        self.node_exists(node)
        try:
            vmid = int(vmid)
        except ValueError:
            raise param_exc({"vmid": "invalid format - value does not look like a valid VM ID"})
        vm = self.vms.get(vmid)
        if vm is None or vm["node"] != node:
            raise die(f"Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' does not exist")
        return vm

    def node_exists(self, node):
        # Not read in the source: pve-manager resolve_proxyto/remote_node_ip dies for an
        # unknown node; the exact wording was not checked.
        if node not in self.cfg["nodes"] and node != "localhost":
            raise die(f"no such cluster node '{node}'")

    def digest(self, vm):
        # qemu-server PVE/QemuServer.pm parse_vm_config: digest => sha1_hex($raw), the
        # config file's text as write_vm_config produced it.
        return hashlib.sha1(config_text(vm["conf"], vm["pending"]).encode()).hexdigest()

    def running(self, vm):
        # qemu-server vmstatus: 'running' when the QEMU process lives (its pid file);
        # here: when its QMP socket answers. Under the VM's lock: QEMU serves one QMP
        # client at a time.
        with self.vm_locks[vm["vmid"]]:
            return qmp_alive(vm["qmp"])

    def new_upid(self, node, kind, vmid, tokenid):
        # pve-common PVE/Tools.pm upid_encode:
        # "UPID:$node:%08X(pid):%08X(pstart):%08X(starttime):$type:$id:$user:"
        with self.lock:
            self.task_counter += 1
            upid = "UPID:%s:%08X:%08X:%08X:%s:%s:%s:" % (
                node, os.getpid(), self.task_counter, int(time.time()), kind,
                "" if vmid is None else vmid, tokenid)
            task = Task(upid, node, tokenid, kind, vmid)
            self.tasks[upid] = task
        return task

    def fork_worker(self, node, kind, vmid, tokenid, fn):
        """RPCEnvironment fork_worker: the call returns the UPID, the work runs apart;
        its end state is read by upid_read_status: "OK", or the error's text."""
        task = self.new_upid(node, kind, vmid, tokenid)

        def run():
            try:
                fn()
                task.exitstatus = "OK"
            except ApiError as e:
                task.exitstatus = e.msg.strip()
                if e.errors:
                    task.exitstatus += " " + "; ".join(f"{k}: {v}" for k, v in e.errors.items())
            except Exception as e:  # the worker's die, whatever it was
                task.exitstatus = str(e).strip() or type(e).__name__
            task.status = "stopped"

        threading.Thread(target=run, daemon=True).start()
        return task.upid

    # --- storages: pve-storage ---------------------------------------------------------

    def storage_on(self, sid, node):
        # pve-storage PVE/Storage.pm storage_check_enabled / storage_check_node.
        s = self.storages.get(sid)
        if s is None:
            raise param_exc({"storage": "No such storage."})
        if not s.get("enabled", True):
            raise die(f"storage '{sid}' is disabled")
        if s.get("nodes") and node not in s["nodes"]:
            raise die(f"storage '{sid}' is not available on node '{node}'")
        return s

    @staticmethod
    def iso_dir(s, node):
        """pve-storage PVE/Storage/Plugin.pm get_subdir: iso => 'template/iso', under the
        storage's path. A non-shared `dir` storage is a directory of each node's own:
        `node_paths` gives where each node's copy lives here."""
        base = s.get("node_paths", {}).get(node, s["path"]) if not s.get("shared") else s["path"]
        return os.path.join(base, "template", "iso")

    def volume_path(self, volid, node):
        """qemu-server PVE/QemuServer/Drive.pm get_path_and_format: 'none' has no path,
        'cdrom' is /dev/cdrom, an absolute path is itself, STORAGE:iso/NAME is in the
        storage's iso dir."""
        if volid == "none":
            return None
        if volid == "cdrom":
            return "/dev/cdrom"
        if volid.startswith("/"):
            return volid
        m = re.match(r"^([a-zA-Z][a-zA-Z0-9\-_.]*[a-zA-Z0-9]):iso/([^/]+)$", volid)
        if not m or m.group(1) not in self.storages:
            raise die(f"unable to parse volume ID '{volid}'")
        return os.path.join(self.iso_dir(self.storages[m.group(1)], node), m.group(2))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pve-api-daemon/3.0"  # the Server header pve-http-server sends
    # http.server writes the headers and the body apart; with Nagle's algorithm on, the
    # body then waits for the client's delayed ACK (~40 ms a call), which would make
    # every figure measured against the emulation a count of calls.
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):
        pass

    @property
    def emu(self):
        return self.server.emu

    # --- plumbing ----------------------------------------------------------------------

    def send(self, code, reason, body=b"", ctype="application/json;charset=UTF-8"):
        # pve-http-server AnyEvent.pm response(): the status line carries the message's
        # first line as the reason phrase.
        # The status line is Latin-1 on the wire: other characters become '?'.
        reason = reason.split("\n", 1)[0].encode("latin-1", "replace").decode("latin-1")
        self.send_response(code, reason)
        if body:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if code >= 400:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if body:
            self.wfile.write(body)

    def send_result(self, data):
        # pve-http-server Formatter/Standard.pm prepare_response_data: {"data": ...}.
        self.send(200, "OK", json.dumps({"data": data}).encode())

    def send_error_result(self, e):
        # Formatter/Standard.pm, format json: {"data": null, "message": msg[, "errors"]}
        body = {"data": None, "message": e.msg}
        if e.errors:
            body["errors"] = e.errors
        self.send(e.code, e.msg, json.dumps(body).encode())

    def log_request_line(self):
        path = self.emu.cfg.get("request_log")
        if path:
            with self.emu.lock, open(path, "a") as f:
                f.write(f"{self.command} {self.path.split('?')[0]}\n")

    def authenticate(self):
        """pve-manager PVE/HTTPServer.pm auth_handler with pve-access-control
        PVE/AccessControl.pm verify_token. Failures are answered by pve-http-server
        AnyEvent.pm (unshift_read_header): a plain die there has no JSON login
        formatter, so it is `401 <message>` with an empty body, after a 3 s delay."""
        header = self.headers.get("Authorization") or ""
        m = re.match(r"^PVEAPIToken(?:=|\s+)(.+)$", header)
        if not m:
            return None, "No ticket"
        value = m.group(1)
        tm = re.match(r"^(.*)=(.*)$", value)
        if not tm:
            return None, "Authentication failed!"
        tokenid, secret = tm.group(1), tm.group(2)
        tok = self.emu.cfg["tokens"].get(tokenid)
        if tok is None or not hmac_eq(tok["secret"], secret):
            return None, "Authentication failed!"
        return tokenid, None

    def params(self):
        """pve-http-server AnyEvent.pm: a JSON body when Content-Type is
        application/json, else form-urlencoded; query parameters added on top.
        Repeated form keys make a list (an array parameter such as agent/exec's
        `command`)."""
        params = {}
        if self.command in ("PUT", "POST"):
            body = self.body
            ct = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ct == "application/json":
                try:
                    params = json.loads(body or b"{}")
                except ValueError:
                    raise die("malformed JSON string")
            else:
                params = form_decode(body.decode("utf-8", "replace"))
        query = urllib.parse.urlsplit(self.path).query
        params.update(form_decode(query))
        return params

    def read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""

    def handle_any(self):
        self.read_body()
        self.log_request_line()
        path = urllib.parse.urlsplit(self.path).path
        if not path.startswith(API + "/"):
            self.send(501, "no such uri", b"")
            return
        rel = path[len(API):]
        tokenid, err = self.authenticate()
        if err:
            time.sleep(float(self.emu.cfg.get("unauthorized_delay", 3)))
            self.send(401, err)
            return
        self.tokenid = tokenid
        try:
            # The upload permission is checked in auth_handler itself (pve-manager
            # PVE/HTTPServer.pm: "CSRF check are omitted if $isUpload is set, so check
            # user upload permission here"): a failure there is a bare 403 line.
            um = re.match(r"^/nodes/([^/]+)/storage/([^/]+)/upload$", rel)
            if self.command == "POST" and um:
                try:
                    self.emu.check(tokenid, f"/storage/{um.group(2)}", ["Datastore.AllocateTemplate"])
                except ApiError as e:
                    time.sleep(float(self.emu.cfg.get("unauthorized_delay", 3)))
                    self.send(e.code, e.msg)
                    return
                data = self.upload(um.group(1), um.group(2))
            else:
                data = route(self, self.command, rel, self.params())
        except ApiError as e:
            self.send_error_result(e)
            return
        except Exception as e:  # an internal failure is a 500, as a Perl die would be
            traceback.print_exc(file=sys.stderr)
            self.send_error_result(ApiError(f"{e}\n", 500))
            return
        self.send_result(data)

    def handle_logged(self):
        try:
            self.handle_any()
        except (ssl.SSLError, BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away (a killed vmguest)
        except Exception:
            # Shown in the fixture's emulation.stderr when a test fails.
            traceback.print_exc(file=sys.stderr)
            raise

    do_GET = handle_logged
    do_PUT = handle_logged
    do_POST = handle_logged
    do_DELETE = handle_logged

    # --- upload: pve-http-server file_upload_multipart + pve-storage Status.pm upload ---

    def upload(self, node, sid):
        emu = self.emu
        ct = self.headers.get("Content-Type") or ""
        m = re.match(r"^\s*multipart/form-data\s*;\s*boundary=\"?([^\";]+)\"?", ct, re.I)
        if not m:
            raise die(f"upload 'Content-Type '{ct}' not implemented")
        params = parse_upload(self.body, m.group(1))
        params.update(form_decode(urllib.parse.urlsplit(self.path).query))
        # pve-storage API2/Storage/Status.pm upload (code)
        s = emu.storage_on(sid, node)
        content = params.get("content")
        if content is None:
            raise param_exc({"content": "property is missing and it is not optional"})
        raw_name = params["filename"].rstrip("\n")
        # PVE/Storage.pm normalize_content_filename
        filename = re.sub(r"[^a-zA-Z0-9_.-]", "_", re.sub(r"^.*[/\\]", "", raw_name))
        if content != "iso":
            raise param_exc({"content": f"upload content type '{content}' not allowed"})
        if not re.search(r"[^/]+\.(?:iso|img)$", filename, re.I):  # ISO_EXT_RE_0
            raise param_exc({"filename": "wrong file extension"})
        if "iso" not in s.get("content", []):
            raise die(f"storage '{sid}' does not support '{content}' content")
        algo, checksum = params.get("checksum-algorithm"), params.get("checksum")
        if bool(algo) != bool(checksum):
            raise param_exc({"checksum" if algo else "checksum-algorithm":
                             "parameter is missing and it is required by the other one"})
        data = params["__file"]
        dest = os.path.join(emu.iso_dir(s, node), filename)

        def worker():
            # Status.pm upload's $worker: checksum first ("calculating checksum..."),
            # die "checksum mismatch: got '$got' != expect '$checksum'\n"; then
            # assert_iso_content (not emulated: it runs `file`), then the copy
            # (cp locally, scp to another node: the same file here).
            if algo:
                try:
                    got = hashlib.new(algo, data).hexdigest()
                except ValueError:
                    raise die(f"unknown checksum algorithm '{algo}'")
                if got.lower() != checksum.lower():
                    raise die(f"checksum mismatch: got '{got}' != expect '{checksum}'")
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            # pve-http-server spools each upload to a file of its own
            # (/var/tmp/pveupload-<random>), so two uploads of one name never share it.
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dest), prefix=".pveupload-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)

        # fork_worker('imgcopy', undef, $user, $worker): no VMID in this UPID.
        return emu.fork_worker(node, "imgcopy", None, self.tokenid, worker)


def hmac_eq(a, b):
    import hmac
    return hmac.compare_digest(a.encode(), b.encode())


def form_decode(text):
    out = {}
    for k, v in urllib.parse.parse_qsl(text, keep_blank_values=True):
        if k in out:
            out[k] = out[k] if isinstance(out[k], list) else [out[k]]
            out[k].append(v)
        else:
            out[k] = v
    return out


def parse_upload(body, boundary):
    """pve-http-server AnyEvent.pm file_upload_multipart, on the whole body: the form
    fields `content`, `checksum-algorithm`, `checksum` are taken in that order, each only
    where it comes next; then the part `Content-Disposition: form-data; name="filename";
    filename="..."` directly after the delimiter; its data runs to the closing delimiter.
    Anything else in between leaves the parser waiting: "upload failed"."""
    b = re.escape(boundary.encode())
    nl = rb"\r?\n"
    delim = rb"--" + b + nl
    close = rb"--" + b + rb"--"
    m = re.search(rb"(" + delim + rb")", body, re.S)
    if not m:
        raise die("upload failed")
    buf = body[m.start():]
    params = {}
    for name in ("content", "checksum-algorithm", "checksum"):
        fm = re.match(rb"^" + delim + rb".*?Content-Disposition: (.*?); name=\"" +
                      re.escape(name.encode()) + rb"\"(.*?" + delim + rb")", buf, re.S)
        if fm:
            if fm.group(1) != b"form-data":
                raise die(f"wrong Content-Disposition '{fm.group(1).decode()}' in multipart, expected 'form-data'")
            buf = buf[fm.start(2):]
            buf = re.sub(rb"^.*?(?:" + nl + rb"){2}", b"", buf, count=1, flags=re.S)
            vm = re.match(rb"^(.*?)(" + delim + rb")", buf, re.S)
            if vm:
                params[name] = vm.group(1).decode("utf-8", "replace").strip()
                buf = buf[vm.start(2):]
    fm = re.match(rb"^" + delim + rb"Content-Disposition: (.*?); name=\"(.*?)\"; filename=\"([^\"]+)\"",
                  buf, re.S)
    if not fm:
        raise die("upload failed")
    if fm.group(1) != b"form-data":
        raise die(f"wrong Content-Disposition '{fm.group(1).decode()}' in multipart, expected 'form-data'")
    if fm.group(2) != b"filename":
        raise die(f"wrong field name '{fm.group(2).decode()}' for file upload, expected 'filename'")
    params["filename"] = fm.group(3).decode("utf-8", "replace").strip()
    buf = buf[fm.end():]
    buf = re.sub(rb"^.*?(?:" + nl + rb"){2}", b"", buf, count=1, flags=re.S)
    dm = re.match(rb"^(.*?)(?:" + nl + rb")?" + close, buf, re.S)
    if not dm:
        raise die("upload failed")
    params["__file"] = dm.group(1)
    return params


# --- the routes --------------------------------------------------------------------------

ROUTES = []


def api(method, pattern):
    rx = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$")

    def deco(fn):
        ROUTES.append((method, rx, fn))
        return fn

    return deco


def route(h, method, rel, params):
    for m, rx, fn in ROUTES:
        mm = rx.match(rel)
        if mm and m == method:
            for k, v in mm.groupdict().items():
                # rest_handler: "duplicate parameter (already defined in URI) with
                # conflicting values!"
                if k in params and params[k] != v:
                    raise param_exc({k: "duplicate parameter (already defined in URI) with conflicting values!"})
                params[k] = urllib.parse.unquote(v)
            return fn(h, params)
    # pve-manager PVE/HTTPServer.pm rest_handler: 501 "Method '$method $rel_uri' not
    # implemented".
    raise ApiError(f"Method '{method} {rel}' not implemented\n", 501)


def boolean(v):
    return str(v).lower() in ("1", "true", "yes", "on")


@api("GET", "/version")
def version(h, p):
    # pve-manager PVE/API2.pm 'version': permissions { user => 'all' }.
    return {"version": "9.0.3", "release": "9.0", "repoid": "pveapiemu"}


@api("GET", "/cluster/status")
def cluster_status(h, p):
    # pve-manager PVE/API2/Cluster.pm 'get_status': check perm '/' Sys.Audit.
    emu = h.emu
    emu.check(h.tokenid, "/", ["Sys.Audit"])
    nodes = emu.cfg["nodes"]
    out = [{"type": "cluster", "id": "cluster", "name": emu.cfg["cluster"], "nodes": len(nodes),
            "quorate": 1, "version": len(nodes)}]
    for i, n in enumerate(nodes, 1):
        out.append({"type": "node", "id": f"node/{n}", "name": n, "nodeid": i, "online": 1,
                    "local": 1 if n == emu.cfg["local_node"] else 0, "ip": "127.0.0.1", "level": ""})
    return out


@api("GET", "/cluster/resources")
def cluster_resources(h, p):
    """pve-manager PVE/API2/Cluster.pm 'resources': user => 'all', each VM listed only
    with VM.Audit on /vms/<vmid> (`next if !$rpcenv->check(..., 1)`), each storage only
    with Datastore.Audit; entries from PVE::API2Tools::extract_vm_stats."""
    emu = h.emu
    kind = p.get("type")
    out = []
    if kind in (None, "vm"):
        for vmid, vm in sorted(emu.vms.items()):
            if not emu.has(h.tokenid, f"/vms/{vmid}", ["VM.Audit"]):
                continue
            running = emu.running(vm)
            entry = {"id": f"qemu/{vmid}", "type": "qemu", "vmid": vmid, "node": vm["node"],
                     "name": vm["conf"].get("name", f"VM {vmid}"),
                     "status": "running" if running else "stopped", "template": 0,
                     "maxmem": 268435456, "maxcpu": 1}
            if "lock" in vm["conf"]:
                entry["lock"] = vm["conf"]["lock"]
            out.append(entry)
    if kind in (None, "storage"):
        for sid, s in sorted(emu.storages.items()):
            if not emu.has(h.tokenid, f"/storage/{sid}", ["Datastore.Audit"]):
                continue
            for n in s.get("nodes") or emu.cfg["nodes"]:
                out.append({"id": f"storage/{n}/{sid}", "type": "storage", "storage": sid,
                            "node": n, "content": ",".join(s.get("content", [])),
                            "status": "available", "shared": 1 if s.get("shared") else 0})
    if kind in (None, "node"):
        for n in emu.cfg["nodes"]:
            out.append({"id": f"node/{n}", "type": "node", "node": n, "status": "online"})
    return out


@api("GET", "/nodes/{node}/qemu/{vmid}/status/current")
def vm_status(h, p):
    """qemu-server PVE/API2/Qemu.pm 'vm_status' (perm /vms/{vmid} VM.Audit) and
    PVE/QemuServer.pm vmstatus: status running|stopped from the process, qmpstatus from
    QMP query-status (falling back to status), agent from the config."""
    emu = h.emu
    emu.check(h.tokenid, f"/vms/{p['vmid']}", ["VM.Audit"])
    vm = emu.vm_on(p["node"], p["vmid"])
    with emu.vm_locks[vm["vmid"]]:
        try:
            qs = qmp_cmd(vm["qmp"], "query-status", timeout=3)
            status, qmpstatus = "running", qs.get("status")
        except (OSError, QmpError, ValueError):
            status = qmpstatus = "stopped"
    res = {"vmid": vm["vmid"], "name": vm["conf"].get("name", f"VM {vm['vmid']}"),
           "status": status, "qmpstatus": qmpstatus, "ha": {"managed": 0}}
    if "lock" in vm["conf"]:
        res["lock"] = vm["conf"]["lock"]
    agent = vm["conf"].get("agent")
    if agent is not None and re.match(r"^(1|enabled=1)", agent):
        res["agent"] = 1
    return res


@api("GET", "/nodes/{node}/qemu/{vmid}/config")
def vm_config(h, p):
    """qemu-server PVE/API2/Qemu.pm 'vm_config' (perm /vms/{vmid} VM.Audit):
    PVE::QemuConfig->load_current_config: with current=1 the config as it is, without
    it the pending values applied; plus `digest`."""
    emu = h.emu
    emu.check(h.tokenid, f"/vms/{p['vmid']}", ["VM.Audit"])
    vm = emu.vm_on(p["node"], p["vmid"])
    with emu.vm_locks[vm["vmid"]]:
        conf = dict(vm["conf"])
        if not boolean(p.get("current", 0)):
            for k, v in vm["pending"].items():
                if k == "delete":
                    for d in v.split(","):
                        conf.pop(d, None)
                else:
                    conf[k] = v
        conf["digest"] = emu.digest(vm)
    return conf


VM_CONFIG_PERM_LIST = ["VM.Config.Disk", "VM.Config.CDROM", "VM.Config.CPU", "VM.Config.Memory",
                       "VM.Config.Network", "VM.Config.HWType", "VM.Config.Options",
                       "VM.Config.Cloudinit"]

CONFIG_META = {"node", "vmid", "digest", "skiplock", "delete", "revert", "force",
               "background_delay"}


def update_vm(h, p, sync):
    """qemu-server PVE/API2/Qemu.pm $update_vm_api (update_vm: PUT, sync;
    update_vm_async: POST, returns the UPID of a 'qmconfig' worker)."""
    emu = h.emu
    vmid = p["vmid"]
    # 'permissions' of both: perm /vms/{vmid} $vm_config_perm_list, any => 1.
    emu.check_any(h.tokenid, f"/vms/{vmid}", VM_CONFIG_PERM_LIST)
    vm = emu.vm_on(p["node"], vmid)
    if boolean(p.get("skiplock", 0)):
        # 'skiplock' standard option: "Ignore locks - only root is allowed to use this
        # option." ($update_vm_api: raise_perm_exc if $skiplock && $authuser ne 'root@pam';
        # a token is never root@pam itself).
        raise ApiError("Permission check failed\n", 403)
    digest = p.get("digest")
    deletes = [d for d in re.split(r"[,;\s]+", p.get("delete", "")) if d]
    settings = {k: v for k, v in p.items() if k not in CONFIG_META}
    if not settings and not deletes:
        raise die("no options specified")
    for opt, val in settings.items():
        if DRIVE_RE.match(opt):
            drive = parse_drive(val)
            # $check_drive_perms: a CD-ROM needs VM.Config.CDROM, a disk VM.Config.Disk.
            if drive_is_cdrom(drive):
                emu.check(h.tokenid, f"/vms/{vmid}", ["VM.Config.CDROM"])
            else:
                emu.check(h.tokenid, f"/vms/{vmid}", ["VM.Config.Disk"])
            # $check_storage_access: 'none' nothing, 'cdrom' Sys.Console on '/', a
            # volume PVE::Storage::check_volume_access (Datastore.Allocate, or for iso
            # Datastore.AllocateSpace|Datastore.Audit on /storage/<sid>).
            f = drive["file"]
            if f == "cdrom":
                emu.check(h.tokenid, "/", ["Sys.Console"])
            elif f == "none":
                pass
            elif not f.startswith("/"):
                sid = f.split(":", 1)[0]
                if not emu.has(h.tokenid, f"/storage/{sid}", ["Datastore.Allocate"]):
                    emu.check_any(h.tokenid, f"/storage/{sid}", ["Datastore.AllocateSpace", "Datastore.Audit"])
                emu.volume_path(f, vm["node"])
            else:
                # pve-storage PVE/Storage.pm check_volume_access, a path with no
                # storage: die "Only root can pass arbitrary filesystem paths." unless
                # root@pam (a token never is).
                raise die("Only root can pass arbitrary filesystem paths.")
        else:
            emu.check(h.tokenid, f"/vms/{vmid}", ["VM.Config.Options"])

    def load_and_check_config():
        # $load_and_check_config: digest, then check_lock (unless skiplock).
        if digest and digest != emu.digest(vm):
            raise die("checksum mismatch (file change by other user?)")
        lock = vm["conf"].get("lock")
        if lock:
            # pve-guest-common PVE/AbstractConfig.pm check_lock:
            # die $class->guest_type()." is locked ($lock)\n"; guest_type is "VM".
            raise die(f"VM is locked ({lock})")

    def updatefn():
        with emu.vm_locks[vm["vmid"]]:  # PVE::QemuConfig->lock_config
            load_and_check_config()
            # Every change goes to [PENDING] first, then is written out.
            for opt in deletes:
                if opt not in vm["conf"] and opt not in vm["pending"]:
                    continue  # "cannot delete '$opt' - not set in current configuration!"
                if DRIVE_RE.match(opt):
                    pd = [d for d in vm["pending"].get("delete", "").split(",") if d]
                    if opt not in pd:
                        pd.append(opt)
                    vm["pending"]["delete"] = ",".join(pd)
                    vm["pending"].pop(opt, None)
                else:
                    vm["conf"].pop(opt, None)
            for opt, val in settings.items():
                vm["pending"][opt] = val
            # PVE::QemuConfig->cleanup_pending: drop pending values equal to current.
            for opt in list(vm["pending"]):
                if opt != "delete" and vm["conf"].get(opt) == vm["pending"][opt]:
                    del vm["pending"][opt]
            if not vm["pending"]:
                return
            errors = {}
            if emu.running(vm):
                hotplug_pending(emu, vm, errors)
            else:
                apply_pending(vm)
            if errors:
                raise param_exc(errors)

    load_and_check_config()  # "early checks before forking/locking"
    if sync:
        updatefn()
        return None
    return emu.fork_worker(p["node"], "qmconfig", vm["vmid"], h.tokenid, updatefn)


def apply_pending(vm):
    # qemu-server PVE/QemuServer.pm vmconfig_apply_pending (VM not running).
    for opt in [d for d in vm["pending"].pop("delete", "").split(",") if d]:
        vm["conf"].pop(opt, None)
    vm["conf"].update(vm["pending"])
    vm["pending"].clear()


def hotplug_pending(emu, vm, errors):
    """qemu-server PVE/QemuServer.pm vmconfig_hotplug_pending for drives (the only
    options the emulation hotplugs; `name` and other plain options are applied at once
    as its fast-plug list does). A delete of an ide/sata drive: die "skip" (stays
    pending). A drive value: vmconfig_update_disk."""
    for opt in list(vm["pending"]):
        if opt == "delete":
            continue
        val = vm["pending"][opt]
        if not DRIVE_RE.match(opt):
            vm["conf"][opt] = val
            del vm["pending"][opt]
            continue
        try:
            update_disk(emu, vm, opt, val)
        except SkipHotplug:
            continue  # stays in [PENDING]
        except (ApiError, QmpError, OSError) as e:
            msg = e.msg if isinstance(e, ApiError) else f"{e}\n"
            errors[opt] = f"hotplug problem - {msg}"  # $add_error
            continue
        vm["conf"][opt] = val
        del vm["pending"][opt]


class SkipHotplug(Exception):
    pass


def update_disk(emu, vm, opt, value):
    """qemu-server PVE/QemuServer.pm vmconfig_update_disk. An existing CD-ROM drive:
    PVE/QemuServer/Blockdev.pm change_medium. No existing drive: `die "skip\n" if
    !$hotplug || $opt =~ m/(ide|sata)(\d+)/` -- a new IDE/SATA drive only goes pending;
    hotplugging new SCSI/VirtIO disks is not emulated (skip too)."""
    drive = parse_drive(value)
    old = vm["conf"].get(opt)
    if old is not None:
        old_drive = parse_drive(old)
        if (drive.get("media") or "disk") != (old_drive.get("media") or "disk"):
            raise die("unable to change media type")
        if drive_is_cdrom(old_drive):
            change_medium(emu, vm, opt, drive)
            return
        raise SkipHotplug()  # disk changes: not emulated
    raise SkipHotplug()


def change_medium(emu, vm, qdev_id, drive):
    """qemu-server PVE/QemuServer/Blockdev.pm change_medium, for a machine version
    below 10.0 (the test QEMU is 7.2): `mon_cmd($vmid, "eject", force => JSON::true,
    id => "$qdev_id")` -- the forced eject opens even a tray the guest has locked --
    then, unless the new file is 'none', `blockdev-change-medium` with id, filename
    and format."""
    with emu.vm_locks[vm["vmid"]]:
        qmp_cmd(vm["qmp"], "eject", {"force": True, "id": qdev_id})
        path = emu.volume_path(drive["file"], vm["node"])
        if path:
            qmp_cmd(vm["qmp"], "blockdev-change-medium",
                    {"id": qdev_id, "filename": path, "format": drive.get("format", "raw")})


@api("PUT", "/nodes/{node}/qemu/{vmid}/config")
def vm_config_put(h, p):
    return update_vm(h, p, True)


@api("POST", "/nodes/{node}/qemu/{vmid}/config")
def vm_config_post(h, p):
    return update_vm(h, p, False)


# PVE 9's qemu-server PVE/API2/Qemu/HMPPerms.pm: the commands the emulation knows.
HMP_PERMS = {"help": "none", "?": "none", "info": "none"}


@api("POST", "/nodes/{node}/qemu/{vmid}/monitor")
def monitor(h, p):
    """qemu-server PVE/API2/Qemu.pm 'monitor' (PVE 9): perm /vms/{vmid}
    [Sys.Audit, Sys.Modify] any; then HMPPerms: `info` needs nothing more; unknown
    commands are root@pam only. Errors of the command come back as "ERROR: ..." text
    with status 200."""
    emu = h.emu
    emu.check_any(h.tokenid, f"/vms/{p['vmid']}", ["Sys.Audit", "Sys.Modify"])
    command = p.get("command")
    if not command:
        raise die("no command specified")
    m = re.match(r"^\s*(\S+)", command)
    if not m:
        raise die(f"unexpected command '{command}'")
    name = m.group(1)
    if HMP_PERMS.get(name) is None:
        raise die(f"command '{name}' non-existent or not assigned a required permission yet, limiting to root user")
    vm = emu.vm_on(p["node"], p["vmid"])
    try:
        with emu.vm_locks[vm["vmid"]]:
            return qmp_cmd(vm["qmp"], "human-monitor-command", {"command-line": command}, timeout=25)
    except (OSError, QmpError, ValueError) as e:
        return f"ERROR: {e}\n"


# --- guest agent: qemu-server PVE/API2/Qemu/Agent.pm and PVE/QemuServer/Agent.pm -------


def assert_agent_available(emu, vm):
    """PVE/QemuServer/Agent.pm assert_agent_available: no `agent` key in the config,
    the VM not running, or guest-ping failing (qga_check_running, 3 s)."""
    if "agent" not in vm["conf"]:
        raise die("No QEMU guest agent configured")
    if not emu.running(vm):
        raise die(f"VM {vm['vmid']} is not running")
    if not vm["qga"]:
        raise die("QEMU guest agent is not running")
    try:
        qga_cmd(vm["qga"], "guest-ping", timeout=3)
    except (OSError, QmpError, AgentError, ValueError):
        raise die("QEMU guest agent is not running")


def agent_cmd(emu, vm, cmd, args, errmsg, timeout=30):
    """PVE/QemuServer/Agent.pm agent_cmd + check_agent_error: an agent error is
    "Agent error: <desc>", no answer "Agent error: $errmsg"."""
    assert_agent_available(emu, vm)
    try:
        res = qga_cmd(vm["qga"], f"guest-{cmd}", args, timeout=timeout)
    except AgentError as e:
        raise die(f"Agent error: {e}")
    except (OSError, QmpError, ValueError) as e:
        raise die(f"Agent error: {errmsg} ({e})")
    if res is None:
        raise die(f"Agent error: {errmsg}")
    return res


def agent_vm(h, p, privs, any_=True):
    emu = h.emu
    if any_:
        emu.check_any(h.tokenid, f"/vms/{p['vmid']}", privs)
    else:
        emu.check(h.tokenid, f"/vms/{p['vmid']}", privs)
    return emu, emu.vm_on(p["node"], p["vmid"])


@api("POST", "/nodes/{node}/qemu/{vmid}/agent/exec")
def agent_exec(h, p):
    """Agent.pm 'exec' (perm VM.GuestAgent.Unrestricted) -> QemuServer/Agent.pm
    qemu_exec: path = shift @$cmd, arg = the rest, capture-output; returns {pid}."""
    emu, vm = agent_vm(h, p, ["VM.GuestAgent.Unrestricted"], any_=False)
    cmd = p.get("command")
    if isinstance(cmd, str):
        cmd = [cmd]
    input_data = p.get("input-data")
    args = {"capture-output": True}
    if cmd:
        args["path"] = cmd[0]
        args["arg"] = list(cmd[1:])
    if input_data is not None:
        args["input-data"] = base64.b64encode(input_data.encode()).decode()
    if "input-data" not in args and "path" not in args:
        raise die("command or input-data (or both) required")
    return agent_cmd(emu, vm, "exec", args, "can't execute command")


@api("GET", "/nodes/{node}/qemu/{vmid}/agent/exec-status")
def agent_exec_status(h, p):
    """Agent.pm 'exec-status' (perm VM.GuestAgent.Unrestricted) -> qemu_exec_status:
    out-data/err-data base64-decoded, booleans as 1/0."""
    emu, vm = agent_vm(h, p, ["VM.GuestAgent.Unrestricted"], any_=False)
    try:
        pid = int(p.get("pid"))
    except (TypeError, ValueError):
        raise param_exc({"pid": "type check ('integer') failed"})
    res = agent_cmd(emu, vm, "exec-status", {"pid": pid}, f"can't get exec status for '{pid}'")
    for k in ("out-data", "err-data"):
        if res.get(k):
            try:
                res[k] = base64.b64decode(res[k]).decode("utf-8", "replace")
            except ValueError:
                pass
    for k, v in list(res.items()):
        if isinstance(v, bool):
            res[k] = 1 if v else 0
    return res


def registered_command(cmd, perm):
    """Agent.pm register_command: perm [$perm, VM.GuestAgent.Unrestricted] any;
    assert_agent_available; returns { result => mon_cmd("guest-$cmd") }."""

    def fn(h, p):
        emu, vm = agent_vm(h, p, [perm, "VM.GuestAgent.Unrestricted"])
        return {"result": agent_cmd(emu, vm, cmd, None, f"{cmd} failed")}

    return fn


for _cmd, _perm in (("get-osinfo", "VM.GuestAgent.Audit"), ("get-fsinfo", "VM.GuestAgent.Audit"),
                    ("ping", "VM.GuestAgent.Audit"), ("info", "VM.GuestAgent.Audit")):
    api("GET" if _cmd != "ping" else "POST", f"/nodes/{{node}}/qemu/{{vmid}}/agent/{_cmd}")(
        registered_command(_cmd, _perm))


MAX_READ_SIZE = 16 * 1024 * 1024  # Agent.pm $MAX_READ_SIZE


@api("GET", "/nodes/{node}/qemu/{vmid}/agent/file-read")
def agent_file_read(h, p):
    """Agent.pm 'file-read' (perm VM.GuestAgent.FileRead|VM.GuestAgent.Unrestricted):
    file-open, file-read in 1 MiB chunks up to count, file-close; {content,
    bytes-read[, truncated]}."""
    emu, vm = agent_vm(h, p, ["VM.GuestAgent.FileRead", "VM.GuestAgent.Unrestricted"])
    count = int(p.get("count", MAX_READ_SIZE))
    decode = boolean(p.get("decode", 1))
    if not p.get("file"):
        raise param_exc({"file": "property is missing and it is not optional"})
    handle = agent_cmd(emu, vm, "file-open", {"path": p["file"]}, "can't open file")
    content, nread, eof = b"", 0, False
    try:
        offset = int(p.get("offset", 0))
        if offset > 0:
            agent_cmd(emu, vm, "file-seek", {"handle": handle, "offset": offset, "whence": "set"},
                      "can't seek to offset position")
        while nread < count and not eof:
            chunk = min(count - nread, 1024 * 1024)
            r = agent_cmd(emu, vm, "file-read", {"handle": handle, "count": chunk}, "can't read from file")
            content += base64.b64decode(r.get("buf-b64", ""))
            nread += r.get("count", 0)
            eof = bool(r.get("eof"))
    finally:
        try:
            qga_cmd(vm["qga"], "guest-file-close", {"handle": handle})
        except (OSError, QmpError, AgentError, ValueError):
            pass  # check_agent_error(..., 1): a warning only
    res = {"content": content.decode("utf-8", "replace") if decode else base64.b64encode(content).decode(),
           "bytes-read": nread}
    if not eof:
        res["truncated"] = 1
    return res


@api("POST", "/nodes/{node}/qemu/{vmid}/agent/file-write")
def agent_file_write(h, p):
    """Agent.pm 'file-write' (perm VM.GuestAgent.FileWrite|VM.GuestAgent.Unrestricted):
    file-open mode wb, file-write of base64 content (encode defaults to 1), file-close."""
    emu, vm = agent_vm(h, p, ["VM.GuestAgent.FileWrite", "VM.GuestAgent.Unrestricted"])
    content = p.get("content", "")
    if len(content) > 60 * 1024:
        raise param_exc({"content": "value may only be 61440 characters long"})
    buf = base64.b64encode(content.encode()).decode() if boolean(p.get("encode", 1)) else content
    handle = agent_cmd(emu, vm, "file-open", {"path": p["file"], "mode": "wb"}, "can't open file")
    agent_cmd(emu, vm, "file-write", {"handle": handle, "buf-b64": buf}, "can't write to file")
    agent_cmd(emu, vm, "file-close", {"handle": handle}, "can't close file")
    return None


# --- storage: pve-storage ------------------------------------------------------------


@api("GET", "/nodes/{node}/storage")
def node_storage_index(h, p):
    """pve-storage PVE/API2/Storage/Status.pm 'index': only storages with
    Datastore.Audit or Datastore.AllocateSpace on /storage/<id>; filtered by
    `content` and `enabled`; only those the node can use."""
    emu = h.emu
    emu.node_exists(p["node"])
    out = []
    for sid, s in sorted(emu.storages.items()):
        if not (emu.has(h.tokenid, f"/storage/{sid}", ["Datastore.Audit"])
                or emu.has(h.tokenid, f"/storage/{sid}", ["Datastore.AllocateSpace"])):
            continue
        if s.get("nodes") and p["node"] not in s["nodes"]:
            continue
        enabled = s.get("enabled", True)
        if boolean(p.get("enabled", 0)) and not enabled:
            continue
        if p.get("content") and p["content"] not in s.get("content", []):
            continue
        out.append({"storage": sid, "type": "dir", "content": ",".join(s.get("content", [])),
                    "enabled": 1 if enabled else 0, "active": 1 if enabled else 0,
                    "shared": 1 if s.get("shared") else 0,
                    "total": 10 << 30, "used": 1 << 30, "avail": 9 << 30})
    return out


@api("GET", "/storage/{storage}")
def storage_read(h, p):
    """pve-storage PVE/API2/Storage/Config.pm 'read': perm /storage/{storage}
    Datastore.Allocate (an admin privilege); the storage's section config."""
    emu = h.emu
    emu.check(h.tokenid, f"/storage/{p['storage']}", ["Datastore.Allocate"])
    s = emu.storages.get(p["storage"])
    if s is None:
        raise die(f"storage '{p['storage']}' does not exist")
    out = {"storage": s["id"], "type": "dir", "path": s["path"],
           "content": ",".join(s.get("content", [])), "digest": "0" * 40,
           "shared": 1 if s.get("shared") else 0}
    if s.get("nodes"):
        out["nodes"] = ",".join(s["nodes"])
    if not s.get("enabled", True):
        out["disable"] = 1
    return out


@api("GET", "/nodes/{node}/storage/{storage}/content")
def storage_content(h, p):
    """pve-storage PVE/API2/Storage/Content.pm 'index': perm /storage/{storage}
    [Datastore.Audit, Datastore.AllocateSpace] any; ISO volumes as STORAGE:iso/NAME
    (Plugin.pm list_volumes/get_subdir), with size, ctime and format 'iso'."""
    emu = h.emu
    emu.check_any(h.tokenid, f"/storage/{p['storage']}", ["Datastore.Audit", "Datastore.AllocateSpace"])
    s = emu.storage_on(p["storage"], p["node"])
    out = []
    if p.get("content") in (None, "iso") and "iso" in s.get("content", []):
        d = emu.iso_dir(s, p["node"])
        for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            full = os.path.join(d, name)
            if not os.path.isfile(full) or not re.search(r"\.(?:iso|img)$", name, re.I):
                continue
            st = os.stat(full)
            out.append({"volid": f"{s['id']}:iso/{name}", "content": "iso", "format": "iso",
                        "size": st.st_size, "ctime": int(st.st_mtime)})
    return out


@api("GET", "/nodes/{node}/tasks/{upid}/status")
def task_status(h, p):
    """pve-manager PVE/API2/Tasks.pm 'read_task_status': a task of another user needs
    Sys.Audit on /nodes/{node}; status running|stopped; exitstatus from
    upid_read_status ("OK" or the error)."""
    emu = h.emu
    task = emu.tasks.get(p["upid"])
    if task is None:
        raise param_exc({"upid": "no such task"})
    if task.user != h.tokenid:
        emu.check(h.tokenid, f"/nodes/{p['node']}", ["Sys.Audit"])
    res = {"upid": task.upid, "node": task.node, "pid": os.getpid(), "pstart": 0,
           "starttime": task.starttime, "type": task.kind, "id": "" if task.vmid is None else str(task.vmid),
           "user": task.user, "status": task.status}
    if task.status == "stopped":
        res["exitstatus"] = task.exitstatus
    return res


def main():
    if len(sys.argv) != 2:
        print("usage: pve_emulation.py CONFIG.json", file=sys.stderr)
        sys.exit(2)
    with open(sys.argv[1]) as f:
        cfg = json.load(f)
    emu = Emulation(cfg)
    server = ThreadingHTTPServer(("127.0.0.1", int(cfg.get("port", 0))), Handler)
    server.daemon_threads = True
    server.emu = emu
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cfg["cert"], cfg["key"])
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
