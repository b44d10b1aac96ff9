"""Pulumi's mock runtime for the stack tests: every resource the program declares is recorded
(type, logical name, inputs) and answered with plausible provider values (ids, ARNs, private
addresses, DNS names), so that the program runs end to end without the Pulumi engine or any
provider plugin, and its outputs resolve to what a real ``pulumi up`` would export."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

REGION = "eu-west-1"
ZONES = [f"{REGION}a", f"{REGION}b", f"{REGION}c"]
AMIS = {"amazon": "ami-0dla0000000000gpu", "136693071363": "ami-0deb1200000000000"}


@dataclass
class Declared:
    typ: str
    name: str
    inputs: dict[str, Any]
    id: str
    state: dict[str, Any]


@dataclass
class Recorder(pulumi.runtime.Mocks):
    resources: list[Declared] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    _ips: itertools.count[int] = field(default_factory=lambda: itertools.count(10))

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        digest = hashlib.sha256(f"{args.typ}/{args.name}".encode()).hexdigest()
        state = dict(args.inputs)
        rid = f"{args.name}-id"
        kind = args.typ
        if kind == "aws:ec2/instance:Instance":
            rid = f"i-{digest[:17]}"
            n = next(self._ips)
            state["private_ip"] = f"10.42.{n // 200}.{n % 200 + 10}"
            if args.inputs.get("associatePublicIpAddress"):
                state["public_ip"] = "198.51.100.77"
        elif kind == "aws:ec2/securityGroup:SecurityGroup":
            rid = f"sg-{args.name}"
        elif kind == "aws:ec2/subnet:Subnet":
            rid = f"subnet-{args.name}"
        elif kind == "aws:ebs/volume:Volume":
            rid = f"vol-{digest[:17]}"
        elif kind == "aws:lb/loadBalancer:LoadBalancer":
            state["dns_name"] = f"{args.name}-{digest[:8]}.elb.{REGION}.amazonaws.com"
            state["arn"] = f"arn:aws:elasticloadbalancing:{REGION}:123456789012:loadbalancer/net/{args.name}/{digest[:16]}"
        elif kind == "aws:lb/targetGroup:TargetGroup":
            state["arn"] = f"arn:aws:elasticloadbalancing:{REGION}:123456789012:targetgroup/{args.name}/{digest[:16]}"
        elif kind == "aws:rds/instance:Instance":
            state["address"] = f"{args.name}.c{digest[:10]}.{REGION}.rds.amazonaws.com"
        elif kind == "aws:elasticache/replicationGroup:ReplicationGroup":
            state["primary_endpoint_address"] = f"master.{args.name}.{digest[:6]}.euw1.cache.amazonaws.com"
        elif kind == "aws:efs/fileSystem:FileSystem":
            rid = f"fs-{digest[:17]}"
            state["dns_name"] = f"{rid}.efs.{REGION}.amazonaws.com"
        elif kind == "random:index/randomPassword:RandomPassword":
            state["result"] = "Gen" + hashlib.sha256(args.name.encode()).hexdigest()[:29]
        elif kind == "aws:ec2/keyPair:KeyPair":
            state["key_name"] = f"{args.name}-{digest[:6]}"
        elif kind == "aws:ec2/placementGroup:PlacementGroup":
            state["name"] = f"{args.name}-{digest[:6]}"
        elif kind == "aws:rds/subnetGroup:SubnetGroup" or kind == "aws:elasticache/subnetGroup:SubnetGroup":
            state["name"] = f"{args.name}-{digest[:6]}"
        self.resources.append(Declared(kind, args.name, dict(args.inputs), rid, state))
        return rid, state

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:  # type: ignore[override]
        self.calls.append((args.token, dict(args.args)))
        if args.token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            return {"names": ZONES, "zoneIds": ["euw1-az1", "euw1-az2", "euw1-az3"]}
        if args.token == "aws:ec2/getAmi:getAmi":
            return {"id": AMIS.get(args.args["owners"][0], "ami-0unknown000000000")}
        raise AssertionError(f"unexpected provider call {args.token}")

    def of(self, typ: str) -> list[Declared]:
        return [r for r in self.resources if r.typ == typ]

    def named(self, name: str, typ: str = "aws:ec2/instance:Instance") -> Declared:
        (found,) = [r for r in self.resources if r.name == name and r.typ == typ]
        return found


@contextmanager
def own_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A new event loop set as the thread's current one (Pulumi's runtime creates futures on it;
    the suite's async tests may have left none set), the previous one restored after."""
    try:
        previous: asyncio.AbstractEventLoop | None = asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        previous = None
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        yield loop
    finally:
        asyncio.set_event_loop(previous)
        loop.close()


def use(recorder: Recorder) -> None:
    """A fresh mock runtime answering through ``recorder``: set_mocks keeps an existing root
    stack resource and the RPCs still tracked, whose futures belong to the event loop of an
    earlier build (or of a program stopped by bad config), so both are dropped first (as
    ``pulumi.runtime.test`` does) and the root is made anew on the current loop."""
    pulumi_settings.SETTINGS.rpc_manager.clear()
    pulumi_settings.SETTINGS.outputs.clear()
    pulumi_settings.ROOT.set(None)
    pulumi.runtime.set_mocks(recorder, project="bai", stack="test", preview=False)


def resolve(outputs: dict[str, pulumi.Output[Any]]) -> dict[str, tuple[Any, bool]]:
    """{name: (value, is secret)} once every declared resource has been answered."""
    resolved: dict[str, tuple[Any, bool]] = {}

    async def collect() -> None:
        for key, out in outputs.items():
            resolved[key] = (await out.future(), await out.is_secret())

    _sync_await(run_pulumi_func(lambda: _sync_await(collect())))
    return resolved
