"""The Pulumi program: validated config in, a cluster and its inventory out.

:func:`build` declares everything for one :class:`~stack.config.StackConfig` and returns the
stack outputs; :func:`main` (what ``pulumi up`` runs) loads the config, so that a bad value
stops the program before the first resource, and exports the outputs.

Outputs: ``endpoint`` (the API URL), ``storage_endpoint``, ``inventory`` (what
``bai-install install --from-stack`` reads), ``ssh_config`` (bastion jump lines),
``bastion_ip``, and ``secrets`` (database / Redis passwords, registry credentials), the only
output holding secrets, marked secret as a whole.
"""

from __future__ import annotations

from typing import Any

import pulumi

from . import config as config_mod
from . import ha, hosts, install, inventory, network, security, services


def _machine(host: hosts.Host) -> pulumi.Output[inventory.Machine]:
    return pulumi.Output.all(host.instance.id, host.instance.private_ip).apply(
        lambda v: inventory.Machine(host.name, str(v[0]), str(v[1]), tuple(host.groups)))


def build(cfg: config_mod.StackConfig, name: str = "bai") -> dict[str, pulumi.Output[Any]]:
    tags = {"bai:stack": name, "bai:topology": cfg.topology}
    net = network.build(cfg, name, tags)
    groups = security.build(cfg, name, net.vpc.id, tags)
    sec = services.secrets(cfg, name)
    managed = services.managed(cfg, name, net, groups, sec, tags) if cfg.managed else None
    machines = hosts.build(cfg, name, net, groups, sec, managed, tags)
    endpoint = ha.build(cfg, name, net, groups, machines, tags)

    facts = [_machine(h) for h in machines.all]
    db_address = managed.db_address if managed else pulumi.Output.from_input("")
    redis_address = managed.redis_address if managed else pulumi.Output.from_input("")
    inv = pulumi.Output.all(endpoint.dns_name, db_address, redis_address, *facts).apply(
        lambda v: inventory.document(cfg, list(v[3:]), v[0], v[1], v[2]))
    bastion_ip = machines.bastion.public_ip if machines.bastion else None
    ssh = pulumi.Output.all(bastion_ip or "", *facts).apply(
        lambda v: inventory.ssh_config(list(v[1:]), str(v[0])))

    outputs: dict[str, pulumi.Output[Any]] = {
        "endpoint": endpoint.dns_name.apply(lambda d: f"http://{d}:{security.MANAGER_API}"),
        "storage_endpoint": endpoint.dns_name.apply(
            lambda d: f"http://{d}:{security.STORAGE_CLIENT}"),
        "inventory": inv,
        "ssh_config": ssh,
        "bastion_ip": bastion_ip if bastion_ip is not None else pulumi.Output.from_input(""),
        "secrets": pulumi.Output.secret(pulumi.Output.all(
            sec.db_password, sec.redis_password, sec.registry_password).apply(
            lambda v: {"db_password": v[0], "redis_password": v[1],
                       "registry_username": sec.registry_username, "registry_password": v[2]})),
    }
    if cfg.install_on_up:
        deps: list[pulumi.Resource] = [h.instance for h in machines.all]
        install.build(cfg, name, machines.management[0].instance.private_ip, bastion_ip, inv, deps)
    return outputs


def main() -> None:
    try:
        cfg = config_mod.load()
    except config_mod.ConfigError as exc:
        # before any resource: nothing was declared, nothing changes in the cloud
        raise SystemExit(f"bai stack: bad configuration:\n{exc}") from None
    for key, value in build(cfg).items():
        pulumi.export(key, value)
