"""The stack's secrets, and the stateful services: managed (RDS PostgreSQL, ElastiCache Redis,
EFS) or self-hosted on the first management host (nothing to declare here: ``bai-install``
installs PostgreSQL, Redis and etcd there, and the host's first boot exports the storage volume
over NFS).

Secrets come from ``pulumi config set --secret`` or are generated with pulumi-random; either
way they stay Pulumi secrets (encrypted in the state, ``[secret]`` in outputs unless
``--show-secrets``).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from ._outputs import secret
from .config import StackConfig
from .network import Network

DB_NAME = "backend"  # roles/settings.py db_name
DB_USER = "bai"  # roles/settings.py db_user
REDIS_PORT = 6379
POSTGRES_PORT = 5432


@dataclass
class Secrets:
    db_password: pulumi.Output[str]
    redis_password: pulumi.Output[str]
    registry_username: str
    registry_password: pulumi.Output[str]


@dataclass
class Managed:
    db_address: pulumi.Output[str]
    redis_address: pulumi.Output[str]
    efs_dns_name: pulumi.Output[str]


def _secret(name: str, given: str) -> pulumi.Output[str]:
    if given:
        return secret(given)
    # alphanumeric: valid as an RDS password and an ElastiCache AUTH token, and needs no
    # quoting in TOML, SQL or a shell
    generated = random.RandomPassword(name, length=32, special=False)
    return secret(generated.result)


def secrets(cfg: StackConfig, name: str) -> Secrets:
    return Secrets(
        db_password=_secret(f"{name}-db-password", cfg.db_password),
        redis_password=_secret(f"{name}-redis-password", cfg.redis_password),
        registry_username=cfg.registry_username,
        registry_password=_secret(f"{name}-registry-password", cfg.registry_password),
    )


def managed(cfg: StackConfig, name: str, net: Network, groups: dict[str, aws.ec2.SecurityGroup],
            sec: Secrets, tags: dict[str, str]) -> Managed:
    subnet_ids = [s.id for s in net.private_subnets]
    ha = cfg.topology == "ha"
    db_subnets = aws.rds.SubnetGroup(f"{name}-db", subnet_ids=subnet_ids, tags=tags)
    db = aws.rds.Instance(
        f"{name}-db",
        engine="postgres",
        engine_version=cfg.db_engine_version,
        instance_class=cfg.db_instance_class,
        allocated_storage=cfg.db_storage_gib,
        storage_type="gp3",
        storage_encrypted=True,
        db_name=DB_NAME,
        username=DB_USER,
        password=sec.db_password,
        port=POSTGRES_PORT,
        db_subnet_group_name=db_subnets.name,
        vpc_security_group_ids=[groups["db"].id],
        publicly_accessible=False,
        multi_az=ha,
        backup_retention_period=7,
        deletion_protection=ha,
        skip_final_snapshot=not ha,
        final_snapshot_identifier=f"{name}-db-final" if ha else None,
        tags=tags,
    )
    cache_subnets = aws.elasticache.SubnetGroup(f"{name}-cache", subnet_ids=subnet_ids, tags=tags)
    cache = aws.elasticache.ReplicationGroup(
        f"{name}-cache",
        description="bai Redis",
        engine="redis",
        node_type=cfg.cache_node_type,
        port=REDIS_PORT,
        num_cache_clusters=2 if ha else 1,
        automatic_failover_enabled=ha,
        multi_az_enabled=ha,
        subnet_group_name=cache_subnets.name,
        security_group_ids=[groups["cache"].id],
        at_rest_encryption_enabled=True,
        # ElastiCache takes an AUTH token only with transit encryption on; "preferred" also
        # accepts the plain connections bai's Redis client makes (see the README's limits)
        transit_encryption_enabled=True,
        transit_encryption_mode="preferred",
        auth_token=sec.redis_password,
        tags=tags,
    )
    efs = aws.efs.FileSystem(f"{name}-efs", encrypted=True, performance_mode="generalPurpose",
                             throughput_mode="elastic", tags={**tags, "Name": f"{name}-efs"})
    for i, subnet in enumerate(net.private_subnets):
        aws.efs.MountTarget(f"{name}-efs-{i}", file_system_id=efs.id, subnet_id=subnet.id,
                            security_groups=[groups["efs"].id])
    return Managed(db_address=db.address, redis_address=cache.primary_endpoint_address,
                   efs_dns_name=efs.dns_name)
