"""Security groups: exactly the ports each component needs, between groups, and only the
API/web ports to the operator's ranges.

:func:`ingress_rules` is the whole policy as data (one :class:`Rule` per port range and
source), so that it can be read in one place and tested; :func:`build` declares one security
group per role and one ``aws.vpc.SecurityGroupIngressRule`` per rule. SSH reaches the hosts only
from the bastion's group or from ``sshCidrs``; nothing is open to the world except, when
``publicApi`` is set, the API/web ports on the load balancer.

Ports (components/CONTRACTS.md, the original's port table): manager API 8081, agent RPC 6001,
storage proxy 6021 (clients) / 6022 (manager), app proxy API 5050 and circuits from 10200,
webserver 8080, session container ports 30000-31000 (the app proxy reaches them), PostgreSQL
5432, Redis 6379, etcd 2379 (clients) / 2380 (peers), NFS 2049, Docker Swarm 2377/tcp,
7946/tcp+udp, 4789/udp.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from .config import StackConfig

MANAGER_API = 8081
AGENT_RPC = 6001
STORAGE_CLIENT = 6021
STORAGE_MANAGER = 6022
APP_PROXY_API = 5050
APP_PROXY_CIRCUITS = (10200, 10300)
WEBSERVER = 8080
CONTAINER_PORTS = (30000, 31000)
POSTGRES = 5432
REDIS = 6379
ETCD_CLIENT = 2379
ETCD_PEER = 2380
NFS = 2049
SSH = 22
WORLD = "0.0.0.0/0"

#: security groups, by role: lb (public load balancer), bastion, mgmt (managers, etcd, storage
#: proxy, app proxy, self-hosted PostgreSQL/Redis/NFS), agents, db/cache/efs (managed services)
GROUPS = ("lb", "bastion", "mgmt", "agents", "db", "cache", "efs")


@dataclass(frozen=True)
class Rule:
    group: str  # the group the rule admits traffic into
    protocol: str  # tcp | udp
    ports: tuple[int, int]
    source: str  # another group's name, or a CIDR
    why: str

    @property
    def source_is_group(self) -> bool:
        return self.source in GROUPS


def _public_ports(cfg: StackConfig) -> list[tuple[tuple[int, int], str]]:
    """What clients reach through the load balancer."""
    ports = [((MANAGER_API, MANAGER_API), "manager API"),
             ((STORAGE_CLIENT, STORAGE_CLIENT), "storage proxy client API (uploads, downloads)")]
    if cfg.app_proxy:
        ports.append(((APP_PROXY_API, APP_PROXY_API), "app proxy API"))
        if cfg.app_proxy_circuits:
            first = APP_PROXY_CIRCUITS[0]
            ports.append(((first, first + cfg.app_proxy_circuits - 1), "app proxy circuits"))
    if cfg.webserver:
        ports.append(((WEBSERVER, WEBSERVER), "webserver"))
    return ports


def groups_used(cfg: StackConfig) -> list[str]:
    used = ["lb", "mgmt", "agents"]
    if cfg.bastion:
        used.insert(1, "bastion")
    if cfg.managed:
        used += ["db", "cache", "efs"]
    return used


def ingress_rules(cfg: StackConfig) -> list[Rule]:
    rules: list[Rule] = []

    def add(group: str, ports: int | tuple[int, int], sources: list[str], why: str,
            protocol: str = "tcp") -> None:
        span = ports if isinstance(ports, tuple) else (ports, ports)
        rules.extend(Rule(group, protocol, span, src, why) for src in sources)

    clients = [WORLD] if cfg.public_api else list(cfg.operator_cidrs)
    if cfg.app_proxy:
        # managers call the app proxy at its registered (advertised) address: the load balancer
        add("lb", APP_PROXY_API, ["mgmt"], "app proxy API, from the managers")
    for span, why in _public_ports(cfg):
        add("lb", span, clients, why)
        # the load balancer forwards to the management hosts (client IPs are not preserved
        # through the NLB's security group, so the source is the LB's group)
        add("mgmt", span, ["lb"], f"{why}, from the load balancer")
    add("mgmt", STORAGE_MANAGER, ["mgmt"], "storage proxy manager API, from the managers")
    add("mgmt", ETCD_CLIENT, ["mgmt", "agents"], "etcd clients")
    if cfg.topology == "ha":
        add("mgmt", ETCD_PEER, ["mgmt"], "etcd peers")
    add("agents", AGENT_RPC, ["mgmt"], "agent RPC, from the managers")
    if cfg.app_proxy:
        add("agents", CONTAINER_PORTS, ["mgmt"], "session service ports, from the app proxy")
    if cfg.managed:
        add("db", POSTGRES, ["mgmt"], "PostgreSQL, from the managers")
        add("cache", REDIS, ["mgmt", "agents"], "Redis")
        add("efs", NFS, ["mgmt", "agents"], "EFS (NFS) for the storage volume")
    else:
        add("mgmt", POSTGRES, ["mgmt"], "PostgreSQL, from the managers")
        add("mgmt", REDIS, ["mgmt", "agents"], "Redis")
        add("mgmt", NFS, ["agents"], "NFS export of the storage volume")
    if cfg.swarm_overlay:
        add("mgmt", 2377, ["agents"], "Docker Swarm cluster management")
        for group in ("mgmt", "agents"):
            add(group, 7946, ["mgmt", "agents"], "Docker Swarm gossip")
            add(group, 7946, ["mgmt", "agents"], "Docker Swarm gossip", "udp")
            add(group, 4789, ["mgmt", "agents"], "Docker Swarm overlay (VXLAN)", "udp")
    ssh_from: list[str] = (["bastion"] if cfg.bastion else []) + list(cfg.ssh_cidrs)
    if cfg.install_on_up:
        ssh_from.append("mgmt")  # bai-install runs on the first management host
    for group in ("mgmt", "agents"):
        add(group, SSH, ssh_from, "SSH (bai-install, operators)")
    if cfg.bastion:
        add("bastion", SSH, list(cfg.operator_cidrs) + list(cfg.ssh_cidrs), "SSH to the bastion")
    return rules


def egress_groups(cfg: StackConfig) -> list[str]:
    """Groups that may open connections anywhere: hosts (apt, pip, images through NAT, and each
    other), the bastion (to the hosts) and the load balancer (to its targets). The managed
    services' groups open nothing."""
    return [g for g in ("lb", "bastion", "mgmt", "agents") if g in groups_used(cfg)]


def build(cfg: StackConfig, name: str, vpc_id: pulumi.Input[str], tags: dict[str, str]
          ) -> dict[str, aws.ec2.SecurityGroup]:
    groups = {
        g: aws.ec2.SecurityGroup(f"{name}-{g}", vpc_id=vpc_id, description=f"bai {g}",
                                 tags={**tags, "Name": f"{name}-{g}", "bai:group": g})
        for g in groups_used(cfg)
    }
    for i, rule in enumerate(ingress_rules(cfg)):
        aws.vpc.SecurityGroupIngressRule(
            f"{name}-in-{rule.group}-{i}",
            security_group_id=groups[rule.group].id,
            ip_protocol=rule.protocol,
            from_port=rule.ports[0],
            to_port=rule.ports[1],
            referenced_security_group_id=groups[rule.source].id if rule.source_is_group else None,
            cidr_ipv4=None if rule.source_is_group else rule.source,
            description=rule.why,
            tags=tags,
        )
    for g in egress_groups(cfg):
        aws.vpc.SecurityGroupEgressRule(f"{name}-out-{g}", security_group_id=groups[g].id,
                                        ip_protocol="-1", cidr_ipv4=WORLD,
                                        description="outbound", tags=tags)
    return groups
