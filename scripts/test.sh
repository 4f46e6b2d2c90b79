#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, the real-QEMU acceptance tests and
# the independent outcome harness. Fails (never skips) when QEMU is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo fmt --all --check
for ws in plugins tests/plugins; do cargo fmt --all --check --manifest-path "$ws/Cargo.toml"; done
cargo clippy --workspace --all-targets -- -D warnings
sh scripts/build-plugins.sh
for ws in plugins tests/plugins; do
  cargo clippy --quiet --manifest-path "$ws/Cargo.toml" --release --target wasm32-wasip2 \
    --target-dir target/wasm -- -D warnings
done
cargo build --workspace
bash tests/guest/build-guest.sh target/vmguest-guest
# The Debian 12 guest (systemd, udev, qemu-guest-agent) on the same kernel. mmdebstrap's root
# mode needs root; cached in target/vmguest-debian-guest like the busybox guest.
if [ "$(id -u)" = 0 ]; then
  bash tests/guest/build-debian-guest.sh target/vmguest-debian-guest target/vmguest-guest
else
  sudo bash tests/guest/build-debian-guest.sh target/vmguest-debian-guest target/vmguest-guest
fi
# Every QEMU the suites start is noted here by pid and start time, and removed when the
# test reaps it. Only these pids are checked afterwards: never a name pattern, which
# would match an admin's own VMs.
export VMGUEST_TEST_PIDS="$PWD/target/test-pids"
rm -rf "$VMGUEST_TEST_PIDS" && mkdir -p "$VMGUEST_TEST_PIDS"
leftovers() {
  local left=0 f pid start now
  for f in "$VMGUEST_TEST_PIDS"/*; do
    [ -e "$f" ] || continue
    pid=${f##*/}; start=$(cat "$f")
    now=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f20) || now=""
    if [ -n "$now" ] && [ "$now" = "$start" ]; then
      echo "test.sh: pid $pid (QEMU, libvirtd or sshd), started by the tests, is still running; stopping it" >&2
      kill -9 "$pid" 2>/dev/null || true
      left=1
    fi
  done
  return $left
}
trap 'leftovers || true' EXIT
cargo test --workspace -- --test-threads=2
python3 tests/harness/outcomes.py target/debug/vmguest target/vmguest-guest
if ! leftovers; then
  echo "test.sh: processes left running after the suite" >&2
  exit 1
fi
echo "test.sh: all suites passed"
