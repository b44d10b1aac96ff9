"""Rich console items (bai_display), completion, interrupt and batch mode, through the agent's
runner connection on the host's python3 (as test_kernel_runner.py does)."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bai.agent.kernel import KernelRunner
from tests.unit.kernel.test_kernel_runner import HOST_PYTHON, RUNNER_DIR


async def start_runner(tmp: Path) -> tuple[asyncio.subprocess.Process, KernelRunner, Path]:
    (tmp / "pkg").mkdir()
    (tmp / "pkg" / "bai_kernel").symlink_to(RUNNER_DIR)
    work = tmp / "work"
    work.mkdir()
    conn = KernelRunner("k-test", tmp / "agent.sock")
    await conn.listen()
    proc = await asyncio.create_subprocess_exec(
        HOST_PYTHON, "-s", "-m", "bai_kernel", "--socket", str(tmp / "agent.sock"), "--work-dir", str(work),
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(tmp / "pkg")}, cwd=work)
    await conn.wait_ready(asyncio.get_running_loop().time() + 10)
    return proc, conn, work


async def stop_runner(proc: asyncio.subprocess.Process, conn: KernelRunner, tmp: Path) -> None:
    await conn.request_exit()
    await conn.close()
    try:
        async with asyncio.timeout(5):
            await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
async def kernel() -> AsyncIterator[tuple[KernelRunner, Path]]:
    tmp = Path(tempfile.mkdtemp(prefix="bai-kx-", dir="/tmp"))
    proc, conn, work = await start_runner(tmp)
    try:
        yield conn, work
    finally:
        await stop_runner(proc, conn, tmp)


async def run_to_end(conn: KernelRunner, mode: str, code: str = "", opts: dict[str, Any] | None = None
                     ) -> list[dict[str, Any]]:
    """Every result of one run, as a client's continue loop sees them."""
    results = [await conn.execute(None, mode, code, 10.0, opts)]
    async with asyncio.timeout(30):
        while results[-1]["status"] != "finished":
            results.append(await conn.execute(results[-1]["runId"], "continue", "", 10.0))
    return results


async def test_media_html_and_log_items_keep_their_place(kernel: tuple[KernelRunner, Path]) -> None:
    conn, _ = kernel
    png = b"\x89PNG\r\n\x1a\nfake"
    code = (
        "import bai_display, logging\n"
        "print('before')\n"
        f"bai_display.display_media('image/png', {png!r})\n"
        "bai_display.display_media('image/svg+xml', '<svg/>')\n"
        "bai_display.display_html('<b>bold</b>')\n"
        "log = logging.getLogger('mine'); log.addHandler(bai_display.LogHandler()); log.warning('careful')\n"
        "print('after')\n"
    )
    (result,) = await run_to_end(conn, "query", code)
    console = result["console"]
    assert console[0] == ["stdout", "before\n"]
    assert console[1] == ["media", ["image/png", "data:image/png;base64," + base64.b64encode(png).decode()]]
    assert console[2] == ["media", ["image/svg+xml", "<svg/>"]]
    assert console[3] == ["html", "<b>bold</b>"]
    assert console[4][0] == "log"
    level, stamp, logger, message = console[4][1]
    assert (level, logger, message) == ("WARNING", "mine", "careful")
    assert stamp.endswith("+00:00")
    assert console[5] == ["stdout", "after\n"]
    assert result["exitCode"] == 0


async def test_display_of_objects_and_oversized_items(kernel: tuple[KernelRunner, Path]) -> None:
    conn, _ = kernel
    code = (
        "import bai_display\n"
        "class Chart:\n"
        "    def _repr_svg_(self): return '<svg id=\"c\"/>'\n"
        "bai_display.display(Chart())\n"
        "try:\n"
        "    bai_display.display_html('x' * 2_000_000)\n"
        "except ValueError as e:\n"
        "    print('refused:', e)\n"
    )
    (result,) = await run_to_end(conn, "query", code)
    assert result["console"][0] == ["media", ["image/svg+xml", '<svg id="c"/>']]
    assert result["console"][1][0] == "stdout" and result["console"][1][1].startswith("refused: a html item")


