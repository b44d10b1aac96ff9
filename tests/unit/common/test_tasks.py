import asyncio
import logging

import pytest

from bai.common.tasks import raise_if_cancelling, stop_tasks


async def _swallowing_call() -> None:
    """What redis-py can do: a cancellation inside a blocking read comes out as another error."""
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        raise ConnectionError("connection closed") from None


async def test_loop_stops_although_the_library_swallowed_the_cancel() -> None:
    async def loop() -> None:
        while True:
            try:
                await _swallowing_call()
            except ConnectionError:
                raise_if_cancelling()

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)
    await stop_tasks([task], grace=5)
    assert task.cancelled()


async def test_stop_tasks_never_waits_forever(caplog: pytest.LogCaptureFixture) -> None:
    stop = asyncio.Event()

    async def careless_loop() -> None:  # no raise_if_cancelling: would run forever
        while not stop.is_set():
            try:
                await _swallowing_call()
            except ConnectionError:
                pass

    task = asyncio.create_task(careless_loop(), name="careless")
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR):
        await stop_tasks([task], grace=0.2)
    assert not task.done() and "careless did not stop" in caplog.text
    stop.set()
    task.cancel()
    await asyncio.wait([task], timeout=5)
