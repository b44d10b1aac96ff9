"""Fixtures of the installer tests: one throwaway systemd test host for the session
(tests/hosts/build-systemd-image.sh, started as tests/roles/conftest.py starts its hosts), onto
which bai-install applies the half-stack roles: the kill-and-resume test and the wizard's apply
test share it (whichever runs first installs, the other converges).

The host has PostgreSQL's packages pre-installed (tests/hosts/build-halfstack-host-image.sh with
that one package set: their download and initdb were 20-35 s of every fresh install here); the
other roles' packages (base, Redis, etcd) are still installed by apt during the test, so a kill
can land while apt runs (test_kill_resume.py kills there on purpose). The bare apt path of every
half-stack package stays tested by tests/roles/test_roles_halfstack.py."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
#: the packages the installer tests' host comes with (see the module docstring)
PREINSTALLED = ("postgresql-15", "postgresql-client-15")


def roles_helpers() -> Any:
    """tests/roles/conftest.py (not importable as a package module): its host helpers."""
    name = "bai_roles_conftest"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "tests/roles/conftest.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def systemd_host() -> Iterator[Any]:
    """A fresh systemd test host (a ``Node``: ``.target`` is ``@docker/<container>``)."""
    helpers = roles_helpers()
    r = subprocess.run(["bash", str(REPO / "tests/hosts/build-systemd-image.sh"), helpers.IMAGE],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run(["bash", str(REPO / "tests/hosts/build-halfstack-host-image.sh"), helpers.IMAGE,
                        *PREINSTALLED], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    image = r.stdout.strip().splitlines()[-1]
    started: list[str] = []
    try:
        yield helpers._start(f"bai-test-installer-{uuid.uuid4().hex[:8]}", image, True, started)
    finally:
        for name in started:
            subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def halfstack_inventory(systemd_host: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An inventory with the test host as its only (half-stack) host: base, os tuning,
    PostgreSQL, Redis, etcd."""
    path = tmp_path_factory.mktemp("inventory") / "halfstack.py"
    path.write_text(f"halfstack = [{systemd_host.target!r}]\n")
    return path
