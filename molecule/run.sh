#!/bin/bash
# Run a molecule scenario (operators; CI runs the same scenarios through pytest, tests/multinode/):
#
#   bash molecule/run.sh all-in-one|multi-node [molecule test options]
#
# Needs this machine's installed node (bash installer/bootstrap.sh: /opt/bai/venv, the kernel
# images). Makes the test-only molecule venv (setup-venv.sh) and the test host image
# (tests/hosts/build-bai-host-image.sh) when missing, then `molecule test -s NAME`.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
name=${1:?usage: run.sh all-in-one|multi-node}
shift
venv=$(bash "$here/setup-venv.sh")
BAI_HOST_IMAGE=$(bash "$repo/tests/hosts/build-bai-host-image.sh")
export BAI_HOST_IMAGE BAI_REPO=$repo
# molecule shells out to ansible-config / ansible-galaxy: they must be on PATH
export PATH="$venv/bin:$PATH" ANSIBLE_PYTHON_INTERPRETER=auto_silent
cd "$repo"  # molecule finds molecule/<scenario>/ from here
exec molecule test -s "$name" "$@"
