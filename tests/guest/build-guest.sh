#!/usr/bin/env bash
# Builds the tiny real Linux test guest (kernel + initramfs) from Debian packages.
# Output: $1 (default target/vmguest-guest)/{vmlinuz,initrd.img}. Cached: reruns are free
# unless this script changes, because the stamp holds the script's own hash.
set -euo pipefail
out=${1:-target/vmguest-guest}
here=$(cd "$(dirname "$0")" && pwd)
stamp=$(sha256sum "$here/build-guest.sh" "$here/init" | sha256sum | cut -c1-16)
mkdir -p "$out"
out=$(cd "$out" && pwd)
if [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$stamp" ] && [ -f "$out/vmlinuz" ] && [ -f "$out/initrd.img" ]; then
  exit 0
fi
for tool in apt-get dpkg-deb depmod modprobe cpio busybox qemu-ga eject; do
  command -v "$tool" >/dev/null || { echo "build-guest: missing $tool (see README: apt-get install ...)" >&2; exit 1; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Kernel: whatever linux-image-amd64 currently depends on.
kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
[ -n "$kpkg" ] || { echo "build-guest: cannot resolve linux-image-amd64 (run apt-get update)" >&2; exit 1; }
kver=${kpkg#linux-image-}
(cd "$work" && apt-get download -q "$kpkg" >/dev/null)
dpkg-deb -x "$work"/"${kpkg}"_*.deb "$work/k"
cp "$work/k/boot/vmlinuz-$kver" "$out/vmlinuz.new"
depmod -b "$work/k" "$kver"

root=$work/root
mkdir -p "$root"/{bin,dev,proc,sys,run,tmp,mnt,etc,lib/modules,var/lib,root}
cp "$(command -v busybox)" "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do
  [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done

# Dynamically linked helpers and every library ldd names for them.
copy_with_libs() {
  local bin=$1 dest=$2
  rm -f "$root$dest"
  mkdir -p "$(dirname "$root$dest")"
  cp "$bin" "$root$dest"
  for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
}
copy_with_libs "$(command -v qemu-ga)" /usr/sbin/qemu-ga
copy_with_libs "$(command -v eject)" /bin/eject   # util-linux eject: busybox's cannot lock the tray

# Modules in load order, dependencies first.
: > "$root/etc/modules.load"
for m in virtio_pci virtio_console ata_piix ahci sr_mod isofs; do
  modprobe -d "$work/k" -S "$kver" --show-depends "$m" | awk '$1=="insmod"{print $2}' | while read -r ko; do
    name=$(basename "$ko")
    if ! grep -qx "$name" "$root/etc/modules.load"; then
      cp "$ko" "$root/lib/modules/$name"
      echo "$name" >> "$root/etc/modules.load"
    fi
  done
done

cat > "$root/etc/os-release" <<OS
NAME="vmguest test guest"
ID=vmguest-test
PRETTY_NAME="vmguest test guest (Debian kernel $kver)"
VERSION_ID="1"
OS
echo "root:x:0:0:root:/root:/bin/sh" > "$root/etc/passwd"
install -m 0755 "$here/init" "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$out/initrd.img.new"
mv "$out/vmlinuz.new" "$out/vmlinuz"
mv "$out/initrd.img.new" "$out/initrd.img"
echo "$stamp" > "$out/stamp"
echo "build-guest: kernel $kver, initrd $(du -h "$out/initrd.img" | cut -f1) in $out" >&2
