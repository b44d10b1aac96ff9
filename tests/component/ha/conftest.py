"""One HA half-stack part of each kind per test module (tests/fixtures/ha_halfstack.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.ha_halfstack import (
    EtcdCluster,
    PostgresPair,
    SentinelRedis,
    running_etcd_cluster,
    running_postgres_pair,
    running_sentinel_redis,
)


@pytest.fixture(scope="module")
def etcd_cluster() -> Iterator[EtcdCluster]:
    with running_etcd_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def sentinel_redis() -> Iterator[SentinelRedis]:
    with running_sentinel_redis() as redis:
        yield redis


@pytest.fixture(scope="module")
def postgres_pair() -> Iterator[PostgresPair]:
    with running_postgres_pair() as pair:
        yield pair
