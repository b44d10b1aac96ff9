"""Round-robin placement and multi-node roll-back: a multi-node session that cannot be placed
whole takes nothing -- neither slots nor the round-robin position -- so the next session gets
the agent it would have had without it."""

from __future__ import annotations

import json
import secrets
from decimal import Decimal

from bai.manager.services.scheduler import Scheduler
from bench import scheduler as bench

from . import test_many_agents as many

world, clean = many.world, many.clean

GiB = 2**30


async def test_a_rolled_back_multi_node_session_leaves_the_rotation(world: tuple[bench.World, object]) -> None:
    w, ctx = world
    group = f"rr-{secrets.token_hex(3)}"
    # two kernels of 2 cores fit rr-0 and rr-1; the third fits nowhere (rr-2 has one core)
    await many._group_with(w, group, {f"{group}-0": {"cpu": "2", "mem": str(8 * GiB)},
                                      f"{group}-1": {"cpu": "2", "mem": str(8 * GiB)},
                                      f"{group}-2": {"cpu": "1", "mem": str(8 * GiB)}}, strategy="roundrobin")
    await bench.enqueue(w, [bench.Session(group, {"cpu": Decimal(2), "mem": Decimal(GiB)}, cluster_size=3),
                            bench.Session(group, {"cpu": Decimal(1), "mem": Decimal(GiB)})])
    result = await Scheduler(ctx).decide()                          # type: ignore[arg-type]
    assert [s.name for s in result.scheduled] == ["b1"]
    placed = await many._placements(w)
    assert "b0" not in placed
    assert placed["b1"] == [f"{group}-0"]                           # not rr-2, where the rolled-back picks led
    saved = json.loads(await ctx.etcd.get(f"roundrobin_states/{group}/{bench._arch()}") or "{}")  # type: ignore[attr-defined]
    assert saved["next_index"] == 1
    assert await bench.over_allocations(w.db, [f"{group}-{i}" for i in range(3)]) == []
