#!/bin/sh
# Installs the demo guest tool; unattended, idempotent, exit 0 on success.
set -e
mkdir -p /usr/local/bin
cp "$VMGUEST_IC_MEDIA/vmguest-demo-tools" /usr/local/bin/vmguest-demo-tools
chmod 0755 /usr/local/bin/vmguest-demo-tools
echo "vmguest demo tools 1.0.0 installed to /usr/local/bin"
