#!/bin/bash
# Build the bai python kernel image offline: a debootstrap'ed Debian bookworm rootfs with
# python3, imported into Docker with the ai.backend.* labels the original's agents read.
# Usage: build-kernel-image.sh TAG [ROOTFS_CACHE_DIR]
# Idempotent: exits 0 without work when TAG exists and was built by this very script (its
# label ai.backend.internal.build-script holds the first 16 hex digits of the script's
# sha256), printing "exists"; a changed script rebuilds the image from the cached rootfs.
#
# Kernel processes run as the `work` user (uid/gid 1000, the agent's default [container]
# kernel-uid/kernel-gid) whose home, /home/work, is the working directory.
set -euo pipefail
tag=${1:-bai.local/stable/python:3.11-debian12}
cache=${2:-/var/cache/bai/rootfs-python-bookworm}
mirror=${BAI_DEBIAN_MIRROR:-http://deb.debian.org/debian}
work_uid=1000
work_gid=1000
build=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)
built=$(docker image inspect --format '{{index .Config.Labels "ai.backend.internal.build-script"}}' "$tag" \
  2>/dev/null || true)
if [ "$built" = "$build" ]; then echo "exists"; exit 0; fi
if [ ! -x "$cache/usr/bin/python3" ]; then
  rm -rf "$cache.tmp"; mkdir -p "$cache.tmp"
  debootstrap --variant=minbase --include=python3,ca-certificates,procps,tini \
    bookworm "$cache.tmp" "$mirror" >&2
  rm -rf "$cache.tmp/var/cache/apt/archives/"*.deb "$cache.tmp/var/lib/apt/lists/"*
  rm -rf "$cache"; mv "$cache.tmp" "$cache"
fi
# The work user, written straight into the rootfs (no chroot needed); idempotent.
grep -q '^work:' "$cache/etc/group" || echo "work:x:$work_gid:" >> "$cache/etc/group"
grep -q '^work:' "$cache/etc/passwd" ||
  echo "work:x:$work_uid:$work_gid:bai kernel user:/home/work:/bin/bash" >> "$cache/etc/passwd"
grep -q '^work:' "$cache/etc/shadow" || echo 'work:!:19000:0:99999:7:::' >> "$cache/etc/shadow"
mkdir -p "$cache/home/work"
chown "$work_uid:$work_gid" "$cache/home/work"
chmod 755 "$cache/home/work"
tar -C "$cache" --numeric-owner -c . | docker import \
  -c 'LABEL ai.backend.kernelspec=1' \
  -c 'LABEL ai.backend.features="batch query uid-match user-input"' \
  -c 'LABEL ai.backend.base-distro=debian12' \
  -c 'LABEL ai.backend.runtime-type=python' \
  -c 'LABEL ai.backend.runtime-path=/usr/bin/python3' \
  -c 'LABEL ai.backend.resource.min.cpu=1' \
  -c 'LABEL ai.backend.resource.min.mem=256m' \
  -c 'LABEL ai.backend.service-ports=""' \
  -c "LABEL ai.backend.internal.build-script=$build" \
  -c 'ENV LANG=C.UTF-8 PYTHONUNBUFFERED=1' \
  -c 'WORKDIR /home/work' \
  -c 'CMD ["/usr/bin/python3"]' \
  - "$tag" >&2
echo "built"
