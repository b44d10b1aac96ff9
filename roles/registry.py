"""An optional container registry: Debian's docker-registry (distribution 2.8) on
``registry.listen:registry.port``, run by systemd or supervisor, and registered in etcd as the
original keeps registries (``config/docker/registry/<quoted host:port>`` = URL, ``.../type``,
``.../project``, and with credentials ``.../username`` and ``.../password``), so that
``backend.ai admin image rescan -r <host:port>`` reads it and the manager hands the credentials
to agents with each image they must pull. Off unless the host's data sets ``registry.enabled``
(the catalog's ``enabled`` leaves the role out otherwise).

Two shapes:

* loopback (the default, ``127.0.0.1:5000``): plain HTTP without credentials, which Docker
  accepts for 127.0.0.0/8 without any daemon setting; only local processes reach it.
* any other address, or ``registry.tls``: TLS with a server certificate (SubjectAltName: the
  advertised host) signed by a small CA of this installation, and htpasswd (bcrypt) credentials:
  ``registry.username`` and the generated ``registry_password`` of the secrets file. The CA and
  the server key are *derived* on the controller from another generated secret
  (``registry_ca_seed``), with Ed25519 (deterministic signatures) and a fixed validity, so every
  run writes the same bytes and nothing changes on a re-run; no private key is ever printed or
  put on a command line. Each host that uses the registry (this one, and every agent through
  roles/kernel_image.py) trusts the CA for Docker (``/etc/docker/certs.d/<host:port>/ca.crt``,
  read at each pull: no dockerd restart) and in the system store
  (``/usr/local/share/ca-certificates/bai-registry.crt``, for the manager's rescan). No
  ``insecure-registries`` anywhere.

Sessions may use its images once a domain lists it in ``allowed_docker_registries``: where the
host has the admin's client env file (a manager host), the ``default`` domain gets it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import shlex
from io import StringIO
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files

from . import _ops
from ._common import secret_expr, secrets_file
from ._service import Service, ensure_service
from .catalog import PortUse, Role
from .settings import Settings

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

CONFIG = "/etc/docker/registry/config.yml"
TLS_DIR = "/etc/docker/registry/tls"
SERVER_CERT = f"{TLS_DIR}/server.crt"
SERVER_KEY = f"{TLS_DIR}/server.key"
HTPASSWD = "/etc/docker/registry/htpasswd"
#: The CA in the system store (update-ca-certificates adds it to /etc/ssl/certs).
SYSTEM_CA = "/usr/local/share/ca-certificates/bai-registry.crt"
REALM = "bai-registry"
#: The certificates' validity: fixed, so that the same seed always makes the same bytes.
NOT_BEFORE = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
NOT_AFTER = dt.datetime(2049, 12, 31, tzinfo=dt.UTC)
WILDCARDS = ("0.0.0.0", "::", "")


# -- where it is -------------------------------------------------------------------------------

def _is_loopback(addr: str) -> bool:
    if addr == "localhost":
        return True
    try:
        return ipaddress.ip_address(addr.strip("[]")).is_loopback
    except ValueError:
        return False


def tls_enabled(settings: Settings) -> bool:
    """TLS and credentials: always off loopback, on loopback only when asked."""
    return settings.registry.tls or not _is_loopback(settings.registry.listen)


def advertised_host(settings: Settings) -> str:
    r = settings.registry
    host = r.advertised_host or r.listen
    if host in WILDCARDS:
        raise ValueError(f"registry.listen is {r.listen!r}: set registry.advertised_host to the "
                         "name or address agents reach the registry at")
    return host


def _with_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def hostname(settings: Settings) -> str:
    """The registry's ``host:port`` as etcd, Docker and image names have it."""
    return _with_port(advertised_host(settings), settings.registry.port)


def url(settings: Settings) -> str:
    return f"{'https' if tls_enabled(settings) else 'http'}://{hostname(settings)}"


def docker_ca_path(settings: Settings) -> str:
    """Where Docker looks for the CA of this registry (per host:port, at each pull)."""
    return f"/etc/docker/certs.d/{hostname(settings)}/ca.crt"


# -- the CA and the server certificate (derived on the controller) ------------------------------

def _key(settings: Settings, purpose: str) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    seed = settings.registry.ca_seed
    if not seed:
        raise ValueError("registry_ca_seed is empty: the engine generates it (secrets file)")
    return Ed25519PrivateKey.from_private_bytes(
        hashlib.sha256(f"bai-registry-{purpose}\0{seed}".encode()).digest())


