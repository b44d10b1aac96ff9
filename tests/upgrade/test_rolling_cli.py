"""The manager-host side of a rolling patch step (``python -m installer.upgrade.rolling``): its
credentials come from the files a manager host keeps (client.env, secrets.toml), never from its
command line, and a failure is one JSON line naming the step."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from installer.upgrade import rolling


def test_credentials_come_from_the_manager_hosts_files(tmp_path: Path) -> None:
    (tmp_path / "client.env").write_text(
        "# written by bai-install\nexport BACKEND_ENDPOINT=http://127.0.0.1:8081\n"
        "export BACKEND_ACCESS_KEY=AKIAEXAMPLE\nexport BACKEND_SECRET_KEY='s3cr3t/with=signs'\n"
        'case ":$PATH:" in *) ;; esac\n')
    (tmp_path / "secrets.toml").write_text('rpc_secret = "rpc-xyz"\n')
    control = rolling.control_from_config(tmp_path)
    assert control.api_url == "http://127.0.0.1:8081"
    assert control._keys == ("AKIAEXAMPLE", "s3cr3t/with=signs")
    assert control._rpc_secret == "rpc-xyz"
    (tmp_path / "secrets.toml").write_text("")
    with pytest.raises(RuntimeError, match="no rpc_secret"):
        rolling.control_from_config(tmp_path)


def test_a_failed_step_is_one_json_line(tmp_path: Path) -> None:
    """No client.env here (not a manager host): exit 1 with the reason; and a drained state
    round-trips through its JSON (what the playbook passes from `drain` to `ready`)."""
    run = subprocess.run([sys.executable, "-m", "installer.upgrade.rolling", "--config-dir", str(tmp_path),
                          "drain", "i-x"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert json.loads(run.stdout.strip().splitlines()[-1])["error"].startswith("drain: ")
    drained = rolling.Drained("i-x", True, ["k1"], "1.1", 1.0, 2.0)
    assert rolling.Drained.from_dict(json.loads(json.dumps(drained.as_dict()))) == drained
