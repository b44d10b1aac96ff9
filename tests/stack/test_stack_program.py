"""The Pulumi program (stack/) run under Pulumi's mock runtime for each config shape: what it
declares (resources and counts), every security-group rule, the GPU, AMI and placement choices,
that secrets stay secret, and the inventory it exports. No Pulumi engine, no provider plugin, no
cloud: the mocks answer each resource with plausible ids and addresses (tests/stack/mocks.py)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from tests.stack.conftest import OPERATOR, Built
from tests.stack.mocks import ZONES

INSTANCE = "aws:ec2/instance:Instance"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"  # how Pulumi marks a secret value on the wire

StackOf = Callable[[str], Built]


def _is_secret_input(value: Any) -> bool:
    return isinstance(value, dict) and SECRET_SIG in value.values() and "value" in value


def _plain(value: Any) -> Any:
    return value["value"] if _is_secret_input(value) else value


# -- resources and counts ---------------------------------------------------------------------

#: type -> count, per shape (all-in-one: one GPU host + bastion; 16 app-proxy circuits + API,
#: storage and app-proxy API = 19 listeners)
EXPECTED_COUNTS: dict[str, dict[str, int]] = {
    "all-in-one": {
        "aws:ec2/vpc:Vpc": 1, "aws:ec2/internetGateway:InternetGateway": 1,
        "aws:ec2/subnet:Subnet": 4, "aws:ec2/routeTable:RouteTable": 3,
        "aws:ec2/routeTableAssociation:RouteTableAssociation": 4, "aws:ec2/eip:Eip": 1,
        "aws:ec2/natGateway:NatGateway": 1, "aws:ec2/securityGroup:SecurityGroup": 4,
        EGRESS: 4, INSTANCE: 2, "aws:ec2/keyPair:KeyPair": 1, "aws:ebs/volume:Volume": 1,
        "aws:ec2/volumeAttachment:VolumeAttachment": 1,
        "random:index/randomPassword:RandomPassword": 3,
        "aws:lb/loadBalancer:LoadBalancer": 1, "aws:lb/listener:Listener": 19,
        "aws:lb/targetGroup:TargetGroup": 19, "aws:lb/targetGroupAttachment:TargetGroupAttachment": 19,
    },
}
EXPECTED_COUNTS["multi-node"] = {
    **EXPECTED_COUNTS["all-in-one"], INSTANCE: 5, "aws:ec2/placementGroup:PlacementGroup": 1,
    "aws:ebs/volume:Volume": 3, "aws:ec2/volumeAttachment:VolumeAttachment": 3,
}
EXPECTED_COUNTS["multi-node-managed"] = {
    **EXPECTED_COUNTS["multi-node"], INSTANCE: 4, "aws:ebs/volume:Volume": 2,
    "aws:ec2/volumeAttachment:VolumeAttachment": 2, "aws:ec2/securityGroup:SecurityGroup": 7,
    "aws:rds/subnetGroup:SubnetGroup": 1, "aws:rds/instance:Instance": 1,
    "aws:elasticache/subnetGroup:SubnetGroup": 1,
    "aws:elasticache/replicationGroup:ReplicationGroup": 1,
    "aws:efs/fileSystem:FileSystem": 1, "aws:efs/mountTarget:MountTarget": 2,
}
EXPECTED_COUNTS["ha"] = {
    **EXPECTED_COUNTS["multi-node-managed"], INSTANCE: 8, "aws:ebs/volume:Volume": 4,
    "aws:ec2/volumeAttachment:VolumeAttachment": 4, "aws:ec2/subnet:Subnet": 6,
    "aws:ec2/routeTable:RouteTable": 4, "aws:ec2/routeTableAssociation:RouteTableAssociation": 6,
    "aws:ec2/eip:Eip": 3, "aws:ec2/natGateway:NatGateway": 3, "aws:efs/mountTarget:MountTarget": 3,
    # the API target group has all three managers
    "aws:lb/targetGroupAttachment:TargetGroupAttachment": 21,
}


@pytest.mark.parametrize("shape", list(EXPECTED_COUNTS))
def test_resources_and_counts(stack_of: StackOf, shape: str) -> None:
    built = stack_of(shape)
    counts = Counter(r.typ for r in built.recorder.resources if r.typ != INGRESS)
    assert dict(counts) == EXPECTED_COUNTS[shape]


def test_instances_per_shape(stack_of: StackOf) -> None:
    names = {shape: sorted(r.name for r in stack_of(shape).recorder.of(INSTANCE))
             for shape in EXPECTED_COUNTS}
    assert names == {
        "all-in-one": ["bai-aio1", "bai-bastion"],
        "multi-node": ["bai-agent1", "bai-agent2", "bai-agent3", "bai-bastion", "bai-mgmt1"],
        "multi-node-managed": ["bai-agent1", "bai-agent2", "bai-bastion", "bai-mgmt1"],
        "ha": ["bai-agent1", "bai-agent2", "bai-agent3", "bai-agent4", "bai-bastion",
               "bai-mgmt1", "bai-mgmt2", "bai-mgmt3"],
    }


# -- GPU instances, AMIs, placement -------------------------------------------------------------

def test_gpu_agents_in_one_cluster_placement_group(stack_of: StackOf) -> None:
    for shape, itype in (("multi-node", "g5.xlarge"), ("multi-node-managed", "p4d.24xlarge"),
                         ("ha", "g5.xlarge")):
        rec = stack_of(shape).recorder
        (pg,) = rec.of("aws:ec2/placementGroup:PlacementGroup")
        assert pg.inputs["strategy"] == "cluster"
        agents = [r for r in rec.of(INSTANCE) if r.name.startswith("bai-agent")]
        assert agents
        for agent in agents:
            assert agent.inputs["instanceType"] == itype
            assert agent.inputs["placementGroup"] == pg.state["name"]
            # a cluster placement group lives in one zone: every agent in the first private subnet
            assert agent.inputs["subnetId"] == "subnet-bai-private-0"
            assert agent.inputs["ami"] == "ami-0dla0000000000gpu"  # the NVIDIA-driver lookup
        volumes = rec.of("aws:ebs/volume:Volume")
        assert {v.inputs["availabilityZone"] for v in volumes} == {ZONES[0]}
        assert all(v.inputs["size"] == 500 and v.inputs["type"] == "gp3" and v.inputs["encrypted"]
                   for v in volumes)


def test_ami_lookups_and_management_hosts(stack_of: StackOf) -> None:
    built = stack_of("ha")
    lookups = [args for token, args in built.recorder.calls if token == "aws:ec2/getAmi:getAmi"]
    by_owner = {args["owners"][0]: args for args in lookups}
    gpu = by_owner["amazon"]
    assert gpu["mostRecent"] is True
    filters = {f["name"]: f["values"] for f in gpu["filters"]}
    assert "Nvidia Driver" in filters["name"][0] and filters["architecture"] == ["x86_64"]
    debian = {f["name"]: f["values"] for f in by_owner["136693071363"]["filters"]}
    assert debian["name"] == ["debian-12-amd64-*"]
    managers = [r for r in built.recorder.of(INSTANCE) if r.name.startswith("bai-mgmt")]
    assert {m.inputs["instanceType"] for m in managers} == {"m6i.xlarge"}
    assert {m.inputs["ami"] for m in managers} == {"ami-0deb1200000000000"}
    # spread over the zones
    assert sorted(m.inputs["subnetId"] for m in managers) == [
        "subnet-bai-private-0", "subnet-bai-private-1", "subnet-bai-private-2"]


def test_all_in_one_is_one_gpu_host_in_both_groups(stack_of: StackOf) -> None:
    aio = stack_of("all-in-one").recorder.named("bai-aio1")
    assert aio.inputs["instanceType"] == "g5.xlarge"
    assert aio.inputs["ami"] == "ami-0dla0000000000gpu"
    assert sorted(aio.inputs["vpcSecurityGroupIds"]) == ["sg-bai-agents", "sg-bai-mgmt"]
    assert "placementGroup" not in aio.inputs


def test_explicit_ami_skips_the_lookup() -> None:
    from tests.stack.conftest import SHAPES, build

    built = build({**SHAPES["multi-node"], "agentAmi": "ami-0123456789abcdef0",
                   "hostAmi": "ami-0fedcba9876543210"})
    assert not [t for t, _ in built.recorder.calls if t == "aws:ec2/getAmi:getAmi"]
    amis = {r.name: r.inputs["ami"] for r in built.recorder.of(INSTANCE)}
    assert amis["bai-agent1"] == "ami-0123456789abcdef0"
    assert amis["bai-mgmt1"] == amis["bai-bastion"] == "ami-0fedcba9876543210"


def test_hosts_are_private_imdsv2_and_encrypted(stack_of: StackOf) -> None:
    for shape in EXPECTED_COUNTS:
        for inst in stack_of(shape).recorder.of(INSTANCE):
            bastion = inst.name == "bai-bastion"
            assert inst.inputs.get("associatePublicIpAddress", False) is bastion, inst.name
            assert inst.inputs["subnetId"].startswith(
                "subnet-bai-public-" if bastion else "subnet-bai-private-")
            meta = inst.inputs["metadataOptions"]
            assert (meta["httpTokens"], meta["httpPutResponseHopLimit"]) == ("required", 1)
            assert inst.inputs["rootBlockDevice"]["encrypted"] is True
        for subnet in stack_of(shape).recorder.of("aws:ec2/subnet:Subnet"):
            assert subnet.inputs["mapPublicIpOnLaunch"] is False


def test_managed_services_shape(stack_of: StackOf) -> None:
    single = stack_of("multi-node-managed").recorder
    ha = stack_of("ha").recorder
    (db,) = single.of("aws:rds/instance:Instance")
    assert (db.inputs["engine"], db.inputs["dbName"], db.inputs["username"]) == ("postgres", "backend", "bai")
    assert db.inputs["publiclyAccessible"] is False and db.inputs["storageEncrypted"] is True
    assert db.inputs["vpcSecurityGroupIds"] == ["sg-bai-db"]
    assert db.inputs["multiAz"] is False
    (ha_db,) = ha.of("aws:rds/instance:Instance")
    assert ha_db.inputs["multiAz"] is True and ha_db.inputs["deletionProtection"] is True
    (cache,) = ha.of("aws:elasticache/replicationGroup:ReplicationGroup")
    assert cache.inputs["numCacheClusters"] == 2 and cache.inputs["automaticFailoverEnabled"] is True
    assert cache.inputs["securityGroupIds"] == ["sg-bai-cache"]
    assert {m.inputs["securityGroups"][0] for m in ha.of("aws:efs/mountTarget:MountTarget")} == {"sg-bai-efs"}
    assert not stack_of("multi-node").recorder.of("aws:rds/instance:Instance")


def test_load_balancer_is_public_and_forwards_to_managers(stack_of: StackOf) -> None:
    rec = stack_of("ha").recorder
    (lb,) = rec.of("aws:lb/loadBalancer:LoadBalancer")
    assert lb.inputs["loadBalancerType"] == "network" and lb.inputs["internal"] is False
    assert sorted(lb.inputs["subnets"]) == ["subnet-bai-public-0", "subnet-bai-public-1",
                                            "subnet-bai-public-2"]
    assert lb.inputs["securityGroups"] == ["sg-bai-lb"]
    ports = sorted(r.inputs["port"] for r in rec.of("aws:lb/listener:Listener"))
    assert ports == sorted([8081, 6021, 5050, *range(10200, 10216)])
    api_targets = [r for r in rec.of("aws:lb/targetGroupAttachment:TargetGroupAttachment")
                   if r.name.startswith("bai-api-")]
    assert sorted(r.name for r in api_targets) == ["bai-api-mgmt1", "bai-api-mgmt2", "bai-api-mgmt3"]
    others = [r for r in rec.of("aws:lb/targetGroupAttachment:TargetGroupAttachment")
              if not r.name.startswith("bai-api-")]
    assert {r.name.rsplit("-", 1)[1] for r in others} == {"mgmt1"}


# -- security groups ---------------------------------------------------------------------------

Rule = tuple[str, str, int, int, str]  # group, protocol, from, to, source (group or CIDR)


def _rules(built: Built) -> set[Rule]:
    found: list[Rule] = []
    for r in built.recorder.of(INGRESS):
        i = r.inputs
        ref = i.get("referencedSecurityGroupId")
        source = ref.removeprefix("sg-bai-") if ref else i["cidrIpv4"]
        assert bool(ref) != bool(i.get("cidrIpv4")), r.name  # exactly one source
        assert "cidrIpv6" not in i and "prefixListId" not in i
        found.append((i["securityGroupId"].removeprefix("sg-bai-"), i["ipProtocol"],
                      i["fromPort"], i["toPort"], source))
    assert len(found) == len(set(found)), "a rule is declared twice"
    return set(found)


def _tcp(group: str, port: int | tuple[int, int], *sources: str, proto: str = "tcp") -> set[Rule]:
    lo, hi = port if isinstance(port, tuple) else (port, port)
    return {(group, proto, lo, hi, s) for s in sources}


#: Everything open in the default multi-node (self-hosted) stack; nothing else may be.
MULTI_NODE_RULES: set[Rule] = set().union(
    # the operator reaches the API, storage and app-proxy ports on the load balancer only
    _tcp("lb", 8081, OPERATOR), _tcp("lb", 6021, OPERATOR), _tcp("lb", 5050, OPERATOR, "mgmt"),
    _tcp("lb", (10200, 10215), OPERATOR),
    _tcp("mgmt", 8081, "lb"), _tcp("mgmt", 6021, "lb"), _tcp("mgmt", 5050, "lb"),
    _tcp("mgmt", (10200, 10215), "lb"),
    _tcp("mgmt", 6022, "mgmt"), _tcp("mgmt", 2379, "mgmt", "agents"),
    _tcp("mgmt", 5432, "mgmt"), _tcp("mgmt", 6379, "mgmt", "agents"), _tcp("mgmt", 2049, "agents"),
    _tcp("mgmt", 2377, "agents"),
    _tcp("mgmt", 7946, "mgmt", "agents"), _tcp("mgmt", 7946, "mgmt", "agents", proto="udp"),
    _tcp("mgmt", 4789, "mgmt", "agents", proto="udp"),
    _tcp("agents", 6001, "mgmt"), _tcp("agents", (30000, 31000), "mgmt"),
    _tcp("agents", 7946, "mgmt", "agents"), _tcp("agents", 7946, "mgmt", "agents", proto="udp"),
    _tcp("agents", 4789, "mgmt", "agents", proto="udp"),
    _tcp("mgmt", 22, "bastion"), _tcp("agents", 22, "bastion"), _tcp("bastion", 22, OPERATOR),
)
MANAGED_MOVES: set[Rule] = _tcp("mgmt", 5432, "mgmt") | _tcp("mgmt", 6379, "mgmt", "agents") \
    | _tcp("mgmt", 2049, "agents")
MANAGED_RULES = (MULTI_NODE_RULES - MANAGED_MOVES) | _tcp("db", 5432, "mgmt") \
    | _tcp("cache", 6379, "mgmt", "agents") | _tcp("efs", 2049, "mgmt", "agents")


def test_every_rule_multi_node(stack_of: StackOf) -> None:
    assert _rules(stack_of("multi-node")) == MULTI_NODE_RULES


def test_every_rule_all_in_one(stack_of: StackOf) -> None:
    assert _rules(stack_of("all-in-one")) == MULTI_NODE_RULES


def test_every_rule_managed(stack_of: StackOf) -> None:
    assert _rules(stack_of("multi-node-managed")) == MANAGED_RULES


def test_every_rule_ha(stack_of: StackOf) -> None:
    # etcd peers between the management hosts, on top of the managed layout
    assert _rules(stack_of("ha")) == MANAGED_RULES | _tcp("mgmt", 2380, "mgmt")


def test_egress_only_from_hosts_and_load_balancer(stack_of: StackOf) -> None:
    for shape in EXPECTED_COUNTS:
        out = {(r.inputs["securityGroupId"], r.inputs["ipProtocol"], r.inputs["cidrIpv4"])
               for r in stack_of(shape).recorder.of(EGRESS)}
        assert out == {(f"sg-bai-{g}", "-1", "0.0.0.0/0") for g in ("lb", "bastion", "mgmt", "agents")}


def test_no_ssh_from_the_world_and_world_only_on_the_lb_with_public_api() -> None:
    from tests.stack.conftest import SHAPES, build

    built = build({**SHAPES["multi-node"], "publicApi": "true", "bastion": "false",
                   "sshCidrs": "198.51.100.0/24"})
    rules = _rules(built)
    world = {r for r in rules if r[4] == "0.0.0.0/0"}
    assert world == _tcp("lb", 8081, "0.0.0.0/0") | _tcp("lb", 6021, "0.0.0.0/0") \
        | _tcp("lb", 5050, "0.0.0.0/0") | _tcp("lb", (10200, 10215), "0.0.0.0/0")
    ssh = {r for r in rules if r[2] <= 22 <= r[3]}
    assert ssh == _tcp("mgmt", 22, "198.51.100.0/24") | _tcp("agents", 22, "198.51.100.0/24")
    assert not built.recorder.of(INSTANCE)[0].name == "bai-bastion"
    assert "bai-bastion" not in {r.name for r in built.recorder.of(INSTANCE)}
    assert built.outputs["ssh_config"] == "" and built.outputs["bastion_ip"] == ""


def test_no_ssh_at_all_without_bastion_or_ssh_cidrs() -> None:
    from tests.stack.conftest import SHAPES, build

    rules = _rules(build({**SHAPES["multi-node"], "bastion": "false"}))
    assert not [r for r in rules if r[2] <= 22 <= r[3]]


# -- secrets ------------------------------------------------------------------------------------

def test_only_the_secrets_output_is_secret_and_no_plain_output_leaks_one(stack_of: StackOf) -> None:
    for shape in EXPECTED_COUNTS:
        built = stack_of(shape)
        assert {k for k, s in built.secret.items() if s} == {"secrets"}
        secrets = built.outputs["secrets"]
        assert set(secrets) == {"db_password", "redis_password", "registry_username",
                                "registry_password"}
        values = [secrets["db_password"], secrets["redis_password"], secrets["registry_password"]]
        assert all(len(v) >= 16 for v in values) and len(set(values)) == 3
        plain = json.dumps({k: v for k, v in built.outputs.items() if k != "secrets"})
        for value in values:
            assert value not in plain


def test_secrets_reach_providers_and_hosts_only_as_secrets(stack_of: StackOf) -> None:
    built = stack_of("ha")
    secrets = built.outputs["secrets"]
    (db,) = built.recorder.of("aws:rds/instance:Instance")
    assert _is_secret_input(db.inputs["password"]) and _plain(db.inputs["password"]) == secrets["db_password"]
    (cache,) = built.recorder.of("aws:elasticache/replicationGroup:ReplicationGroup")
    assert _is_secret_input(cache.inputs["authToken"])
    assert _plain(cache.inputs["authToken"]) == secrets["redis_password"]
    assert cache.inputs["transitEncryptionEnabled"] is True
    for inst in built.recorder.of(INSTANCE):
        data = inst.inputs.get("userData")
        if inst.name.startswith("bai-mgmt"):
            # the managers' first boot writes the stack's passwords where bai-install reads them
            assert _is_secret_input(data)
            doc = json.loads(_plain(data).split("\n", 1)[1])
            (secrets_file,) = [f for f in doc["write_files"] if f["path"] == "/etc/backend.ai/secrets.toml"]
            assert secrets_file["permissions"] == "0600"
            assert f'db_password = "{secrets["db_password"]}"' in secrets_file["content"]
            assert f'redis_password = "{secrets["redis_password"]}"' in secrets_file["content"]
        elif inst.name.startswith("bai-agent"):
            # nothing secret on agents, where sessions run
            assert isinstance(data, str) and not _is_secret_input(data)
            assert not any(v in data for v in secrets.values() if v != "bai")
        else:
            assert data is None


def test_given_secrets_are_used_and_not_generated() -> None:
    from tests.stack.conftest import SHAPES, build

    built = build({**SHAPES["multi-node-managed"], "dbPassword": "Given0db0password0123",
                   "redisPassword": "Given0redis0password0"})
    assert built.outputs["secrets"]["db_password"] == "Given0db0password0123"
    assert built.outputs["secrets"]["redis_password"] == "Given0redis0password0"
    assert built.count("random:index/randomPassword:RandomPassword") == 1  # the registry's
    (db,) = built.recorder.of("aws:rds/instance:Instance")
    assert _is_secret_input(db.inputs["password"])


# -- first boot -----------------------------------------------------------------------------------

def test_first_boot_mounts_the_shared_volume_and_scratch(stack_of: StackOf) -> None:
    built = stack_of("multi-node")
    mgmt_ip = built.outputs["inventory"]["manager"][0][1]["ssh_hostname"]
    agent = built.recorder.named("bai-agent1")
    doc = json.loads(agent.inputs["userData"].split("\n", 1)[1])
    script = "\n".join(cmd[2] for cmd in doc["runcmd"])
    assert doc["disable_root"] is False
    assert f"{mgmt_ip}:/mnt/vfroot/local /mnt/vfroot/local nfs4" in script  # the NFS export
    vol = built.recorder.named("bai-agent1-scratch", "aws:ebs/volume:Volume")
    assert f"nvme-Amazon_Elastic_Block_Store_{vol.id.replace('-', '')}" in script
    mgmt = json.loads(_plain(built.recorder.named("bai-mgmt1").inputs["userData"]).split("\n", 1)[1])
    assert "nfs-kernel-server" in mgmt["packages"]
    assert "/mnt/vfroot/local 10.42.0.0/20(rw" in "\n".join(c[2] for c in mgmt["runcmd"])
    managed = stack_of("multi-node-managed").recorder
    (efs,) = managed.of("aws:efs/fileSystem:FileSystem")
    agent_doc = json.loads(managed.named("bai-agent1").inputs["userData"].split("\n", 1)[1])
    assert f"{efs.state['dns_name']}:/ /mnt/vfroot/local nfs4" in "\n".join(c[2] for c in agent_doc["runcmd"])


# -- outputs and inventory ------------------------------------------------------------------------

def test_endpoint_and_ssh_config(stack_of: StackOf) -> None:
    built = stack_of("multi-node")
    (lb,) = built.recorder.of("aws:lb/loadBalancer:LoadBalancer")
    assert built.outputs["endpoint"] == f"http://{lb.state['dns_name']}:8081"
    assert built.outputs["storage_endpoint"] == f"http://{lb.state['dns_name']}:6021"
    assert built.outputs["bastion_ip"] == "198.51.100.77"
    ssh = built.outputs["ssh_config"]
    assert "HostName 198.51.100.77" in ssh
    for group in ("manager", "agents"):
        for _, data in built.outputs["inventory"][group]:
            assert f"Host {data['ssh_hostname']}\n  User root\n  ProxyJump bai-bastion" in ssh


def test_inventory_multi_node(stack_of: StackOf) -> None:
    built = stack_of("multi-node")
    inv = built.outputs["inventory"]
    ips = {r.name.removeprefix("bai-"): r.state["private_ip"] for r in built.recorder.of(INSTANCE)}
    ids = {r.name.removeprefix("bai-"): r.id for r in built.recorder.of(INSTANCE)}
    (lb,) = built.recorder.of("aws:lb/loadBalancer:LoadBalancer")
    dns = lb.state["dns_name"]
    m = ips["mgmt1"]
    assert inv["format"] == "bai-inventory/1"
    assert inv["data"] == {"ssh_user": "root", "db_host": m, "redis_addr": f"{m}:6379",
                           "etcd_addr": f"{m}:2379", "storage_volume_path": "/mnt/vfroot/local",
                           "storage_client_url": f"http://{dns}:6021"}
    mgmt = {"ssh_hostname": m, "etcd_listen": m, "pg_listen": m, "redis_listen": m,
            "pg_allow_cidrs": [f"{m}/32"], "manager_id": ids["mgmt1"], "manager_addr": f"{m}:8081",
            "app_proxy_id": f"{ids['mgmt1']}-appproxy", "app_proxy_bind_host": m,
            "app_proxy_advertised_host": dns, "app_proxy_api_port": 5050,
            "app_proxy_port_range": [10200, 10215],
            "storage_node_id": ids["mgmt1"], "storage_client_addr": f"{m}:6021",
            "storage_manager_addr": f"{m}:6022"}
    assert inv["halfstack"] == inv["manager"] == inv["storage"] == [["mgmt1", mgmt]]
    assert inv["agents"] == [
        [f"agent{n}", {"ssh_hostname": ips[f"agent{n}"], "agent_id": ids[f"agent{n}"],
                       "agent_rpc_addr": f"{ips[f'agent{n}']}:6001",
                       "container_bind_host": ips[f"agent{n}"]}]
        for n in (1, 2, 3)]


def test_inventory_ha_managed(stack_of: StackOf) -> None:
    built = stack_of("ha")
    inv = built.outputs["inventory"]
    (db,) = built.recorder.of("aws:rds/instance:Instance")
    (cache,) = built.recorder.of("aws:elasticache/replicationGroup:ReplicationGroup")
    assert inv["data"]["db_host"] == db.state["address"]
    assert inv["data"]["redis_addr"] == f"{cache.state['primary_endpoint_address']}:6379"
    assert [n for n, _ in inv["manager"]] == ["mgmt1", "mgmt2", "mgmt3"]
    assert [n for n, _ in inv["halfstack"]] == [n for n, _ in inv["storage"]] == ["mgmt1"]
    assert [n for n, _ in inv["agents"]] == ["agent1", "agent2", "agent3", "agent4"]
    first = inv["halfstack"][0][1]
    assert "pg_listen" not in first and "pg_allow_cidrs" not in first  # managed: RDS
    assert inv["data"]["etcd_addr"] == f"{first['ssh_hostname']}:2379"
    assert len({d["manager_id"] for _, d in inv["manager"]}) == 3


def test_inventory_all_in_one(stack_of: StackOf) -> None:
    inv = stack_of("all-in-one").outputs["inventory"]
    for group in ("halfstack", "manager", "agents", "storage"):
        assert [n for n, _ in inv[group]] == ["aio1"]
    data = inv["agents"][0][1]
    assert data["agent_id"] == data["manager_id"] and data["storage_node_id"] == f"{data['agent_id']}-storage"


def test_install_on_up_runs_bai_install_from_the_first_manager() -> None:
    from tests.stack.conftest import SHAPES, build

    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----"
    built = build({**SHAPES["multi-node"], "installOnUp": "true", "sshPrivateKey": key,
                   "baiRepoUrl": "https://git.example.org/bai.git"})
    (cmd,) = built.recorder.of("command:remote:Command")
    conn = _plain(cmd.inputs["connection"])
    mgmt = built.recorder.named("bai-mgmt1")
    assert conn["host"] == mgmt.state["private_ip"] and conn["user"] == "root"
    assert _plain(conn["proxy"])["host"] == "198.51.100.77"  # through the bastion
    assert _is_secret_input(cmd.inputs["stdin"])
    stdin = json.loads(_plain(cmd.inputs["stdin"]))
    assert stdin["key"] == key and stdin["stack"]["inventory"] == built.outputs["inventory"]
    script = cmd.inputs["create"]
    assert "bai-install install --non-interactive --from-stack /etc/backend.ai/stack-output.json" in script
    assert key not in script and "b3BlbnNzaC1rZXktdjEAAAAA" not in json.dumps(built.outputs)
    # the first manager runs bai-install over SSH to the others: SSH from the management group
    assert _tcp("agents", 22, "mgmt") <= _rules(built)
    # and every host installs bai at first boot from the given repository
    doc = json.loads(built.recorder.named("bai-agent1").inputs["userData"].split("\n", 1)[1])
    assert any("git clone --branch main https://git.example.org/bai.git /opt/bai/src" in c[2]
               for c in doc["runcmd"])


def test_install_on_up_is_off_by_default(stack_of: StackOf) -> None:
    for shape in EXPECTED_COUNTS:
        assert not stack_of(shape).recorder.of("command:remote:Command")