def _serial(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\0".join(parts).encode()).digest()[:16], "big") >> 1 | 1


def ca_pem(settings: Settings) -> str:
    """The installation's registry CA certificate (PEM): public, every user of the registry gets it."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    key = _key(settings, "ca")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bai registry CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(_serial("ca", settings.registry.ca_seed))
        .not_valid_before(NOT_BEFORE).not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, None)
    )
    return cert.public_bytes(Encoding.PEM).decode()


def server_cert_pem(settings: Settings) -> str:
    """The registry's certificate, for its advertised host (an IP or DNS SubjectAltName)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_key, key = _key(settings, "ca"), _key(settings, "server")
    host = advertised_host(settings)
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        alt = x509.DNSName(host)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bai registry CA")]))
        .public_key(key.public_key())
        .serial_number(_serial("server", settings.registry.ca_seed, host))
        .not_valid_before(NOT_BEFORE).not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, None)
    )
    return cert.public_bytes(Encoding.PEM).decode()


def server_key_pem(settings: Settings) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    return _key(settings, "server").private_bytes(Encoding.PEM, PrivateFormat.PKCS8,
                                                  NoEncryption()).decode()


# -- config, service, etcd -----------------------------------------------------------------------

def config_text(settings: Settings) -> str:
    r = settings.registry
    text = (
        "# managed by bai-install; changes are overwritten\n"
        "version: 0.1\n"
        "log:\n  level: info\n  fields:\n    service: registry\n"
        "storage:\n"
        f"  filesystem:\n    rootdirectory: {r.data_dir}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: {_with_port(r.listen, r.port)}\n"
        "  headers:\n    X-Content-Type-Options: [nosniff]\n"
    )
    if tls_enabled(settings):
        text += (f"  tls:\n    certificate: {SERVER_CERT}\n    key: {SERVER_KEY}\n"
                 f"auth:\n  htpasswd:\n    realm: {REALM}\n    path: {HTPASSWD}\n")
    return text


def ready_check(settings: Settings) -> str:
    if not tls_enabled(settings):
        return f"curl -fsS -o /dev/null --max-time 2 http://{hostname(settings)}/v2/"
    # Up, serving our certificate for the advertised name, and asking for credentials. The
    # advertised name may not resolve here: connect to the listen address (loopback for a
    # wildcard) instead.
    r = settings.registry
    connect = "127.0.0.1" if r.listen in WILDCARDS else r.listen
    return (f"[ \"$(curl -sS -o /dev/null -w '%{{http_code}}' --max-time 2 --cacert {SYSTEM_CA} "
            f"--resolve {shlex.quote(f'{advertised_host(settings)}:{r.port}:{connect}')} "
            f"{url(settings)}/v2/)\" = 401 ]")


def service(settings: Settings) -> Service:
    return Service(
        name="registry",
        unit="docker-registry.service",
        command=f"/usr/bin/docker-registry serve {CONFIG}",
        user="docker-registry",
        ready=ready_check(settings),
        log_dir=settings.log_dir,
        directory=settings.registry.data_dir,
    )


def _key_path(settings: Settings) -> str:
    return f"config/docker/registry/{quote(hostname(settings), safe='')}"


def etcd_entries(settings: Settings) -> list[tuple[str, str]]:
    """(key, value) pairs registering the registry, as the original's etcd layout has them
    (the password, a secret, is written separately: :func:`_register_ops`)."""
    key = _key_path(settings)
    entries = [(key, url(settings)), (f"{key}/type", "docker"), (f"{key}/project", settings.registry.project)]
    if tls_enabled(settings):
        entries.append((f"{key}/username", settings.registry.username))
    return entries


def _register_ops(settings: Settings) -> list[Any]:
    """Each key written (with etcdctl, which needs only etcd) when etcd holds another value; the
    password is piped from the secrets file into ``etcdctl put`` (never on a command line)."""
    etcdctl = f"ETCDCTL_API=3 etcdctl --endpoints={settings.etcd.endpoint} --dial-timeout=3s"
    ops = []
    keys = [(key, shlex.quote(value), f"{etcdctl} put {{full}} {shlex.quote(value)} >/dev/null")
            for key, value in etcd_entries(settings)]
    if tls_enabled(settings):
        value = secret_expr(settings, "registry_password")
        keys.append((f"{_key_path(settings)}/password", value,
                     f"v={value}; test -n \"$v\"; printf %s \"$v\" | {etcdctl} put {{full}} >/dev/null"))
    for key, value, command in keys:
        full = shlex.quote(f"/sorna/{settings.etcd.namespace}/{key}")
        read = f"{etcdctl} get {full} --print-value-only"
        ops.append(_ops.ensure(
            name=f"etcd key {key}",
            check=f'v="$({read})"; [ -n "$v" ] && [ "$v" = {value} ]',
            commands=[command.replace("{full}", full)],
            noop_message=f"{key} is current",
        ))
    return ops


