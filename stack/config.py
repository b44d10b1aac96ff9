"""The stack's configuration: every ``bai:*`` Pulumi config key, typed, documented and checked.

:func:`load` reads the keys and validates them all before the program declares a single
resource, so a bad value costs nothing in the cloud. A key this module does not know (a typo
such as ``bai:agentcount``) is an error too, with the closest known key suggested.

Values arrive as strings (``pulumi config set bai:agentCount 3``); lists take a JSON array or a
comma-separated string (``pulumi config set bai:operatorCidrs 203.0.113.0/24,198.51.100.7/32``).
"""

from __future__ import annotations

import difflib
import ipaddress
import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

NAMESPACE = "bai"

#: NVIDIA GPU instance families (x86_64; bai's kernel images are amd64). g4ad is AMD, g5g Arm.
GPU_FAMILIES = frozenset({"p3", "p3dn", "p4d", "p4de", "p5", "p5e", "p5en", "p6-b200",
                          "g4dn", "g5", "g6", "g6e", "gr6"})
#: x86_64 general-purpose, compute and memory families for management hosts (and CPU agents).
GENERAL_FAMILIES = frozenset({"t3", "t3a", "m5", "m5a", "m5n", "m6i", "m6a", "m6in", "m7i",
                              "m7a", "c5", "c5a", "c5n", "c6i", "c6a", "c6in", "c7i", "c7a",
                              "r5", "r5a", "r6i", "r6a", "r7i", "r7a"})
#: Prefix lengths below this "open (nearly) everything": refused for SSH, and for the API
#: unless ``publicApi`` says so.
MIN_PREFIX = 8


class ConfigError(ValueError):
    """Bad stack configuration; the message names every offending key."""


