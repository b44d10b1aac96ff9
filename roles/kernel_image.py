"""The python kernel image, built offline (debootstrap + ``docker import``) by
``files/build-kernel-image.sh``. Built once per version of the script: the image carries the
script's hash as a label, so a changed script (e.g. a new kernel user) rebuilds it on the next
run, and a rerun with the same script changes nothing."""

from __future__ import annotations

import hashlib
import shlex
from pathlib import Path

from pyinfra.api import deploy
from pyinfra.operations import files

from . import _ops
from .settings import Settings

SCRIPT = Path(__file__).parent / "files" / "build-kernel-image.sh"
REMOTE_SCRIPT = "/usr/local/lib/bai/build-kernel-image.sh"
BUILD_LABEL = "ai.backend.internal.build-script"


def script_build_id(script: Path = SCRIPT) -> str:
    """What the script writes into the image's build label (it hashes itself the same way)."""
    return hashlib.sha256(script.read_bytes()).hexdigest()[:16]


@deploy("kernel_image")
def kernel_image(settings: Settings) -> None:
    tag = shlex.quote(settings.kernel_image)
    _ops.packages(name="Install debootstrap", packages=["debootstrap"])
    files.put(name="Install the image build script", src=str(SCRIPT), dest=REMOTE_SCRIPT,
              mode="755")
    label = shlex.quote(f'{{{{index .Config.Labels "{BUILD_LABEL}"}}}}')
    _ops.ensure(
        name=f"Build kernel image {settings.kernel_image}",
        check=f"test \"$(docker image inspect --format {label} {tag} 2>/dev/null)\" = {script_build_id()}",
        commands=[f"bash {REMOTE_SCRIPT} {tag} {shlex.quote(settings.kernel_rootfs_cache)}"],
        noop_message="image is up to date",
    )