def trust_ops(settings: Settings) -> list[OperationMeta]:
    """Make this host trust the registry's CA: Docker (per registry, read at each pull) and the
    system store (update-ca-certificates, only when the file changed). Nothing without TLS."""
    if not tls_enabled(settings):
        return []
    ca = ca_pem(settings)
    docker_ca = files.put(name="Trust the registry CA (Docker)", src=StringIO(ca),
                          dest=docker_ca_path(settings), mode="644", create_remote_dir=True)
    system_ca = files.put(name="Trust the registry CA (system store)", src=StringIO(ca), dest=SYSTEM_CA,
                          mode="644")
    _ops.ensure(name="update-ca-certificates", check="false", commands=["update-ca-certificates >/dev/null"],
                _if=system_ca.did_change)
    return [docker_ca, system_ca]


def _tls_ops(settings: Settings) -> list[OperationMeta]:
    """The certificate, its key and the htpasswd file: what a restart must follow."""
    files.directory(name=f"Directory {TLS_DIR}", path=TLS_DIR, user="root", group="docker-registry",
                    mode="750")
    cert = files.put(name="Write the registry certificate", src=StringIO(server_cert_pem(settings)),
                     dest=SERVER_CERT, user="root", group="docker-registry", mode="644")
    key = files.put(name="Write the registry key", src=StringIO(server_key_pem(settings)),
                    dest=SERVER_KEY, user="docker-registry", group="docker-registry", mode="600")
    user = shlex.quote(settings.registry.username)
    pw = secret_expr(settings, "registry_password")
    # bcrypt hashes are salted: the file is written only when the password no longer matches
    # (htpasswd -v), and both read the password on stdin.
    htpasswd = _ops.ensure(
        name=f"Registry credentials ({HTPASSWD}, bcrypt)",
        check=(f"v={pw}; [ \"$(stat -c '%a %U' {HTPASSWD} 2>/dev/null)\" = '600 docker-registry' ] && "
               f"printf %s \"$v\" | htpasswd -v -i {HTPASSWD} {user} >/dev/null 2>&1"),
        commands=[f"v={pw}; test -n \"$v\"; umask 077; printf %s \"$v\" | htpasswd -B -i -c {HTPASSWD} "
                  f"{user} 2>/dev/null && chown docker-registry:docker-registry {HTPASSWD} && "
                  f"chmod 600 {HTPASSWD}"],
        noop_message="credentials are current",
    )
    return [cert, key, htpasswd]


def _allow_op(settings: Settings) -> None:
    """The ``default`` domain may use the registry's images (where the admin's client env is:
    a manager host)."""
    env = shlex.quote(settings.client_env)
    tool = f"{settings.bin('python')} -m roles._registry_tool"
    host = shlex.quote(hostname(settings))
    load = f"set -a; . {env}; set +a"
    _ops.ensure(
        name="Allow the registry in the default domain",
        check=f"[ ! -e {env} ] || ( {load}; {tool} allowed {host} )",
        commands=[f"{load}; {tool} allow {host}"],
        noop_message="the default domain allows it",
    )


@deploy("registry")
def registry(settings: Settings) -> None:
    tls = tls_enabled(settings)
    packages = ["docker-registry", "curl", "etcd-client"] + (["apache2-utils", "ca-certificates"] if tls else [])
    _ops.packages(name="Install docker-registry", packages=packages)
    files.directory(name="Registry storage", path=settings.registry.data_dir, user="docker-registry",
                    group="docker-registry", mode="750")
    configs: list[OperationMeta] = []
    if tls:
        secrets_file(settings)  # the credentials' checks read the password from it
        trust_ops(settings)  # (its readiness check verifies the certificate with the CA)
        configs += _tls_ops(settings)
    configs.append(files.put(name=f"Write {CONFIG}", src=StringIO(config_text(settings)), dest=CONFIG,
                             mode="644"))
    ensure_service(service(settings), configs=configs, timeout=settings.ready_timeout)
    _register_ops(settings)
    _allow_op(settings)


def ports(settings: Settings) -> list[PortUse]:
    return [PortUse(settings.registry.port, settings.registry.listen, "container registry")]


ROLE = Role(name="registry", groups=("manager",), deploy=registry, services=lambda s: [service(s)],
            ports=ports, enabled=lambda s: s.registry.enabled)
