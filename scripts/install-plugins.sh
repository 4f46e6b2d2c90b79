#!/bin/sh
# Install the example plugins into DIR with manifests pinned to the built components'
# SHA-256. Edit the manifests' [settings] and [grants] afterwards (docs/plugins.md).
#   scripts/install-plugins.sh ~/.config/vmguest/plugins
set -eu
dir=${1:?usage: install-plugins.sh DIR}
cd "$(dirname "$0")/.."
sh scripts/build-plugins.sh
mkdir -p "$dir"
chmod go-w "$dir"
order=10
for name in pin-versions site-mirror maintenance-window audit; do
    wasm=$(echo "$name" | tr - _).wasm
    install -m 0644 "target/wasm/wasm32-wasip2/release/$wasm" "$dir/$wasm"
    sum=$(sha256sum "$dir/$wasm" | cut -d' ' -f1)
    toml="$dir/$name.toml"
    if [ -e "$toml" ]; then
        # Keep the user's settings; update the pin.
        sed -i "s/^sha256 = .*/sha256 = \"$sum\"/" "$toml"
    else
        cat > "$toml" <<TOML
name = "$name"
version = "1.0.0"
wit = "0.2.0"
component = "$wasm"
sha256 = "$sum"
order = $order
[settings]
TOML
        chmod 0644 "$toml"
    fi
    order=$((order + 10))
done
echo "installed into $dir; configure each manifest's [settings]/[grants] (docs/plugins.md)"
