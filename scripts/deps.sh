#!/usr/bin/env bash
# Installs what vmguest's demo and tests need on Debian/Ubuntu. Idempotent.
set -euo pipefail
packages=(qemu-system-x86 qemu-guest-agent xorriso busybox-static cpio kmod eject util-linux python3 ca-certificates
  # The Debian 12 test guest (tests/guest/build-debian-guest.sh): its root file system, its ext4
  # image, and the per-VM copy-on-write overlay (qemu-img).
  mmdebstrap e2fsprogs qemu-utils
  # libvirt: libvirt-dev for the tests (they drive their daemons with the virt crate), the daemon and clients for the tests,
  # sshd, ssh and nc for the qemu+ssh:// tests.
  libvirt-dev pkg-config libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients
  openssh-server openssh-client netcat-openbsd)
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# build-guest.sh downloads the Debian kernel package, which needs package lists.
if [ ${#missing[@]} -gt 0 ] || ! apt-cache show linux-image-amd64 >/dev/null 2>&1; then
  $sudo apt-get update -qq
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# libvirt's QEMU driver wants this user; it normally comes with libvirt-daemon-system,
# which brings systemd units the tests do not use.
if ! getent passwd libvirt-qemu >/dev/null; then
  $sudo useradd --system --user-group --no-create-home libvirt-qemu
fi
# Python and JavaScript plugins: componentize-py runs in a venv, componentize-js on Node.js
# (scripts/build-plugins.sh installs both at their pinned versions).
extra=()
command -v node >/dev/null && command -v npm >/dev/null || extra+=(nodejs npm)
python3 -c 'import ensurepip, venv' 2>/dev/null || extra+=(python3-venv)
if [ ${#extra[@]} -gt 0 ]; then
  echo "deps: installing ${extra[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${extra[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "deps: cargo not found; install Rust 1.95 with rustup first" >&2; exit 1; }
# Plugins are WebAssembly components built for wasm32-wasip2.
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  echo "deps: rustup target add wasm32-wasip2" >&2
  rustup target add wasm32-wasip2
fi
