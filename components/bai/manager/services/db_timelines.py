"""The newest PostgreSQL timeline any manager wrote on, per database cluster, kept in etcd, so a
manager never writes on an old primary that came back after its standby was promoted
(bai.manager.store.db.WritableHostConnector fences with it).

Key: ``manager/db/timelines/<system identifier>``, the timeline zero-padded to ten digits so
that etcd's bytewise comparison orders timelines as numbers."""

from __future__ import annotations

from bai.common.etcd import EtcdStore

PREFIX = "manager/db/timelines/"


class EtcdTimelineRecord:
    def __init__(self, etcd: EtcdStore) -> None:
        self._etcd = etcd

    async def newest(self, system_id: str) -> int:
        value = await self._etcd.get(PREFIX + system_id)
        return int(value) if value and value.isdigit() else 0

    async def record(self, system_id: str, timeline: int) -> None:
        await self._etcd.put_if_less(PREFIX + system_id, f"{timeline:010d}")
