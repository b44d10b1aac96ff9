"""The kernel images role: the python image (with the web terminal) and the JupyterLab image
layered on it. Built by the project's scripts (idempotent: a current image is one `docker image
inspect`), they carry the build labels the role checks, a rerun of either script changes
nothing, the installer's plan for this machine leaves both alone, and the labels and service
definitions inside the images pass the parsers the manager and the agent use."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from bai.common.service_ports import SERVICE_DEFS_DIR, parse_service_definition, parse_service_ports
from roles import kernel_image
from roles.settings import Settings

REPO = Path(__file__).resolve().parents[2]
SETTINGS = Settings()
BUILD_LABEL = '{{index .Config.Labels "ai.backend.internal.build-script"}}'


def build(script: str, *args: str) -> str:
    r = subprocess.run(["bash", str(REPO / "roles/files" / script), *args], capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout.strip()


@pytest.fixture(scope="module")
def images() -> tuple[str, str]:
    build("build-kernel-image.sh", SETTINGS.kernel_image.image, SETTINGS.kernel_image.rootfs_cache)
    build("build-jupyter-image.sh", SETTINGS.kernel_image.jupyter_image, SETTINGS.kernel_image.rootfs_cache,
          SETTINGS.kernel_image.jupyter_rootfs_cache)
    return SETTINGS.kernel_image.image, SETTINGS.kernel_image.jupyter_image


def labels(tag: str) -> dict[str, str]:
    out = subprocess.run(["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", tag],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    return dict(json.loads(out))


def test_build_ids_are_the_scripts_hashes() -> None:
    files = REPO / "roles/files"
    python_id = hashlib.sha256((files / "build-kernel-image.sh").read_bytes()).hexdigest()[:16]
    jupyter_id = hashlib.sha256((files / "build-jupyter-image.sh").read_bytes()).hexdigest()[:16]
    assert kernel_image.script_build_id() == python_id
    assert kernel_image.jupyter_build_id() == f"{jupyter_id}-{python_id}"


def test_images_carry_their_build_labels_and_a_rerun_changes_nothing(images: tuple[str, str]) -> None:
    python, jupyter = images
    assert labels(python)[kernel_image.BUILD_LABEL] == kernel_image.script_build_id()
    assert labels(jupyter)[kernel_image.BUILD_LABEL] == kernel_image.jupyter_build_id()
    ids = [subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", t], capture_output=True,
                          text=True, check=True, timeout=30).stdout for t in images]
    assert build("build-kernel-image.sh", python, SETTINGS.kernel_image.rootfs_cache) == "exists"
    assert build("build-jupyter-image.sh", jupyter, SETTINGS.kernel_image.rootfs_cache,
                 SETTINGS.kernel_image.jupyter_rootfs_cache) == "exists"
    assert ids == [subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", t], capture_output=True,
                                  text=True, check=True, timeout=30).stdout for t in images]


def test_the_roles_checks_leave_current_images_alone(images: tuple[str, str]) -> None:
    # The shell checks the role's guarded build steps run (a failing check means "build"): the
    # installer's plan for this machine shows no change for either image.
    python, jupyter = images
    for check in (kernel_image._up_to_date(python, kernel_image.script_build_id()),
                  kernel_image._up_to_date(jupyter, kernel_image.jupyter_build_id())):
        assert subprocess.run(["bash", "-c", check], timeout=60).returncode == 0, check
    stale = kernel_image._up_to_date(jupyter, kernel_image.script_build_id())
    assert subprocess.run(["bash", "-c", stale], timeout=60).returncode != 0


def test_labels_and_service_definitions_pass_the_parsers(images: tuple[str, str]) -> None:
    python, jupyter = images
    assert parse_service_ports(labels(python)["ai.backend.service-ports"]) == []
    (port,) = parse_service_ports(labels(jupyter)["ai.backend.service-ports"])
    assert (port.name, port.protocol, port.container_ports) == ("jupyter", "http", (8080,))
    assert labels(jupyter)["ai.backend.runtime-path"] == "/opt/jupyter/bin/python3"
    script = f"cd {SERVICE_DEFS_DIR} && for f in *.json; do printf '%s\\0' \"$f\"; cat \"$f\"; printf '\\0'; done"
    for tag, expected in ((python, {"sshd", "ttyd"}), (jupyter, {"sshd", "ttyd", "jupyter"})):
        out = subprocess.run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", tag, "-c",
                              script], capture_output=True, text=True, check=True, timeout=60).stdout
        parts = out.split("\0")[:-1]
        defs = {name.removesuffix(".json"): parse_service_definition(name, body)
                for name, body in zip(parts[::2], parts[1::2], strict=True)}
        assert set(defs) == expected
    jupyter_def = defs["jupyter"]
    assert jupyter_def.allowed_envs == ["JUPYTER_TOKEN"]
    # No way to switch the token off from a client.
    assert not any("token" in a.lower() for a in jupyter_def.allowed_arguments)


def test_the_jupyter_build_needs_the_python_rootfs(tmp_path: Path) -> None:
    r = subprocess.run(["bash", str(REPO / "roles/files/build-jupyter-image.sh"), "bai.local/test/never-built:x",
                        str(tmp_path / "missing"), str(tmp_path / "cache")], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1 and "run build-kernel-image.sh first" in r.stderr
    assert not (tmp_path / "cache").exists()
