"""Wire format between the agent and the kernel runner (stdlib only).

The AGENT listens on a unix stream socket in a host directory that it owns and that is
bind-mounted read-only into the container (``/opt/bai/ipc/agent.sock``); the runner connects to
it, and reconnects (with back-off) whenever the connection drops, e.g. while the agent restarts.
The container can thus write no host path, and the agent never opens a path the container could
have planted (connect(2) works through a read-only mount; bind(2) would not).

Both directions carry *frames*: a 4-byte unsigned big-endian length ``N`` followed by ``N`` bytes
of UTF-8 JSON, always an object. A frame longer than the receiver's limit is a protocol error
and the receiver drops the connection without reading (or allocating) the body: the runner
accepts up to :data:`MAX_FRAME` (code may be large), the agent only :data:`MAX_RECORD_FRAME`
(the runner sends output in chunks of at most 64 KiB, so anything bigger is hostile).

Agent -> runner (``op``):

* ``{"op": "code", "code": str}`` -- run source text in query mode (queued FIFO if a run is on).
* ``{"op": "input", "data": str}`` -- the answer to the current ``waiting-input`` (ignored when
  nothing waits for input).
* ``{"op": "interrupt"}`` -- SIGINT the running code (its whole process group).
* ``{"op": "ping"}`` -- answered by ``{"type": "pong"}``.
* ``{"op": "exit"}`` -- kill the user-code process and exit the runner (the container stops).
* ``{"op": "batch", "command": str}`` -- run a batch session's startup command once (see
  :mod:`.batch`); a second one is ignored.
* ``{"op": "batch-ack"}`` -- the agent has passed ``batch-finished`` on; the runner stops resending it.
* ``{"op": "restart"}`` -- kill the user-code process (its variables are gone; a run in progress
  finishes with a non-zero exit code) and start a fresh one; answered by ``{"type": "restarted"}``.

Runner -> agent (``type``), the same record types as the original's query mode:

* ``{"type": "stdout" | "stderr", "data": str}`` -- console output chunks, in order.
* ``{"type": "waiting-input", "data": {"is_password": bool}}`` -- user code called ``input()``.
* ``{"type": "finished", "data": {"exitCode": int}}`` -- the run is over.
* ``{"type": "pong"}``.
* ``{"type": "batch-finished", "data": {"exitCode": int}}`` -- the startup command ended; sent
  again on each new connection until acknowledged.
* ``{"type": "restarted"}`` -- a fresh user-code process is up.

The runner holds one connection at a time; records produced while it is disconnected are
dropped (the agent fails the runs it was waiting for when it loses the connection).
"""

from __future__ import annotations

import json
import struct
from typing import Any

#: Where the agent listens, as seen inside the container.
DEFAULT_SOCKET_PATH = "/opt/bai/ipc/agent.sock"
#: Agent -> runner: 64 MiB, the size of the largest RPC body, small enough to refuse garbage.
MAX_FRAME = 64 * 2**20
#: Runner -> agent: a 64 KiB output chunk is at most ~400 KiB of JSON (escapes), so 1 MiB.
MAX_RECORD_FRAME = 2**20

_HEADER = struct.Struct(">I")
HEADER_SIZE = _HEADER.size
#: Set in a frame's length field (agent -> runner only): the body is raw bytes, the data of the
#: ``file-put-data`` record just before it (uploads skip base64 and JSON this way). The agent's
#: decoder has no such frames: the flag makes any length exceed its limit.
BINARY_FLAG = 0x80000000


class ProtocolError(Exception):
    pass


def encode_frame(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return _HEADER.pack(len(body)) + body


def encode_binary_frame(data: bytes) -> bytes:
    return _HEADER.pack(BINARY_FLAG | len(data)) + data


def decode_header(header: bytes, limit: int = MAX_FRAME) -> int:
    (length,) = _HEADER.unpack(header)
    if length > limit:
        raise ProtocolError(f"frame too large: {length} bytes (limit {limit})")
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
        """Complete messages so far; a binary frame comes out as ``{"op": "file-put-bytes",
        "data": bytes}`` (see :func:`encode_binary_frame`)."""
        self._buf += data
        out: list[dict[str, Any]] = []
        while len(self._buf) >= HEADER_SIZE:
            (raw,) = _HEADER.unpack(bytes(self._buf[:HEADER_SIZE]))
            length = decode_header(_HEADER.pack(raw & ~BINARY_FLAG))
            end = HEADER_SIZE + length
            if len(self._buf) < end:
                break
            body = bytes(self._buf[HEADER_SIZE:end])
            out.append({"op": "file-put-bytes", "data": body} if raw & BINARY_FLAG else decode_body(body))
            del self._buf[:end]
        return out
