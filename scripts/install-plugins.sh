#!/bin/sh
# Install the example plugins into DIR with manifests pinned to the built components'
# SHA-256, through `vmguest Install-Plugin` (which also checks each component and
# precompiles it). Edit the manifests' [settings] and [grants] afterwards
# (docs/plugins.md); a re-run updates the components and pins and keeps them.
#   scripts/install-plugins.sh ~/.config/vmguest/plugins
# The vmguest used: $VMGUEST, else the one on PATH, else this checkout's, built.
set -eu
dir=${1:?usage: install-plugins.sh DIR}
vmguest=${VMGUEST:-$(command -v vmguest || true)}
case $vmguest in
    /*) ;;
    */*) vmguest=$(cd "$(dirname "$vmguest")" && pwd)/$(basename "$vmguest") ;;
esac
cd "$(dirname "$0")/.."
sh scripts/build-plugins.sh
if [ -z "$vmguest" ]; then
    cargo build --quiet -p vmguest --bin vmguest
    vmguest=${CARGO_TARGET_DIR:-target}/debug/vmguest
fi
mkdir -p "$dir"
chmod go-w "$dir"
order=10
for name in pin-versions site-mirror maintenance-window audit; do
    wasm=$(echo "$name" | tr - _).wasm
    # -PluginDir DIR: Install-Plugin warns when the plugin directories it reads lack
    # DIR; whether the caller's configuration reads DIR is the caller's business.
    "$vmguest" -PluginDir "$dir" Install-Plugin -Path "target/wasm/wasm32-wasip2/release/$wasm" \
        -Name "$name" -Version 1.0.0 -Order "$order" -Directory "$dir" -Update >/dev/null
    order=$((order + 10))
done
echo "installed into $dir; configure each manifest's [settings]/[grants] (docs/plugins.md)"
