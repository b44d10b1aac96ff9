"""Folder and quota-scope identifiers in their wire forms, and where they live on a volume."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from .errors import InvalidParams

_QSID = re.compile(r"^(user|project):([0-9a-fA-F-]{32,36})$")


def _uuid(text: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise InvalidParams(f"{what} is not a UUID") from None


@dataclass(frozen=True)
class QuotaScopeID:
    """``user:<uuid>`` or ``project:<uuid>``; its directory is the UUID's hex under the volume."""

    kind: str
    id: uuid.UUID

    @classmethod
    def parse(cls, text: str) -> QuotaScopeID:
        match = _QSID.match(text)
        if not match:
            raise InvalidParams("a quota scope ID is 'user:<uuid>' or 'project:<uuid>'")
        return cls(match[1], _uuid(match[2], "the quota scope ID"))

    def __str__(self) -> str:
        return f"{self.kind}:{self.id}"

    def path(self, volume_root: Path) -> Path:
        return volume_root / self.id.hex


@dataclass(frozen=True)
class VFolderID:
    """``<quota_scope_id>/<folder uuid hex>``, or the bare hex of a legacy folder."""

    quota_scope: QuotaScopeID | None
    folder: uuid.UUID

    @classmethod
    def parse(cls, text: str) -> VFolderID:
        if len(text) > 128:
            raise InvalidParams("vfid is too long")
        qs_text, sep, folder_text = text.rpartition("/")
        quota_scope = QuotaScopeID.parse(qs_text) if sep else None
        return cls(quota_scope, _uuid(folder_text, "the folder ID"))

    def __str__(self) -> str:
        return f"{self.quota_scope}/{self.folder.hex}" if self.quota_scope else self.folder.hex

    def path(self, volume_root: Path) -> Path:
        """``<volume>/<qsid hex>/<hex[0:2]>/<hex[2:4]>/<hex[4:]>`` (no scope level for legacy)."""
        base = self.quota_scope.path(volume_root) if self.quota_scope else volume_root
        hexid = self.folder.hex
        return base / hexid[0:2] / hexid[2:4] / hexid[4:]
