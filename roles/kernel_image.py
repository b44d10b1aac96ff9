"""The python kernel image, built offline (debootstrap + ``docker import``) by
``files/build-kernel-image.sh``. Built once; a rerun finds the tag and changes nothing."""

from __future__ import annotations

import shlex
from pathlib import Path

from pyinfra.api import deploy
from pyinfra.operations import files

from . import _ops
from .settings import Settings

SCRIPT = Path(__file__).parent / "files" / "build-kernel-image.sh"
REMOTE_SCRIPT = "/usr/local/lib/bai/build-kernel-image.sh"


@deploy("kernel_image")
def kernel_image(settings: Settings) -> None:
    tag = shlex.quote(settings.kernel_image)
    _ops.packages(name="Install debootstrap", packages=["debootstrap"])
    files.put(name="Install the image build script", src=str(SCRIPT), dest=REMOTE_SCRIPT,
              mode="755")
    _ops.ensure(
        name=f"Build kernel image {settings.kernel_image}",
        check=f"docker image inspect {tag}",
        commands=[f"bash {REMOTE_SCRIPT} {tag} {shlex.quote(settings.kernel_rootfs_cache)}"],
        noop_message="image exists",
    )
