"""TCP circuits: a listener whose connections are each spliced to one connection to the service.

Only the addresses that opened the circuit through ``/v2/proxy/auth`` may connect (a TCP client
carries no cookie). Both directions move in 64 KiB reads with a drain after each write, so a slow
side holds at most a socket buffer's worth of the other's data; a connection idle (or a writer
stalled) for ``idle-timeout`` is closed, and either side closing closes the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from .circuits import Circuit
from .config import ProxySection

log = logging.getLogger(__name__)

CHUNK = 64 * 1024


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, idle: float,
               on_chunk: Callable[[], None] | None = None) -> None:
    """Copy until EOF, then half-close ``writer`` (the other direction may still be talking);
    ``on_chunk`` is called for each chunk read."""
    while True:
        async with asyncio.timeout(idle):
            chunk = await reader.read(CHUNK)
        if not chunk:
            break
        if on_chunk is not None:
            on_chunk()
        writer.write(chunk)
        async with asyncio.timeout(idle):
            await writer.drain()
    if writer.can_write_eof():
        with contextlib.suppress(OSError):
            writer.write_eof()


async def splice(a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                 b: tuple[asyncio.StreamReader, asyncio.StreamWriter], idle: float,
                 on_chunk: Callable[[], None] | None = None) -> None:
    """Both directions until both have ended, or either fails or idles out."""
    tasks = [asyncio.create_task(pipe(a[0], b[1], idle, on_chunk)),
             asyncio.create_task(pipe(b[0], a[1], idle, on_chunk))]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        if any(t.exception() for t in done if not t.cancelled()):
            return
        await asyncio.gather(*tasks)
    except (OSError, TimeoutError):
        pass
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(2):
            await writer.wait_closed()


class TcpListener:
    def __init__(self, server: asyncio.Server) -> None:
        self.server = server

    async def close(self) -> None:
        self.server.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await self.server.wait_closed()


def listener_factory(cfg: ProxySection) -> object:
    async def start(circuit: Circuit, host: str, port: int) -> TcpListener:
        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            peer = writer.get_extra_info("peername")
            task = asyncio.current_task()
            try:
                if circuit.closed or not peer or peer[0] not in circuit.allowed_client_ips:
                    log.info("circuit %s: refused a connection from %s", circuit.id, peer and peer[0])
                    return
                if len(circuit.active) >= cfg.max_connections_per_circuit or task is None:
                    return
                circuit.track(task)
                try:
                    async with asyncio.timeout(cfg.connect_timeout):
                        up = await asyncio.open_connection(circuit.kernel_host, circuit.kernel_port)
                except (OSError, TimeoutError) as exc:
                    log.info("circuit %s: cannot reach the app: %r", circuit.id, exc)
                    return
                try:
                    circuit.note_traffic()  # a connection is activity even before its first byte
                    await splice((reader, writer), up, cfg.idle_timeout, circuit.note_traffic)
                finally:
                    await _close(up[1])
            finally:
                await _close(writer)

        server = await asyncio.start_server(connection, host, port, reuse_address=False, limit=CHUNK)
        return TcpListener(server)

    return start
