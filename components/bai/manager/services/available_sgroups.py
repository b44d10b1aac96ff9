"""``GET /scaling-groups?group=``: the resource groups a caller may run sessions in for a project
(the original's ``list_available_sgroups``): those associated with the caller's domain, the
project or the caller's keypair, active, by name; users see only public ones."""

from __future__ import annotations

from bai.manager import errors
from bai.manager.store import scaling_groups as store
from bai.manager.store.keypairs import Requester

from .context import ManagerContext


async def available(ctx: ManagerContext, req: Requester, group: str) -> list[str]:
    """Names of the groups; ``group`` is the project's name or id, in the caller's domain. Admins
    may name any project of the domain, users only one they belong to (another answers as an
    unknown project, so nothing is learnt of it)."""
    is_admin = req.role in ("admin", "superadmin")
    async with ctx.db.connect() as conn:
        member = None if is_admin else req.user_uuid
        group_id = await store.project_of_domain(conn, req.domain_name, group, member)
        if group_id is None:
            raise errors.InvalidAPIParameters(f"Unknown project (user group): {group!r}")
        rows = await store.allowed_scaling_groups(conn, req.domain_name, group_id, req.access_key)
    return [r.name for r in rows if is_admin or r.is_public]
