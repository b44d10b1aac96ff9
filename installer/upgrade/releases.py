"""The release manifest (``installer/releases.toml``): every bai release, oldest first.

A version is ``YY.MM.PATCH``: ``YY.MM`` names a release line, ``PATCH`` counts that line's
releases from 0. The last release of the manifest has no commit: it is the working tree the
manifest ships in, and the tree knows its own version that way (no git tags are read). Its
database migration head is read from the code (the Alembic scripts), so a new migration needs no
manifest edit to be counted; releases with a commit record theirs.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import total_ordering
from pathlib import Path
from typing import Any

MANIFEST = Path(__file__).resolve().parent.parent / "releases.toml"
_VERSION = re.compile(r"(\d{2})\.(\d{2})\.(\d+)")
_COMMIT = re.compile(r"[0-9a-f]{40}")


class ManifestError(ValueError):
    """The manifest (or a version string) is malformed; the message names what and where."""


@total_ordering
@dataclass(frozen=True)
class Version:
    year: int
    month: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> Version:
        m = _VERSION.fullmatch(text.strip())
        if not m or not 1 <= int(m.group(2)) <= 12:
            raise ManifestError(f"{text!r} is not a release version (YY.MM.PATCH, e.g. 26.12.0)")
        return cls(int(m.group(1)), int(m.group(2)), int(m.group(3)))

    @property
    def line(self) -> str:
        """The release line, ``YY.MM``."""
        return f"{self.year:02d}.{self.month:02d}"

    def __str__(self) -> str:
        return f"{self.line}.{self.patch}"

    def _key(self) -> tuple[int, int, int]:
        return (self.year, self.month, self.patch)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() < other._key()


@dataclass(frozen=True)
class Release:
    version: Version
    commit: str | None  # None: the working tree
    migration_head: str  # "+"-joined when the schema has several heads
    config_version: int
    config_changes: str = ""
    notes: str = ""

    @property
    def is_tree(self) -> bool:
        return self.commit is None

    def as_dict(self) -> dict[str, Any]:
        return {"version": str(self.version), "commit": self.commit,
                "migration_head": self.migration_head, "config_version": self.config_version,
                "config_changes": self.config_changes, "notes": self.notes}


@dataclass(frozen=True)
class Manifest:
    releases: tuple[Release, ...]

    @property
    def current(self) -> Release:
        """The working tree's release (the manifest's last)."""
        return self.releases[-1]

    def get(self, version: Version | str) -> Release | None:
        v = Version.parse(version) if isinstance(version, str) else version
        return next((r for r in self.releases if r.version == v), None)

    def lines(self) -> list[str]:
        """Release lines, oldest first."""
        out: list[str] = []
        for r in self.releases:
            if r.version.line not in out:
                out.append(r.version.line)
        return out

    def line_releases(self, line: str) -> list[Release]:
        return [r for r in self.releases if r.version.line == line]

    def latest_patch(self, line: str) -> Release:
        return self.line_releases(line)[-1]

    def by_migration_head(self, head: str) -> list[Release]:
        return [r for r in self.releases if r.migration_head == head]


def tree_migration_head() -> str:
    """The Alembic head(s) of the code this module ships with, "+"-joined (sorted)."""
    from alembic.script import ScriptDirectory

    from bai.manager.store.migrate import MIGRATIONS

    return "+".join(sorted(ScriptDirectory(str(MIGRATIONS)).get_heads()))


def _text(entry: dict[str, Any], key: str, where: str, required: bool = True) -> str:
    value = entry.get(key, "" if not required else None)
    if not isinstance(value, str) or (required and not value.strip()):
        raise ManifestError(f"{where}: `{key}` must be a non-empty string")
    return value


def parse(doc: dict[str, Any], tree_head: str | None = None, source: str = "manifest"
          ) -> Manifest:
    """Validate a manifest document. ``tree_head`` is the working tree's migration head (read
    from the code when None)."""
    entries = doc.get("release")
    if not isinstance(entries, list) or not entries:
        raise ManifestError(f"{source}: no [[release]] entries")
    known = {"version", "commit", "migration-head", "config-version", "config-changes", "notes"}
    releases: list[Release] = []
    for i, entry in enumerate(entries):
        where = f"{source}: release #{i + 1}"
        if not isinstance(entry, dict):
            raise ManifestError(f"{where}: not a table")
        unknown = set(entry) - known
        if unknown:
            raise ManifestError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
        version = Version.parse(_text(entry, "version", where))
        where = f"{source}: release {version}"
        last = i == len(entries) - 1
        commit = entry.get("commit")
        if last:
            if commit is not None:
                raise ManifestError(f"{where}: the last release is the working tree and has no "
                                    "commit (add a new release after it instead)")
            if "migration-head" in entry:
                raise ManifestError(f"{where}: the working tree's migration head is read from "
                                    "the code; remove `migration-head`")
            head = tree_head if tree_head is not None else tree_migration_head()
        else:
            if not isinstance(commit, str) or not _COMMIT.fullmatch(commit):
                raise ManifestError(f"{where}: `commit` must be a full 40-hex commit id")
            head = _text(entry, "migration-head", where)
        cv = entry.get("config-version")
        if not isinstance(cv, int) or isinstance(cv, bool) or cv < 1:
            raise ManifestError(f"{where}: `config-version` must be a positive integer")
        releases.append(Release(version=version, commit=commit, migration_head=head,
                                config_version=cv,
                                config_changes=_text(entry, "config-changes", where, False),
                                notes=_text(entry, "notes", where, False)))
    _check_order(releases, source)
    return Manifest(tuple(releases))


def _check_order(releases: list[Release], source: str) -> None:
    for prev, cur in zip(releases, releases[1:], strict=False):
        if not prev.version < cur.version:
            raise ManifestError(f"{source}: {cur.version} comes after {prev.version}; releases "
                                "must be listed oldest first, each once")
        if cur.config_version < prev.config_version:
            raise ManifestError(f"{source}: {cur.version} lowers config-version")
        same_line = cur.version.line == prev.version.line
        expected = prev.version.patch + 1 if same_line else 0
        if cur.version.patch != expected:
            raise ManifestError(f"{source}: {cur.version} should be {cur.version.line}."
                                f"{expected} (patches of a line count up from 0, one by one)")
    commits = [r.commit for r in releases if r.commit]
    if len(commits) != len(set(commits)):
        raise ManifestError(f"{source}: a commit is listed twice")


def load(path: Path | str | None = None, tree_head: str | None = None) -> Manifest:
    p = Path(path) if path else MANIFEST
    try:
        doc = tomllib.loads(p.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ManifestError(f"{p}: {exc}") from exc
    return parse(doc, tree_head=tree_head, source=str(p))
