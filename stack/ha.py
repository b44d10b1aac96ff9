"""The public endpoint: a network load balancer in the public subnets, the only thing with a
public face besides the bastion. It forwards the manager API to every manager (three with
``ha``, which keeps the API up while one management host is down) and the storage proxy's client
API, the app proxy's API and circuits and the webserver to the first management host, where
those services run.

An NLB listens on single ports (no ranges, at most 50 listeners), so the app proxy's circuits
are published as ``appProxyCircuits`` listeners from 10200 up.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from . import security
from .config import StackConfig
from .hosts import Hosts
from .network import Network


@dataclass
class Endpoint:
    load_balancer: aws.lb.LoadBalancer
    dns_name: pulumi.Output[str]
    ports: dict[str, int]  # what -> port on the load balancer


def published_ports(cfg: StackConfig) -> list[tuple[str, int, bool]]:
    """(name, port, every manager) of each listener."""
    ports = [("api", security.MANAGER_API, True), ("storage", security.STORAGE_CLIENT, False)]
    if cfg.app_proxy:
        ports.append(("appproxy", security.APP_PROXY_API, False))
        first = security.APP_PROXY_CIRCUITS[0]
        ports += [(f"circuit{n}", first + n, False) for n in range(cfg.app_proxy_circuits)]
    if cfg.webserver:
        ports.append(("web", security.WEBSERVER, False))
    return ports


def build(cfg: StackConfig, name: str, net: Network, groups: dict[str, aws.ec2.SecurityGroup],
          hosts: Hosts, tags: dict[str, str]) -> Endpoint:
    lb = aws.lb.LoadBalancer(
        f"{name}-lb", load_balancer_type="network", internal=False,
        subnets=[s.id for s in net.public_subnets], security_groups=[groups["lb"].id],
        enable_cross_zone_load_balancing=True, tags=tags)
    ports: dict[str, int] = {}
    for what, port, every_manager in published_ports(cfg):
        tg = aws.lb.TargetGroup(
            f"{name}-{what}", port=port, protocol="TCP", vpc_id=net.vpc.id, target_type="instance",
            health_check=aws.lb.TargetGroupHealthCheckArgs(protocol="TCP", port="traffic-port"),
            # a manager calling the app proxy through the load balancer may land on its own
            # host: without client-IP preservation that hairpin works
            preserve_client_ip="false" if what == "appproxy" else None,
            tags=tags)
        aws.lb.Listener(f"{name}-{what}", load_balancer_arn=lb.arn, port=port, protocol="TCP",
                        default_actions=[aws.lb.ListenerDefaultActionArgs(
                            type="forward", target_group_arn=tg.arn)], tags=tags)
        targets = hosts.management if every_manager else hosts.management[:1]
        for host in targets:
            aws.lb.TargetGroupAttachment(f"{name}-{what}-{host.name}", target_group_arn=tg.arn,
                                         target_id=host.instance.id, port=port)
        ports[what] = port
    return Endpoint(lb, lb.dns_name, ports)
