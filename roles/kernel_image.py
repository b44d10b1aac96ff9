"""The kernel images, built offline (debootstrap + ``docker import``): the python image by
``files/build-kernel-image.sh`` (with the web terminal), then the JupyterLab image by
``files/build-jupyter-image.sh`` on a copy of the python rootfs (JupyterLab from PyPI into a
venv). Each is built once per version of its script(s): the image carries the scripts' hash
as a label, so a changed script rebuilds it on the next run, and a rerun with the same
scripts changes nothing. Both reach the manager as every local image does (agent heartbeats);
the manager's fixtures alias them ``python`` and ``python-jupyter``."""

from __future__ import annotations

import hashlib
import shlex
from pathlib import Path

from pyinfra.api import deploy
from pyinfra.operations import files

from . import _ops
from .catalog import Role
from .settings import Settings

SCRIPT = Path(__file__).parent / "files" / "build-kernel-image.sh"
REMOTE_SCRIPT = "/usr/local/lib/bai/build-kernel-image.sh"
JUPYTER_SCRIPT = Path(__file__).parent / "files" / "build-jupyter-image.sh"
REMOTE_JUPYTER_SCRIPT = "/usr/local/lib/bai/build-jupyter-image.sh"
BUILD_LABEL = "ai.backend.internal.build-script"


def script_build_id(script: Path = SCRIPT) -> str:
    """What the script writes into the image's build label (it hashes itself the same way)."""
    return hashlib.sha256(script.read_bytes()).hexdigest()[:16]


def jupyter_build_id() -> str:
    """The JupyterLab image's build label: its script's hash, then the python script's."""
    return f"{script_build_id(JUPYTER_SCRIPT)}-{script_build_id(SCRIPT)}"


def _up_to_date(tag: str, build_id: str) -> str:
    label = shlex.quote(f'{{{{index .Config.Labels "{BUILD_LABEL}"}}}}')
    return f"test \"$(docker image inspect --format {label} {shlex.quote(tag)} 2>/dev/null)\" = {build_id}"


@deploy("kernel_image")
def kernel_image(settings: Settings) -> None:
    tag = shlex.quote(settings.kernel_image.image)
    _ops.packages(name="Install debootstrap", packages=["debootstrap"])
    files.put(name="Install the image build script", src=str(SCRIPT), dest=REMOTE_SCRIPT,
              mode="755")
    _ops.ensure(
        name=f"Build kernel image {settings.kernel_image.image}",
        check=_up_to_date(settings.kernel_image.image, script_build_id()),
        commands=[f"bash {REMOTE_SCRIPT} {tag} {shlex.quote(settings.kernel_image.rootfs_cache)}"],
        noop_message="image is up to date",
    )
    if not settings.kernel_image.jupyter_image:
        return
    files.put(name="Install the JupyterLab image build script", src=str(JUPYTER_SCRIPT),
              dest=REMOTE_JUPYTER_SCRIPT, mode="755")
    # The label names the python build the image was layered on (PYTHON_BUILD_ID), as the
    # check above computes it.
    _ops.ensure(
        name=f"Build kernel image {settings.kernel_image.jupyter_image}",
        check=_up_to_date(settings.kernel_image.jupyter_image, jupyter_build_id()),
        commands=[f"PYTHON_BUILD_ID={script_build_id()} bash {REMOTE_JUPYTER_SCRIPT} "
                  f"{shlex.quote(settings.kernel_image.jupyter_image)} {shlex.quote(settings.kernel_image.rootfs_cache)} "
                  f"{shlex.quote(settings.kernel_image.jupyter_rootfs_cache)}"],
        noop_message="image is up to date",
    )


ROLE = Role(name="kernel_image", groups=("agents",), deploy=kernel_image)
