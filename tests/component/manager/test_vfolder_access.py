"""The vfolder access rules (services/vfolders/access.py) against a real database and etcd: owned,
project, shared and admin reach, the permission each sees and may use, name resolution, and the
union of volume-host permissions."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa

from bai.common import etcd as etcd_mod
from bai.manager import errors
from bai.manager.config import ManagerConfig
from bai.manager.services.context import ManagerContext
from bai.manager.services.vfolders import access, proxies
from bai.manager.store import tables as t
from bai.manager.store.keypairs import Requester, get_requester
from tests.fixtures.halfstack import HalfStack

from .conftest import ManagerDB
from .test_gql import _add_user


@dataclass
class World:
    ctx: ManagerContext
    owner: Requester
    member: Requester  # in the owner's project
    stranger: Requester  # another project of the same domain
    dadmin: Requester  # domain admin of "default"
    project: uuid.UUID
    other_project: uuid.UUID


async def _folder(conn: Any, name: str, *, user: uuid.UUID | None = None, group: uuid.UUID | None = None,
                  permission: str = "rw", status: str = "ready") -> uuid.UUID:
    fid = uuid.uuid4()
    scope = f"user:{user}" if user else f"project:{group}"
    await conn.execute(sa.insert(t.vfolders).values(
        id=fid, host="local:volume1", quota_scope_id=scope, name=name, permission=permission,
        ownership_type="user" if user else "group", user=user, group=group, status=status, creator="x@y"))
    return fid


@pytest.fixture(scope="module")
async def world(halfstack: HalfStack, manager_db: ManagerDB) -> AsyncIterator[World]:
    namespace = f"vfa{secrets.token_hex(3)}"
    async with etcd_mod.connect(halfstack.etcd_addr, namespace) as etcd:
        await etcd.put("volumes/_types/user", "")
        await etcd.put("volumes/_types/group", "")
        ctx = ManagerContext(config=ManagerConfig(), db=manager_db.engine, redis_stream=None,  # type: ignore[arg-type]
                             redis_ratelimit=None, etcd=etcd, agents=None, events=None)  # type: ignore[arg-type]
        async with manager_db.engine.begin() as conn:
            default_group = (await conn.execute(sa.select(t.groups.c.id).where(t.groups.c.name == "default"))).scalar()
            other = uuid.uuid4()
            await conn.execute(sa.insert(t.groups).values(id=other, name="vfa-other", domain_name="default"))
            owner = await _add_user(conn, "vfa-owner@x.test", "default", "user", default_group)
            member = await _add_user(conn, "vfa-member@x.test", "default", "user", default_group)
            stranger = await _add_user(conn, "vfa-stranger@x.test", "default", "user", other)
            dadmin = await _add_user(conn, "vfa-dadmin@x.test", "default", "admin", other)
            reqs = [await get_requester(conn, o.creds.access_key) for o in (owner, member, stranger, dadmin)]
        assert all(reqs)
        try:
            yield World(ctx, *reqs, default_group, other)  # type: ignore[arg-type]
        finally:
            await proxies.close(ctx)
            await etcd.delete_prefix("")


async def test_reach_and_permissions(world: World, manager_db: ManagerDB) -> None:
    async with manager_db.engine.begin() as conn:
        mine = await _folder(conn, "acc-mine", user=world.owner.user_uuid, permission="ro")
        proj = await _folder(conn, "acc-proj", group=world.project, permission="ro")
        other_proj = await _folder(conn, "acc-other", group=world.other_project, permission="rw")
        shared = await _folder(conn, "acc-shared", user=world.stranger.user_uuid)
        await conn.execute(sa.insert(t.vfolder_permissions).values(vfolder=shared, user=world.owner.user_uuid,
                                                                   permission="ro"))
        # the member gets a per-user override on the project folder
        await conn.execute(sa.insert(t.vfolder_permissions).values(vfolder=proj, user=world.member.user_uuid,
                                                                   permission="wd"))
    ctx = world.ctx
    seen = {f.id: f for f in await access.reachable(ctx, world.owner)}
    assert set(seen) >= {mine, proj, shared} and other_proj not in seen
    # the owner is shown the folder's own permission but may do everything
    assert (seen[mine].permission, seen[mine].effective, seen[mine].is_owner) == ("ro", "wd", True)
    assert (seen[proj].permission, seen[proj].effective, seen[proj].is_owner) == ("ro", "ro", False)
    assert (seen[shared].permission, seen[shared].via, seen[shared].is_owner) == ("ro", "shared", False)
    member_view = {f.id: f for f in await access.reachable(ctx, world.member)}
    assert member_view[proj].effective == "wd" and mine not in member_view and shared not in member_view
    # a stranger sees neither the owner's folder nor the owner's project folder, and the name is "not found"
    stranger_view = {f.id for f in await access.reachable(ctx, world.stranger)}
    assert mine not in stranger_view and proj not in stranger_view and other_proj in stranger_view
    with pytest.raises(errors.VFolderNotFound) as nf:
        await access.resolve(ctx, world.stranger, "acc-mine")
    assert "vfa-owner" not in str(nf.value.msg)
    # a domain admin reaches every project folder of the domain as an owner, not users' folders
    admin_view = {f.id: f for f in await access.reachable(ctx, world.dadmin)}
    assert admin_view[proj].is_owner and admin_view[other_proj].effective == "wd" and mine not in admin_view
    # ... but by ID with admin reach (trash and purge)
    assert (await access.by_id(ctx, world.dadmin, mine, admin_reach=True)).via == "admin"
    with pytest.raises(errors.VFolderNotFound):
        await access.by_id(ctx, world.stranger, mine, admin_reach=True)
    # permission checks
    with pytest.raises(errors.VFolderPermissionError):
        await access.resolve(ctx, world.owner, "acc-proj", need="rw")
    with pytest.raises(errors.VFolderPermissionError):
        await access.resolve(ctx, world.owner, "acc-shared", owner_only=True)
    assert (await access.resolve(ctx, world.owner, "acc-mine", need="wd", owner_only=True)).id == mine


async def test_name_resolution_and_status(world: World, manager_db: ManagerDB) -> None:
    async with manager_db.engine.begin() as conn:
        await _folder(conn, "acc-dup", user=world.owner.user_uuid)
        await _folder(conn, "acc-dup", group=world.project)
        trashed = await _folder(conn, "acc-trash", user=world.owner.user_uuid, status="delete-pending")
    with pytest.raises(errors.TooManyVFoldersFound):
        await access.resolve(world.ctx, world.owner, "acc-dup")
    with pytest.raises(errors.VFolderNotFound):  # trash is not live
        await access.resolve(world.ctx, world.owner, "acc-trash")
    found = await access.resolve(world.ctx, world.owner, "acc-trash", statuses=[access.TRASH_STATUS])
    assert found.id == trashed and found.vfid == f"user:{world.owner.user_uuid}/{trashed.hex}"


async def test_group_type_disabled_hides_project_folders(world: World, manager_db: ManagerDB) -> None:
    async with manager_db.engine.begin() as conn:
        proj = await _folder(conn, "acc-typed", group=world.project)
    await world.ctx.etcd.delete("volumes/_types/group")
    proxies.client(world.ctx).invalidate()
    try:
        assert proj not in {f.id for f in await access.reachable(world.ctx, world.member)}
    finally:
        await world.ctx.etcd.put("volumes/_types/group", "")
        proxies.client(world.ctx).invalidate()
    assert proj in {f.id for f in await access.reachable(world.ctx, world.member)}


async def test_host_permissions_are_the_union(world: World, manager_db: ManagerDB) -> None:
    async with manager_db.engine.begin() as conn:
        await conn.execute(sa.update(t.domains).where(t.domains.c.name == "default").values(
            allowed_vfolder_hosts={"local:volume1": ["create-vfolder"]}))
        await conn.execute(sa.update(t.groups).where(t.groups.c.id == world.project).values(
            allowed_vfolder_hosts={"local:volume1": ["upload-file"], "local:volume2": ["mount-in-session"]}))
        await conn.execute(sa.update(t.keypair_resource_policies).where(
            t.keypair_resource_policies.c.name == "default").values(
            allowed_vfolder_hosts={"local:volume1": ["download-file"]}))
    hosts = await access.allowed_hosts(world.ctx, world.owner)
    assert hosts["local:volume1"] == {"create-vfolder", "upload-file", "download-file"}
    assert hosts["local:volume2"] == {"mount-in-session"}
    # the stranger is not in the project: no upload-file, no volume2
    stranger_hosts = await access.allowed_hosts(world.ctx, world.stranger)
    assert stranger_hosts["local:volume1"] == {"create-vfolder", "download-file"} and "local:volume2" not in stranger_hosts
    with pytest.raises(errors.VFolderHostNotAllowed):
        await access.require_host_permission(world.ctx, world.stranger, "local:volume1", "upload-file")
    await access.require_host_permission(world.ctx, world.owner, "local:volume1", "upload-file")
