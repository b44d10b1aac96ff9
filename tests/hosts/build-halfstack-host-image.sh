#!/bin/bash
# Build the half-stack test host image (halfstack-host.Dockerfile) and print its tag.
#
#   build-halfstack-host-image.sh BASE_TAG [PACKAGE...]
#
# BASE_TAG: the image to start from (the bai test host of build-bai-host-image.sh, or the bare
# systemd host of build-systemd-image.sh); PACKAGE...: another package list than the default.
#
# It is the bai test host with the Debian packages the half-stack, registry and web roles install
# (HALFSTACK_PACKAGES below) already installed the way roles/_ops.py's packages() installs them
# (no recommends, maintainer scripts kept from starting daemons) and the units those packages
# enabled disabled again: a host booted from it runs none of their daemons, as a host just after
# the roles' apt-get install, and the roles find the packages installed and go straight to
# configuring and starting them. For scenarios whose subject is not apt (HA, multi-node, registry):
# it saves every such host its apt-get update and downloads. The apt path itself stays tested on
# bare hosts (tests/roles/test_roles_halfstack.py, tests/installer/).
#
# The tag is bai-test/halfstack-host:<key>, the key a hash of the base image's id, the package
# list, the Dockerfile and this script: cached per machine, built once (~1-2 min).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
base=${1:?usage: build-halfstack-host-image.sh BASE_TAG [PACKAGE...]}
shift
# what roles/{os_prep,postgresql,redis,etcd,registry,webserver,kernel_image,manager}.py install
HALFSTACK_PACKAGES="ca-certificates procps iproute2 python3 util-linux kmod curl
postgresql-15 postgresql-client-15 redis-server redis-tools etcd-server etcd-client
docker-registry apache2-utils libjs-xterm node-xterm debootstrap"
if [ $# -gt 0 ]; then HALFSTACK_PACKAGES="$*"; fi
base_id=$(docker image inspect -f '{{.Id}}' "$base")
key=$( { printf '%s\n' "$base_id" "$HALFSTACK_PACKAGES"; cat "$here/halfstack-host.Dockerfile" "${BASH_SOURCE[0]}"; } \
       | sha256sum | cut -c1-12)
tag=bai-test/halfstack-host:$key
if docker image inspect "$tag" >/dev/null 2>&1; then echo "$tag"; exit 0; fi
mkdir -p /var/cache/bai
exec 9>/var/cache/bai/halfstack-host-image.lock
flock 9
if docker image inspect "$tag" >/dev/null 2>&1; then echo "$tag"; exit 0; fi
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$here/halfstack-host.Dockerfile" "$ctx/Dockerfile"
printf 'build-halfstack-host-image: building %s\n' "$tag" >&2
docker build -q --build-arg "BASE=$base" --build-arg "PACKAGES=$(echo $HALFSTACK_PACKAGES)" \
  -t "$tag" "$ctx" >&2
echo "$tag"
