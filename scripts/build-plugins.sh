#!/bin/sh
# Build the example plugins (plugins/) and the test fixture components (tests/plugins/)
# for wasm32-wasip2. Output: target/wasm/wasm32-wasip2/release/*.wasm
set -eu
cd "$(dirname "$0")/.."
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
for ws in plugins tests/plugins; do
    cargo build --quiet --release --target wasm32-wasip2 --target-dir target/wasm \
        --manifest-path "$ws/Cargo.toml"
done
