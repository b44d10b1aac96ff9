"""A small client of the Docker Registry HTTP API v2 (what the manager's image rescan reads).

It lists repositories (``/v2/_catalog``, paged by its ``Link`` header), their tags
(``/v2/<repo>/tags/list``) and, per tag, the manifest (an image manifest, or an index / manifest
list whose per-platform manifests are read in turn) and the image's config blob, where the labels
and the architecture are. Credentials, when given, go as HTTP basic auth; a registry that answers
with a ``Bearer`` challenge gets a token from its realm first (the token flow of Docker Hub,
Harbor and distribution's token auth), cached per scope.

Everything is bounded: each call has a deadline, each answer a size cap, listings a count cap.
Errors are :class:`RegistryError` with a message an operator can act on.
"""

from __future__ import annotations

import base64
import json
import re
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urljoin

import aiohttp

from bai.common.bounded import read_bounded

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_LIST_V2 = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
_INDEXES = (MANIFEST_LIST_V2, OCI_INDEX)
_ACCEPT = ", ".join((MANIFEST_V2, OCI_MANIFEST, MANIFEST_LIST_V2, OCI_INDEX))

#: Docker's architecture names -> the platform names Backend.AI stores (``uname -m``).
ARCH_ALIASES = {"amd64": "x86_64", "x86-64": "x86_64", "arm64": "aarch64", "aarch64": "aarch64",
                "x86_64": "x86_64"}

_CHALLENGE_RE = re.compile(r'(\w+)="([^"]*)"')
_NEXT_LINK_RE = re.compile(r"<([^>]+)>\s*;\s*rel=\"?next\"?")


class RegistryError(Exception):
    """The registry could not be reached, refused us, or answered something we cannot use."""


@dataclass(frozen=True)
class ScannedImage:
    """One image (one platform of one tag) as the registry describes it."""

    repository: str
    tag: str
    architecture: str
    config_digest: str
    labels: dict[str, str]
    size_bytes: int


@dataclass(frozen=True)
class RegistryLimits:
    timeout: float = 10.0  # seconds per HTTP call
    max_reply_bytes: int = 4 * 2**20  # one JSON answer (manifest, config blob, listing page)
    max_repositories: int = 10_000
    max_tags: int = 10_000  # per repository
    concurrency: int = 4  # manifests fetched at once
    page_size: int = 100  # entries asked for per listing page (``n``)


