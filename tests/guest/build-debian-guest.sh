#!/usr/bin/env bash
# Builds the Debian 12 (bookworm) test guest: a systemd + udev root file system from the
# Debian package registry (mmdebstrap), with Debian's qemu-guest-agent package, and no
# network configuration (the test VMs have no NIC).
#
# Usage: build-debian-guest.sh [OUT [BUSYBOX_GUEST]]
#   OUT            default target/vmguest-debian-guest: vmlinuz, initrd.img, root.img, stamp
#   BUSYBOX_GUEST  default target/vmguest-guest, built first by build-guest.sh
#
# Kernel: the very kernel of the busybox guest (BUSYBOX_GUEST/vmlinuz, copied to OUT and
# checked byte for byte against its Debian package), with the modules of that package in
# the root file system's /lib/modules, so that udev loads what it finds (ata_piix, sr_mod,
# virtio_console, isofs on mount) as on any Debian system.
#
# Boot: in Debian's kernel virtio_blk and ext4 are modules, so the root disk cannot be
# mounted by the kernel alone. Rather than Debian's initramfs-tools (a kernel package
# in the image, a large initrd, slow to unpack under TCG), OUT/initrd.img is a tiny
# busybox initramfs that loads virtio_pci, virtio_blk and ext4, mounts /dev/vda and
# switch_roots to systemd. Boot with `root=/dev/vda` implied, e.g.
#   -kernel OUT/vmlinuz -initrd OUT/initrd.img -append "console=ttyS0 systemd.unit=multi-user.target"
#   -drive if=none,id=root,format=raw,file=OUT/root.img,snapshot=on -device virtio-blk-pci,drive=root
# root.img is a sparse raw ext4 image made from the tree with `mkfs.ext4 -d` (no loop
# mount). Tests never write to it: each VM gets a throwaway copy-on-write layer.
#
# Cached: reruns are free unless this script or the busybox guest's kernel changes
# (the stamp holds both hashes). Needs root (mmdebstrap's root mode keeps ownership
# for mkfs.ext4 -d), mmdebstrap, e2fsprogs, busybox, kmod and package lists.
set -euo pipefail
out=${1:-target/vmguest-debian-guest}
guest=${2:-target/vmguest-guest}
here=$(cd "$(dirname "$0")" && pwd)
[ -f "$guest/vmlinuz" ] || { echo "build-debian-guest: no $guest/vmlinuz: run tests/guest/build-guest.sh first" >&2; exit 1; }
# Contents only: the same guest named by another path is the same kernel.
stamp=$(cat "$here/build-debian-guest.sh" "$guest/vmlinuz" | sha256sum | cut -c1-16)
mkdir -p "$out"
out=$(cd "$out" && pwd)
if [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$stamp" ] &&
  [ -f "$out/vmlinuz" ] && [ -f "$out/initrd.img" ] && [ -f "$out/root.img" ]; then
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "build-debian-guest: must run as root (mmdebstrap --mode=root)" >&2; exit 1; }
for tool in mmdebstrap mkfs.ext4 apt-get dpkg-deb depmod modprobe cpio busybox; do
  command -v "$tool" >/dev/null || { echo "build-debian-guest: missing $tool (run scripts/deps.sh)" >&2; exit 1; }
done
started=$(date +%s)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The busybox guest's kernel version, from the bzImage header's version string
# (offset 0x20e holds its address minus 0x200), then its package, which must hold the
# same vmlinuz: modules only load into the kernel they were built for.
off=$(od -An -tu2 -j $((0x20e)) -N2 "$guest/vmlinuz" | tr -d ' ')
kver=$(dd if="$guest/vmlinuz" bs=1 skip=$((off + 0x200)) count=128 status=none | tr '\0' '\n' | head -1 | cut -d' ' -f1)
[ -n "$kver" ] || { echo "build-debian-guest: cannot read the kernel version of $guest/vmlinuz" >&2; exit 1; }
(cd "$work" && apt-get download -q "linux-image-$kver" >/dev/null 2>&1) ||
  { echo "build-debian-guest: cannot download linux-image-$kver (apt-get update, or rebuild $guest)" >&2; exit 1; }
dpkg-deb -x "$work"/linux-image-"${kver}"_*.deb "$work/k"
cmp -s "$work/k/boot/vmlinuz-$kver" "$guest/vmlinuz" ||
  { echo "build-debian-guest: $guest/vmlinuz is not linux-image-$kver's; rebuild $guest" >&2; exit 1; }
depmod -b "$work/k" "$kver"

