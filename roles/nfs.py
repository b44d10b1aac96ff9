"""Shared storage for the virtual folders: one exported directory, mounted at the same path
(``storage_proxy.volume_path``) on every agent and storage proxy host, so the proxy creates a
folder and every agent bind-mounts the same files into its sessions.

Optional: runs only where ``nfs.enabled``. The host with ``nfs.serve`` exports the directory
(it must be a manager-group host, so that it serves before the agents mount; an external NFS
server works too: no host serves, every host mounts ``nfs.server``); every other host mounts it.

Two transports (``nfs.transport``):

* ``nfs`` (default): Debian's nfs-kernel-server exporting ``nfs.export`` (default: the volume
  path) to ``nfs.allow`` (the agents' and storage hosts' networks, CIDRs) with
  ``rw,sync,no_subtree_check,no_root_squash`` (the storage proxy, root, chowns each folder to
  the kernel uid); clients: nfs-common, an fstab line, mounted unless mounted.
* ``sshfs``: for kernels without NFS (the test machines here have neither the NFS client nor
  the server in their kernel, and cannot load modules): Debian's openssh-server on the serving
  host and Debian's sshfs (FUSE) on the others. One key pair for the cluster, derived from a
  generated secret (``shared_storage_key`` in the secrets file), so every run writes the same
  bytes; the server accepts it for root only from ``nfs.allow`` and only to run sftp-server.

Each step is guarded: a rerun on mounted hosts changes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import shlex
import struct
from io import StringIO

from pyinfra.api import deploy
from pyinfra.operations import files, systemd

from . import _ops
from ._service import Service
from .catalog import PortUse, Role
from .settings import Settings

EXPORTS_PATH = "/etc/exports.d/bai.exports"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
KEY_COMMENT = "bai-shared-storage"


def export_path(settings: Settings) -> str:
    return settings.nfs.export or settings.storage_proxy.volume_path


def key_path(settings: Settings) -> str:
    return f"{settings.config_dir}/shared-storage.key"


# -- the sshfs key pair, derived from the secret ---------------------------------------------------

def _string(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def keypair(secret: str) -> tuple[str, str]:
    """(OpenSSH private key file text, public key line) of the ed25519 key whose seed is
    sha256(secret). Written by hand (not with ``cryptography``'s serializer, which puts random
    check bytes in): the same secret gives the same bytes, so reruns change nothing."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    seed = hashlib.sha256(f"bai-shared-storage\0{secret}".encode()).digest()
    pub = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
        Encoding.Raw, PublicFormat.Raw)
    kind = b"ssh-ed25519"
    pub_blob = _string(kind) + _string(pub)
    check = hashlib.sha256(seed).digest()[:4]
    private = (check + check + _string(kind) + _string(pub) + _string(seed + pub)
               + _string(KEY_COMMENT.encode()))
    private += bytes(range(1, 1 + (-len(private) % 8)))
    body = (b"openssh-key-v1\0" + _string(b"none") + _string(b"none") + _string(b"")
            + struct.pack(">I", 1) + _string(pub_blob) + _string(private))
    b64 = base64.b64encode(body).decode()
    lines = [b64[i:i + 70] for i in range(0, len(b64), 70)]
    text = "-----BEGIN OPENSSH PRIVATE KEY-----\n" + "\n".join(lines) + \
        "\n-----END OPENSSH PRIVATE KEY-----\n"
    return text, f"ssh-ed25519 {base64.b64encode(pub_blob).decode()} {KEY_COMMENT}"


def authorized_line(settings: Settings) -> str:
    _, public = keypair(settings.nfs.key)
    source = f'from="{",".join(settings.nfs.allow)}",' if settings.nfs.allow else ""
    return f'{source}restrict,command="{SFTP_SERVER}" {public}'


# -- texts -----------------------------------------------------------------------------------------

def exports_text(settings: Settings) -> str:
    opts = "rw,sync,no_subtree_check,no_root_squash"
    clients = " ".join(f"{cidr}({opts})" for cidr in settings.nfs.allow) or f"*({opts})"
    return f"# managed by bai-install\n{export_path(settings)} {clients}\n"


