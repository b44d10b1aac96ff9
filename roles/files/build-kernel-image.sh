#!/bin/bash
# Build the bai python kernel image offline: a debootstrap'ed Debian bookworm rootfs with
# python3, python3-venv and a web terminal, imported into Docker with the ai.backend.* labels
# the original's agents read. Debian has no ttyd package, so the intrinsic web-terminal service
# keeps the original's name and port (ttyd, http, 7681) but runs Debian's shellinabox
# (shellinaboxd, as the kernel user, a login shell in /home/work), started on demand through
# its service definition /etc/backend.ai/service-defs/ttyd.json. The intrinsic SSH service (sshd,
# tcp, 2200) is Debian's dropbear, run as the kernel user with public-key logins only (the
# keypair's key, written into ~/.ssh/authorized_keys by the agent), and SFTP (also what scp
# speaks since OpenSSH 9) through openssh-sftp-server's sftp-server. Its logins get the kernel's
# environment; OpenSSH's ssh client (a dependency of sftp-server) lets a cluster session's
# kernels `ssh sub1` each other (the agent writes ~/.ssh/config and the session's key).
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
packages=python3,python3-venv,ca-certificates,procps,tini,shellinabox,dropbear-bin,openssh-sftp-server
if [ ! -x "$cache/usr/bin/python3" ]; then
  rm -rf "$cache.tmp"; mkdir -p "$cache.tmp"
  debootstrap --variant=minbase --include="$packages" bookworm "$cache.tmp" "$mirror" >&2
  rm -rf "$cache.tmp/var/cache/apt/archives/"*.deb "$cache.tmp/var/lib/apt/lists/"*
  rm -rf "$cache"; mv "$cache.tmp" "$cache"
fi
# A rootfs cached by an older version of this script lacks the later packages: add them in a
# chroot (apt needs the package lists, which are removed again afterwards).
if [ ! -x "$cache/usr/bin/shellinaboxd" ] || [ ! -d "$cache/usr/share/doc/python3-venv" ] ||
   [ ! -x "$cache/usr/sbin/dropbear" ] || [ ! -x "$cache/usr/lib/openssh/sftp-server" ]; then
  cp /etc/resolv.conf "$cache/etc/resolv.conf"
  # No service may start inside the chroot.
  printf '#!/bin/sh\nexit 101\n' > "$cache/usr/sbin/policy-rc.d"; chmod 755 "$cache/usr/sbin/policy-rc.d"
  chroot "$cache" apt-get update -q >&2
  chroot "$cache" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    ${packages//,/ } >&2
  chroot "$cache" apt-get clean
  rm -rf "$cache/var/lib/apt/lists/"* "$cache/usr/sbin/policy-rc.d"
fi
# Service definitions (the original's DSL): the web terminal, a login shell in /home/work as
# the kernel user (shellinaboxd run by a non-root user serves that user's own shell).
mkdir -p "$cache/etc/backend.ai/service-defs"
cat > "$cache/etc/backend.ai/service-defs/ttyd.json" <<'JSON'
{
  "command": ["/usr/bin/shellinaboxd", "--port={ports[0]}", "--disable-ssl", "--no-beep",
              "--service=/:work:work:HOME:/bin/bash -l"],
  "url_template": "{protocol}://{host}:{port}/"
}
JSON
chmod 644 "$cache/etc/backend.ai/service-defs/ttyd.json"
# SSH/SFTP: dropbear in the foreground, logging to stderr (the service's log), no password
# logins (-s), with a host key of the container's own made at its first start (dropbearkey
# refuses to overwrite an existing key, so a restarted service keeps it; the error is ignored).
# Port forwarding stays on: VS Code Remote-SSH tunnels to its server through it. -e passes the
# service's environment (the kernel's: BACKENDAI_*, ...) on to logins; dropbear still sets its own
# PATH, which bai-kernel-env.sh below (login shells, after /etc/profile's reset; `ssh host cmd`
# through /etc/bash.bashrc) and the kernel runner's BASH_ENV script (other images' shells) replace
# with the kernel's.
cat > "$cache/etc/backend.ai/service-defs/sshd.json" <<'JSON'
{
  "prestart": [
    {"action": "run_command",
     "args": {"command": ["/usr/bin/dropbearkey", "-t", "ed25519", "-f", "/tmp/dropbear_ed25519_host_key"]}}
  ],
  "command": ["/usr/sbin/dropbear", "-F", "-E", "-e", "-s", "-w", "-p", "{ports[0]}",
              "-r", "/tmp/dropbear_ed25519_host_key", "-P", "/tmp/dropbear.pid"]
}
JSON
chmod 644 "$cache/etc/backend.ai/service-defs/sshd.json"
cat > "$cache/etc/profile.d/bai-kernel-env.sh" <<'SH'
# bai: an ssh login shell gets the kernel's PATH back (the kernel runner passes it to the sshd).
if [ -n "${BAI_KERNEL_PATH-}" ]; then PATH=$BAI_KERNEL_PATH; export PATH; unset BAI_KERNEL_PATH BASH_ENV; fi
SH
chmod 644 "$cache/etc/profile.d/bai-kernel-env.sh"
# Debian's bash run by an sshd for `ssh host cmd` reads /etc/bash.bashrc and ~/.bashrc, not
# BASH_ENV: the same, first (the file returns early in non-interactive shells).
if ! grep -q bai-kernel-env "$cache/etc/bash.bashrc"; then
  { printf '%s\n' "# bai: \`ssh host cmd\` gets the kernel's PATH back" \
      '[ -z "${BAI_KERNEL_PATH-}" ] || . /etc/profile.d/bai-kernel-env.sh'
    cat "$cache/etc/bash.bashrc"; } > "$cache/etc/bash.bashrc.tmp"
  chmod 644 "$cache/etc/bash.bashrc.tmp"; mv "$cache/etc/bash.bashrc.tmp" "$cache/etc/bash.bashrc"
fi
# The work user, written straight into the rootfs (no chroot needed); idempotent.
grep -q '^work:' "$cache/etc/group" || echo "work:x:$work_gid:" >> "$cache/etc/group"
grep -q '^work:' "$cache/etc/passwd" ||
  echo "work:x:$work_uid:$work_gid:bai kernel user:/home/work:/bin/bash" >> "$cache/etc/passwd"
grep -q '^work:' "$cache/etc/shadow" || echo 'work:!:19000:0:99999:7:::' >> "$cache/etc/shadow"
mkdir -p "$cache/home/work"
chown "$work_uid:$work_gid" "$cache/home/work"
chmod 755 "$cache/home/work"
# The mount points of the agent's key mounts (a tmpfs ~/.ssh, a bind ~/id_container), the kernel
# user's: Docker would make missing ones root's, and an image saved from a session keeps them.
install -d -m 700 -o "$work_uid" -g "$work_gid" "$cache/home/work/.ssh"
[ -e "$cache/home/work/id_container" ] ||
  install -m 600 -o "$work_uid" -g "$work_gid" /dev/null "$cache/home/work/id_container"
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
