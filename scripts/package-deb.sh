#!/usr/bin/env bash
# Build the Debian package: target/debian/vmguest_VERSION_ARCH.deb.
# Needs cargo-deb (`cargo install cargo-deb --locked`); installs it when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked
cargo build --release -p vmguest
out=target/package
rm -rf "$out" && mkdir -p "$out"
bin=target/release/vmguest
"$bin" man | gzip -9n > "$out/vmguest.1.gz"
"$bin" completions bash > "$out/vmguest.bash"
"$bin" completions zsh > "$out/_vmguest"
"$bin" completions fish > "$out/vmguest.fish"
cargo deb -p vmguest --no-build "$@"
