"""Service ports on the agent: what a kernel publishes, and starting a service on demand.

* :class:`ImageServices` reads an image's service definitions
  (``/etc/backend.ai/service-defs/*.json``) once per image ID, from a created-but-never-started
  container, and keeps them in memory; heartbeats warm it for every local kernel image, so a
  kernel creation normally reads nothing.
* :func:`plan_service_ports` turns the image's ``ai.backend.service-ports`` label plus the
  intrinsic services it defines (``ttyd``, ``sshd``) into the kernel's service ports;
  :func:`publish` gives them host ports from the agent's :class:`~.ports.PortPool` and puts the
  bindings (on ``[container] bind-host`` only) into the create-container body, with a label that
  lets a restarted agent rebuild both (:func:`restore_from_labels`).
* :func:`start_service` checks a client's ``start_service`` request (known service, allowed
  arguments and envs) and has the kernel runner start it (:mod:`bai.kernel.services`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import posixpath
import secrets
import tarfile
import time
from collections.abc import Iterable, Mapping
from typing import Any

import aiodocker
from aiodocker.exceptions import DockerError

from bai.common.agent_rpc import InvalidInput
from bai.common.service_ports import (
    INTRINSIC_SERVICES,
    LABEL_SERVICE_PORTS,
    SERVICE_DEFS_DIR,
    ServiceDefinition,
    ServicePort,
    ServicePortError,
    check_client_options,
    parse_service_definition,
    parse_service_ports,
)
from bai.common.tasks import raise_if_cancelling

from .ports import PortPool

log = logging.getLogger(__name__)

#: What a kernel container's label keeps of its service ports (JSON list of stored shapes).
LABEL_KERNEL_SERVICE_PORTS = "ai.backend.internal.service-ports"
LABEL_ENDPOINT_PORTS = "ai.backend.endpoint-ports"
#: Bounds on reading an image's definitions (image-author input).
MAX_DEFINITION_FILES = 64
MAX_ARCHIVE_BYTES = 4 * 2**20
#: How long reading one image's definitions may take.
READ_TIMEOUT = 30.0
#: How long the runner may take to get a service listening, and the RPC's margin on top.
SERVICE_START_TIMEOUT = 60.0
#: How long a shutdown-service waits for the runner (which kills a service after a few seconds).
SERVICE_STOP_TIMEOUT = 15.0


class ImageServices:
    """Service definitions of local images, by image ID (a retagged image is read again)."""

    def __init__(self, docker: aiodocker.Docker) -> None:
        self.docker = docker
        #: image ID -> its definitions (name -> definition).
        self._by_id: dict[str, dict[str, ServiceDefinition]] = {}
        #: canonical name -> image ID, as the last heartbeat (or inspect) saw it.
        self._ids: dict[str, str] = {}
        self._loading: dict[str, asyncio.Task[dict[str, ServiceDefinition]]] = {}
        #: Removals of probes whose create was cut short (kept referenced until done).
        self._removing: set[asyncio.Task[None]] = set()

    def note_images(self, images: Iterable[Mapping[str, Any]]) -> None:
        """The local kernel images a heartbeat listed (``canonical``, ``digest`` = image ID):
        remember their IDs and start reading the definitions of new ones in the background."""
        ids: dict[str, str] = {}
        for image in images:
            canonical, image_id = image.get("canonical"), image.get("digest")
            if isinstance(canonical, str) and isinstance(image_id, str):
                ids[canonical] = image_id
                if image_id not in self._by_id:
                    self._load(image_id)
        self._ids.update(ids)
        for stale in set(self._by_id) - set(self._ids.values()) - set(self._loading):
            del self._by_id[stale]

    async def definitions(self, canonical: str) -> dict[str, ServiceDefinition]:
        """The definitions of the image ``canonical`` names (``{}`` when it has none)."""
        image_id = self._ids.get(canonical)
        if image_id is None:
            info = await self.docker.images.inspect(canonical)
            image_id = str(info["Id"])
            self._ids[canonical] = image_id
        if (found := self._by_id.get(image_id)) is not None:
            return found
        return await asyncio.shield(self._load(image_id))

    def _load(self, image_id: str) -> asyncio.Task[dict[str, ServiceDefinition]]:
        if (task := self._loading.get(image_id)) is not None:
            return task
        task = asyncio.create_task(self._read(image_id), name=f"service-defs-{image_id[:19]}")
        self._loading[image_id] = task

        def done(t: asyncio.Task[dict[str, ServiceDefinition]]) -> None:
            self._loading.pop(image_id, None)
            if not t.cancelled() and t.exception() is None:
                self._by_id[image_id] = t.result()
            elif not t.cancelled():
                log.warning("image %s: cannot read its service definitions: %r", image_id[:19], t.exception())

        task.add_done_callback(done)
        return task

    async def _read(self, image_id: str) -> dict[str, ServiceDefinition]:
        # Named before it exists, so that it is removed even when the create's answer is lost
        # (the timeout or a stop cancelling us while Docker makes it); the removal is shielded
        # from that cancellation. A leftover probe would keep its image from being removed.
        name = f"{PROBE_PREFIX}{secrets.token_hex(8)}"
        container = None
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                container = await self.docker.containers.create({
                    "Image": image_id, "Cmd": ["/nonexistent"], "NetworkDisabled": True,
                    "Labels": {PROBE_LABEL: PROBE_PURPOSE}}, name=name)
                try:
                    archive = await container.get_archive(SERVICE_DEFS_DIR)
                except DockerError as exc:
                    if exc.status == 404 and "no such container" not in str(exc.message).lower():
                        return {}  # the image has no definitions (not: our probe was swept away)
                    raise
                return _definitions_from_tar(archive)
        finally:
            if container is not None:
                await asyncio.shield(_remove_probe(self.docker, name))
            else:  # the create's answer was lost: Docker may make the probe after we gave up
                task = asyncio.create_task(_remove_probe(self.docker, name, settle=PROBE_SETTLE),
                                           name=f"remove-{name}")
                self._removing.add(task)
                task.add_done_callback(self._removing.discard)

    async def sweep(self) -> None:
        """Remove probes older than ``PROBE_MAX_AGE`` (of agent processes killed mid-read, any
        agent on this engine: a live one's probe lives seconds). Never raises."""
        try:
            found = await self.docker.containers.list(
                all=True, filters=json.dumps({"label": [f"{PROBE_LABEL}={PROBE_PURPOSE}"]}))
            now = time.time()
            for container in found:
                created = container["Created"] if "Created" in container else now
                if isinstance(created, int | float) and now - created > PROBE_MAX_AGE:
                    log.info("removing a leftover service-definition probe %s", container.id[:12])
                    await _remove_probe(self.docker, container.id)
        except Exception as exc:
            log.warning("cannot remove leftover service-definition probes: %r", exc)


#: Service-definition probes: created, never started, removed after reading.
PROBE_LABEL, PROBE_PURPOSE, PROBE_PREFIX = "ai.backend.internal.purpose", "read-service-defs", "bai-svcdefs-"
#: Seconds after which a probe is a leftover (far above READ_TIMEOUT).
PROBE_MAX_AGE = 600.0


#: Seconds a probe whose create was cut short is looked for (Docker finishes a create whose
#: client went away).
PROBE_SETTLE = 15.0


async def _remove_probe(docker: aiodocker.Docker, ref: str, settle: float = 0.0) -> None:
    """Remove the probe ``ref``; with ``settle``, keep trying that long while it does not exist."""
    end = time.monotonic() + settle
    while True:
        try:
            await docker.containers.container(ref).delete(force=True)
            return
        except DockerError as exc:
            if exc.status != 404:
                log.warning("cannot remove the service-definition probe %s: %s", ref, exc.message)
                return
        except Exception as exc:  # Docker unreachable: the sweep at the next start removes it
            raise_if_cancelling()
            log.warning("cannot remove the service-definition probe %s: %r", ref, exc)
            return
        if time.monotonic() >= end:
            return  # never made, or gone already
        await asyncio.sleep(0.25)


def _definitions_from_tar(archive: tarfile.TarFile) -> dict[str, ServiceDefinition]:
    out: dict[str, ServiceDefinition] = {}
    total = 0
    with archive:
        for member in archive.getmembers()[: MAX_DEFINITION_FILES * 2]:
            base = posixpath.basename(member.name)
            if not member.isfile() or not base.endswith(".json") or posixpath.dirname(member.name).count("/"):
                continue
            name = base[: -len(".json")]
            total += member.size
            if total > MAX_ARCHIVE_BYTES or len(out) >= MAX_DEFINITION_FILES:
                log.warning("service definitions: more than the limit; %s and later ones skipped", base)
                break
            f = archive.extractfile(member)
            if f is None:
                continue
            try:
                out[name] = parse_service_definition(name, f.read())
            except ServicePortError as exc:
                # One bad file does not take the image's other services down.
                log.warning("image service definition skipped: %s", exc)
    return out


def plan_service_ports(labels: Mapping[str, str], definitions: Mapping[str, ServiceDefinition]) -> list[ServicePort]:
    """The service ports a kernel of this image gets (no host ports yet); raises
    :class:`ServicePortError` for an invalid label."""
    endpoint_ports = [p.strip() for p in (labels.get(LABEL_ENDPOINT_PORTS) or "").split(",") if p.strip()]
    declared = parse_service_ports(labels.get(LABEL_SERVICE_PORTS), endpoint_ports=endpoint_ports)
    declared += [ServicePort(name=name, protocol=proto, container_ports=(port,))  # type: ignore[arg-type]
                 for name, (proto, port) in INTRINSIC_SERVICES.items() if name in definitions]
    out = []
    for sp in declared:
        definition = definitions.get(sp.name)
        if definition is not None:
            sp = sp.model_copy(update={
                "url_template": definition.url_template,
                "allowed_arguments": tuple(definition.allowed_arguments),
                "allowed_envs": tuple(definition.allowed_envs)})
        out.append(sp)
    return out


def publish(kernel_id: str, planned: list[ServicePort], pool: PortPool, body: dict[str, Any],
            raw_label: str | None) -> list[ServicePort]:
    """Give ``planned`` host ports from ``pool`` and add the bindings to the create-container
    ``body`` (TCP, on the pool's bind host only). Returns the ports with their host ports."""
    # The raw label, as the original passes it to every kernel.
    body.setdefault("Env", []).append(f"BACKENDAI_SERVICE_PORTS={raw_label or ''}")
    wanted = sum(len(sp.container_ports) for sp in planned)
    if not wanted:
        return []
    host_ports = iter(pool.allocate(kernel_id, wanted))
    published = [sp.model_copy(update={"host_ports": tuple(next(host_ports) for _ in sp.container_ports)})
                 for sp in planned]
    exposed: dict[str, dict[str, Any]] = {}
    bindings: dict[str, list[dict[str, str]]] = {}
    for sp in published:
        for container_port, host_port in zip(sp.container_ports, sp.host_ports, strict=True):
            exposed[f"{container_port}/tcp"] = {}
            bindings[f"{container_port}/tcp"] = [{"HostIp": pool.bind_host, "HostPort": str(host_port)}]
    body["ExposedPorts"] = {**body.get("ExposedPorts", {}), **exposed}
    host_config = body.setdefault("HostConfig", {})
    host_config["PortBindings"] = {**host_config.get("PortBindings", {}), **bindings}
    body.setdefault("Labels", {})[LABEL_KERNEL_SERVICE_PORTS] = json.dumps([sp.stored() for sp in published])
    return published


def restore_from_labels(kernel_id: str, labels: Mapping[str, str], pool: PortPool) -> list[ServicePort]:
    """The service ports a container was created with (its label), taken in ``pool`` again."""
    try:
        items = json.loads(labels.get(LABEL_KERNEL_SERVICE_PORTS) or "[]")
        ports = [ServicePort.model_validate(item) for item in items]
    except ValueError as exc:
        log.warning("kernel %s: unreadable service-ports label: %s", kernel_id, exc)
        return []
    pool.restore(kernel_id, [p for sp in ports for p in sp.host_ports])
    return ports


def start_request(name: str, ports: list[ServicePort], definitions: Mapping[str, ServiceDefinition],
                  runtime_path: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The runner's ``start-service`` message for a client's request, or :class:`InvalidInput`
    (unknown service -- the known ones are listed --, arguments or envs not allowed)."""
    found = next((sp for sp in ports if sp.name == name), None)
    if found is None:
        known = ", ".join(sp.name for sp in ports) or "none"
        raise InvalidInput(f"the kernel has no service {name!r} (its services: {known})", title="Unknown service")
    if found.protocol == "preopen":
        raise InvalidInput(f"service {name!r} is a preopen port: the session's own code serves it, "
                           "nothing is started", title="Not a startable service")
    definition = definitions.get(name)
    if definition is None:
        raise InvalidInput(f"the image has no definition of service {name!r} ({SERVICE_DEFS_DIR}/{name}.json)",
                           title="Unknown service")
    try:
        arguments, envs = check_client_options(name, definition, options.get("arguments"), options.get("envs"))
    except ServicePortError as exc:
        raise InvalidInput(str(exc), title="Service option not allowed") from None
    return {"op": "start-service", "name": name, "protocol": found.protocol,
            "ports": list(found.container_ports), "definition": definition.model_dump(mode="json"),
            "arguments": arguments, "envs": envs, "runtime_path": runtime_path,
            "timeout": SERVICE_START_TIMEOUT}
