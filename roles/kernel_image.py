"""The kernel images, built offline (debootstrap + ``docker import``): the python image by
``files/build-kernel-image.sh`` (with the web terminal), then the JupyterLab image by
``files/build-jupyter-image.sh`` on a copy of the python rootfs (JupyterLab from PyPI into a
venv). Each is built once per version of its script(s): the image carries the scripts' hash
as a label, so a changed script rebuilds it on the next run, and a rerun with the same
scripts changes nothing. Both reach the manager as every local image does (agent heartbeats);
the manager's fixtures alias them ``python`` and ``python-jupyter``.

With the container registry on (``registry.enabled`` in the agents' data too, roles/registry.py),
each agent trusts the registry's CA (TLS), and the *builder* (``registry.builder``, an
``agent.id``; "" = every agent) builds the images, tags them
``<registry host:port>/<registry.project>/<name>:<tag>`` and pushes them, once per build (a
push is skipped while the registry serves the digest the image was pushed as). The other agents
build nothing: they pull the images on first use, with the credentials the manager hands them.
Where the builder has the admin's client env (the manager's host) it also runs the manager's
rescan of the registry, once per pushed build; elsewhere the builder's heartbeats register the
pushed names, and ``backend.ai admin image rescan -r <host:port>`` adds the registry's view."""

from __future__ import annotations

import base64
import hashlib
import json
import shlex
from io import StringIO
from pathlib import Path

from pyinfra.api import deploy
from pyinfra.operations import files

from . import _ops
from . import registry as registry_role
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


def images(settings: Settings) -> list[str]:
    """The local tags of the kernel images this role builds."""
    k = settings.kernel_image
    return [k.image] + ([k.jupyter_image] if k.jupyter_image else [])


def registry_ref(settings: Settings, local: str) -> str:
    """``bai.local/stable/python:3.11-debian12`` -> ``<host:port>/<project>/python:3.11-debian12``."""
    return f"{registry_role.hostname(settings)}/{settings.registry.project}/{local.rsplit('/', 1)[-1]}"


def docker_config_dir(settings: Settings) -> str:
    """The Docker client config ``docker push`` uses (the registry's credentials; root's only)."""
    return f"{settings.config_dir}/registry-docker"


def docker_config_text(settings: Settings) -> str:
    auth = base64.b64encode(f"{settings.registry.username}:{settings.registry.password}".encode()).decode()
    return json.dumps({"auths": {registry_role.hostname(settings): {"auth": auth}}}, indent=2) + "\n"


def is_builder(settings: Settings) -> bool:
    """Whether this agent builds the images (always without a registry)."""
    r = settings.registry
    return not r.enabled or r.builder in ("", settings.agent.id)


def _push_ops(settings: Settings) -> None:
    tls = registry_role.tls_enabled(settings)
    config = docker_config_dir(settings)
    if tls:
        files.directory(name="Registry client config directory", path=config, user="root", group="root",
                        mode="700")
        files.put(name="Registry credentials for docker push", src=StringIO(docker_config_text(settings)),
                  dest=f"{config}/config.json", user="root", group="root", mode="600")
    tool = f"{settings.bin('python')} -m roles._registry_tool"
    where = (f"--cafile {registry_role.SYSTEM_CA}" if tls else "--insecure-http")
    refs = []
    for local in images(settings):
        ref = registry_ref(settings, local)
        refs.append(ref)
        same = (f"[ \"$(docker image inspect -f '{{{{.Id}}}}' {shlex.quote(ref)} 2>/dev/null)\" = "
                f"\"$(docker image inspect -f '{{{{.Id}}}}' {shlex.quote(local)})\" ]")
        _ops.ensure(
            name=f"Push {ref}",
            check=(f"{same} && {tool} pushed {shlex.quote(ref)} --docker-config {config} {where}"),
            commands=[f"docker tag {shlex.quote(local)} {shlex.quote(ref)} && "
                      f"DOCKER_CONFIG={config} docker push {shlex.quote(ref)} >/dev/null"],
            noop_message="the registry serves this build",
        )
    env = shlex.quote(settings.client_env)
    stamp = shlex.quote(f"{settings.state_dir}/registry-rescan.ids")
    ids = f"docker image inspect -f '{{{{.Id}}}}' {' '.join(shlex.quote(r) for r in refs)}"
    _ops.ensure(
        name="Rescan the registry (manager)",
        check=f"[ ! -e {env} ] || [ \"$(cat {stamp} 2>/dev/null)\" = \"$({ids})\" ]",
        commands=[f"set -a; . {env}; set +a; {tool} rescan {shlex.quote(registry_role.hostname(settings))} "
                  f"&& mkdir -p {shlex.quote(settings.state_dir)} && {ids} > {stamp}"],
        noop_message="the manager has scanned these builds (or is not on this host)",
    )


@deploy("kernel_image")
def kernel_image(settings: Settings) -> None:
    if settings.registry.enabled:
        registry_role.trust_ops(settings)
    if not is_builder(settings):
        return  # the images are pulled from the registry on first use
    _build(settings)
    if settings.registry.enabled:
        _push_ops(settings)


def _build(settings: Settings) -> None:
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
