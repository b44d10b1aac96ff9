#!/bin/bash
# Build the Docker-capable bai test host image (bai-host.Dockerfile) and print its tag.
#
#   build-bai-host-image.sh [PYTHON]      PYTHON: runs `pip wheel` (default /opt/bai/venv/bin/python)
#
# The tag is bai-test/bai-host:<key>, the key a hash of pyproject.toml's dependencies, entry
# points and package layout, the Dockerfile and this script: an unchanged key reuses the cached image at once; a changed one
# builds a new image. The wheelhouse (/var/cache/bai/wheelhouse/<hash of the dependencies>, ~35 MB) is built
# once per dependency list with `pip wheel` and baked into the image (and kept for hosts that pip-install again).
# The base image comes from build-systemd-image.sh (cached the same way).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
python=${1:-/opt/bai/venv/bin/python}
base=${BAI_TEST_HOST_IMAGE:-bai-test/systemd-host:bookworm}
say() { printf 'build-bai-host-image: %s\n' "$*" >&2; }

deps=$("$python" -c 'import sys, tomllib; print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]))' "$repo/pyproject.toml")
# what the image's install depends on: the dependencies, entry points and package layout (not
# the test extras, which hosts do not get)
metadata=$("$python" -c 'import json, sys, tomllib; d = tomllib.load(open(sys.argv[1], "rb")); p = d["project"]; print(json.dumps([p["dependencies"], p.get("scripts"), p.get("entry-points"), d["tool"]["setuptools"]], sort_keys=True))' "$repo/pyproject.toml")
key=$( { printf '%s\n' "$metadata"; cat "$here/bai-host.Dockerfile" "${BASH_SOURCE[0]}"; printf '%s\n' "$base"; } \
       | sha256sum | cut -c1-12)
tag=bai-test/bai-host:$key
if docker image inspect "$tag" >/dev/null 2>&1; then echo "$tag"; exit 0; fi
# one build at a time on this machine (parallel test runs share the wheelhouse and the tag)
mkdir -p /var/cache/bai
exec 9>/var/cache/bai/bai-host-image.lock
flock 9
if docker image inspect "$tag" >/dev/null 2>&1; then echo "$tag"; exit 0; fi

bash "$here/build-systemd-image.sh" "$base" >&2
# (keyed by the dependencies alone: a pyproject.toml change elsewhere reuses it)
wheelhouse=/var/cache/bai/wheelhouse/$(printf '%s\n' "$deps" | sha256sum | cut -c1-12)
if [ ! -f "$wheelhouse/.complete" ]; then
  say "building the wheelhouse $wheelhouse"
  rm -rf "$wheelhouse"; mkdir -p "$wheelhouse"
  printf '%s\n' "$deps" > "$wheelhouse/requirements.txt"
  log=$(mktemp)
  if ! "$python" -m pip wheel -q --disable-pip-version-check -w "$wheelhouse" \
      -r "$wheelhouse/requirements.txt" setuptools wheel >"$log" 2>&1; then
    tail -n 30 "$log" >&2; rm -f "$log"; exit 1
  fi
  rm -f "$log"
  ls "$wheelhouse"/*.whl >/dev/null  # (fails the build when pip left nothing)
  touch "$wheelhouse/.complete"
fi
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$here/bai-host.Dockerfile" "$ctx/Dockerfile"
mkdir "$ctx/wheelhouse"
cp "$wheelhouse"/*.whl "$ctx/wheelhouse/"
cp "$wheelhouse/requirements.txt" "$ctx/requirements.txt"
cp "$repo/pyproject.toml" "$repo/README.md" "$ctx/"
say "building $tag"
# the legacy builder (no buildx here) prints a deprecation notice: harmless
docker build -q --build-arg "BASE=$base" -t "$tag" "$ctx" >&2
echo "$tag"
