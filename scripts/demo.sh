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
  if [ -n "$qemu_pid" ]; then
    kill "$qemu_pid" 2>/dev/null || true
    while kill -0 "$qemu_pid" 2>/dev/null; do sleep 0.1; done
  fi
  rm -rf "$work"
}
trap cleanup EXIT
mkdir "$work/vms" "$work/ic"
xorriso -as mkisofs -R -J -V VMGUEST_DEMO_IC_1_0_0 -o "$work/ic/vmguest-demo-ic.iso" tests/guest/demo-ic 2>/dev/null
# The location policy finds it there by content (plus the well-known places).
export VMGUEST_IC_PATH="$work/ic"

echo "demo: booting the test guest (TCG, about 6 s)" >&2
qemu_pid=$(python3 tests/harness/qemu_peer.py boot "$work/vms" demo target/vmguest-guest)

vmguest=target/debug/vmguest
$vmguest Get-VM -VMDir "$work/vms"
echo >&2
$vmguest Get-IntegrationComponentsIso -VMName demo -VMDir "$work/vms" -NoPlugins
echo >&2
set +e
$vmguest Install-IntegrationComponents -VMName demo -VMDir "$work/vms" -NoPlugins -OutputFormat Json | tee "$work/result.json"
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
