#!/usr/bin/env bash
# The main job end to end: build vmguest, boot the tiny test guest under QEMU, install the
# demo Integration Components into it, print the result object, verify in the guest, stop.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
scripts/deps.sh
cargo build -q --workspace
bash tests/guest/build-guest.sh target/vmguest-guest
work=$(mktemp -d /tmp/vmg-demo.XXXXXX)
qemu_pid=""
cleanup() {
  [ -n "$qemu_pid" ] && kill "$qemu_pid" 2>/dev/null && wait "$qemu_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
mkdir "$work/vms"
xorriso -as mkisofs -R -J -V VMGUEST_DEMO_IC_1_0_0 -o "$work/vmguest-demo-ic.iso" tests/guest/demo-ic 2>/dev/null

echo "demo: booting the test guest (TCG, about 6 s)" >&2
qemu-system-x86_64 -accel tcg -nodefaults -no-user-config -display none -m 256 -no-reboot \
  -kernel target/vmguest-guest/vmlinuz -initrd target/vmguest-guest/initrd.img \
  -append "console=ttyS0 panic=-1" -serial "file:$work/demo.console" \
  -qmp "unix:$work/vms/demo.qmp,server=on,wait=off" \
  -chardev "socket,path=$work/vms/demo.qga,server=on,wait=off,id=qga0" \
  -device virtio-serial-pci -device virtserialport,chardev=qga0,name=org.qemu.guest_agent.0 \
  -device ide-cd,id=cd0,bus=ide.1 &
qemu_pid=$!
python3 -c "
import sys; sys.path.insert(0, '$repo/tests/harness'); import qemu_peer as q, time
for _ in range(200):
    try: q.qmp('$work/vms/demo.qmp').close(); break
    except OSError: time.sleep(0.05)
q.qga('$work/vms/demo.qga').close()"

vmguest=target/debug/vmguest
$vmguest Get-VM -VMDir "$work/vms"
echo >&2
set +e
$vmguest Install-IntegrationComponents -VMName demo -VMDir "$work/vms" -Path "$work/vmguest-demo-ic.iso" -OutputFormat Json | tee "$work/result.json"
code=${PIPESTATUS[0]}
set -e
echo >&2
echo "demo: verifying inside the guest through the agent:" >&2
python3 -c "
import sys; sys.path.insert(0, '$repo/tests/harness'); import qemu_peer as q
code, out = q.guest_sh('$work/vms/demo.qga', '/usr/local/bin/vmguest-demo-tools --version')
print('  guest says:', out.strip())
sys.exit(0 if code == 0 and '1.0.0' in out else 1)"
$vmguest Get-VM -VMDir "$work/vms"
python3 -c "import json,sys; r=json.load(open('$work/result.json')); print('demo:', r['result'], r['hresult'], r['message'])"
exit "$code"
