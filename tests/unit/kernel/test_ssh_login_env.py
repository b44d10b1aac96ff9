"""The sshd's environment for its logins (bai.kernel.services): the kernel's PATH, the image's
venv first, restored by the first bash of a login through BASH_ENV, which then drops the hook."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pytest

from bai.kernel import services


def test_the_first_shell_gets_the_kernel_path_and_drops_the_hook(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "BACKENDAI_CLUSTER_HOST": "sub1"}
    services._ssh_login_env(env, {"venv_path": str(venv)})
    assert env["BAI_KERNEL_PATH"] == f"{venv}/bin:/usr/local/bin:/usr/bin:/bin"
    assert Path(env["BASH_ENV"]) == tmp_path / "bai-ssh-env.sh"
    # what dropbear does to PATH, then a login's command and a shell it starts
    login = {**env, "PATH": "/usr/bin:/bin"}
    out = subprocess.run(["/bin/bash", "-c", 'echo "$PATH|${BASH_ENV-}|${BAI_KERNEL_PATH-}"; '
                          'PATH=/mine:$PATH bash -c \'echo "$PATH"\''],
                         env=login, capture_output=True, text=True, timeout=30, check=True).stdout
    assert out.splitlines() == [f"{env['BAI_KERNEL_PATH']}||", f"/mine:{env['BAI_KERNEL_PATH']}"]
    # no venv: the kernel's PATH as it is
    plain = {"PATH": "/usr/bin:/bin"}
    services._ssh_login_env(plain, {"venv_path": str(tmp_path / "none")})
    assert plain["BAI_KERNEL_PATH"] == "/usr/bin:/bin"
