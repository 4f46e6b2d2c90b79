#!/bin/sh
# Seed the corpus with one small image per family layout (xorriso, Rock Ridge + Joliet),
# each cut to what follows sector 16, as the fuzz target expects.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out="$here/corpus/iso_reader"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
pe() { printf 'MZ\0\0\275\004\357\376\0\0\001\0\003\000\014\000\000\000\200\045' > "$1"; }
seed() { # name volid files...
    name=$1 volid=$2; shift 2
    d="$work/$name"; mkdir -p "$d"
    for f in "$@"; do mkdir -p "$d/$(dirname "$f")"; pe "$d/$f"; done
    xorriso -as mkisofs -R -J -no-pad -V "$volid" -o "$work/$name.iso" "$d" 2>/dev/null
    tail -c +32769 "$work/$name.iso" > "$out/$name"
}
seed virtio-win virtio-win-0.1.266 virtio-win-guest-tools.exe guest-agent/qemu-ga-x86_64.msi
seed virtualbox VBox_GAs_7.0.12 VBoxLinuxAdditions.run VBoxWindowsAdditions.exe
seed vbox-old VBOXADDITIONS_6.1.50_161033 VBoxWindowsAdditions.exe
seed vmware-win "VMware Tools" setup64.exe setup.exe
seed vmware-linux "VMware Tools" VMwareTools-10.3.26-22085142.tar.gz
seed hyper-v IC support/amd64/setup.exe support/x86/setup.exe
mkdir -p "$work/own"
printf '[components]\nfamily = "vmguest"\nname = "x"\nversion = "1.2.0-rc1"\n[install.linux]\ncommand = "sh ./install.sh"\n' > "$work/own/vmguest-ic.toml"
xorriso -as mkisofs -R -J -no-pad -V VMGUEST_IC -o "$work/own.iso" "$work/own" 2>/dev/null
tail -c +32769 "$work/own.iso" > "$out/vmguest"
ls -la "$out"