def _listish(value: Any) -> Any:
    """JSON array or comma-separated string (Pulumi config values are strings)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


StrList = Annotated[list[str], BeforeValidator(_listish)]


def family_of(instance_type: str) -> str:
    """``g5.xlarge`` -> ``g5``; ``p6-b200.48xlarge`` -> ``p6-b200``."""
    return instance_type.split(".", 1)[0]


def _check_cidrs(key: str, cidrs: list[str], allow_world: bool) -> list[str]:
    problems = []
    for text in cidrs:
        try:
            net = ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            problems.append(f"bai:{key}: {text!r} is not a CIDR ({exc})")
            continue
        if net.prefixlen < MIN_PREFIX and not allow_world:
            problems.append(f"bai:{key}: {text} opens (nearly) everything; give the operator's "
                            f"own range (a prefix of /{MIN_PREFIX} or longer)")
    return problems


class StackConfig(BaseModel):
    """One field per ``bai:<alias>`` key. Field docs are the operator's documentation."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    #: all-in-one (one GPU host runs everything), multi-node (one management host + agents),
    #: ha (three management hosts behind the load balancer + agents; needs managed services)
    topology: Literal["all-in-one", "multi-node", "ha"] = "multi-node"
    #: self-hosted: PostgreSQL, Redis and an NFS export on the (first) management host;
    #: managed: RDS PostgreSQL, ElastiCache Redis and EFS
    services: Literal["self-hosted", "managed"] = "self-hosted"
    agent_count: int = Field(1, alias="agentCount", ge=1, le=256)
    agent_instance_type: str = Field("g5.xlarge", alias="agentInstanceType")
    #: allow non-GPU families for agents (CPU-only clusters)
    cpu_only_agents: bool = Field(False, alias="cpuOnlyAgents")
    management_instance_type: str = Field("m6i.xlarge", alias="managementInstanceType")
    #: explicit AMI ids win over the lookups below
    agent_ami: str = Field("", alias="agentAmi")
    agent_ami_name: str = Field("Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *",
                                alias="agentAmiName")
    agent_ami_owner: str = Field("amazon", alias="agentAmiOwner")
    host_ami: str = Field("", alias="hostAmi")
    host_ami_name: str = Field("debian-12-amd64-*", alias="hostAmiName")
    host_ami_owner: str = Field("136693071363", alias="hostAmiOwner")  # Debian's AWS account
    vpc_cidr: str = Field("10.42.0.0/16", alias="vpcCidr")
    #: availability zones used (a private and a public subnet in each); RDS needs two
    az_count: int = Field(2, alias="azCount", ge=2, le=6)
    #: where the API/web ports (and SSH to the bastion) may be reached from; required
    operator_cidrs: StrList = Field(default_factory=list, alias="operatorCidrs")
    #: open the API/web ports (never SSH) to the whole internet
    public_api: bool = Field(False, alias="publicApi")
    #: SSH straight to the hosts from these ranges (e.g. a VPN); empty = only from the bastion
    ssh_cidrs: StrList = Field(default_factory=list, alias="sshCidrs")
    bastion: bool = True
    bastion_instance_type: str = Field("t3.micro", alias="bastionInstanceType")
    #: the operator's public key (an EC2 key pair is made), or the name of an existing key pair
    ssh_public_key: str = Field("", alias="sshPublicKey")
    key_name: str = Field("", alias="keyName")
    root_volume_gib: int = Field(100, alias="rootVolumeGiB", ge=20, le=16384)
    #: one gp3 scratch volume per agent, for containers' scratch space; 0 = none
    scratch_volume_gib: int = Field(500, alias="scratchVolumeGiB", ge=0, le=16384)
    storage_volume_path: str = Field("/mnt/vfroot/local", alias="storageVolumePath")
    #: Docker Swarm overlay ports between hosts (multi-node cluster sessions)
    swarm_overlay: bool = Field(True, alias="swarmOverlay")
    app_proxy: bool = Field(True, alias="appProxy")
    #: app proxy circuit ports published from 10200 up (an NLB listens on single ports)
    app_proxy_circuits: int = Field(16, alias="appProxyCircuits", ge=0, le=40)
    webserver: bool = False
    db_instance_class: str = Field("db.t4g.medium", alias="dbInstanceClass")
    db_engine_version: str = Field("16", alias="dbEngineVersion")
    db_storage_gib: int = Field(100, alias="dbStorageGiB", ge=20, le=65536)
    cache_node_type: str = Field("cache.t4g.medium", alias="cacheNodeType")
    #: secrets: generated (pulumi-random) when not set; set them with `pulumi config set --secret`
    db_password: str = Field("", alias="dbPassword")
    redis_password: str = Field("", alias="redisPassword")
    registry_username: str = Field("bai", alias="registryUsername")
    registry_password: str = Field("", alias="registryPassword")
    #: git URL + ref of bai that the hosts' first boot checks out and installs (empty: copy it)
    bai_repo_url: str = Field("", alias="baiRepoUrl")
    bai_ref: str = Field("main", alias="baiRef")
    #: run bai-install from the first management host once the hosts are up (pulumi-command)
    install_on_up: bool = Field(False, alias="installOnUp")
    ssh_private_key: str = Field("", alias="sshPrivateKey")

    @model_validator(mode="after")
    def _consistent(self) -> StackConfig:
        problems: list[str] = []
        agent_family = family_of(self.agent_instance_type)
        if self.cpu_only_agents:
            if agent_family not in GPU_FAMILIES | GENERAL_FAMILIES:
                problems.append(f"bai:agentInstanceType: unknown instance type family "
                                f"{agent_family!r}")
        elif agent_family not in GPU_FAMILIES:
            known = "general-purpose (set bai:cpuOnlyAgents true)" \
                if agent_family in GENERAL_FAMILIES else "unknown"
            problems.append(f"bai:agentInstanceType: {self.agent_instance_type!r} is not an NVIDIA "
                            f"GPU instance type: family {agent_family!r} is {known}; GPU families: "
                            f"{', '.join(sorted(GPU_FAMILIES))}")
        for key, value in (("managementInstanceType", self.management_instance_type),
                           ("bastionInstanceType", self.bastion_instance_type)):
            if family_of(value) not in GENERAL_FAMILIES | GPU_FAMILIES:
                problems.append(f"bai:{key}: unknown instance type family {family_of(value)!r} "
                                f"(known: {', '.join(sorted(GENERAL_FAMILIES))})")
        if self.topology == "all-in-one" and self.agent_count != 1:
            problems.append("bai:agentCount: all-in-one is one host; leave agentCount at 1 or "
                            "use topology multi-node")
        if self.topology == "ha" and self.services != "managed":
            problems.append("bai:services: topology ha needs managed services (RDS, ElastiCache, "
                            "EFS): three managers cannot share a database on one of them")
        try:
            vpc = ipaddress.ip_network(self.vpc_cidr, strict=True)
            if not vpc.is_private or vpc.version != 4 or not 16 <= vpc.prefixlen <= 20:
                problems.append(f"bai:vpcCidr: {self.vpc_cidr} must be a private IPv4 range "
                                "from /16 to /20")
        except ValueError as exc:
            problems.append(f"bai:vpcCidr: {self.vpc_cidr!r} is not a CIDR ({exc})")
        if not self.operator_cidrs:
            problems.append("bai:operatorCidrs: required: the ranges the API (and the bastion) "
                            "may be reached from, e.g. 203.0.113.0/24")
        problems += _check_cidrs("operatorCidrs", self.operator_cidrs, allow_world=False)
        problems += _check_cidrs("sshCidrs", self.ssh_cidrs, allow_world=False)
        if not (self.ssh_public_key or self.key_name):
            problems.append("bai:sshPublicKey: required (or bai:keyName of an existing EC2 key "
                            "pair): bai-install reaches the hosts over SSH")
        if self.install_on_up:
            if not self.bai_repo_url:
                problems.append("bai:baiRepoUrl: required with installOnUp (the hosts install "
                                "bai from it at first boot)")
            if not self.ssh_private_key:
                problems.append("bai:sshPrivateKey: required (as a secret) with installOnUp")
            if not (self.bastion or self.ssh_cidrs):
                problems.append("bai:installOnUp: needs bai:bastion or bai:sshCidrs to reach "
                                "the hosts")
        for key, value in (("dbPassword", self.db_password),
                           ("redisPassword", self.redis_password)):
            if value and (len(value) < 16 or any(c in value for c in '/@" \'\\')):
                problems.append(f"bai:{key}: at least 16 characters, none of / @ \" ' \\ or "
                                "space (RDS and ElastiCache refuse them)")
        if not self.storage_volume_path.startswith("/") or ".." in self.storage_volume_path:
            problems.append("bai:storageVolumePath: an absolute path without '..'")
        if problems:
            raise ConfigError("\n".join(problems))
        return self

    @property
    def management_count(self) -> int:
        return 3 if self.topology == "ha" else 1

    @property
    def managed(self) -> bool:
        return self.services == "managed"


