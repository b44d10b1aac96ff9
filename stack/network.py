"""The network: one VPC; per availability zone a private subnet (every host, the managed
services) and a public one (the load balancer, the bastion and the NAT gateway only).

Hosts get no public addresses: they reach the internet (apt, pip, images) through NAT, one
gateway for the cluster, or one per zone for ``ha`` so that losing a zone leaves the others
their way out.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from .config import StackConfig


@dataclass
class Network:
    vpc: aws.ec2.Vpc
    private_subnets: list[aws.ec2.Subnet]
    public_subnets: list[aws.ec2.Subnet]
    zones: list[pulumi.Output[str]]


def subnet_cidrs(vpc_cidr: str, az_count: int) -> tuple[list[str], list[str]]:
    """Private subnets take the first /20-sized blocks (a quarter of a /18 ...), public ones
    small blocks at the end: hosts need the room, the load balancer and NAT do not."""
    vpc = ipaddress.ip_network(vpc_cidr)
    private_prefix = vpc.prefixlen + 4  # 16 blocks; at most 6 zones use them
    public_prefix = vpc.prefixlen + 8
    private = [str(n) for n in list(vpc.subnets(new_prefix=private_prefix))[:az_count]]
    public = [str(n) for n in list(vpc.subnets(new_prefix=public_prefix))[-az_count:]]
    return private, public


def _nth(i: int) -> Callable[[list[str]], str]:
    return lambda names: names[i % len(names)]


def build(cfg: StackConfig, name: str, tags: dict[str, str]) -> Network:
    azs = aws.get_availability_zones_output(state="available")
    zones = [azs.names.apply(_nth(i)) for i in range(cfg.az_count)]
    vpc = aws.ec2.Vpc(f"{name}-vpc", cidr_block=cfg.vpc_cidr, enable_dns_hostnames=True,
                      enable_dns_support=True, tags={**tags, "Name": f"{name}-vpc"})
    igw = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, tags=tags)
    private_cidrs, public_cidrs = subnet_cidrs(cfg.vpc_cidr, cfg.az_count)

    public_rt = aws.ec2.RouteTable(f"{name}-public", vpc_id=vpc.id, tags=tags, routes=[
        aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=igw.id)])
    public_subnets = []
    for i, (zone, cidr) in enumerate(zip(zones, public_cidrs, strict=True)):
        subnet = aws.ec2.Subnet(f"{name}-public-{i}", vpc_id=vpc.id, cidr_block=cidr,
                                availability_zone=zone, map_public_ip_on_launch=False,
                                tags={**tags, "Name": f"{name}-public-{i}", "bai:tier": "public"})
        aws.ec2.RouteTableAssociation(f"{name}-public-{i}", subnet_id=subnet.id,
                                      route_table_id=public_rt.id)
        public_subnets.append(subnet)

    nat_count = cfg.az_count if cfg.topology == "ha" else 1
    nats = []
    for i in range(nat_count):
        eip = aws.ec2.Eip(f"{name}-nat-{i}", domain="vpc", tags=tags)
        nats.append(aws.ec2.NatGateway(f"{name}-nat-{i}", allocation_id=eip.id,
                                       subnet_id=public_subnets[i].id, tags=tags,
                                       opts=pulumi.ResourceOptions(depends_on=[igw])))

    private_subnets = []
    for i, (zone, cidr) in enumerate(zip(zones, private_cidrs, strict=True)):
        subnet = aws.ec2.Subnet(f"{name}-private-{i}", vpc_id=vpc.id, cidr_block=cidr,
                                availability_zone=zone, map_public_ip_on_launch=False,
                                tags={**tags, "Name": f"{name}-private-{i}", "bai:tier": "private"})
        rt = aws.ec2.RouteTable(f"{name}-private-{i}", vpc_id=vpc.id, tags=tags, routes=[
            aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0",
                                        nat_gateway_id=nats[i % nat_count].id)])
        aws.ec2.RouteTableAssociation(f"{name}-private-{i}", subnet_id=subnet.id,
                                      route_table_id=rt.id)
        private_subnets.append(subnet)
    return Network(vpc, private_subnets, public_subnets, zones)