@dataclass
class RegistryClient:
    """``async with RegistryClient(url, ...) as reg:`` -- one HTTP session to one registry."""

    url: str
    username: str | None = None
    password: str | None = None
    ssl_verify: bool = True
    #: a CA bundle (PEM) to verify the registry's certificate with, instead of the system store
    ca_file: str | None = None
    limits: RegistryLimits = field(default_factory=RegistryLimits)
    _session: aiohttp.ClientSession | None = None
    _tokens: dict[str, str] = field(default_factory=dict)

    async def __aenter__(self) -> RegistryClient:
        self.url = self.url.rstrip("/") + "/"
        tls: bool | ssl.SSLContext = self.ssl_verify
        if self.ssl_verify and self.ca_file:
            try:
                tls = ssl.create_default_context(cafile=self.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise RegistryError(f"cannot read the CA file {self.ca_file}: {exc}") from exc
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.limits.timeout),
            connector=aiohttp.TCPConnector(limit=self.limits.concurrency * 2, ssl=tls),
        )
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    # --- listing ----------------------------------------------------------------------------

    async def check(self) -> None:
        """``GET /v2/``: the registry answers and accepts our credentials."""
        await self._get_json("v2/", scope="")

    async def repositories(self) -> list[str]:
        return await self._paged(f"v2/_catalog?n={self.limits.page_size}", "repositories", "registry:catalog:*",
                                 self.limits.max_repositories)

    async def tags(self, repository: str) -> list[str]:
        return await self._paged(f"v2/{repository}/tags/list?n={self.limits.page_size}", "tags",
                                 _pull_scope(repository), self.limits.max_tags)

    async def images(self, repository: str, tag: str) -> list[ScannedImage]:
        """Every platform of ``repository:tag`` (one for a plain manifest)."""
        scope = _pull_scope(repository)
        manifest, media_type = await self._manifest(repository, tag, scope)
        if media_type in _INDEXES or "manifests" in manifest:
            found = []
            for entry in manifest.get("manifests") or []:
                platform = entry.get("platform") or {}
                if platform.get("os", "linux") != "linux" or not entry.get("digest"):
                    continue  # e.g. attestation manifests ("unknown/unknown")
                sub, _ = await self._manifest(repository, entry["digest"], scope)
                found.append(await self._image(repository, tag, sub, scope))
            return found
        return [await self._image(repository, tag, manifest, scope)]

    async def delete_tag(self, repository: str, tag: str) -> str:
        """Delete the manifest ``repository:tag`` points to (the registry must allow deletes;
        every tag of that manifest goes with it); its digest."""
        scope = f"repository:{repository}:pull,delete"
        _, headers = await self._request(f"v2/{repository}/manifests/{tag}", scope, accept=_ACCEPT)
        digest = headers.get("Docker-Content-Digest")
        if not digest:
            raise RegistryError(f"{repository}:{tag}: the registry names no manifest digest")
        await self._request(f"v2/{repository}/manifests/{digest}", scope, method="DELETE")
        return str(digest)

    async def _image(self, repository: str, tag: str, manifest: dict[str, Any], scope: str) -> ScannedImage:
        config_ref = manifest.get("config") or {}
        digest = config_ref.get("digest")
        if not isinstance(digest, str) or not digest:
            raise RegistryError(f"{repository}:{tag}: the manifest names no config blob (schema 1 is not supported)")
        config = await self._get_json(f"v2/{repository}/blobs/{digest}", scope=scope)
        labels = (config.get("config") or {}).get("Labels") or config.get("Labels") or {}
        arch = str(config.get("architecture") or "amd64")
        size = sum(int(layer.get("size") or 0) for layer in manifest.get("layers") or [])
        return ScannedImage(repository, tag, ARCH_ALIASES.get(arch, arch), digest,
                            {str(k): str(v) for k, v in labels.items()}, size)

    async def _manifest(self, repository: str, reference: str, scope: str) -> tuple[dict[str, Any], str]:
        body, headers = await self._request(f"v2/{repository}/manifests/{reference}", scope, accept=_ACCEPT)
        media_type = headers.get("Content-Type", "").split(";")[0].strip()
        return _json(body, f"the manifest of {repository}:{reference}"), media_type

    async def _paged(self, path: str, key: str, scope: str, cap: int) -> list[str]:
        out: list[str] = []
        next_path: str | None = path
        while next_path is not None:
            body, headers = await self._request(next_path, scope)
            page = _json(body, path).get(key) or []
            out.extend(str(x) for x in page)
            if len(out) > cap:
                raise RegistryError(f"{self.url}{path}: more than {cap} entries; refusing to scan that many")
            link = _NEXT_LINK_RE.search(headers.get("Link", ""))
            next_path = urljoin(self.url, link.group(1)).removeprefix(self.url) if link else None
        return out

    # --- HTTP -------------------------------------------------------------------------------

    async def _get_json(self, path: str, *, scope: str) -> dict[str, Any]:
        body, _ = await self._request(path, scope)
        return _json(body, path) if body.strip() else {}

    async def _request(self, path: str, scope: str, accept: str | None = None,
                       method: str = "GET") -> tuple[bytes, Any]:
        assert self._session is not None, "use RegistryClient as an async context manager"
        url = urljoin(self.url, path)
        for attempt in (1, 2):
            headers = {"Accept": accept or "application/json"}
            token = self._tokens.get(scope)
            if token is not None:
                headers["Authorization"] = f"Bearer {token}"
            elif self.username:
                headers["Authorization"] = _basic(self.username, self.password or "")
            status, body, reply_headers = await self._fetch(url, headers, method)
            if status == 401 and attempt == 1:
                challenge = reply_headers.get("WWW-Authenticate", "")
                if challenge.lower().startswith("bearer "):
                    self._tokens[scope] = await self._token(challenge, scope)
                    continue
            break
        if status == 401:
            raise RegistryError(f"{url}: the registry refused our credentials (HTTP 401)"
                                if self.username else f"{url}: the registry needs credentials (HTTP 401)")
        if status == 404:
            raise RegistryError(f"{url}: not found (HTTP 404)")
        if status == 405 and method == "DELETE":
            raise RegistryError(f"{url}: the registry does not allow deleting (HTTP 405)")
        if status >= 400:
            raise RegistryError(f"{url}: HTTP {status} {body[:200].decode(errors='replace')}")
        return body, reply_headers

    async def _fetch(self, url: str, headers: dict[str, str], method: str = "GET") -> tuple[int, bytes, Any]:
        assert self._session is not None
        try:
            async with self._session.request(method, url, headers=headers, allow_redirects=True) as resp:
                body = await read_bounded(resp, self.limits.max_reply_bytes)
                if len(body) > self.limits.max_reply_bytes:
                    raise RegistryError(f"{url}: the answer is larger than {self.limits.max_reply_bytes} bytes")
                return resp.status, body, resp.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RegistryError(f"cannot reach the registry at {self.url}: {_why(exc)}") from exc

    async def _token(self, challenge: str, scope: str) -> str:
        params = dict(_CHALLENGE_RE.findall(challenge))
        realm = params.pop("realm", None)
        if not realm:
            raise RegistryError(f"{self.url}: a Bearer challenge without a realm")
        query = {k: v for k, v in params.items() if k == "service"}
        if scope:
            query["scope"] = scope
        headers = {"Accept": "application/json"}
        if self.username:
            headers["Authorization"] = _basic(self.username, self.password or "")
        status, body, _ = await self._fetch(f"{realm}?{urlencode(query)}", headers)
        if status != 200:
            raise RegistryError(f"{realm}: no token for {scope or 'the registry'} (HTTP {status})")
        reply = _json(body, realm)
        token = reply.get("token") or reply.get("access_token")
        if not isinstance(token, str) or not token:
            raise RegistryError(f"{realm}: the token answer has no token")
        return token


def _pull_scope(repository: str) -> str:
    return f"repository:{repository}:pull"


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def _json(body: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError:
        raise RegistryError(f"{what}: the registry answered malformed JSON") from None
    if not isinstance(value, dict):
        raise RegistryError(f"{what}: the registry answered JSON that is not an object")
    return value


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer within the deadline"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return (f"its TLS certificate is not trusted ({exc.certificate_error}); trust the CA that "
                "signed it (the system store, or the registry's ssl-verify setting)")
    return str(exc) or type(exc).__name__
