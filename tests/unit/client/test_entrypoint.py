"""The installed ``backend.ai`` console script, run as a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .fake_manager import FakeManager

BIN = Path(sys.executable).parent / "backend.ai"


def _cli() -> list[str]:
    if BIN.exists():
        return [str(BIN)]
    found = shutil.which("backend.ai")
    if found:
        return [found]
    return [sys.executable, "-m", "bai.client.cli.main"]


def _env(fake: FakeManager) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKEND_", "SORNA_"))}
    env.update(fake.env())
    return env


def test_run_rm_stdout_is_exact(fake: FakeManager, tmp_path: Path) -> None:
    proc = subprocess.run(
        [*_cli(), "run", "--rm", "-c", "print(6*7)", "python"],
        capture_output=True, env=_env(fake), cwd=tmp_path, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"42\n"
    assert b"Cleaned up the session." in proc.stderr


def test_exit_code_is_propagated(fake: FakeManager, tmp_path: Path) -> None:
    proc = subprocess.run(
        [*_cli(), "run", "-q", "-c", "import sys; sys.exit(3)", "python"],
        capture_output=True, env=_env(fake), cwd=tmp_path, timeout=60,
    )
    assert proc.returncode == 3
    assert proc.stdout == b"" and proc.stderr == b"bye\n"


def test_error_exit_status(fake: FakeManager, tmp_path: Path) -> None:
    proc = subprocess.run(
        [*_cli(), "session", "info", "no-such-session"],
        capture_output=True, env=_env(fake), cwd=tmp_path, timeout=60,
    )
    assert proc.returncode == 1
    assert b"No such session." in proc.stderr


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["session", "ls", "--help"]])
def test_help_does_not_import_heavy_modules(argv: list[str]) -> None:
    code = (
        "import sys\n"
        "from bai.client.cli.main import cli\n"
        "try:\n"
        f"    cli.main({argv!r}, prog_name='backend.ai')\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('aiohttp', 'rich', 'yarl', 'asyncio', 'dateutil') if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in proc.stderr, proc.stderr


def test_preload_aiohttp_restores_ssl() -> None:
    code = (
        "import ssl, sys\n"
        "from bai.client.config import APIConfig\n"
        "from bai.client.cli.common import preload_aiohttp\n"
        "before = ssl.create_default_context().cert_store_stats()\n"
        "preload_aiohttp(APIConfig(endpoints=['https://example.invalid']))\n"
        "assert 'aiohttp' not in sys.modules  # TLS endpoint: left to the normal import\n"
        "preload_aiohttp(APIConfig(endpoints=['http://127.0.0.1:8081']))\n"
        "assert 'aiohttp' in sys.modules\n"
        "assert 'set_default_verify_paths' not in ssl.SSLContext.__dict__\n"
        "assert ssl.create_default_context().cert_store_stats() == before\n"
        "print('OK')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "OK", proc.stderr
