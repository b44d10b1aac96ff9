"""bai.webserver.accesslog: access lines reach the same handlers in the same format, a batch as
one write to a plain stream, within FLUSH_SECONDS; everything pending is written when the last
webserver of the process stops, and the logger is left as it was."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Iterator

import pytest

from bai.webserver import accesslog


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


class Collecting(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def tree() -> Iterator[tuple[logging.Logger, CountingStream, Collecting]]:
    """A logger ``<top>.access`` whose parent has a plain stream handler and a collecting one."""
    top = logging.getLogger(f"test-accesslog-{time.monotonic_ns()}")
    top.setLevel(logging.INFO)
    top.propagate = False  # this test's lines stay in this tree
    stream = CountingStream()
    plain = logging.StreamHandler(stream)
    plain.setFormatter(logging.Formatter("%(name)s %(levelname)s: %(message)s"))
    collecting = Collecting()
    top.addHandler(plain)
    top.addHandler(collecting)
    yield top.getChild("access"), stream, collecting
    top.handlers.clear()


async def _until(check: object, what: str, deadline: float) -> None:
    end = time.monotonic() + deadline
    while not check():  # type: ignore[operator]
        assert time.monotonic() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_lines_go_out_together_within_the_flush_interval(
        tree: tuple[logging.Logger, CountingStream, Collecting]) -> None:
    access, stream, collecting = tree
    async with accesslog.batched(access):
        assert not access.propagate
        for i in range(3):
            access.info("method=GET path=/func/x%d status=200", i)
        assert stream.getvalue() == "" and not collecting.records  # gathered, not yet written
        await _until(lambda: stream.getvalue(), "the batch to be written", accesslog.FLUSH_SECONDS * 4)
        name = access.name
        assert stream.getvalue() == "".join(f"{name} INFO: method=GET path=/func/x{i} status=200\n" for i in range(3))
        assert stream.writes == 1  # one write (one wake-up of whoever reads the log) for the three
        assert [r.getMessage() for r in collecting.records] == [f"method=GET path=/func/x{i} status=200"
                                                                 for i in range(3)]
    assert access.propagate and not access.handlers


async def test_a_full_batch_is_written_at_once_and_the_rest_at_the_end(
        tree: tuple[logging.Logger, CountingStream, Collecting]) -> None:
    access, stream, collecting = tree
    async with accesslog.batched(access):
        for i in range(accesslog.MAX_LINES + 2):
            access.info("line %d", i)
        assert stream.writes == 1 and len(collecting.records) == accesslog.MAX_LINES  # bounded memory
    assert stream.writes == 2 and len(collecting.records) == accesslog.MAX_LINES + 2  # flushed at the end
    assert stream.getvalue().splitlines()[-1].endswith(f"line {accesslog.MAX_LINES + 1}")


async def test_two_webservers_in_one_process_share_it_and_levels_still_apply(
        tree: tuple[logging.Logger, CountingStream, Collecting]) -> None:
    access, stream, collecting = tree
    collecting.setLevel(logging.WARNING)
    async with accesslog.batched(access):
        async with accesslog.batched(access):
            assert len(access.handlers) == 1
            access.info("while both run")
        assert len(access.handlers) == 1 and not access.propagate  # the other one still runs
        access.warning("after one stopped")
    assert access.handlers == [] and access.propagate
    assert stream.getvalue().count("\n") == 2
    assert [r.getMessage() for r in collecting.records] == ["after one stopped"]  # its own level
