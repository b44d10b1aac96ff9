"""Dotfiles (the original's ``/user-config``, ``/domain-config``, ``/group-config``) and the
keypair's stored bootstrap script.

A dotfile is ``{path, perm, data}``: written into the home directory (``/home/work``) of every
new session, the domain's first, then the project's, then the keypair's (a later one wins on the
same path). The rules are the original's and ours on top of them:

* ``data`` at most 64 KiB; all of an owner's dotfiles together at most 64 KiB as the original
  measures them (their msgpack encoding); at most 100 files per owner;
* ``permission`` three octal digits;
* ``path`` relative to the home directory, normalised (``a//b/./c`` is ``a/b/c``), never
  absolute, never with ``..``, never a reserved name (what the platform or the runner own:
  ``.ssh`` and ``.ssh/authorized_keys``, ``.jupyter``, ``.terminfo``, ``.local``, ``.config``,
  the runner's upload temporaries).

Who may do what: a user reads and writes their own keypair's; an admin acts for another keypair
of their domain (``owner_access_key``; a superadmin for any); a domain's dotfiles are written by
its domain admins and superadmins and read by its users; a project's are written by the admins
of its domain and superadmins and read by its members. Every change is one locked
read-modify-write: it is stored whole or not at all.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from bai.manager import errors
from bai.manager.store import dotfiles as store
from bai.manager.store.dotfiles import Dotfile
from bai.manager.store.keypairs import Requester

from .context import ManagerContext

#: Bytes of one dotfile's data, and of an owner's whole (msgpack-encoded) list: the original's.
MAX_DATA_SIZE = 64 * 1024
MAX_TOTAL_SIZE = 64 * 1024
MAX_BOOTSTRAP_SIZE = 64 * 1024
MAX_FILES = 100
MAX_PATH_LENGTH = 1024
#: Names the platform or the runner own; a dotfile may not be (or replace) one of them.
RESERVED = frozenset({".terminfo", ".jupyter", ".ssh", ".ssh/authorized_keys", ".ssh/authorized_keys2",
                      ".local", ".config"})
RUNNER_PREFIXES = (".bai-upload-",)


class DotfileNotFound(errors.ObjectNotFound):
    title = "No such dotfile."


class DotfileAlreadyExists(errors.GenericBadRequest):
    title = "Dotfile already exists."


class DotfileCreationFailed(errors.GenericBadRequest):
    title = "Dotfile creation has failed."


@dataclass(frozen=True)
class Scope:
    """Whose dotfiles a call names: a keypair (``owner_access_key``, default the caller's),
    a domain or a project (``group``: name or id; a name is looked up in ``domain``)."""

    owner_access_key: str | None = None
    domain: str | None = None
    group: str | None = None


@dataclass(frozen=True)
class _Owner:
    kind: str  # keypair | domain | group
    key: Any


def normalise_path(path: str) -> str:
    """The stored form of a dotfile path; InvalidAPIParameters when it may not be one."""
    if not path or len(path) > MAX_PATH_LENGTH or any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise errors.InvalidAPIParameters("dotfile path must be 1-1024 printable characters")
    if path.startswith(("/", "~")):
        raise errors.InvalidAPIParameters("dotfile path must be relative to the home directory")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts:
        raise errors.InvalidAPIParameters("dotfile path names no file")
    if ".." in parts:
        raise errors.InvalidAPIParameters("dotfile path must not contain '..'")
    if any(len(p.encode()) > 255 for p in parts):
        raise errors.InvalidAPIParameters("a dotfile path component is longer than 255 bytes")
    normal = "/".join(parts)
    if normal in RESERVED or any(p.startswith(RUNNER_PREFIXES) for p in parts):
        raise errors.InvalidAPIParameters("dotfile path is reserved for internal operations.")
    return normal


def _check_permission(permission: str) -> str:
    if len(permission) != 3 or any(c not in "01234567" for c in permission):
        raise errors.InvalidAPIParameters("permission must be three octal digits, e.g. 755")
    return permission


def _check_data(data: str) -> str:
    if len(data.encode("utf-8", "surrogatepass")) > MAX_DATA_SIZE:
        raise errors.InvalidAPIParameters(f"dotfile data is larger than {MAX_DATA_SIZE} bytes")
    return data


def _packed_str(n: int) -> int:
    return n + (1 if n < 32 else 2 if n < 256 else 3 if n < 65536 else 5)


def packed_size(dotfiles: list[Dotfile]) -> int:
    """Bytes of ``dotfiles`` as msgpack (the original's stored form and the unit of its cap)."""
    size = 1 if len(dotfiles) < 16 else 3
    for d in dotfiles:
        size += 1 + 3 * _packed_str(4)  # a 3-entry map and its keys
        size += sum(_packed_str(len(d[k].encode("utf-8", "surrogatepass"))) for k in ("path", "perm", "data"))
    return size


# --- authorisation ------------------------------------------------------------------------------

async def _owner(ctx: ManagerContext, req: Requester, scope: Scope, *, write: bool) -> _Owner:
    if scope.group:
        return await _group_owner(ctx, req, scope.group, scope.domain, write=write)
    if scope.domain:
        return await _domain_owner(ctx, req, scope.domain, write=write)
    return await _keypair_owner(ctx, req, scope.owner_access_key)


async def _keypair_owner(ctx: ManagerContext, req: Requester, owner_access_key: str | None) -> _Owner:
    if not owner_access_key or owner_access_key == req.access_key:
        return _Owner("keypair", req.access_key)
    if req.role not in ("admin", "superadmin"):
        raise errors.GenericForbidden("Only admins can access other keypairs' dotfiles.")
    async with ctx.db.connect() as conn:
        target = await store.keypair_scope(conn, owner_access_key)
    if target is None:
        raise errors.InvalidAPIParameters("No such access key: owner_access_key")
    if not req.is_superadmin and (target.domain_name != req.domain_name or target.role == "superadmin"):
        raise errors.GenericForbidden("A domain admin acts only for keypairs of their own domain.")
    return _Owner("keypair", target.access_key)


async def _domain_owner(ctx: ManagerContext, req: Requester, domain: str, *, write: bool) -> _Owner:
    if not req.is_superadmin:
        if domain != req.domain_name:
            raise errors.GenericForbidden("Only superadmins access other domains' dotfiles.")
        if write and req.role != "admin":
            raise errors.GenericForbidden("Admin privilege required to change domain dotfiles.")
    async with ctx.db.connect() as conn:
        if not await store.domain_exists(conn, domain):
            raise errors.DomainNotFound(f"No such domain: {domain}")
    return _Owner("domain", domain)


async def _group_owner(ctx: ManagerContext, req: Requester, group: str, domain: str | None,
                       *, write: bool) -> _Owner:
    try:
        uuid.UUID(group)
        lookup_domain = domain
    except ValueError:
        lookup_domain = domain or req.domain_name  # a project name is looked up in a domain
    async with ctx.db.connect() as conn:
        project = await store.project(conn, group, lookup_domain)
        # Outside their domain a project is as unknown to a non-superadmin as a missing one.
        if project is None or (not req.is_superadmin and project.domain_name != req.domain_name):
            raise errors.GroupNotFound(f"No such project (user group): {group}")
        if not req.is_superadmin and req.role != "admin":
            if write:
                raise errors.GenericForbidden("Admin privilege required to change project dotfiles.")
            if not await store.is_member(conn, project.id, req.user_uuid):
                raise errors.GenericForbidden("Only the project's members read its dotfiles.")
    return _Owner("group", project.id)


# --- operations ---------------------------------------------------------------------------------

def _wire(d: Dotfile) -> dict[str, str]:
    return {"path": d["path"], "permission": d["perm"], "data": d["data"]}


async def list_or_get(ctx: ManagerContext, req: Requester, scope: Scope, path: str | None) -> Any:
    """All of the owner's dotfiles, or the one at ``path`` (404 when none)."""
    owner = await _owner(ctx, req, scope, write=False)
    async with ctx.db.connect() as conn:
        dotfiles = await store.dotfiles_of(conn, owner.kind, owner.key) or []
    if path is None:
        return [_wire(d) for d in dotfiles]
    wanted = normalise_path(path)
    for d in dotfiles:
        if d["path"] == wanted:
            return _wire(d)
    raise DotfileNotFound(f"No such dotfile: {wanted}")


async def create(ctx: ManagerContext, req: Requester, scope: Scope, path: str, permission: str,
                 data: str) -> None:
    new = {"path": normalise_path(path), "perm": _check_permission(permission), "data": _check_data(data)}
    owner = await _owner(ctx, req, scope, write=True)
    async with ctx.db.begin() as conn:
        dotfiles = await store.dotfiles_of(conn, owner.kind, owner.key, lock=True) or []
        if len(dotfiles) >= MAX_FILES:
            raise DotfileCreationFailed(f"Dotfile creation limit reached ({MAX_FILES} files)")
        if any(d["path"] == new["path"] for d in dotfiles):
            raise DotfileAlreadyExists(f"Dotfile already exists: {new['path']}")
        updated = [*dotfiles, new]
        if packed_size(updated) > MAX_TOTAL_SIZE:
            raise DotfileCreationFailed("No leftover space for dotfile storage")
        await store.save_dotfiles(conn, owner.kind, owner.key, updated)


async def update(ctx: ManagerContext, req: Requester, scope: Scope, path: str, permission: str,
                 data: str) -> None:
    changed = {"path": normalise_path(path), "perm": _check_permission(permission), "data": _check_data(data)}
    owner = await _owner(ctx, req, scope, write=True)
    async with ctx.db.begin() as conn:
        dotfiles = await store.dotfiles_of(conn, owner.kind, owner.key, lock=True) or []
        if not any(d["path"] == changed["path"] for d in dotfiles):
            raise DotfileNotFound(f"No such dotfile: {changed['path']}")
        updated = [changed if d["path"] == changed["path"] else d for d in dotfiles]
        if packed_size(updated) > MAX_TOTAL_SIZE:
            raise DotfileCreationFailed("No leftover space for dotfile storage")
        await store.save_dotfiles(conn, owner.kind, owner.key, updated)


async def delete(ctx: ManagerContext, req: Requester, scope: Scope, path: str) -> None:
    wanted = normalise_path(path)
    owner = await _owner(ctx, req, scope, write=True)
    async with ctx.db.begin() as conn:
        dotfiles = await store.dotfiles_of(conn, owner.kind, owner.key, lock=True) or []
        kept = [d for d in dotfiles if d["path"] != wanted]
        if len(kept) == len(dotfiles):
            raise DotfileNotFound(f"No such dotfile: {wanted}")
        await store.save_dotfiles(conn, owner.kind, owner.key, kept)


async def get_bootstrap_script(ctx: ManagerContext, req: Requester) -> str:
    async with ctx.db.connect() as conn:
        return await store.bootstrap_script(conn, req.access_key) or ""


async def set_bootstrap_script(ctx: ManagerContext, req: Requester, script: str) -> None:
    if len(script.encode("utf-8", "surrogatepass")) > MAX_BOOTSTRAP_SIZE:
        raise DotfileCreationFailed("Maximum bootstrap script length reached")
    async with ctx.db.begin() as conn:
        await store.save_bootstrap_script(conn, req.access_key, script)


# --- sessions -----------------------------------------------------------------------------------

def merge(*layers: list[Dotfile]) -> list[Dotfile]:
    """One list from the domain's, the project's and the keypair's dotfiles: on the same path the
    later layer wins (and takes the earlier one's place in the order)."""
    merged: dict[str, Dotfile] = {}
    for layer in layers:
        for d in layer:
            merged.pop(d["path"], None)
            merged[d["path"]] = d
    return list(merged.values())


async def for_session(conn: Any, access_key: str, domain_name: str,
                      group_id: uuid.UUID) -> tuple[list[Dotfile], str]:
    """The dotfiles a new session of this keypair in this project gets, and the keypair's
    bootstrap script ("" when none is stored)."""
    domain, group, keypair, script = await store.session_dotfiles(conn, access_key, domain_name, group_id)
    return merge(domain, group, keypair), script
