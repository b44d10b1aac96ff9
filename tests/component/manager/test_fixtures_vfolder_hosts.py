"""The initial fixtures let the default domain and the ``default`` keypair policy use every
volume-host permission on the all-in-one volume (``local:volume1``), and a later run of them
keeps what an operator set since."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from bai.manager.store import fixtures
from bai.manager.store import tables as t

from .conftest import ManagerDB

ALL = ["create-vfolder", "modify-vfolder", "delete-vfolder", "mount-in-session", "upload-file",
       "download-file", "invite-others", "set-user-specific-permission"]


async def _hosts(db: ManagerDB) -> dict[str, Any]:
    async with db.engine.connect() as conn:
        domain = await conn.scalar(sa.select(t.domains.c.allowed_vfolder_hosts).where(t.domains.c.name == "default"))
        policies = dict((await conn.execute(sa.select(t.keypair_resource_policies.c.name,
                                                      t.keypair_resource_policies.c.allowed_vfolder_hosts))).all())
    return {"domain": domain, **policies}


async def test_default_domain_and_policy_get_the_default_volume(manager_db: ManagerDB) -> None:
    hosts = await _hosts(manager_db)
    assert hosts["domain"] == {"local:volume1": ALL} and hosts["default"] == {"local:volume1": ALL}
    # signed-up users' policy grants nothing by itself (the domain's grant applies to them)
    assert hosts[fixtures.SIGNUP_POLICY] == {}


async def test_a_rerun_keeps_what_an_operator_set(manager_db: ManagerDB) -> None:
    narrowed = {"local:volume1": ["mount-in-session", "download-file"]}
    async with manager_db.engine.begin() as conn:
        await conn.execute(sa.update(t.domains).where(t.domains.c.name == "default")
                           .values(allowed_vfolder_hosts=narrowed))
        await conn.execute(sa.update(t.keypair_resource_policies)
                           .where(t.keypair_resource_policies.c.name == "default")
                           .values(allowed_vfolder_hosts={"nfs:vol": ["mount-in-session"]}))
    async with manager_db.engine.begin() as conn:
        again = await fixtures.populate(conn)
    assert again.access_key == manager_db.admin.access_key
    hosts = await _hosts(manager_db)
    assert hosts["domain"] == narrowed and hosts["default"] == {"nfs:vol": ["mount-in-session"]}
