"""Host-side helpers of the registry and kernel image roles, run on a target host with the bai
venv's Python (``python -m roles._registry_tool COMMAND ...``): stdlib only, and every answer
is an exit status (0 = yes / done), so that a role's ``check`` can call them.

* ``pushed REF --docker-config DIR [--cafile F] [--insecure-http]``: the registry's manifest of
  ``REF`` (``host:port/repo:tag``) is the one the local image ``REF`` was pushed as (its
  ``RepoDigests``), i.e. a push would change nothing. Credentials come from ``DIR/config.json``
  (the file ``docker push`` reads), never from the command line.
* ``allowed HOST [--domain D]`` / ``allow HOST [--domain D]``: the domain lists ``HOST`` in its
  ``allowed_docker_registries`` / add it (keeping the others), through the ``backend.ai`` CLI
  next to this Python, with the admin keypair of the environment (the client env file).
* ``rescan HOST``: ``backend.ai admin image rescan -r HOST``.
"""

from __future__ import annotations

import argparse
import json
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

#: Manifest media types a registry may answer for a pushed image.
ACCEPT = ", ".join((
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
))
TIMEOUT = 20.0  # seconds per call


def split_ref(ref: str) -> tuple[str, str, str]:
    """``"10.0.0.5:5000/stable/python:3.11"`` -> ``("10.0.0.5:5000", "stable/python", "3.11")``."""
    registry, _, rest = ref.partition("/")
    repo, _, tag = rest.rpartition(":")
    if not registry or not repo or not tag:
        raise ValueError(f"not a host:port/repository:tag reference: {ref!r}")
    return registry, repo, tag


def docker_auth(config_dir: str, registry: str) -> str | None:
    """The ``auth`` (base64 ``user:password``) ``docker push`` would send to ``registry``."""
    path = Path(config_dir) / "config.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    entry = (doc.get("auths") or {}).get(registry) or {}
    auth = entry.get("auth")
    return auth if isinstance(auth, str) and auth else None


def local_digests(ref: str) -> set[str]:
    """The manifest digests the local image ``ref`` was pushed to / pulled from its repository as."""
    registry, repo, _ = split_ref(ref)
    r = subprocess.run(["docker", "image", "inspect", "--format", "{{json .RepoDigests}}", ref],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        return set()
    prefix = f"{registry}/{repo}@"
    return {d.removeprefix(prefix) for d in json.loads(r.stdout or "[]") or [] if d.startswith(prefix)}


def remote_digest(ref: str, *, auth: str | None, cafile: str | None, insecure_http: bool) -> str | None:
    """The digest the registry serves ``ref`` as (None: no such tag, or no answer)."""
    registry, repo, tag = split_ref(ref)
    scheme = "http" if insecure_http else "https"
    req = urllib.request.Request(f"{scheme}://{registry}/v2/{repo}/manifests/{tag}", method="HEAD",
                                 headers={"Accept": ACCEPT})
    if auth:
        req.add_header("Authorization", f"Basic {auth}")
    context = None if insecure_http else ssl.create_default_context(cafile=cafile)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT, context=context) as resp:  # noqa: S310 (our URL)
            digest = resp.headers.get("Docker-Content-Digest")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"{ref}: {exc}", file=sys.stderr)
        return None
    return str(digest) if digest else None


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    exe = str(Path(sys.executable).with_name("backend.ai"))
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=600)


def allowed_registries(domain: str) -> list[str]:
    r = _cli("--output", "json", "admin", "domain", "info", domain)
    if r.returncode != 0:
        raise SystemExit(f"cannot read domain {domain}: {r.stderr.strip() or r.stdout.strip()}")
    items = json.loads(r.stdout).get("items") or [{}]
    return [str(x) for x in items[0].get("allowed_docker_registries") or []]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m roles._registry_tool")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pushed")
    p.add_argument("ref")
    p.add_argument("--docker-config", required=True)
    p.add_argument("--cafile")
    p.add_argument("--insecure-http", action="store_true")
    for name in ("allowed", "allow"):
        p = sub.add_parser(name)
        p.add_argument("registry")
        p.add_argument("--domain", default="default")
    p = sub.add_parser("rescan")
    p.add_argument("registry")
    args = ap.parse_args(argv)
    if args.command == "pushed":
        want = local_digests(args.ref)
        if not want:
            return 1
        registry = split_ref(args.ref)[0]
        got = remote_digest(args.ref, auth=docker_auth(args.docker_config, registry), cafile=args.cafile,
                            insecure_http=args.insecure_http)
        return 0 if got in want else 1
    if args.command in ("allowed", "allow"):
        current = allowed_registries(args.domain)
        if args.registry in current:
            return 0
        if args.command == "allowed":
            return 1
        r = _cli("admin", "domain", "update", args.domain, "--allowed-docker-registries",
                 ",".join([*current, args.registry]))
        if r.returncode != 0:
            print(r.stderr or r.stdout, file=sys.stderr)
        return r.returncode
    r = _cli("admin", "image", "rescan", "-r", args.registry)
    if r.returncode != 0:
        print(r.stderr or r.stdout, file=sys.stderr)
    return r.returncode


if __name__ == "__main__":
    sys.exit(main())
