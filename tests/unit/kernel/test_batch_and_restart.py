"""The runner's batch startup command and restart, driven through the agent's runner connection
on the host's python3 (as test_kernel_runner.py does)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bai.agent.kernel import KernelRunner
from tests.unit.kernel.test_kernel_runner import _start_runner, run


@pytest.fixture
async def started() -> AsyncIterator[tuple[asyncio.subprocess.Process, KernelRunner, Path]]:
    tmp = Path(tempfile.mkdtemp(prefix="bai-kb-", dir="/tmp"))
    proc, conn = await _start_runner(tmp, {"BATCH_MARK": "from-env"})
    try:
        yield proc, conn, tmp
    finally:
        await conn.request_exit()
        await conn.close()
        try:
            async with asyncio.timeout(5):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def _collector(conn: KernelRunner) -> asyncio.Queue[int]:
    reports: asyncio.Queue[int] = asyncio.Queue()

    async def on_finished(code: int) -> None:
        await reports.put(code)

    conn.on_batch_finished = on_finished
    return reports


async def test_batch_command_reports_its_exit_code_once_acknowledged(started) -> None:  # type: ignore[no-untyped-def]
    _proc, conn, tmp = started
    reports = _collector(conn)
    out = tmp / "batch.out"
    await conn.start_batch(f'echo "$BATCH_MARK" > {out}; exit 7')
    async with asyncio.timeout(10):
        assert await reports.get() == 7
    assert out.read_text() == "from-env\n"  # the session's environment
    await conn.ack_batch()
    # A second batch op is ignored: the command runs once per kernel.
    await conn.start_batch(f"echo again >> {out}")
    assert (await run(conn, "print(1)"))["console"] == [["stdout", "1\n"]]  # queries still work
    assert out.read_text() == "from-env\n"
    assert reports.empty()


async def test_unacknowledged_result_is_sent_again_after_a_reconnection(started) -> None:  # type: ignore[no-untyped-def]
    _proc, conn, tmp = started
    reports = _collector(conn)
    await conn.start_batch("exit 0")
    async with asyncio.timeout(10):
        assert await reports.get() == 0
    # The agent restarts (new listener on the same socket) before acknowledging.
    await conn.close()
    again = KernelRunner("k-test", tmp / "agent.sock")
    second = _collector(again)
    await again.listen()
    try:
        await again.wait_ready(asyncio.get_running_loop().time() + 10)
        async with asyncio.timeout(10):
            assert await second.get() == 0
    finally:
        await again.request_exit()
        await again.close()


async def test_restart_forgets_variables_and_keeps_the_runner(started) -> None:  # type: ignore[no-untyped-def]
    proc, conn, _tmp = started
    assert (await run(conn, "x = 41; import os; print(os.getpid())"))["exitCode"] == 0
    before = (await run(conn, "print(os.getpid())"))["console"][0][1]
    async with asyncio.timeout(10):
        await conn.restart()
    after = await run(conn, "print(x)")
    assert after["exitCode"] != 0 and "NameError" in "".join(str(e[1]) for e in after["console"])
    pid = (await run(conn, "import os; print(os.getpid())"))["console"][0][1]
    assert pid != before  # a fresh user-code process...
    assert proc.returncode is None  # ...under the same runner


async def test_restart_ends_a_run_in_progress(started) -> None:  # type: ignore[no-untyped-def]
    _proc, conn, _tmp = started
    first = await conn.execute(None, "query", "import time; print('start', flush=True); time.sleep(60)", 0.5)
    assert first["status"] == "continued"
    async with asyncio.timeout(10):
        await conn.restart()
    ended = await conn.execute(first["runId"], "continue", "", 10.0)
    assert ended["status"] == "finished" and ended["exitCode"] != 0
    assert (await run(conn, "print(2)"))["console"] == [["stdout", "2\n"]]
