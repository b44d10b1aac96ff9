"""What the agent tells the manager about cuda.shares per GPU: each GPU's free shares in the
heartbeat (``compute_plugins.cuda.placement``), so that the scheduler holds back a request that
fits the agent's total but no single GPU (one kernel's shares lie on one GPU through MPS)."""

from __future__ import annotations

from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

from bai.agent.compute.alloc_map import FractionAllocMap, single_device_free
from bai.agent.compute.base import AllocationError
from bai.agent.compute.cuda.docker_args import HostFacts
from bai.agent.compute.cuda.plugin import CUDAPlugin
from bai.agent.compute.registry import ComputeRegistry
from tests.fixtures.fake_nvml import FakeNVML, with_copies

from .test_cuda_registry import INTRINSIC, NoMPS, config, eps


class TwoH100Fractional(CUDAPlugin):
    """The real plugin on two captured H100s (80 GiB: 39.99 shares of 2 GiB each)."""

    def __init__(self, plugin_config: Any, agent_config: Any) -> None:
        super().__init__({**plugin_config, "mode": "fractional"}, agent_config,
                         nvml_lib=with_copies(FakeNVML.from_nvml_json(), 2), mps_control=NoMPS(),
                         host_facts=HostFacts(device_nodes=frozenset({"/dev/nvidiactl"})))


def test_plain_fraction_maps_report_nothing() -> None:
    # the mock accelerator's shares may span devices: nothing to place per device
    assert single_device_free(FractionAllocMap({"x.shares": {"a": D(1)}})) == {}


async def test_heartbeat_reports_each_gpus_free_shares(tmp_path: Path) -> None:
    registry = await ComputeRegistry.load(config(tmp_path), {}, eps(
        **INTRINSIC, cuda=f"{__name__}:TwoH100Fractional"))
    try:
        gpus = [g.uuid for g in registry.plugins["cuda"].gpus]          # type: ignore[attr-defined]
        capacity = registry.available["cuda.shares"] / 2
        info = (await registry.extra_infos("9.9"))["cuda"]
        assert info["placement"] == {"cuda.shares": {g: format(capacity.normalize(), "f") for g in gpus}}
        assert info["placement_capacity"] == info["placement"]          # nothing held yet
        # fragment: most of each GPU taken, so the total free exceeds what any one GPU has
        first = registry.allocate({"cuda.shares": capacity - D(10)})
        second = registry.allocate({"cuda.shares": capacity - D(10)})
        assert {dev for held in (first, second) for dev in held["cuda"]["cuda.shares"]} == set(gpus)
        placement = (await registry.extra_infos("9.9"))["cuda"]["placement"]["cuda.shares"]
        assert {D(v) for v in placement.values()} == {D(10)}
        assert (await registry.extra_infos("9.9"))["cuda"]["placement_capacity"] == info["placement_capacity"]
        # 15 shares: the agent's total (20) has them, no GPU does -- the agent refuses, changing nothing
        with pytest.raises(AllocationError, match="no single GPU"):
            registry.allocate({"cuda.shares": D(15)})
        assert {D(v) for v in (await registry.extra_infos("9.9"))["cuda"]["placement"]["cuda.shares"].values()} \
            == {D(10)}
        registry.free(first)
        placement = (await registry.extra_infos("9.9"))["cuda"]["placement"]["cuda.shares"]
        assert sorted(D(v) for v in placement.values()) == [D(10), capacity]
    finally:
        await registry.cleanup()
