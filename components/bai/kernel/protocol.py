"""Wire format between the agent and the kernel runner (stdlib only).

The runner listens on a unix stream socket (``/opt/bai/ipc/runner.sock`` inside the container).
Both directions carry *frames*: a 4-byte unsigned big-endian length ``N`` followed by ``N`` bytes
of UTF-8 JSON, always an object. A frame longer than :data:`MAX_FRAME` is a protocol error and
the receiver drops the connection.

Agent -> runner (``op``):

* ``{"op": "code", "code": str}`` -- run source text in query mode (queued FIFO if a run is on).
* ``{"op": "input", "data": str}`` -- the answer to the current ``waiting-input`` (ignored when
  nothing waits for input).
* ``{"op": "interrupt"}`` -- SIGINT the running code (its whole process group).
* ``{"op": "ping"}`` -- answered by ``{"type": "pong"}``.
* ``{"op": "exit"}`` -- kill the user-code process and exit the runner (the container stops).

Runner -> agent (``type``), the same record types as the original's query mode:

* ``{"type": "stdout" | "stderr", "data": str}`` -- console output chunks, in order.
* ``{"type": "waiting-input", "data": {"is_password": bool}}`` -- user code called ``input()``.
* ``{"type": "finished", "data": {"exitCode": int}}`` -- the run is over.
* ``{"type": "pong"}``.

Only the most recent agent connection receives records; an older one is closed when a new one
arrives (an agent that restarted reconnects and takes over).
"""

from __future__ import annotations

import json
import struct
from typing import Any

#: Where the runner listens inside the container.
DEFAULT_SOCKET_PATH = "/opt/bai/ipc/runner.sock"
#: 64 MiB: far above the agent's 10 MiB per-record cut, small enough to refuse garbage lengths.
MAX_FRAME = 64 * 2**20

_HEADER = struct.Struct(">I")
HEADER_SIZE = _HEADER.size


class ProtocolError(Exception):
    pass


def encode_frame(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return _HEADER.pack(len(body)) + body


def decode_header(header: bytes) -> int:
    (length,) = _HEADER.unpack(header)
    if length > MAX_FRAME:
        raise ProtocolError(f"frame too large: {length} bytes")
    return length


def decode_body(body: bytes) -> dict[str, Any]:
    message = json.loads(body)
    if not isinstance(message, dict):
        raise ProtocolError("frame is not a JSON object")
    return message


class FrameDecoder:
    """Incremental decoder for a non-blocking byte stream."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buf += data
        out: list[dict[str, Any]] = []
        while len(self._buf) >= HEADER_SIZE:
            length = decode_header(bytes(self._buf[:HEADER_SIZE]))
            end = HEADER_SIZE + length
            if len(self._buf) < end:
                break
            out.append(decode_body(bytes(self._buf[HEADER_SIZE:end])))
            del self._buf[:end]
        return out
