#!/bin/bash
# Build the bai python kernel image offline: a debootstrap'ed Debian bookworm rootfs with
# python3, imported into Docker with the ai.backend.* labels the original's agents read.
# Usage: build-kernel-image.sh TAG [ROOTFS_CACHE_DIR]
# Idempotent: exits 0 without work when TAG already exists (prints "exists").
set -euo pipefail
tag=${1:-bai.local/stable/python:3.11-debian12}
cache=${2:-/var/cache/bai/rootfs-python-bookworm}
mirror=${BAI_DEBIAN_MIRROR:-http://deb.debian.org/debian}
if docker image inspect "$tag" >/dev/null 2>&1; then echo "exists"; exit 0; fi
if [ ! -x "$cache/usr/bin/python3" ]; then
  rm -rf "$cache.tmp"; mkdir -p "$cache.tmp"
  debootstrap --variant=minbase --include=python3,ca-certificates,procps,tini \
    bookworm "$cache.tmp" "$mirror" >&2
  rm -rf "$cache.tmp/var/cache/apt/archives/"*.deb "$cache.tmp/var/lib/apt/lists/"*
  mkdir -p "$cache.tmp/home/work"
  rm -rf "$cache"; mv "$cache.tmp" "$cache"
fi
tar -C "$cache" -c . | docker import \
  -c 'LABEL ai.backend.kernelspec=1' \
  -c 'LABEL ai.backend.features="batch query uid-match user-input"' \
  -c 'LABEL ai.backend.base-distro=debian12' \
  -c 'LABEL ai.backend.runtime-type=python' \
  -c 'LABEL ai.backend.runtime-path=/usr/bin/python3' \
  -c 'LABEL ai.backend.resource.min.cpu=1' \
  -c 'LABEL ai.backend.resource.min.mem=256m' \
  -c 'LABEL ai.backend.service-ports=""' \
  -c 'ENV LANG=C.UTF-8 PYTHONUNBUFFERED=1' \
  -c 'WORKDIR /home/work' \
  -c 'CMD ["/usr/bin/python3"]' \
  - "$tag" >&2
echo "built"
