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
cargo test --workspace -- --test-threads=2
python3 tests/harness/outcomes.py target/debug/vmguest target/vmguest-guest
# Every VM a test starts lives in a temp dir named vmg*: none may survive the suite.
if pgrep -af 'qemu-system-x86_64.*/vmg' ; then
  echo "test.sh: QEMU processes left running after the suite" >&2
  exit 1
fi
echo "test.sh: all suites passed"
