"""Service-definition probes (a created, never started container per image the agent reads the
definitions of) never outlive their read: a probe left behind keeps its image from being removed
(seen: forget refused "in use by the created container ..." for a probe of hours before)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import aiodocker
import pytest

from bai.agent import services
from bai.agent.services import PROBE_LABEL, PROBE_PURPOSE, ImageServices


async def probes(docker: aiodocker.Docker, image_id: str) -> list[str]:
    found = await docker.containers.list(all=True, filters=json.dumps({"label": [f"{PROBE_LABEL}={PROBE_PURPOSE}"]}))
    return [c.id for c in found if c["ImageID"] == image_id]


async def no_probes_left(docker: aiodocker.Docker, image_id: str, before: set[str], within: float = 20.0) -> None:
    """No probe of the image but those there ``before`` (other agents' on this engine)."""
    end = time.monotonic() + within
    while set(await probes(docker, image_id)) - before:
        assert time.monotonic() < end, "a probe container was left behind"
        await asyncio.sleep(0.1)


async def test_a_read_cut_short_leaves_no_probe(docker: aiodocker.Docker, kernel_image: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    image_id = str((await docker.images.inspect(kernel_image))["Id"])
    before = set(await probes(docker, image_id))
    reader = ImageServices(docker)
    assert "ttyd" in await reader.definitions(kernel_image)  # a whole read: its probe is gone
    await no_probes_left(docker, image_id, before, within=0)
    # Cut short while Docker creates the probe (the timeout, as under load; a stop cancels alike).
    for delay in (0.0, 0.005, 0.02, 0.05):
        monkeypatch.setattr(services, "READ_TIMEOUT", delay)
        with pytest.raises(TimeoutError):
            await ImageServices(docker)._read(image_id)
    await no_probes_left(docker, image_id, before)


async def test_the_sweep_removes_old_probes_only(docker: aiodocker.Docker, kernel_image: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    image_id = str((await docker.images.inspect(kernel_image))["Id"])
    other = await docker.containers.create({"Image": image_id, "Cmd": ["/nonexistent"], "NetworkDisabled": True})
    leftover = await docker.containers.create({"Image": image_id, "Cmd": ["/nonexistent"], "NetworkDisabled": True,
                                               "Labels": {PROBE_LABEL: PROBE_PURPOSE}})
    try:
        await ImageServices(docker).sweep()
        assert leftover.id in await probes(docker, image_id)  # young: maybe a live agent's read
        monkeypatch.setattr(services, "PROBE_MAX_AGE", -1.0)
        await ImageServices(docker).sweep()
        assert leftover.id not in await probes(docker, image_id)
        assert (await other.show())["Id"] == other.id  # not a probe: untouched
    finally:
        await other.delete(force=True)
        with contextlib.suppress(aiodocker.DockerError):
            await leftover.delete(force=True)
