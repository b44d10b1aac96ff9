"""What every resolver receives as ``info.context``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bai.manager.services.context import ManagerContext
from bai.manager.store.keypairs import Requester


@dataclass(frozen=True)
class GQLContext:
    requester: Requester
    manager: ManagerContext

    @property
    def max_page_size(self) -> int:
        return self.manager.config.graphql.max_page_size


def context_of(info: Any) -> GQLContext:
    ctx: GQLContext = info.context
    return ctx
