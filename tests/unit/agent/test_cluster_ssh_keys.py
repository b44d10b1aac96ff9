"""A cluster session's own keypair in a kernel's home (bai.agent.dotfiles): what
``authorized_keys`` and ``.ssh/config`` hold, which dotfiles give way, the mounts fragment for a
kernel with only the cluster key, and the create request that carries it (never in a ``repr``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from bai.agent.dotfiles import _merged_paths, authorized_keys, cluster_hosts, ssh_config, ssh_key_mounts
from bai.common.agent_rpc import CreateKernelsRequest, KernelCreationConfig, SSHKeypairSpec

CLUSTER = SSHKeypairSpec(public_key="ssh-rsa CCCC cluster\n", private_key="cluster-secret")
OWNER = {"public_key": "ssh-rsa OOOO owner", "private_key": "owner-secret"}


def _config(**extra: Any) -> KernelCreationConfig:
    return KernelCreationConfig.model_validate({
        "image": {"canonical": "x"}, "cluster_hostname": "sub1",
        "environ": {"BACKENDAI_CLUSTER_HOSTS": "main1,sub1,sub2"}, **extra})


def test_authorized_keys_hold_the_dotfile_then_the_owner_then_the_cluster_key() -> None:
    dotfile = [{"path": ".ssh/authorized_keys", "perm": "600", "data": "ssh-ed25519 MINE\n\n"}]
    assert authorized_keys(_config(ssh_keypair=OWNER, dotfiles=dotfile), CLUSTER) == \
        "ssh-ed25519 MINE\nssh-rsa OOOO owner\nssh-rsa CCCC cluster\n"
    assert authorized_keys(_config(), CLUSTER) == "ssh-rsa CCCC cluster\n"


def test_the_ssh_config_names_the_session_hosts_only_and_keeps_a_dotfile_after_it() -> None:
    text = ssh_config(_config(dotfiles=[{"path": ".ssh/config", "perm": "600", "data": "ForwardAgent yes"}]))
    head, _, rest = text.partition("Host *\n")
    assert head.splitlines()[1:] == ["Host main1 sub1 sub2", "    Port 2200",
                                     "    IdentityFile /home/work/.ssh/id_cluster", "    IdentitiesOnly yes",
                                     "    StrictHostKeyChecking no", "    UserKnownHostsFile /dev/null",
                                     "    LogLevel ERROR"]
    assert rest == "ForwardAgent yes\n"  # under `Host *`: it still applies to every host
    # what is not a plain hostname never reaches the config (a newline would add options)
    odd = _config(environ={"BACKENDAI_CLUSTER_HOSTS": "main1,*,sub1\n    ProxyCommand x,,-o"})
    assert cluster_hosts(odd) == ["main1", "sub1"]


def test_the_cluster_key_takes_the_place_of_its_dotfiles_only_when_sent() -> None:
    assert _merged_paths(_config(), None) == ()
    assert set(_merged_paths(_config(), CLUSTER)) == {".ssh/authorized_keys", ".ssh/id_cluster", ".ssh/config"}
    assert set(_merged_paths(_config(ssh_keypair=OWNER), None)) == {".ssh/authorized_keys", "id_container"}


def test_a_kernel_with_only_the_cluster_key_gets_the_tmpfs_and_no_bind(tmp_path: Path) -> None:
    fragment = ssh_key_mounts(_config(), tmp_path, os.getuid(), os.getgid(), CLUSTER)
    assert list(fragment["HostConfig"]) == ["Tmpfs"] and not (tmp_path / "ssh").exists()
    assert ssh_key_mounts(_config(), tmp_path, os.getuid(), os.getgid()) == {}


def test_the_request_keeps_the_cluster_key_apart_and_out_of_its_repr() -> None:
    body = {"session_id": "s", "kernel_ids": ["k1"], "configs": [{"image": {"canonical": "x"}}],
            "cluster_info": {"size": 2, "ssh_keypair": {"public_key": "ssh-rsa P", "private_key": "very-secret"}}}
    req = CreateKernelsRequest.model_validate(body)
    assert req.cluster_info == {"size": 2}
    assert req.cluster_ssh_keypair is not None and req.cluster_ssh_keypair.private_key == "very-secret"
    assert "very-secret" not in repr(req) and "very-secret" not in str(req.model_dump())
    # only cluster_info brings it; a malformed one is the request's error (a 400)
    assert CreateKernelsRequest.model_validate(
        {**body, "cluster_info": {}, "cluster_ssh_keypair": {"public_key": "a", "private_key": "b"}}
    ).cluster_ssh_keypair is None
    with pytest.raises(ValidationError):
        CreateKernelsRequest.model_validate({**body, "cluster_info": {"ssh_keypair": "nope"}})
