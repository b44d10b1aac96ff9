from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .fake_manager import FakeManager


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeManager]:
    server = FakeManager()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fake(fake_server: FakeManager, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeManager:
    """The fake manager, reset, with the client environment pointing at it.

    The CWD is an empty temporary directory so that no stray ``.env`` file is loaded.
    """
    fake_server.reset()
    monkeypatch.chdir(tmp_path)
    for key in list(__import__("os").environ):
        if key.startswith(("BACKEND_", "SORNA_")):
            monkeypatch.delenv(key)
    for k, v in fake_server.env().items():
        monkeypatch.setenv(k, v)
    return fake_server
