#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, the real-QEMU acceptance tests and
# the independent outcome harness. Fails (never skips) when QEMU is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace
bash tests/guest/build-guest.sh target/vmguest-guest
cargo test --workspace -- --test-threads=2
python3 tests/harness/outcomes.py target/debug/vmguest target/vmguest-guest
# Every VM a test starts lives in a temp dir named vmg*: none may survive the suite.
if pgrep -af 'qemu-system-x86_64.*/vmg' ; then
  echo "test.sh: QEMU processes left running after the suite" >&2
  exit 1
fi
echo "test.sh: all suites passed"