def fstab_line(settings: Settings) -> str:
    n = settings.nfs
    path = settings.storage_proxy.volume_path
    if n.transport == "sshfs":
        opts = ",".join([
            "_netdev", "allow_other", "default_permissions", "reconnect",
            "ServerAliveInterval=15", "StrictHostKeyChecking=accept-new",
            f"IdentityFile={key_path(settings)}",
        ])
        return f"root@{n.server}:{export_path(settings)} {path} fuse.sshfs {opts} 0 0"
    return f"{n.server}:{export_path(settings)} {path} nfs {n.options} 0 0"


# -- the role --------------------------------------------------------------------------------------

def _serve(settings: Settings) -> None:
    export = export_path(settings)
    files.directory(name=f"Exported directory {export}", path=export, user="root", group="root",
                    mode="755")
    if settings.nfs.transport == "sshfs":
        _ops.packages(name="Install openssh-server", packages=["openssh-server"])
        files.directory(name="Directory /root/.ssh", path="/root/.ssh", mode="700")
        files.line(name="Authorise the shared-storage key (sftp only)",
                   path="/root/.ssh/authorized_keys", line=f".* {KEY_COMMENT}$",
                   replace=authorized_line(settings))
        systemd.service(name="ssh running and enabled", service="ssh.service", running=True,
                        enabled=True)
        return
    _ops.packages(name="Install nfs-kernel-server", packages=["nfs-kernel-server"])
    files.directory(name="Directory /etc/exports.d", path="/etc/exports.d", mode="755")
    exports = files.put(name=f"Write {EXPORTS_PATH}", src=StringIO(exports_text(settings)),
                        dest=EXPORTS_PATH, mode="644")
    systemd.service(name="nfs-server running and enabled", service="nfs-server.service",
                    running=True, enabled=True)
    _ops.ensure(name="Re-export", check="false", commands=["exportfs -ra"],
                _if=exports.did_change)


def _mount(settings: Settings) -> None:
    n = settings.nfs
    path = settings.storage_proxy.volume_path
    if n.transport == "sshfs":
        _ops.packages(name="Install sshfs", packages=["sshfs", "openssh-client"])
        private, _ = keypair(n.key)
        files.put(name="Write the shared-storage key", src=StringIO(private),
                  dest=key_path(settings), mode="600", user="root", group="root")
    else:
        _ops.packages(name="Install nfs-common", packages=["nfs-common"])
    files.directory(name=f"Mount point {path}", path=path, mode="755")
    line = fstab_line(settings)
    files.line(name=f"fstab entry for {path}", path="/etc/fstab",
               line=rf"^\S+ {path} ", replace=line)
    q = shlex.quote(path)
    # a mount with other options (the fstab line changed) is remounted
    source = shlex.quote(line.split()[0])
    _ops.ensure(
        name=f"Mount {path}",
        check=f'mountpoint -q {q} && [ "$(findmnt -n -o SOURCE {q})" = {source} ]',
        commands=[f"if mountpoint -q {q}; then umount {q}; fi; mount {q}"],
        noop_message="mounted",
    )


def check(settings: Settings) -> None:
    """Refuse a half-configured host before any operation is prepared."""
    if not settings.nfs.serve and not settings.nfs.server:
        raise ValueError("nfs.server: the address to mount from is required on hosts that do "
                         "not serve (nfs.serve)")


@deploy("nfs")
def nfs(settings: Settings) -> None:
    check(settings)
    if settings.nfs.serve:
        _serve(settings)
    else:
        _mount(settings)


def services(settings: Settings) -> list[Service]:
    """The serving host's server (``status``; preflight counts its ports as ours)."""
    if not settings.nfs.serve:
        return []
    if settings.nfs.transport == "sshfs":
        return [Service(name="sshd", unit="ssh.service", command="/usr/sbin/sshd -D",
                        ready="systemctl is-active --quiet ssh.service", log_dir=settings.log_dir)]
    return [Service(name="nfs-server", unit="nfs-server.service", command="/usr/sbin/rpc.nfsd",
                    ready=f"exportfs -s | grep -q '^{export_path(settings)} '",
                    log_dir=settings.log_dir)]


def ports(settings: Settings) -> list[PortUse]:
    # (the kernel NFS server's 2049 has no process to call ours, and an NFS server already
    # running is no conflict: the export is one more file in /etc/exports.d)
    if settings.nfs.serve and settings.nfs.transport == "sshfs":
        return [PortUse(22, "0.0.0.0", "shared storage (sftp)")]
    return []


ROLE = Role(name="nfs", groups=("manager", "agents", "storage"), deploy=nfs, services=services,
            ports=ports, enabled=lambda s: s.nfs.enabled)
