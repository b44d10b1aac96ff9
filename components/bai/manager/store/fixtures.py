"""Initial fixtures: default domain, project, resource group and policy, the admin user and
its keypair. Idempotent: rows that exist are left as they are."""

from __future__ import annotations

import hashlib
import os
import secrets
import string
import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from . import tables as t

ADMIN_EMAIL = "admin@lablup.com"
#: The keypair resource policy of signed-up users (also created by migration 0003): real slot
#: limits, never the unlimited ``default``.
SIGNUP_POLICY = "signup-default"
SIGNUP_POLICY_LIMITS = {"total_resource_slots": {"cpu": "2", "mem": str(4 * 2**30)},
                        "max_concurrent_sessions": 2, "max_containers_per_session": 1,
                        "default_for_unspecified": "LIMITED", "idle_timeout": 3600}
DEFAULT_IMAGE_ALIASES = {"python": "bai.local/stable/python:3.11-debian12",
                         "python-jupyter": "bai.local/stable/python-jupyter:3.11-debian12"}
#: The all-in-one storage proxy's volume (roles/storage_proxy.py) and every volume-host
#: permission on it, granted to the default domain and the ``default`` keypair policy.
DEFAULT_VFOLDER_HOST = "local:volume1"
DEFAULT_VFOLDER_HOST_PERMISSIONS = ["create-vfolder", "modify-vfolder", "delete-vfolder", "mount-in-session",
                                    "upload-file", "download-file", "invite-others",
                                    "set-user-specific-permission"]


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 600_000)
    return f"pbkdf2_sha256$600000${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        algo, rounds, salt, digest = stored.split("$")
    except ValueError:
        return False
    if algo != "pbkdf2_sha256":
        return False
    got = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), int(rounds))
    return secrets.compare_digest(got.hex(), digest)


def generate_keypair() -> tuple[str, str]:
    """Access keys look like the original's (``AKIA`` + 16 upper-case alphanumerics)."""
    alphabet = string.ascii_uppercase + string.digits
    ak = "AKIA" + "".join(secrets.choice(alphabet) for _ in range(16))
    sk = secrets.token_urlsafe(30)[:40]
    return ak, sk


def _has_column(sync: sa.Connection, table: str, column: str) -> bool:
    return any(c["name"] == column for c in sa.inspect(sync).get_columns(table))


async def _grant_default_vfolder_host(conn: AsyncConnection) -> None:
    """Only where nothing is granted yet (``{}``): an operator's later setting survives a rerun.
    (Tables of a revision before 0005/0006 have no such column and are left alone.)"""
    grant = {DEFAULT_VFOLDER_HOST: DEFAULT_VFOLDER_HOST_PERMISSIONS}
    empty = sa.func.jsonb_build_object()
    for table in (t.domains, t.keypair_resource_policies):
        if not await conn.run_sync(_has_column, table.name, "allowed_vfolder_hosts"):
            continue
        await conn.execute(sa.update(table)
                           .where(table.c.name == "default", table.c.allowed_vfolder_hosts == empty)
                           .values(allowed_vfolder_hosts=grant))


@dataclass(frozen=True)
class AdminCredentials:
    email: str
    access_key: str
    secret_key: str
    password: str | None  # only when created in this run


async def populate(conn: AsyncConnection, admin_password: str | None = None) -> AdminCredentials:
    await conn.execute(insert(t.domains).values(name="default", description="The default domain").on_conflict_do_nothing())
    await conn.execute(
        insert(t.keypair_resource_policies)
        .values(name="default", total_resource_slots={}, max_concurrent_sessions=30,
                max_containers_per_session=1, idle_timeout=3600)
        .on_conflict_do_nothing()
    )
    await conn.execute(
        insert(t.keypair_resource_policies).values(name=SIGNUP_POLICY, **SIGNUP_POLICY_LIMITS)
        .on_conflict_do_nothing()
    )
    # users.resource_policy and groups.resource_policy refer to these (migration 0006 creates them
    # with their 'default' rows; a database of an older revision has neither)
    if await conn.run_sync(lambda sync: sa.inspect(sync).has_table("user_resource_policies")):
        await conn.execute(insert(t.user_resource_policies).values(name="default").on_conflict_do_nothing())
        await conn.execute(insert(t.project_resource_policies).values(name="default").on_conflict_do_nothing())
    await conn.execute(
        insert(t.scaling_groups).values(name="default", description="The default resource group").on_conflict_do_nothing()
    )
    await conn.execute(insert(t.sgroups_for_domains).values(scaling_group="default", domain="default").on_conflict_do_nothing())
    group_id = await conn.scalar(sa.select(t.groups.c.id).where(t.groups.c.name == "default", t.groups.c.domain_name == "default"))
    if group_id is None:
        group_id = uuid.uuid4()
        await conn.execute(sa.insert(t.groups).values(id=group_id, name="default", domain_name="default",
                                                      description="The default project"))
    await _grant_default_vfolder_host(conn)
    for alias, image in DEFAULT_IMAGE_ALIASES.items():
        await conn.execute(insert(t.image_aliases).values(alias=alias, image=image).on_conflict_do_nothing())

    row = (await conn.execute(
        sa.select(t.users.c.uuid, t.users.c.main_access_key).where(t.users.c.email == ADMIN_EMAIL)
    )).first()
    if row is not None and row.main_access_key:
        sk = await conn.scalar(sa.select(t.keypairs.c.secret_key).where(t.keypairs.c.access_key == row.main_access_key))
        return AdminCredentials(ADMIN_EMAIL, row.main_access_key, str(sk), None)
    password = admin_password or secrets.token_urlsafe(12)
    user_id = uuid.uuid4()
    ak, sk = generate_keypair()
    await conn.execute(sa.insert(t.users).values(
        uuid=user_id, username="admin", email=ADMIN_EMAIL, password=hash_password(password),
        full_name="Administrator", status="active", domain_name="default", role="superadmin",
        resource_policy="default", main_access_key=ak,
    ))
    await conn.execute(sa.insert(t.keypairs).values(
        access_key=ak, secret_key=sk, user_id=ADMIN_EMAIL, user=user_id, is_active=True, is_admin=True,
        rate_limit=30000, resource_policy="default",
    ))
    await conn.execute(sa.insert(t.association_groups_users).values(user_id=user_id, group_id=group_id))
    return AdminCredentials(ADMIN_EMAIL, ak, sk, password)
