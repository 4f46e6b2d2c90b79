#!/bin/sh
# Build the example plugins (plugins/: Rust, Python, JavaScript) and the test fixture
# components (tests/plugins/) as WebAssembly components.
# Output: target/wasm/wasm32-wasip2/release/*.wasm; Python and JS examples end in _py
# and _js (pin_versions_py.wasm). A Python or JS component is rebuilt only when its
# source, the WIT or the pinned tool version is newer than it.
set -eu
cd "$(dirname "$0")/.."
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
for ws in plugins tests/plugins; do
    cargo build --quiet --release --target wasm32-wasip2 --target-dir target/wasm \
        --manifest-path "$ws/Cargo.toml"
done
out=target/wasm/wasm32-wasip2/release
# The current WIT: the newest wit/since_vX.Y.Z folder (WitVersion::CURRENT, which a test
# holds to the same folder).
wit=$(ls -d wit/since_v* | sort -V | tail -n 1)

# componentize-py, at the version plugins/python/requirements.txt pins, in a venv of
# its own.
py=target/tools/python
if ! cmp -s plugins/python/requirements.txt "$py/requirements.txt" 2>/dev/null; then
    python3 -m venv "$py"
    "$py/bin/pip" install --quiet --disable-pip-version-check -r plugins/python/requirements.txt
    cp plugins/python/requirements.txt "$py/requirements.txt"
fi
# componentize-js, at the version plugins/js/package-lock.json pins.
if ! cmp -s plugins/js/package-lock.json plugins/js/node_modules/.package-lock.json 2>/dev/null; then
    npm ci --prefix plugins/js --no-audit --no-fund --loglevel=error
    cp plugins/js/package-lock.json plugins/js/node_modules/.package-lock.json
fi

stale() { # stale OUT INPUT...: OUT is missing or older than an input
    target=$1; shift
    [ ! -e "$target" ] && return 0
    [ -n "$(find "$@" -newer "$target" -print -quit)" ]
}
# name:world for each example (the world its manifest would use).
for p in pin-versions:policy maintenance-window:hooks; do
    name=${p%%:*}; world=${p##*:}; file=$(echo "$name" | tr - _)
    if stale "$out/${file}_py.wasm" "plugins/python/$name" "$wit" "$py/requirements.txt"; then
        "$py/bin/componentize-py" -d "$wit" -w "$world" componentize -p "plugins/python/$name" app \
            -o "$out/${file}_py.wasm" >/dev/null
    fi
    if stale "$out/${file}_js.wasm" "plugins/js/$name" "$wit" plugins/js/package-lock.json; then
        # componentize-js's own CLI: `jco componentize` fails on this WIT (docs/plugins.md).
        # No http/fetch-event: the sandbox links no wasi:http.
        plugins/js/node_modules/.bin/componentize-js --wit "$wit" -n "$world" -d http fetch-event \
            -o "$out/${file}_js.wasm" "plugins/js/$name/$name.js" >/dev/null
    fi
done