# The root file system. Essential packages plus what the guest is about; no apt, no
# network stack beyond the kernel's, no recommends (no timesyncd, no networkd config).
root=$work/root
mmdebstrap --quiet --mode=root --variant=essential \
  --aptopt='APT::Install-Recommends "false"' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
  --include=systemd,systemd-sysv,udev,kmod,util-linux,mount,eject,qemu-guest-agent \
  bookworm "$root" \
  "deb http://deb.debian.org/debian bookworm main" \
  "deb http://deb.debian.org/debian bookworm-updates main" \
  "deb http://deb.debian.org/debian-security bookworm-security main"

# The kernel's modules that a VM of these tests can use: buses, disks, CD-ROM, the
# virtio console, file systems and their libraries. The rest (graphics, sound, network,
# 300 MB) would only make the image bigger.
kmods=$work/k/lib/modules/$kver/kernel
mkdir -p "$root/lib/modules/$kver/kernel/drivers"
cp -a "$kmods"/{fs,lib,crypto,block} "$root/lib/modules/$kver/kernel/"
cp -a "$kmods"/drivers/{virtio,block,ata,scsi,cdrom,char} "$root/lib/modules/$kver/kernel/drivers/"
cp -a "$work/k/lib/modules/$kver"/modules.{order,builtin,builtin.modinfo} "$root/lib/modules/$kver/" 2>/dev/null || true
depmod -b "$root" "$kver"

# qemu-guest-agent is started by its udev rule (SYSTEMD_WANTS, when the virtio port
# appears) and restarted by systemd (Restart=always): the Debian way, kept as it is.
# Masked: what is slow or useless on a VM without network or console login.
for unit in systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer \
  e2scrub_all.timer e2scrub_reap.service fstrim.timer dpkg-db-backup.timer \
  getty@tty1.service serial-getty@ttyS0.service console-getty.service \
  systemd-networkd.service systemd-networkd-wait-online.service systemd-resolved.service \
  systemd-firstboot.service systemd-pstore.service; do
  ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
echo vmguest-debian > "$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 vmguest-debian\n' > "$root/etc/hosts"
echo "/dev/vda / ext4 rw,errors=remount-ro 0 1" > "$root/etc/fstab"
# A fixed machine id: no first-boot setup at every test boot.
tr -d '-' < /proc/sys/kernel/random/uuid > "$root/etc/machine-id"
: > "$root/etc/resolv.conf"
rm -rf "$root/var/cache/apt"/*.bin "$root/var/lib/apt/lists"/* "$root/var/log"/*.log

size_mb=$(( $(du -sm "$root" | cut -f1) + 192 ))
rm -f "$out/root.img.new"
mkfs.ext4 -q -F -L vmguest-debian -d "$root" "$out/root.img.new" "${size_mb}M" >/dev/null

# The initramfs: busybox, the modules to reach the root disk, and an init that mounts
# it and hands over to systemd.
ird=$work/initrd
mkdir -p "$ird"/{bin,dev,proc,sys,newroot,lib/modules}
cp "$(command -v busybox)" "$ird/bin/busybox"
for applet in sh mount umount insmod sleep switch_root cat echo; do ln -s busybox "$ird/bin/$applet"; done
: > "$ird/modules.load"
for m in virtio_pci virtio_blk crc32c_generic ext4; do
  modprobe -d "$work/k" -S "$kver" --show-depends "$m" | awk '$1=="insmod"{print $2}' | while read -r ko; do
    name=$(basename "$ko")
    if ! grep -qx "$name" "$ird/modules.load"; then
      cp "$ko" "$ird/lib/modules/$name"
      echo "$name" >> "$ird/modules.load"
    fi
  done
done
cat > "$ird/init" <<'INIT'
#!/bin/sh
# Load what reaches the root disk, mount it, and hand over to systemd.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules.load); do insmod "/lib/modules/$m" 2>/dev/null; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
if ! mount -t ext4 -o rw /dev/vda /newroot; then
  echo "initramfs: cannot mount /dev/vda" >&2
  exec sh
fi
mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot /sbin/init
INIT
chmod 0755 "$ird/init"
(cd "$ird" && find . | cpio -o -H newc --quiet | gzip -1) > "$out/initrd.img.new"

cp "$guest/vmlinuz" "$out/vmlinuz.new"
mv "$out/vmlinuz.new" "$out/vmlinuz"
mv "$out/initrd.img.new" "$out/initrd.img"
mv "$out/root.img.new" "$out/root.img"
echo "$stamp" > "$out/stamp"
echo "build-debian-guest: Debian 12, kernel $kver, root.img $(du -h "$out/root.img" | cut -f1) used of ${size_mb} MB, in $(( $(date +%s) - started )) s, in $out" >&2
