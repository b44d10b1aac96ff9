"""The storage proxy (``bai-storage-proxy``): its config, its volume directory, its service, and
the etcd keys through which the manager finds it (``volumes/...``, the original's layout).

* ``/etc/backend.ai/storage-proxy.toml`` (root:bai-storage, mode 640: it holds both secrets) from the settings;
  the two secrets (``storage_secret`` signs the client-facing JWTs, ``storage_manager_secret`` is
  the ``X-BackendAI-Storage-Auth-Token`` the manager sends) are generated once and kept in the
  secrets file like the others.
* The proxy runs as the system account ``bai-storage`` with three capabilities and nothing else
  of root's: CAP_CHOWN (it makes each folder and file owned by the kernel's uid/gid 1000, so a
  session writes into the folders it mounts and nowhere else), CAP_DAC_OVERRIDE and CAP_FOWNER
  (it reads and writes in those folders, which it does not own). systemd gives them through
  ``AmbientCapabilities=`` (bounding set the same, no new privileges); under supervisord the
  program is started by ``setpriv``, which drops to the account keeping just those. No
  CAP_SYS_ADMIN, CAP_NET_*, CAP_SETUID or module loading.
* The volume directory (``/var/lib/bai/vfroot/local``) is root-owned 0755: only the proxy
  creates quota-scope and folder directories in it.
* The proxy restarts only when its config or the installed code changed (a code stamp next to
  the other daemons' stamps), and the role waits until ``GET /status`` on the manager-facing
  port answers ``{"status": "ok"}``.
* etcd keys are written with etcdctl (the proxy's host needs only etcd, as on a storage-only
  node), each only when etcd holds another value; the manager secret is piped from the proxy's
  own config into ``etcdctl put`` so it never appears on a command line.
"""

from __future__ import annotations

import shlex
from typing import Any

import tomli_w
from pyinfra.api import deploy
from pyinfra.operations import files

from . import _ops
from ._service import Service, ensure_service
from .bai import unit_text, unprivileged_daemon_files
from .catalog import PortUse, Role, host_port
from .settings import Settings

#: The kernel's uid/gid inside sessions ("work"); the proxy makes folders owned by it.
KERNEL_UID = 1000
#: The proxy's system account.
USER = "bai-storage"
#: All the proxy keeps of root's powers (see the module doc).
CAPABILITIES = ("chown", "dac_override", "fowner")


def host_name(settings: Settings) -> str:
    """The volume host as the manager and clients name it: ``<proxy>:<volume>``."""
    return f"{settings.storage_proxy.name}:{settings.storage_proxy.volume_name}"


def config(settings: Settings) -> dict[str, Any]:
    """storage-proxy.toml, exactly the keys the proxy reads."""
    return {
        "etcd": {"namespace": settings.etcd.namespace, "addr": settings.etcd.addr},
        "storage-proxy": {
            "node-id": settings.storage_proxy.node_id,
            "secret": settings.storage_proxy.secret,
            "session-expire": settings.storage_proxy.session_expire,
            "max-upload-size": settings.storage_proxy.max_upload_size,
            "scandir-limit": settings.storage_proxy.scandir_limit,
        },
        "api": {
            "client": {"service-addr": settings.storage_proxy.client_addr},
            "manager": {
                "service-addr": settings.storage_proxy.manager_addr,
                "secret": settings.storage_proxy.manager_secret,
            },
        },
        "volume": {
            settings.storage_proxy.volume_name: {
                "backend": settings.storage_proxy.volume_backend,
                "path": settings.storage_proxy.volume_path,
            },
        },
        "logging": {"level": settings.log_level},
    }


def config_text(settings: Settings) -> str:
    return "# managed by bai-install; changes are overwritten\n" + tomli_w.dumps(config(settings))


def service(settings: Settings) -> Service:
    cmd = f"{settings.bin('bai-storage-proxy')} start --config {settings.storage_proxy_toml}"
    status = shlex.quote(f"{settings.storage_proxy.manager_endpoint}/status")
    caps = ",".join(f"+{cap}" for cap in CAPABILITIES)
    # supervisord can switch users but not keep capabilities: setpriv (util-linux) does both,
    # then execs the proxy (same pid, so supervisord's signals reach it)
    dropped = (f"/usr/bin/setpriv --reuid={USER} --regid={USER} --init-groups --reset-env --no-new-privs "
               f"--inh-caps=-all,{caps} --ambient-caps=-all,{caps} --bounding-set=-all,{caps} -- {cmd}")
    return Service(
        name="storage-proxy",
        unit="bai-storage-proxy.service",
        command=dropped,
        ready=f"{settings.bin('python')} -m installer.probe http-json {status} --expect status=ok",
        unit_text=unit_text("bai storage proxy (virtual folders)", cmd,
                            f"{settings.log_dir}/storage-proxy.log", "etcd.service", user=USER,
                            capabilities=[f"CAP_{cap.upper()}" for cap in CAPABILITIES]),
        log_dir=settings.log_dir,
        stopwaitsecs=30,
    )