def _aliases() -> dict[str, str]:
    return {(f.alias or name): name for name, f in StackConfig.model_fields.items()}


def parse(values: Mapping[str, Any]) -> StackConfig:
    """Validate ``{key: value}`` (keys without the ``bai:`` prefix); raise :class:`ConfigError`
    naming every bad or unknown key."""
    aliases = _aliases()
    problems = []
    for key in values:
        if key not in aliases:
            close = difflib.get_close_matches(key, list(aliases), n=1)
            hint = f" (did you mean bai:{close[0]}?)" if close else ""
            problems.append(f"bai:{key}: unknown configuration key{hint}")
    if problems:
        raise ConfigError("\n".join(problems))
    try:
        return StackConfig.model_validate(dict(values))
    except ConfigError:
        raise
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            ctx_error = (err.get("ctx") or {}).get("error")
            if isinstance(ctx_error, ConfigError):
                lines.append(str(ctx_error))
                continue
            shown = "" if where in ("dbPassword", "redisPassword", "registryPassword",
                                    "sshPrivateKey") else f" (got {err.get('input')!r})"
            lines.append(f"bai:{where}: {err['msg']}{shown}")
        raise ConfigError("\n".join(lines)) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"a list key holds malformed JSON: {exc}") from None


def load() -> StackConfig:
    """Read every ``bai:*`` key of the current stack (set config and the environment Pulumi
    passes) and validate it."""
    from pulumi.runtime import config as runtime_config

    raw: dict[str, Any] = dict(runtime_config.get_config_env())
    raw.update(runtime_config.CONFIG.get())
    prefix = f"{NAMESPACE}:"
    values = {key[len(prefix):]: value for key, value in raw.items()
              if key.startswith(prefix) and value is not None}
    return parse(values)
