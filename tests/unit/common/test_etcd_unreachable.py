"""An etcd that nobody answers for is a transient outage: the error the store raises is one the
manager answers with 503 (not 500), as the etcd kill -9 fault test expects."""

from __future__ import annotations

import socket

import pytest

from bai.common.etcd import EtcdError, EtcdUnreachable, connect
from bai.manager.store.db import is_transient


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends: nothing listens there


async def test_no_member_answering_is_a_transient_error() -> None:
    addrs = f"127.0.0.1:{_closed_port()},127.0.0.1:{_closed_port()}"
    async with connect(addrs, "local", call_deadline=2) as store:
        with pytest.raises(EtcdUnreachable) as caught:
            await store.get("config/redis/addr")
    assert isinstance(caught.value, EtcdError) and is_transient(caught.value)
    assert str(caught.value).count("127.0.0.1:") == 2  # both members named
