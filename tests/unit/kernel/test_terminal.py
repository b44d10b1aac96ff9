"""Terminals through the real runner (on the host's python3, as test_kernel_runner.py does) and
the agent's side of its connection: a login shell on a pty that echoes, resizes, is flow
controlled, refuses more than the cap and leaves no process behind when closed."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bai.agent.kernel import KernelRunner
from bai.agent.terminal import Channel, TerminalRefused
from bai.kernel.terminal import MAX_TERMINALS, OUTPUT_WINDOW
from tests.unit.kernel.test_kernel_runner import _start_runner


@pytest.fixture
async def conn() -> AsyncIterator[KernelRunner]:
    tmp = Path(tempfile.mkdtemp(prefix="bai-kt-", dir="/tmp"))
    proc, runner = await _start_runner(tmp, {"TERMINAL_MARK": "from-env"})
    try:
        yield runner
    finally:
        await runner.request_exit()
        await runner.close()
        try:
            async with asyncio.timeout(5):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


async def type_line(conn: KernelRunner, channel: Channel, line: str) -> None:
    await conn.terminals.send(channel.tid, {"op": "pty-in", "data": base64.b64encode(line.encode()).decode()})


async def read_until(conn: KernelRunner, channel: Channel, wanted: str, deadline: float = 10.0) -> str:
    seen = b""
    try:
        async with asyncio.timeout(deadline):
            while wanted.encode() not in seen:
                kind, value = await channel.records.get()
                assert kind == "out", (kind, value, seen)
                seen += value
                await conn.terminals.send(channel.tid, {"op": "pty-ack", "bytes": len(value)})
    except TimeoutError:
        raise AssertionError(f"never saw {wanted!r} within {deadline} s: {seen[-1000:]!r}") from None
    return seen.decode(errors="replace")


def processes_with(marker: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read().replace(b"\0", b" "):
                    found.append(int(pid))
        except OSError:
            continue
    return found


async def test_shell_echoes_resizes_and_dies_with_its_terminal(conn: KernelRunner) -> None:
    channel = await conn.terminals.open(24, 80)
    await type_line(conn, channel, "echo mark-$((6*7)) $TERMINAL_MARK $TERM\r")
    assert "mark-42 from-env xterm-256color" in await read_until(conn, channel, "mark-42 from-env")
    await type_line(conn, channel, "stty size\r")
    await read_until(conn, channel, "24 80")
    await conn.terminals.send(channel.tid, {"op": "pty-resize", "rows": 33, "cols": 111})
    await type_line(conn, channel, "stty size\r")
    await read_until(conn, channel, "33 111")
    # a background job and a foreground one: both go with the terminal
    marker = f"{secrets.randbelow(10**6) + 10**6}"
    await type_line(conn, channel, f"sleep {marker}1 & sleep {marker}2\r")
    loop = asyncio.get_running_loop()
    end = loop.time() + 10
    while len(processes_with(f"sleep {marker}")) < 2:
        assert loop.time() < end
        await asyncio.sleep(0.02)
    await conn.terminals.close(channel.tid)
    end = loop.time() + 10
    while processes_with(f"sleep {marker}"):
        assert loop.time() < end, "processes of a closed terminal are left"
        await asyncio.sleep(0.02)


async def test_a_shell_that_exits_reports_it(conn: KernelRunner) -> None:
    channel = await conn.terminals.open(24, 80)
    await type_line(conn, channel, "exit 5\r")
    async with asyncio.timeout(10):
        while True:
            kind, value = await channel.records.get()
            if kind != "out":
                break
            await conn.terminals.send(channel.tid, {"op": "pty-ack", "bytes": len(value)})
    assert (kind, value) == ("exit", 5)


async def test_output_stops_at_the_window_until_acknowledged(conn: KernelRunner) -> None:
    channel = await conn.terminals.open(24, 80)
    await type_line(conn, channel, "yes window-filler\r")
    got = 0
    async with asyncio.timeout(10):
        while got < OUTPUT_WINDOW:
            kind, value = await channel.records.get()
            assert kind == "out"
            got += len(value)
    # Nothing acknowledged: the runner stops reading the pty; nothing more arrives.
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await channel.records.get()
    assert got < OUTPUT_WINDOW + 64 * 1024
    await conn.terminals.send(channel.tid, {"op": "pty-ack", "bytes": got})
    async with asyncio.timeout(10):
        assert (await channel.records.get())[0] == "out"  # flowing again
    await conn.terminals.close(channel.tid)


async def test_at_most_the_cap_of_terminals_and_bad_input_is_refused(conn: KernelRunner) -> None:
    channels = [await conn.terminals.open(24, 80) for _ in range(MAX_TERMINALS)]
    with pytest.raises(TerminalRefused, match="too many terminals"):
        await conn.terminals.open(24, 80)
    await conn.terminals.send(channels[0].tid, {"op": "pty-in", "data": "not base64!"})
    async with asyncio.timeout(10):
        # the shell's prompt may come first: skip output records up to the error
        while (record := await channels[0].records.get())[0] == "out":
            pass
    assert record == ("error", "stdin data is not base64")
    await conn.terminals.close(channels[0].tid)
    extra = await conn.terminals.open(24, 80)  # room again
    await type_line(conn, extra, "echo still-$((1+1))\r")
    await read_until(conn, extra, "still-2")
    # queries are unaffected by terminals
    result = await conn.execute(None, "query", "print(6*7)", 10.0)
    assert result["console"] == [["stdout", "42\n"]]


async def test_restart_keeps_the_size(conn: KernelRunner) -> None:
    channel = await conn.terminals.open(24, 80)
    await conn.terminals.send(channel.tid, {"op": "pty-resize", "rows": 50, "cols": 120})
    await type_line(conn, channel, "echo $$ > /dev/null; echo first-shell\r")
    await read_until(conn, channel, "first-shell")
    await conn.terminals.send(channel.tid, {"op": "pty-restart"})
    await read_until(conn, channel, "Restarting...")
    await type_line(conn, channel, "stty size\r")
    await read_until(conn, channel, "50 120")
    await conn.terminals.close(channel.tid)


async def test_a_resize_sent_at_once_is_the_size(conn: KernelRunner) -> None:
    """What a client does when it connects: open, then its window's size at once. The shell's
    child may run after that (a loaded host); the size must still be the resized one."""
    for rows, cols in ((30, 100), (41, 123), (52, 146)):
        channel = await conn.terminals.open(24, 80)
        await conn.terminals.send(channel.tid, {"op": "pty-resize", "rows": rows, "cols": cols})
        await type_line(conn, channel, "stty size\r")
        await read_until(conn, channel, f"{rows} {cols}")
        await conn.terminals.close(channel.tid)
