"""The machines: management host(s), GPU agents in a cluster placement group with one scratch
EBS volume each, and an optional bastion (the only host with a public address).

``all-in-one`` is one GPU host in every group. Every instance requires IMDSv2 with a hop limit
of 1 (a container on a host cannot reach the metadata service, hence neither the instance's
role credentials nor its user data) and has an encrypted root volume.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from . import userdata
from ._outputs import secret
from .config import StackConfig
from .network import Network
from .services import Managed, Secrets


@dataclass
class Host:
    name: str  # the inventory name: mgmt1, agent1, aio1
    groups: list[str]  # inventory groups: halfstack, manager, storage, agents
    instance: aws.ec2.Instance
    user_data: pulumi.Output[str]


@dataclass
class Hosts:
    management: list[Host]
    agents: list[Host]
    bastion: aws.ec2.Instance | None
    placement_group: aws.ec2.PlacementGroup | None
    scratch_volumes: list[aws.ebs.Volume] = field(default_factory=list)

    @property
    def all(self) -> list[Host]:
        return self.management + self.agents


def ami(explicit: str, name_pattern: str, owner: str) -> pulumi.Input[str]:
    """An explicit AMI id, or the newest x86_64 image matching the name pattern and owner."""
    if explicit:
        return explicit
    return aws.ec2.get_ami_output(
        most_recent=True, owners=[owner],
        filters=[aws.ec2.GetAmiFilterArgs(name="name", values=[name_pattern]),
                 aws.ec2.GetAmiFilterArgs(name="architecture", values=["x86_64"]),
                 aws.ec2.GetAmiFilterArgs(name="state", values=["available"])],
    ).id


def _instance(name: str, cfg: StackConfig, *, ami_id: pulumi.Input[str], instance_type: str,
              subnet: aws.ec2.Subnet, groups: list[aws.ec2.SecurityGroup], key_name: pulumi.Input[str],
              user_data: pulumi.Input[str] | None, tags: dict[str, str], public: bool = False,
              placement_group: aws.ec2.PlacementGroup | None = None) -> aws.ec2.Instance:
    return aws.ec2.Instance(
        name,
        ami=ami_id,
        instance_type=instance_type,
        subnet_id=subnet.id,
        vpc_security_group_ids=[g.id for g in groups],
        key_name=key_name,
        associate_public_ip_address=public,
        placement_group=placement_group.name if placement_group else None,
        user_data=user_data,
        metadata_options=aws.ec2.InstanceMetadataOptionsArgs(
            http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=1),
        root_block_device=aws.ec2.InstanceRootBlockDeviceArgs(
            volume_size=cfg.root_volume_gib, volume_type="gp3", encrypted=True),
        tags={**tags, "Name": name},
    )


def build(cfg: StackConfig, name: str, net: Network, groups: dict[str, aws.ec2.SecurityGroup],
          sec: Secrets, managed: Managed | None, tags: dict[str, str]) -> Hosts:
    if cfg.ssh_public_key:
        key_name: pulumi.Input[str] = aws.ec2.KeyPair(
            f"{name}-key", public_key=cfg.ssh_public_key, tags=tags).key_name
    else:
        key_name = cfg.key_name
    host_ami = ami(cfg.host_ami, cfg.host_ami_name, cfg.host_ami_owner)
    agent_ami = ami(cfg.agent_ami, cfg.agent_ami_name, cfg.agent_ami_owner)
    aio = cfg.topology == "all-in-one"
    private_cidrs = [s.cidr_block for s in net.private_subnets]

    scratch: list[aws.ebs.Volume] = []

    def scratch_volume(host: str) -> aws.ebs.Volume | None:
        if not cfg.scratch_volume_gib:
            return None
        # agents live in the first zone (the placement group), and so do their volumes
        vol = aws.ebs.Volume(f"{name}-{host}-scratch", availability_zone=net.zones[0],
                             size=cfg.scratch_volume_gib, type="gp3", encrypted=True,
                             tags={**tags, "Name": f"{name}-{host}-scratch"})
        scratch.append(vol)
        return vol

    secret_values = pulumi.Output.all(sec.db_password, sec.redis_password)

    # -- management hosts --------------------------------------------------------------------
    management: list[Host] = []
    for i in range(cfg.management_count):
        host = "aio1" if aio else f"mgmt{i + 1}"
        first = i == 0
        vol = scratch_volume(host) if aio else None
        if managed is not None:
            storage: pulumi.Output[userdata.StorageMount] = managed.efs_dns_name.apply(
                lambda dns: userdata.StorageMount("efs", cfg.storage_volume_path, dns))
        elif aio:
            storage = pulumi.Output.from_input(userdata.StorageMount("local", cfg.storage_volume_path))
        else:
            storage = pulumi.Output.all(*private_cidrs).apply(
                lambda cidrs: userdata.StorageMount("nfs-server", cfg.storage_volume_path,
                                                    export_to=tuple(cidrs)))

        def render(args: list[Any], vol_given: bool = vol is not None) -> str:
            mount, (db_pw, redis_pw) = args[0], args[1]
            return userdata.management(mount, {"db_password": str(db_pw),
                                               "redis_password": str(redis_pw)},
                                       cfg.bai_repo_url, cfg.bai_ref,
                                       scratch_volume_id=str(args[2]) if vol_given else "")

        parts: list[pulumi.Input[object]] = [storage, secret_values]
        if vol is not None:
            parts.append(vol.id)
        data = secret(pulumi.Output.all(*parts).apply(render))
        instance = _instance(
            f"{name}-{host}", cfg,
            ami_id=agent_ami if aio else host_ami,
            instance_type=cfg.agent_instance_type if aio else cfg.management_instance_type,
            subnet=net.private_subnets[0 if aio else i % len(net.private_subnets)],
            groups=[groups["mgmt"], groups["agents"]] if aio else [groups["mgmt"]],
            key_name=key_name, user_data=data, tags=tags)
        if vol is not None:
            aws.ec2.VolumeAttachment(f"{name}-{host}-scratch", device_name="/dev/sdf",
                                     volume_id=vol.id, instance_id=instance.id)
        groups_of = ["halfstack", "manager", "storage", "agents"] if aio else \
            (["halfstack", "manager", "storage"] if first else ["manager"])
        management.append(Host(host, groups_of, instance, data))

    # -- agents ------------------------------------------------------------------------------
    agents: list[Host] = []
    placement: aws.ec2.PlacementGroup | None = None
    if not aio:
        placement = aws.ec2.PlacementGroup(f"{name}-agents", strategy="cluster", tags=tags)
        if managed is not None:
            agent_storage = managed.efs_dns_name.apply(
                lambda dns: userdata.StorageMount("efs", cfg.storage_volume_path, dns))
        else:
            agent_storage = management[0].instance.private_ip.apply(
                lambda ip: userdata.StorageMount("nfs-client", cfg.storage_volume_path, ip))
        for i in range(cfg.agent_count):
            host = f"agent{i + 1}"
            vol = scratch_volume(host)
            vol_id: pulumi.Input[str] = vol.id if vol is not None else ""
            data = pulumi.Output.all(agent_storage, vol_id).apply(
                lambda args: userdata.agent(args[0], str(args[1]), cfg.bai_repo_url, cfg.bai_ref))
            instance = _instance(
                f"{name}-{host}", cfg, ami_id=agent_ami, instance_type=cfg.agent_instance_type,
                subnet=net.private_subnets[0], groups=[groups["agents"]], key_name=key_name,
                user_data=data, tags=tags, placement_group=placement)
            if vol is not None:
                aws.ec2.VolumeAttachment(f"{name}-{host}-scratch", device_name="/dev/sdf",
                                         volume_id=vol.id, instance_id=instance.id)
            agents.append(Host(host, ["agents"], instance, data))

    bastion = None
    if cfg.bastion:
        bastion = _instance(f"{name}-bastion", cfg, ami_id=host_ami,
                            instance_type=cfg.bastion_instance_type, subnet=net.public_subnets[0],
                            groups=[groups["bastion"]], key_name=key_name, user_data=None,
                            tags=tags, public=True)
    return Hosts(management, agents, bastion, placement, scratch)

