#!/bin/bash
# Build the offline systemd test host image (installer-testing.md §1.2): a debootstrap'ed Debian
# bookworm rootfs with systemd, imported into Docker. Cached: exits at once when the tag exists.
# Usage: build-systemd-image.sh [TAG] [ROOTFS_DIR]
set -euo pipefail
tag=${1:-bai-test/systemd-host:bookworm}
rootfs=${2:-/var/cache/bai/rootfs-systemd-host}
mirror=${BAI_DEBIAN_MIRROR:-http://deb.debian.org/debian}
if docker image inspect "$tag" >/dev/null 2>&1; then echo "$tag exists"; exit 0; fi
command -v debootstrap >/dev/null || apt-get install -y -q --no-install-recommends debootstrap >&2
# build in a private temp dir so that two concurrent builds cannot trample each other
tmp=$(mktemp -d "${rootfs}.XXXXXX" 2>/dev/null || { mkdir -p "$(dirname "$rootfs")"; mktemp -d "${rootfs}.XXXXXX"; })
trap 'rm -rf "$tmp"' EXIT
debootstrap --variant=minbase \
  --include=python3,systemd,systemd-sysv,dbus,iproute2,procps,ca-certificates,apt-utils,gnupg,curl \
  bookworm "$tmp" "$mirror" >&2
rm -rf "$tmp/var/cache/apt/archives/"*.deb
tar -C "$tmp" -c . | docker import -c 'CMD ["/sbin/init"]' -c 'ENV container=docker' - "$tag" >&2
echo "$tag built"