async def test_completion_from_the_live_namespace(kernel: tuple[KernelRunner, Path]) -> None:
    conn, _ = kernel
    await run_to_end(conn, "query", "import os\nmy_counter = 1\nmy_cache = {}")
    assert await conn.complete("my_c", {}) == ["my_cache", "my_counter"]
    assert "os.path" in await conn.complete("", {"line": "x = os.pa", "col": 9, "row": 0})
    assert await conn.complete("", {}) == []
    # Nothing that is not a dotted name is evaluated to complete it.
    assert await conn.complete("open('/tmp/x', 'w').wr", {}) == []


async def test_completion_while_code_runs_is_empty_and_fast(kernel: tuple[KernelRunner, Path]) -> None:
    conn, _ = kernel
    first = await conn.execute(None, "query", "import time\nwhile True: time.sleep(0.01)", 0.1)
    assert first["status"] == "continued"
    async with asyncio.timeout(2):
        assert await conn.complete("ti", {}) == []
    await conn.interrupt()
    results = [first]
    # a lost interrupt would loop forever; the bound only has to be far above a loaded machine's pace
    async with asyncio.timeout(30):
        while results[-1]["status"] != "finished":
            results.append(await conn.execute(first["runId"], "continue", "", 5.0))
    stderr = "".join(c[1] for r in results for c in r["console"] if c[0] == "stderr")
    assert "KeyboardInterrupt" in stderr
    assert results[-1]["exitCode"] == 1
    assert "time" in await conn.complete("ti", {})


async def test_batch_clean_build_exec(kernel: tuple[KernelRunner, Path]) -> None:
    conn, work = kernel
    (work / "main.py").write_text("import sys\nprint('exec ran')\nprint('to stderr', file=sys.stderr)\n")
    opts = {"clean": "rm -f built.txt; echo cleaned", "build": "echo building; echo ok > built.txt",
            "exec": "*"}
    results = await run_to_end(conn, "batch", "", opts)
    statuses = [(r["status"], r["exitCode"]) for r in results if r["status"] != "continued"]
    assert statuses == [("clean-finished", 0), ("build-finished", 0), ("finished", 0)]
    by_status = {r["status"]: r["console"] for r in results}
    assert by_status["clean-finished"] == [["stdout", "cleaned\n"]]
    assert by_status["build-finished"] == [["stdout", "building\n"]]
    assert ["stdout", "exec ran\n"] in by_status["finished"] and ["stderr", "to stderr\n"] in by_status["finished"]
    assert (work / "built.txt").read_text() == "ok\n"


async def test_batch_failing_build_skips_exec_and_reports_its_code(kernel: tuple[KernelRunner, Path]) -> None:
    conn, work = kernel
    results = await run_to_end(conn, "batch", "", {"clean": "", "build": "echo broken >&2; exit 3",
                                                   "exec": "touch ran.txt"})
    statuses = [(r["status"], r["exitCode"]) for r in results if r["status"] != "continued"]
    assert statuses == [("clean-finished", 0), ("build-finished", 3), ("finished", 3)]
    assert not (work / "ran.txt").exists()
    # The kernel's query mode is untouched by a batch run.
    (after,) = await run_to_end(conn, "query", "print(2 + 2)")
    assert after["console"] == [["stdout", "4\n"]]


async def test_batch_exec_star_without_main_py(kernel: tuple[KernelRunner, Path]) -> None:
    conn, _ = kernel
    results = await run_to_end(conn, "batch", "", {"clean": "*", "build": "*", "exec": "*"})
    assert results[-1]["exitCode"] == 127
    assert "main.py" in "".join(c[1] for r in results for c in r["console"] if c[0] == "stderr")
