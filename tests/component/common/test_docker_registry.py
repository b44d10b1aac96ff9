"""The Docker Registry v2 client against a real registry (Debian's docker-registry): listings
paged by their Link header, an image's labels, architecture, digest and size, credentials, and
every way it refuses to wait or read without bound."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bai.common.docker_registry import RegistryClient, RegistryError, RegistryLimits
from tests.fixtures.registry import EXTRA_LABELS, REPOSITORY, Registry


async def test_listing_and_image(docker_registry: Registry) -> None:
    async with RegistryClient(docker_registry.url, limits=RegistryLimits(page_size=1)) as reg:
        await reg.check()
        assert await reg.repositories() == [REPOSITORY]
        assert await reg.tags(REPOSITORY) == [docker_registry.tag]
        [image] = await reg.images(REPOSITORY, docker_registry.tag)
    assert (image.repository, image.tag, image.architecture) == (REPOSITORY, docker_registry.tag, "x86_64")
    assert image.config_digest.startswith("sha256:") and image.size_bytes > 8 * 2**20
    assert image.labels["ai.backend.kernelspec"] == "1"
    assert all(image.labels[k] == v for k, v in EXTRA_LABELS.items())


async def test_credentials(docker_registry: Registry) -> None:
    url = f"http://{docker_registry.auth_hostname}"
    async with RegistryClient(url) as reg:
        with pytest.raises(RegistryError, match="needs credentials"):
            await reg.repositories()
    async with RegistryClient(url, username=docker_registry.username, password="wrong") as reg:
        with pytest.raises(RegistryError, match="refused our credentials"):
            await reg.check()
    async with RegistryClient(url, username=docker_registry.username, password=docker_registry.password) as reg:
        assert await reg.repositories() == [REPOSITORY]


async def test_bounds(docker_registry: Registry) -> None:
    async with RegistryClient(docker_registry.url) as reg:
        with pytest.raises(RegistryError, match="not found"):
            await reg.images(REPOSITORY, "no-such-tag")
    async with RegistryClient(docker_registry.url, limits=RegistryLimits(max_reply_bytes=100)) as reg:
        with pytest.raises(RegistryError, match="larger than 100 bytes"):
            await reg.images(REPOSITORY, docker_registry.tag)
    async with RegistryClient(docker_registry.url, limits=RegistryLimits(max_repositories=0)) as reg:
        with pytest.raises(RegistryError, match="more than 0 entries"):
            await reg.repositories()


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """A TCP port that accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for w in held:
            w.close()
        server.close()
        await server.wait_closed()


async def test_a_registry_that_never_answers_times_out(silent_server: int) -> None:
    loop = asyncio.get_running_loop()
    began = loop.time()
    async with RegistryClient(f"http://127.0.0.1:{silent_server}", limits=RegistryLimits(timeout=0.5)) as reg:
        with pytest.raises(RegistryError, match="no answer within the deadline"):
            await reg.check()
    assert loop.time() - began < 5
