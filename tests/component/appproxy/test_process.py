"""``bai-app-proxy start --config``: a bad file is refused with its key named (exit 2); a good one
serves /status until SIGTERM, then exits cleanly."""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import tomli_w

from tests.fixtures.halfstack import free_port

CLI = [sys.executable, "-c", "from bai.appproxy.cli import main; main()", "start", "--config"]


def test_a_bad_config_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "app-proxy.toml"
    path.write_text(tomli_w.dumps({"app-proxy": {"jwt-encrypt-key": "short", "permit-hash-key": "p" * 32,
                                                 "api-secret": "a" * 32}}))
    proc = subprocess.run([*CLI, str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "app-proxy.jwt-encrypt-key" in proc.stderr


def test_serves_until_sigterm(tmp_path: Path) -> None:
    port, circuit_port = free_port(), free_port()
    path = tmp_path / "app-proxy.toml"
    path.write_text(tomli_w.dumps({"app-proxy": {
        "bind-api-port": port, "bind-proxy-port-range": [circuit_port, circuit_port],
        "jwt-encrypt-key": secrets.token_hex(32), "permit-hash-key": secrets.token_hex(32),
        "api-secret": secrets.token_hex(16), "watch-sessions": False}}))
    proc = subprocess.Popen([*CLI, str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as resp:
                    assert json.loads(resp.read())["status"] == "healthy"
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout and proc.stdout.read()
                time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