def etcd_entries(settings: Settings) -> list[tuple[str, str]]:
    """(key, value) of the plain keys; ``_types`` keys enable an ownership type by being there
    (value empty, as the original's sample)."""
    proxy = f"volumes/proxies/{settings.storage_proxy.name}"
    return [
        ("volumes/_types/group", ""),
        ("volumes/_types/user", ""),
        ("volumes/default_host", host_name(settings)),
        ("volumes/exposed_volume_info", settings.storage_proxy.exposed_volume_info),
        (f"{proxy}/client_api", settings.storage_proxy.client_endpoint),
        (f"{proxy}/manager_api", settings.storage_proxy.manager_endpoint),
        (f"{proxy}/ssl_verify", "false"),
    ]


def secret_key(settings: Settings) -> str:
    return f"volumes/proxies/{settings.storage_proxy.name}/secret"


def _manager_secret_expr(settings: Settings) -> str:
    """A shell expression expanding to ``[api.manager].secret`` read from the proxy's config on
    the host (empty while the file is absent)."""
    code = ('import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))'
            '["api"]["manager"]["secret"], end="")')
    return (f'"$({settings.bin("python")} -c {shlex.quote(code)} '
            f'{shlex.quote(settings.storage_proxy_toml)} 2>/dev/null)"')


def etcd_steps(settings: Settings) -> list[tuple[str, str, str]]:
    """(key, check, command) per etcd key: ``check`` (shell) succeeds when etcd holds the wanted
    value, ``command`` writes it."""
    etcdctl = f"ETCDCTL_API=3 etcdctl --endpoints={settings.etcd.endpoint} --dial-timeout=3s"
    steps = []
    for key, value in etcd_entries(settings):
        full = shlex.quote(f"/sorna/{settings.etcd.namespace}/{key}")
        # --keys-only tells a key holding "" from a missing key
        present = f'[ "$({etcdctl} get {full} --keys-only)" = {full} ]'
        steps.append((
            key,
            f'{present} && [ "$({etcdctl} get {full} --print-value-only)" = {shlex.quote(value)} ]',
            f"{etcdctl} put {full} -- {shlex.quote(value)} >/dev/null",
        ))
    key = secret_key(settings)
    full = shlex.quote(f"/sorna/{settings.etcd.namespace}/{key}")
    value = _manager_secret_expr(settings)
    steps.append((
        key,
        f'v="$({etcdctl} get {full} --print-value-only)"; [ -n "$v" ] && [ "$v" = {value} ]',
        f'v={value}; test -n "$v" && printf %s "$v" | {etcdctl} put {full} >/dev/null',
    ))
    return steps


@deploy("storage-proxy")
def storage_proxy(settings: Settings) -> None:
    _ops.packages(name="Install etcd client", packages=["etcd-client"])
    program = settings.bin("bai-storage-proxy")
    _ops.ensure(
        name="Check bai-storage-proxy is installed",
        check=f"test -x {program}",
        commands=[f"echo '{program} is missing: run installer/bootstrap.sh on this host' >&2; exit 1"],
        noop_message=f"{program} present",
    )
    # (the secrets file is kept here too, as every role that uses a secret does, so a storage-only
    # host reuses its own secrets on the next run)
    conf, code = unprivileged_daemon_files(settings, account=USER, label="storage proxy", stamp="storage-proxy",
                                           config_path=settings.storage_proxy_toml, config_text=config_text(settings))
    # (missing parents are made 0755; existing ones, e.g. an NFS mount point, are left alone)
    files.directory(name=f"Volume {settings.storage_proxy.volume_name} at {settings.storage_proxy.volume_path}",
                    path=settings.storage_proxy.volume_path, user="root", group="root", mode="755")
    ensure_service(service(settings), configs=[conf, code], timeout=settings.ready_timeout)
    # (advertised to the manager once the proxy answers)
    for key, check, command in etcd_steps(settings):
        _ops.ensure(name=f"etcd key {key}", check=check, commands=[command],
                    noop_message=f"{key} is current")


def ports(settings: Settings) -> list[PortUse]:
    client = host_port(settings.storage_proxy.client_addr)
    manager = host_port(settings.storage_proxy.manager_addr)
    return [PortUse(client[1], client[0], "storage proxy client API"),
            PortUse(manager[1], manager[0], "storage proxy manager API")]


ROLE = Role(name="storage-proxy", groups=("storage",), deploy=storage_proxy,
            services=lambda s: [service(s)], ports=ports)
