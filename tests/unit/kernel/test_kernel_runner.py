"""The kernel runner on the host's python3, driven through the agent's runner connection.

The runner package is exposed as ``bai_kernel`` from a temp dir, exactly as the agent mounts it
into containers, so these tests also check it imports only relatively and only the stdlib.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import bai.kernel
from bai.agent.kernel import KernelRunner, _Run

HOST_PYTHON = shutil.which("python3", path="/usr/bin:/usr/local/bin") or sys.executable
RUNNER_DIR = Path(bai.kernel.__file__).parent


async def _start_runner(tmp: Path, env: dict[str, str] | None = None,
                        output_limit: int = 4 * 2**20) -> tuple[asyncio.subprocess.Process, KernelRunner]:
    (tmp / "pkg").mkdir(exist_ok=True)
    link = tmp / "pkg" / "bai_kernel"
    if not link.exists():
        link.symlink_to(RUNNER_DIR)
    sock = tmp / "agent.sock"
    # The agent listens first, as it does before it starts a container; the runner connects.
    runner = KernelRunner("k-test", sock, output_limit=output_limit)
    await runner.listen()
    proc = await asyncio.create_subprocess_exec(
        HOST_PYTHON, "-s", "-m", "bai_kernel", "--socket", str(sock),
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(tmp / "pkg"), **(env or {})},
        cwd=tmp,
    )
    await runner.wait_ready(asyncio.get_running_loop().time() + 10)
    return proc, runner


@pytest.fixture
async def runner() -> AsyncIterator[KernelRunner]:
    # Short path: unix socket paths are limited to 108 bytes.
    tmp = Path(tempfile.mkdtemp(prefix="bai-kr-", dir="/tmp"))
    proc, conn = await _start_runner(tmp, {"PYTHONPATH_MARK": "1", "BAI_ORIG_PYTHONPATH": "/user/lib"})
    try:
        yield conn
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


async def run(conn: KernelRunner, code: str, flush_timeout: float = 10.0) -> dict[str, Any]:
    return await conn.execute(None, "query", code, flush_timeout)


async def test_print_round_trip(runner: KernelRunner) -> None:
    result = await run(runner, "print(1)")
    assert result["status"] == "finished"
    assert result["console"] == [["stdout", "1\n"]]
    assert result["exitCode"] == 0
    assert result["options"] is None and result["files"] == []
    assert len(result["runId"]) == 16 and int(result["runId"], 16) >= 0


async def test_expression_display_without_newline(runner: KernelRunner) -> None:
    result = await run(runner, "import sys; print(sys.version); x = 6*7; x")
    [[kind, text]] = result["console"]
    assert kind == "stdout"
    assert text == f"{sys.version_info.major}.{sys.version_info.minor}" + text[4:] and text.endswith("\n42")
    # None is not displayed; other values show their repr.
    assert (await run(runner, "None"))["console"] == []
    assert (await run(runner, "'a'"))["console"] == [["stdout", "'a'"]]


async def test_namespace_persists(runner: KernelRunner) -> None:
    await run(runner, "counter = 10\ndef bump():\n    global counter\n    counter += 1")
    await run(runner, "bump()")
    assert (await run(runner, "counter"))["console"] == [["stdout", "11"]]
    assert (await run(runner, "__name__"))["console"] == [["stdout", "'__main__'"]]


async def test_stdout_stderr_separate_and_ordered(runner: KernelRunner) -> None:
    # Python-level writes keep their order across the two streams (exactly).
    code = "import sys\nprint('a'); print('b')\nprint('c', file=sys.stderr)\nprint('d')\n_ = sys.stderr.write('e')"
    for _ in range(5):
        result = await run(runner, code)
        assert result["console"] == [["stdout", "a\nb\n"], ["stderr", "c\n"], ["stdout", "d\n"], ["stderr", "e"]]


async def test_subprocess_output_is_captured(runner: KernelRunner) -> None:
    # fd 1/2 of subprocesses are the same pipes; their order across streams is best effort.
    result = await run(runner, "import os\nrc = os.system('echo sub-out; echo sub-err >&2')")
    assert sorted(result["console"]) == [["stderr", "sub-err\n"], ["stdout", "sub-out\n"]]
    result = await run(runner, "import subprocess\nsubprocess.run(['echo', 'via-subprocess']).returncode")
    assert result["console"] == [["stdout", "via-subprocess\n0"]]


async def test_exception_exit_code_and_traceback(runner: KernelRunner) -> None:
    result = await run(runner, "x = 1\n1/0")
    assert result["exitCode"] == 1
    [[kind, text]] = result["console"]
    assert kind == "stderr"
    assert text.startswith("Traceback (most recent call last):\n")
    assert 'File "<input>", line 2' in text and text.endswith("ZeroDivisionError: division by zero\n")
    assert "child.py" not in text
    syntax = await run(runner, "def f(:")
    assert syntax["exitCode"] == 1 and "SyntaxError" in syntax["console"][0][1]
    assert "ast.py" not in syntax["console"][0][1]
    # The kernel lives on.
    assert (await run(runner, "x"))["console"] == [["stdout", "1"]]


async def test_sys_exit_ends_the_cell_only(runner: KernelRunner) -> None:
    await run(runner, "keep = 5")
    assert (await run(runner, "import sys; sys.exit(4)"))["exitCode"] == 4
    assert (await run(runner, "keep"))["console"] == [["stdout", "5"]]


async def test_input(runner: KernelRunner) -> None:
    first = await run(runner, "name = input('Name? ')\nprint('hello', name)")
    assert first["status"] == "waiting-input"
    assert first["options"] == {"is_password": False}
    assert first["exitCode"] is None
    assert first["console"] == [["stdout", "Name? "]]
    second = await runner.execute(first["runId"], "input", "bai", 10.0)
    assert second["status"] == "finished" and second["exitCode"] == 0
    assert second["console"] == [["stdout", "hello bai\n"]]


async def test_getpass_is_password(runner: KernelRunner) -> None:
    first = await run(runner, "import getpass; pw = getpass.getpass()")
    assert first["status"] == "waiting-input" and first["options"] == {"is_password": True}
    assert (await runner.execute(first["runId"], "input", "s3cret", 10.0))["exitCode"] == 0
    assert (await run(runner, "pw"))["console"] == [["stdout", "'s3cret'"]]


async def test_continued_then_finished(runner: KernelRunner) -> None:
    # The child waits for a file, so the test controls when the run finishes (no timing guesses).
    code = "import os, time\nprint('tick', flush=True)\nwhile not os.path.exists('go'): time.sleep(0.01)\nprint('done')"
    first = await run(runner, code, flush_timeout=0.3)
    assert first["status"] == "continued" and first["exitCode"] is None
    assert first["console"] == [["stdout", "tick\n"]]
    await asyncio.to_thread((runner.socket_path.parent / "go").touch)
    second = await runner.execute(first["runId"], "continue", "", 10.0)
    assert second["status"] == "finished"
    assert second["console"] == [["stdout", "done\n"]]


async def test_interrupt(runner: KernelRunner) -> None:
    await run(runner, "survivor = 'yes'")
    first = await run(runner, "import time\nprint('sleeping', flush=True)\ntime.sleep(60)", flush_timeout=0.3)
    assert first["status"] == "continued"
    await runner.interrupt()
    second = await runner.execute(first["runId"], "continue", "", 10.0)
    assert second["status"] == "finished" and second["exitCode"] == 1
    assert "KeyboardInterrupt" in second["console"][-1][1]
    assert (await run(runner, "survivor"))["console"] == [["stdout", "'yes'"]]


async def test_interrupt_while_waiting_for_input(runner: KernelRunner) -> None:
    first = await run(runner, "input()")
    assert first["status"] == "waiting-input"
    await runner.interrupt()
    second = await runner.execute(first["runId"], "continue", "", 10.0)
    assert second["status"] == "finished" and second["exitCode"] == 1
    assert (await run(runner, "1 + 1"))["console"] == [["stdout", "2"]]


async def test_child_crash_recovers(runner: KernelRunner) -> None:
    await run(runner, "lost = 1")
    crashed = await run(runner, "import os; print('bye', flush=True); os._exit(3)")
    assert crashed["status"] == "finished" and crashed["exitCode"] == 3
    assert crashed["console"][0] == ["stdout", "bye\n"]
    killed = await run(runner, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert killed["exitCode"] == 128 + 9
    after = await run(runner, "'lost' in globals(), 40 + 2")
    assert after["console"] == [["stdout", "(False, 42)"]] and after["exitCode"] == 0


async def test_queued_runs_are_fifo(runner: KernelRunner) -> None:
    r1 = asyncio.create_task(run(runner, "import time; time.sleep(0.2); print('one')"))
    await asyncio.sleep(0)  # let r1 send its code first
    r2 = asyncio.create_task(run(runner, "print('two')"))
    one, two = await asyncio.gather(r1, r2)
    assert one["console"] == [["stdout", "one\n"]] and two["console"] == [["stdout", "two\n"]]


async def test_clean_environment_for_user_code(runner: KernelRunner) -> None:
    result = await run(runner, "import os, sys; os.environ.get('PYTHONPATH'), 'BAI_ORIG_PYTHONPATH' in os.environ, "
                               "[m for m in sys.modules if m.startswith('bai')]")
    # The runner's PYTHONPATH is gone; the user's own one (moved aside by the agent) is back.
    env, leaked, modules = ast.literal_eval(result["console"][0][1])
    assert (env, leaked) == ("/user/lib", False)
    # Only the child's own modules, and the bai_display helper user code may import.
    assert set(modules) <= {"bai_kernel", "bai_kernel.child", "bai_kernel.batchmode", "bai_kernel.completion",
                            "bai_kernel.display", "bai_display"}


async def test_unknown_run_and_bad_input_mode(runner: KernelRunner) -> None:
    from bai.common.agent_rpc import InvalidInput

    with pytest.raises(InvalidInput):
        await runner.execute("feedfeedfeedfeed", "continue", "", 0.1)
    done = await run(runner, "1")
    with pytest.raises(InvalidInput):
        await runner.execute(done["runId"], "input", "x", 0.1)


def test_records_merge_and_oldest_output_is_dropped_with_a_marker() -> None:
    run_ = _Run("r", limit=100)
    run_.add("stdout", "a")
    run_.add("stdout", "b")
    run_.add("stderr", "c")
    result = run_.take()
    assert result["console"] == [["stdout", "ab"], ["stderr", "c"]]
    assert result["status"] == "continued" and not run_.console and run_.size == 0
    # 250 bytes through a 100-byte buffer: the newest 100 are kept, a marker says 150 went.
    run_.add("stdout", "x" * 120)
    run_.add("stderr", "e" * 30)
    run_.add("stdout", "0123456789" * 10)
    result = run_.take()
    marker, *rest = result["console"]
    assert rest == [["stdout", "0123456789" * 10]]
    assert marker[0] == "stderr" and "150 bytes of earlier output were dropped" in marker[1]
    assert "at most 100 bytes" in marker[1]
    # Partial cuts count bytes, not characters, and never split a character.
    run_.add("stdout", "é" * 60)  # 120 bytes
    [marker, [kind, text]] = run_.take()["console"]
    assert kind == "stdout" and text == "é" * 50 and "20 bytes" in marker[1]
    # The marker is reported once; the next read is clean.
    run_.add("stdout", "ok")
    assert run_.take()["console"] == [["stdout", "ok"]]
    # A non-text entry larger than the whole buffer goes as a whole.
    run_.add("media", {"type": "text/plain", "data": "z" * 200})
    run_.add("stdout", "after")
    [marker, last] = run_.take()["console"]
    assert last == ["stdout", "after"] and "dropped" in marker[1]


async def _to_the_end(conn: KernelRunner, first: dict[str, Any]) -> list[dict[str, Any]]:
    results = [first]
    async with asyncio.timeout(60):
        while results[-1]["status"] != "finished":
            results.append(await conn.execute(first["runId"], "continue", "", 10.0))
    return results


async def test_heavy_output_is_complete_while_collected_and_capped_when_not(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import bai.agent.kernel as agent_kernel

    monkeypatch.setattr(agent_kernel, "BACKPRESSURE_WAIT", 0.5)
    tmp = Path(tempfile.mkdtemp(prefix="bai-kr-", dir="/tmp"))
    proc, runner = await _start_runner(tmp, output_limit=2**20)
    try:
        # A client that keeps collecting gets every byte, however much: the code waits for it.
        code = "import sys\nfor i in range(400000): print(i)"
        results = await _to_the_end(runner, await runner.execute(None, "query", code, 10.0))
        text = "".join(c[1] for r in results for c in r["console"])
        assert text == "".join(f"{i}\n" for i in range(400000))  # 2.6 MiB through a 1 MiB buffer
        assert all(c[0] == "stdout" for r in results for c in r["console"])
        # Nobody collecting: after BACKPRESSURE_WAIT the oldest output goes; the newest is all there.
        first = await runner.execute(None, "query", "import sys; sys.stdout.write('x' * (3 * 2**20) + 'END'); "
                                                    "print('tail', file=sys.stderr)", 0)
        await asyncio.sleep(2.0)
        results = await _to_the_end(runner, first)
        console = [c for r in results for c in r["console"]]
        markers = [c for c in console if c[0] == "stderr" and "dropped" in c[1]]
        assert markers, console
        dropped = sum(int(m[1].split("[bai: ")[1].split(" bytes")[0]) for m in markers)
        out = "".join(c[1] for c in console if c[0] == "stdout")
        assert out.endswith("xEND") and len(out) + dropped == 3 * 2**20 + 3
        assert console[-1] == ["stderr", "tail\n"]
        assert (await run(runner, "'still fine'"))["console"] == [["stdout", "'still fine'"]]
    finally:
        await runner.request_exit()
        await runner.close()
        async with asyncio.timeout(5):
            await proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


async def test_runner_reconnects_and_keeps_its_state(runner: KernelRunner) -> None:
    """What an agent restart looks like to the runner: the socket goes away, a new one comes."""
    await run(runner, "kept = 42")
    path = runner.socket_path
    await runner.close()
    again = KernelRunner("k-test", path)
    await again.listen()
    try:
        await again.wait_ready(asyncio.get_running_loop().time() + 5)
        assert (await run(again, "kept"))["console"] == [["stdout", "42"]]
    finally:
        await again.request_exit()
        await again.close()


async def test_runs_of_a_lost_connection_never_leak_into_the_next(runner: KernelRunner) -> None:
    """The agent fails the runs of a connection it lost; the runner finishes them quietly, and
    frees its FIFO from one that waits for input nobody can give any more."""
    slow = await run(runner, "import time; time.sleep(0.5); print('late')", flush_timeout=0.05)
    assert slow["status"] == "continued"
    path = runner.socket_path
    await runner.close()
    assert (await runner.execute(slow["runId"], "continue", "", 1))["exitCode"] == 130
    again = KernelRunner("k-test", path)
    await again.listen()
    try:
        await again.wait_ready(asyncio.get_running_loop().time() + 5)
        assert (await run(again, "print('new')"))["console"] == [["stdout", "new\n"]]
        waiting = await run(again, "answer = input('? ')", flush_timeout=5)
        assert waiting["status"] == "waiting-input"
        await again.close()
        third = KernelRunner("k-test", path)
        await third.listen()
        try:
            await third.wait_ready(asyncio.get_running_loop().time() + 5)
            after = await run(third, "'free'")
            assert after["console"] == [["stdout", "'free'"]] and after["exitCode"] == 0
        finally:
            await third.request_exit()
            await third.close()
    finally:
        await again.close()


async def test_a_huge_frame_header_drops_the_connection(caplog: pytest.LogCaptureFixture) -> None:
    """A header announcing 4 GiB: nothing is allocated, the connection is dropped and logged,
    and the runs waiting on it fail instead of hanging."""
    tmp = Path(tempfile.mkdtemp(prefix="bai-kr-", dir="/tmp"))
    conn = KernelRunner("k-hostile", tmp / "agent.sock")
    await conn.listen()
    try:
        reader, writer = await asyncio.open_unix_connection(str(tmp / "agent.sock"))
        await conn.wait_ready(asyncio.get_running_loop().time() + 5)
        pending = asyncio.create_task(conn.execute(None, "query", "1", 30))
        sent = await reader.readexactly(int.from_bytes(await reader.readexactly(4), "big"))
        assert json.loads(sent) == {"op": "code", "code": "1"}
        writer.write((2**32 - 1).to_bytes(4, "big") + b"{")
        await writer.drain()
        async with asyncio.timeout(5):
            result = await pending
            assert await reader.read() == b""  # the agent hung up
        assert result["status"] == "finished" and result["exitCode"] == 130
        assert "frame too large: 4294967295 bytes" in caplog.text
        assert not conn.connected
        writer.close()
    finally:
        await conn.close()
        shutil.rmtree(tmp, ignore_errors=True)


async def test_threads_switching_streams_do_not_deadlock(runner: KernelRunner) -> None:
    # Threads alternate stdout and stderr (each switch is a sync exchange with the runner), also
    # after the cell has finished, while the main thread waits for the next cell.
    code = (
        "import sys, threading, time\n"
        "def chatter(n):\n"
        "    for i in range(50):\n"
        "        print('o', n, i); print('e', n, i, file=sys.stderr)\n"
        "threads = [threading.Thread(target=chatter, args=(n,)) for n in range(4)]\n"
        "for t in threads: t.start()\n"
        "for t in threads: t.join()\n"
        "late = threading.Thread(target=lambda: (time.sleep(0.05), chatter(9)))\n"
        "late.start()\n"
    )
    result = await run(runner, code)
    assert result["exitCode"] == 0
    out = "".join(text for kind, text in result["console"] if kind == "stdout")
    err = "".join(text for kind, text in result["console"] if kind == "stderr")
    assert out.count("\n") == 200 and err.count("\n") == 200
    # The late thread finishes while the kernel is idle; the kernel must still answer.
    assert (await run(runner, "late.join(); 'alive'"))["console"][-1] == ["stdout", "'alive'"]


async def test_forked_workers_do_not_disturb_the_channel(runner: KernelRunner) -> None:
    code = (
        "import multiprocessing as mp, sys\n"
        "def work(i):\n"
        "    print('w-out', i, flush=True); print('w-err', i, file=sys.stderr, flush=True)\n"
        "    return i * i\n"
        "with mp.get_context('fork').Pool(3) as pool:\n"
        "    squares = pool.map(work, range(12))\n"
        "print('parent', file=sys.stderr)\n"
        "sum(squares)"
    )
    result = await run(runner, code, flush_timeout=60)
    assert result["status"] == "finished" and result["exitCode"] == 0
    out = "".join(text for kind, text in result["console"] if kind == "stdout")
    err = "".join(text for kind, text in result["console"] if kind == "stderr")
    assert out.count("w-out") == 12 and err.count("w-err") == 12
    assert out.endswith("506") and err.endswith("parent\n")
    # A raw fork that runs to the end of the cell in the fork must not report a second finish.
    forked = await run(runner, "import os\npid = os.fork()\n'child' if pid == 0 else os.waitpid(pid, 0)[1]")
    # The fork shows its own value, then exits; the parent (which waited for it) shows its own.
    assert forked["console"] == [["stdout", "'child'0"]] and forked["exitCode"] == 0
    assert (await run(runner, "1 + 1"))["console"] == [["stdout", "2"]]
