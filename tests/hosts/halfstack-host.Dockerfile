# The bai test host (bai-host.Dockerfile) with the half-stack's Debian packages installed as
# roles/_ops.py's packages() installs them; see build-halfstack-host-image.sh.
ARG BASE
FROM ${BASE}
ARG PACKAGES
# policy-rc.d: maintainer scripts start no daemon (as in packages()); then every unit symlink the
# packages added under /etc/systemd/system is removed, so that a booted host runs none of them
# (a fresh etcd would otherwise initialise a one-member cluster before the role configures it)
RUN set -e; printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; \
    find /etc/systemd/system -type l | sort > /tmp/links.before; \
    apt-get update -q; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold ${PACKAGES}; \
    find /etc/systemd/system -type l | sort > /tmp/links.after; \
    comm -13 /tmp/links.before /tmp/links.after | xargs -r rm -f; \
    rm -f /usr/sbin/policy-rc.d /tmp/links.before /tmp/links.after; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
