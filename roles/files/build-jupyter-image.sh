#!/bin/bash
# Build the bai JupyterLab kernel image offline, layered on the python kernel image's rootfs
# (build-kernel-image.sh, which must have run first): a copy of that rootfs with JupyterLab
# installed from PyPI into the venv /opt/jupyter (the image's runtime, so notebooks and query
# mode share its packages), a service definition /etc/backend.ai/service-defs/jupyter.json and
# the ai.backend.* labels (service port jupyter:http:8080; ttyd and sshd, with their service
# definitions, dropbear and sftp-server, come with the python rootfs).
# Usage: build-jupyter-image.sh TAG PYTHON_ROOTFS_CACHE [JUPYTER_ROOTFS_CACHE]
# Idempotent: the label ai.backend.internal.build-script holds this script's hash and the
# python build script's ("<16 hex>-<16 hex>", PYTHON_BUILD_ID in the environment); an image
# with the same label is left alone ("exists"). The venv'ed rootfs is cached too (keyed the
# JupyterLab version and the python build), so a change of labels or service definitions here
# does not download JupyterLab again.
#
# JupyterLab is never open to whoever reaches its port: without a token from the client
# (JUPYTER_TOKEN, the only environment variable the service accepts) it makes up a random one;
# the app proxy authorises users and passes the token.
set -euo pipefail
tag=${1:?usage: build-jupyter-image.sh TAG PYTHON_ROOTFS_CACHE [JUPYTER_ROOTFS_CACHE]}
base=${2:?the python rootfs cache (build-kernel-image.sh) is needed}
cache=${3:-/var/cache/bai/rootfs-python-jupyter-bookworm}
jupyterlab_version=4.6.6
here=$(dirname "${BASH_SOURCE[0]}")
python_build=${PYTHON_BUILD_ID:-$(sha256sum "$here/build-kernel-image.sh" | cut -c1-16)}
build="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)-$python_build"
built=$(docker image inspect --format '{{index .Config.Labels "ai.backend.internal.build-script"}}' "$tag" \
  2>/dev/null || true)
if [ "$built" = "$build" ]; then echo "exists"; exit 0; fi
if [ ! -x "$base/usr/bin/python3" ] || [ ! -x "$base/usr/bin/shellinaboxd" ] || [ ! -x "$base/usr/sbin/dropbear" ]; then
  echo "no python rootfs with the web terminal and sshd at $base: run build-kernel-image.sh first" >&2; exit 1
fi
stamp="jupyterlab==$jupyterlab_version python-rootfs-$python_build"
if [ "$(cat "$cache/.bai-build" 2>/dev/null || true)" != "$stamp" ]; then
  rm -rf "$cache.tmp"
  cp -a "$base" "$cache.tmp"
  cp /etc/resolv.conf "$cache.tmp/etc/resolv.conf"
  # The host's CA bundle: the way to PyPI may need it (the image keeps Debian's own).
  cp /etc/ssl/certs/ca-certificates.crt "$cache.tmp/tmp/host-ca.crt"
  chroot "$cache.tmp" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin /usr/bin/python3 -m venv /opt/jupyter >&2
  # A clean environment: the host's PIP_*/SSL variables name host paths.
  chroot "$cache.tmp" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    PIP_CERT=/tmp/host-ca.crt SSL_CERT_FILE=/tmp/host-ca.crt REQUESTS_CA_BUNDLE=/tmp/host-ca.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_DEFAULT_TIMEOUT=120 \
    ${PIP_INDEX_URL:+PIP_INDEX_URL=$PIP_INDEX_URL} \
    /opt/jupyter/bin/pip install -q "jupyterlab==$jupyterlab_version" >&2
  rm -f "$cache.tmp/tmp/host-ca.crt"
  find "$cache.tmp/opt/jupyter" -name __pycache__ -prune -exec rm -rf {} + 2>/dev/null || true
  # Precompiled once here, so that no container pays for it (and the kernel user could not
  # write next to the root-owned sources anyway).
  chroot "$cache.tmp" /opt/jupyter/bin/python -m compileall -q /opt/jupyter/lib >/dev/null 2>&1 || true
  echo "$stamp" > "$cache.tmp/.bai-build"
  rm -rf "$cache"; mv "$cache.tmp" "$cache"
fi
mkdir -p "$cache/etc/backend.ai/service-defs"
cat > "$cache/etc/backend.ai/service-defs/jupyter.json" <<'JSON'
{
  "prestart": [
    {"action": "mkdir", "args": {"path": "{home}/.jupyter"}}
  ],
  "command": [
    "{venv_path}/bin/jupyter", "lab", "--no-browser", "--ip=0.0.0.0", "--port={ports[0]}",
    "--ServerApp.root_dir={home}", "--ServerApp.open_browser=False"
  ],
  "url_template": "{protocol}://{host}:{port}/",
  "allowed_arguments": ["--ServerApp.base_url", "--ServerApp.allow_origin"],
  "allowed_envs": ["JUPYTER_TOKEN"]
}
JSON
chmod 644 "$cache/etc/backend.ai/service-defs/jupyter.json"
tar -C "$cache" --numeric-owner --exclude=./.bai-build -c . | docker import \
  -c 'LABEL ai.backend.kernelspec=1' \
  -c 'LABEL ai.backend.features="batch query uid-match user-input"' \
  -c 'LABEL ai.backend.base-distro=debian12' \
  -c 'LABEL ai.backend.runtime-type=python' \
  -c 'LABEL ai.backend.runtime-path=/opt/jupyter/bin/python3' \
  -c 'LABEL ai.backend.resource.min.cpu=1' \
  -c 'LABEL ai.backend.resource.min.mem=512m' \
  -c 'LABEL ai.backend.service-ports=jupyter:http:8080' \
  -c "LABEL ai.backend.internal.build-script=$build" \
  -c 'ENV LANG=C.UTF-8 PYTHONUNBUFFERED=1' \
  -c 'WORKDIR /home/work' \
  -c 'CMD ["/opt/jupyter/bin/python3"]' \
  - "$tag" >&2
echo "built"
