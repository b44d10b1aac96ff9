"""Multi-node placement and the overlay network, over a real database and etcd: without the
overlay (etcd ``config/network/overlay/enabled``) a multi-node session is kept on the agents of
one host (they share a Docker engine, so the kernels can meet on a local bridge) and waits,
saying why, when only several hosts together have room; with the overlay it spreads across
hosts -- but only by a manager whose Docker engine is a swarm manager (only such an engine can
create the session's overlay): one without Docker, or whose engine is in no swarm, keeps such
sessions PENDING saying so. The swarm-manager engine is a real dockerd of the test's own (its own
network namespace, data and socket; swarm mode refuses the node's live-restore daemon), which
then creates and removes a session's overlay with the MTU from etcd."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path

import aiodocker
import pytest
import sqlalchemy as sa

from bai.common import etcd as etcd_mod
from bai.manager.config import ManagerConfig
from bai.manager.services import cluster_networks
from bai.manager.services.context import ManagerContext
from bai.manager.services.scheduler import Scheduler
from bai.manager.store import tables as t
from bench import scheduler as bench
from tests.fixtures.halfstack import HalfStack, wait_for

from .conftest import ManagerDB

GiB = 2**30


@pytest.fixture(scope="module")
async def world(halfstack: HalfStack, manager_db: ManagerDB) -> AsyncIterator[tuple[bench.World, etcd_mod.EtcdStore]]:
    async with etcd_mod.connect(halfstack.etcd_addr, f"cp-{secrets.token_hex(4)}") as etcd:
        yield await bench.setup_world(manager_db.engine, etcd, n_owners=2), etcd


@pytest.fixture(autouse=True)
async def clean(world: tuple[bench.World, etcd_mod.EtcdStore]) -> AsyncIterator[None]:
    yield
    await bench.clear(world[0])
    async with world[0].db.begin() as conn:
        await conn.execute(t.agents.delete())
    await world[1].delete("config/network/overlay/enabled")
    await world[1].delete("config/network/overlay/mtu")


def _scheduler(w: bench.World, etcd: etcd_mod.EtcdStore, docker_sock: str | None = None) -> Scheduler:
    # a new one each time: it caches etcd's overlay setting for a few seconds
    ctx = ManagerContext(config=ManagerConfig(), db=w.db, etcd=etcd, redis_stream=None,  # type: ignore[arg-type]
                         redis_ratelimit=None, agents=None, events=None)  # type: ignore[arg-type]
    if docker_sock is not None:  # the manager's "local" Docker engine
        ctx.extra["cluster_networks"] = cluster_networks.ClusterNetworks(
            etcd, lambda: aiodocker.Docker(url=f"unix://{docker_sock}"), manager_id="i-mgr-test")
    return Scheduler(ctx)


def _docker(sock: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", "-H", f"unix://{sock}", *args], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def private_engine() -> Iterator[str]:
    """A dockerd of this test's own, in no swarm yet: its socket path. Own network namespace
    (swarm ports, no bridge, no iptables rules), data and exec roots, an empty daemon.json."""
    root = Path(tempfile.mkdtemp(prefix="bai-swarm-", dir="/tmp"))
    (root / "daemon.json").write_text("{}")
    sock = str(root / "docker.sock")
    with open(root / "dockerd.log", "wb") as log:
        proc = subprocess.Popen(
            ["unshare", "-n", "sh", "-c", "ip link set lo up && exec dockerd --config-file \"$1/daemon.json\" "
             "--data-root \"$1/data\" --exec-root \"$1/exec\" --pidfile \"$1/dockerd.pid\" "
             "-H \"unix://$1/docker.sock\" --bridge none --iptables=false --ip6tables=false", "sh", str(root)],
            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _docker(sock, "info").returncode == 0, "the test's dockerd", 60, proc)  # type: ignore[arg-type]
        yield sock
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


async def _group(w: bench.World, name: str, agents: dict[str, str]) -> None:
    """``agents``: id -> the host of its RPC address; each agent has 2 cores."""
    async with w.db.begin() as conn:
        await conn.execute(sa.insert(t.scaling_groups).values(
            name=name, scheduler="fifo", scheduler_opts={"agent_selection_strategy": "dispersed"}))
        for agent_id, host in agents.items():
            await conn.execute(sa.insert(t.agents).values(
                id=agent_id, status="ALIVE", scaling_group=name, addr=f"http://{host}:6001",
                available_slots={"cpu": "2", "mem": str(8 * GiB)}, architecture=bench._arch()))


async def _session(w: bench.World, group: str) -> tuple[str, list[str | None], str | None]:
    async with w.db.connect() as conn:
        row = (await conn.execute(sa.select(t.sessions).where(t.sessions.c.scaling_group_name == group))).one()
        agents = (await conn.execute(sa.select(t.kernels.c.agent).where(t.kernels.c.session_id == row.id)
                                     .order_by(t.kernels.c.local_rank))).scalars().all()
    return row.status, list(agents), ((row.status_data or {}).get("scheduler") or {}).get("msg")


def _two_kernels(group: str) -> list[bench.Session]:
    return [bench.Session(group, {"cpu": Decimal(2), "mem": Decimal(GiB)}, cluster_size=2)]


async def test_without_the_overlay_a_session_stays_on_one_host(world: tuple[bench.World, etcd_mod.EtcdStore]) -> None:
    w, etcd = world
    # the dispersed policy would start on the lone agent of 10.0.0.1 (lowest id among equals)
    await _group(w, "one-host", {"oh-0": "10.0.0.1", "oh-1": "10.0.0.2", "oh-2": "10.0.0.2"})
    await bench.enqueue(w, _two_kernels("one-host"))
    assert len((await _scheduler(w, etcd).decide()).scheduled) == 1
    status, agents, _ = await _session(w, "one-host")
    assert status == "SCHEDULED" and sorted(agents) == ["oh-1", "oh-2"]  # type: ignore[type-var]
    assert await bench.over_allocations(w.db, ["oh-0", "oh-1", "oh-2"]) == []


async def test_across_hosts_it_waits_for_the_overlay(world: tuple[bench.World, etcd_mod.EtcdStore]) -> None:
    w, etcd = world
    await _group(w, "two-hosts", {"th-0": "10.0.1.1", "th-1": "10.0.1.2"})
    await bench.enqueue(w, _two_kernels("two-hosts"))
    assert (await _scheduler(w, etcd).decide()).scheduled == []
    status, agents, msg = await _session(w, "two-hosts")
    assert status == "PENDING" and agents == [None, None]
    assert msg is not None and "needs the overlay network" in msg and "config/network/overlay/enabled" in msg, msg
    async with w.db.connect() as conn:  # nothing stays reserved
        occupied = (await conn.execute(sa.select(t.agents.c.occupied_slots))).scalars().all()
    assert all(Decimal(o.get("cpu", "0")) == 0 for o in occupied), occupied


async def test_only_a_swarm_manager_engine_places_it_across_hosts(
        world: tuple[bench.World, etcd_mod.EtcdStore], private_engine: str) -> None:
    w, etcd = world
    await _group(w, "swarm", {"sw-0": "10.0.2.1", "sw-1": "10.0.2.2"})
    await bench.enqueue(w, _two_kernels("swarm"))
    await etcd.put("config/network/overlay/enabled", "true")
    await etcd.put("config/network/overlay/mtu", "1400")
    # a manager without Docker, then one whose engine is in no swarm: the session waits for a
    # manager that can make its overlay, saying so (nothing reserved)
    for sock, why in (("/nonexistent/docker.sock", "it reaches no Docker engine"),
                      (private_engine, "its Docker engine is in no swarm")):
        assert (await _scheduler(w, etcd, sock).decide()).scheduled == []
        status, agents, msg = await _session(w, "swarm")
        assert status == "PENDING" and agents == [None, None]
        assert msg is not None and "which this manager (i-mgr-test) cannot create" in msg and why in msg, msg
        assert "no single host has room for all 2 kernels" in msg
    # the engine becomes a swarm manager: this manager places it across hosts, creates the overlay
    init = _docker(private_engine, "swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", "127.0.0.1:2377")
    assert init.returncode == 0, init.stderr
    sched = _scheduler(w, etcd, private_engine)
    assert len((await sched.decide()).scheduled) == 1
    status, agents, _ = await _session(w, "swarm")
    assert status == "SCHEDULED" and sorted(agents) == ["sw-0", "sw-1"]  # type: ignore[type-var]
    networks = cluster_networks.of(sched.ctx)
    session_id = uuid.uuid4()
    name = await networks.create(session_id)
    inspect = _docker(private_engine, "network", "inspect", name, "--format",
                      '{{.Driver}} {{.Attachable}} {{index .Options "com.docker.network.driver.mtu"}}')
    assert inspect.stdout.split() == ["overlay", "true", "1400"], inspect.stderr
    assert await networks.remove(session_id, deadline=10)
    assert _docker(private_engine, "network", "inspect", name).returncode != 0

    # the overlay of a session that ended on a manager that cannot remove it: that manager
    # leaves it, the sweep of one whose engine is a swarm manager removes it
    ended = uuid.uuid4()
    await networks.create(ended)

    async def none_live(ids: list[uuid.UUID]) -> set[uuid.UUID]:
        return set()

    cannot = cluster_networks.ClusterNetworks(etcd, lambda: aiodocker.Docker(url="unix:///nonexistent/docker.sock"))
    assert await cannot.remove_leftovers(none_live) == []
    assert await networks.remove_leftovers(none_live) == [cluster_networks.overlay_name(ended)]
    assert _docker(private_engine, "network", "inspect", cluster_networks.overlay_name(ended)).returncode != 0
