"""Stack fixtures: the Pulumi program built under the mock runtime (tests/stack/mocks.py), once
per config shape for the whole session (a build declares ~100 resources in about a second)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.stack import mocks

OPERATOR = "203.0.113.0/24"
BASE: dict[str, Any] = {"operatorCidrs": OPERATOR, "sshPublicKey": "ssh-ed25519 AAAAC3Nza test@op"}
#: the config shapes the issue names
SHAPES: dict[str, dict[str, Any]] = {
    "all-in-one": {**BASE, "topology": "all-in-one"},
    "multi-node": {**BASE, "topology": "multi-node", "agentCount": "3"},
    "multi-node-managed": {**BASE, "topology": "multi-node", "services": "managed",
                           "agentCount": "2", "agentInstanceType": "p4d.24xlarge"},
    "ha": {**BASE, "topology": "ha", "services": "managed", "agentCount": "4", "azCount": "3"},
}


@dataclass
class Built:
    config: Any  # stack.config.StackConfig
    recorder: mocks.Recorder
    outputs: dict[str, Any]  # name -> value
    secret: dict[str, bool]  # name -> is the output secret

    def count(self, typ: str) -> int:
        return len(self.recorder.of(typ))


def build(values: dict[str, Any]) -> Built:
    """Build the stack for ``values`` on an event loop of its own (Pulumi's runtime schedules
    its work on the thread's current loop: not the one the async tests of the suite share),
    closed once every output has resolved; only plain values are kept."""
    previous = _current_loop()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        recorder = mocks.Recorder()
        mocks.use(recorder)
        from stack import config, program  # after set_mocks, as Pulumi's testing guide says

        cfg = config.parse(values)
        resolved = mocks.resolve(program.build(cfg))
    finally:
        asyncio.set_event_loop(previous)
        loop.close()
    return Built(cfg, recorder, {k: v for k, (v, _) in resolved.items()},
                 {k: s for k, (_, s) in resolved.items()})


def _current_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        return None


@pytest.fixture(scope="session")
def stack_of() -> Callable[[str], Built]:
    cache: dict[str, Built] = {}

    def get(shape: str) -> Built:
        if shape not in cache:
            cache[shape] = build(SHAPES[shape])
        return cache[shape]

    return get
