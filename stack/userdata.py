"""First-boot scripts (cloud-init ``#cloud-config``) of the hosts, as plain text from plain
values, so that they can be read and tested without Pulumi.

What a host does at first boot, before ``bai-install`` runs:

* root accepts the stack's SSH key (``bai-install`` connects as root, as in
  ``inventories/multi-node.py``);
* management hosts: ``/etc/backend.ai/secrets.toml`` (mode 600) holds the database and Redis
  passwords of the stack, which ``bai-install`` reads and keeps (it generates only the secrets
  that are missing there), so the managers log into RDS/ElastiCache with the stack's passwords;
* the storage volume: EFS (managed) or the first management host's NFS export (self-hosted),
  mounted at the same path on the storage host and every agent;
* agents: the scratch EBS volume formatted once and mounted at ``SCRATCH_MOUNT``;
* with ``baiRepoUrl``: bai checked out at ``/opt/bai/src`` and installed into ``/opt/bai/venv``
  (what ``installer/bootstrap.sh`` does before it runs the installer).

Secrets appear only in management hosts' user data, which the stack marks secret; instances
require IMDSv2 with a hop limit of 1, so containers on a host cannot read it.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

SCRATCH_MOUNT = "/var/lib/bai/scratch"
SRC = "/opt/bai/src"
VENV = "/opt/bai/venv"


@dataclass(frozen=True)
class StorageMount:
    kind: str  # "local" (all-in-one) | "efs" | "nfs-server" | "nfs-client"
    path: str
    server: str = ""  # EFS DNS name or the NFS server's address
    export_to: tuple[str, ...] = ()  # nfs-server: client ranges


def _fstab_line(m: StorageMount) -> str:
    opts = "nfsvers=4.1,rsize=1048576,wsize=1048576,hard,timeo=600,retrans=2,_netdev,nofail"
    source = f"{m.server}:/" if m.kind == "efs" else f"{m.server}:{m.path}"
    return f"{source} {m.path} nfs4 {opts} 0 0"


def _storage_commands(m: StorageMount) -> list[str]:
    path = shlex.quote(m.path)
    if m.kind == "local":
        return [f"mkdir -p {path}"]
    if m.kind == "nfs-server":
        clients = " ".join(f"{c}(rw,sync,no_subtree_check,no_root_squash)" for c in m.export_to)
        return [f"mkdir -p {path}",
                f"echo {shlex.quote(f'{m.path} {clients}')} > /etc/exports.d/bai.exports",
                "systemctl enable --now nfs-server", "exportfs -ra"]
    line = shlex.quote(_fstab_line(m))
    # the server may come up after us: retry the mount for a while (nofail keeps boot going)
    return [f"mkdir -p {path}",
            f"grep -qF {line} /etc/fstab || echo {line} >> /etc/fstab",
            f"for i in $(seq 60); do mountpoint -q {path} && break; mount {path} || sleep 10; done"]


def _install_commands(repo_url: str, ref: str) -> list[str]:
    if not repo_url:
        return []
    return [f"test -d {SRC}/.git || git clone --branch {shlex.quote(ref)} "
            f"{shlex.quote(repo_url)} {SRC}",
            f"test -x {VENV}/bin/python || python3 -m venv {VENV}",
            f"{VENV}/bin/pip install -q -e {SRC}"]


def _document(packages: list[str], files: list[dict[str, str]], commands: list[str]) -> str:
    doc = {
        "disable_root": False,  # root gets the key pair's authorized key
        "package_update": True,
        "packages": packages,
        "write_files": files,
        "runcmd": [["sh", "-ec", cmd] for cmd in commands],
    }
    # JSON is YAML: no YAML emitter needed, and no surprise with special characters
    return "#cloud-config\n" + json.dumps(doc, indent=1, sort_keys=True) + "\n"


def secrets_toml(values: dict[str, str]) -> str:
    """The flat file ``bai-install`` reads (roles/settings.py ``parse_secrets``)."""
    lines = ["# From the Pulumi stack; bai-install adds the secrets it generates."]
    lines += [f"{key} = {json.dumps(value)}" for key, value in sorted(values.items())]
    return "\n".join(lines) + "\n"


def management(storage: StorageMount, secrets: dict[str, str], repo_url: str, ref: str,
               scratch_volume_id: str = "") -> str:
    """``scratch_volume_id``: all-in-one, where the management host is the agent too."""
    packages = ["nfs-common", "git", "python3-venv"]
    if storage.kind == "nfs-server":
        packages.append("nfs-kernel-server")
    files = [{"path": "/etc/backend.ai/secrets.toml", "permissions": "0600", "owner": "root:root",
              "content": secrets_toml(secrets)}]
    commands = (_storage_commands(storage) + _scratch_commands(scratch_volume_id)
                + _install_commands(repo_url, ref))
    return _document(packages, files, commands)


def _scratch_commands(volume_id: str) -> list[str]:
    if not volume_id:
        return []
    # Nitro instances name EBS disks nvmeN; the volume id (without its dash) is the serial
    disk = f"/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{volume_id.replace('-', '')}"
    return [
        f"for i in $(seq 60); do test -e {disk} && break; sleep 5; done",
        f"blkid {disk} || mkfs.ext4 -q -L bai-scratch {disk}",
        f"mkdir -p {SCRATCH_MOUNT}",
        f"grep -q LABEL=bai-scratch /etc/fstab || echo 'LABEL=bai-scratch {SCRATCH_MOUNT} "
        "ext4 defaults,nofail 0 2' >> /etc/fstab",
        f"mountpoint -q {SCRATCH_MOUNT} || mount {SCRATCH_MOUNT}",
    ]


def agent(storage: StorageMount, scratch_volume_id: str, repo_url: str, ref: str) -> str:
    commands = (_storage_commands(storage) + _scratch_commands(scratch_volume_id)
                + _install_commands(repo_url, ref))
    return _document(["nfs-common", "git", "python3-venv"], [], commands)
