"""Who may WRITE what: the checks every GraphQL mutation and admin REST call makes before it
touches anything. Reads are scoped in gql_queries (a monitor reads everything); writes are
stricter: a monitor never writes, a domain admin writes only inside their own domain, and only a
superadmin writes global objects (domains, policies, presets, scaling groups, registries)."""

from __future__ import annotations

from bai.manager import errors
from bai.manager.store.keypairs import Requester

#: Roles in the order of what they may grant: nobody grants a role above their own.
ROLE_RANK = {"monitor": 0, "user": 1, "admin": 2, "superadmin": 3}


def require_superadmin_write(req: Requester) -> None:
    """Global objects (domains, policies, presets, scaling groups, registries, images)."""
    if req.role != "superadmin":
        raise errors.GenericForbidden("superadmin privilege required")


def writable_domain(req: Requester, domain_name: str | None) -> str:
    """The domain a domain-scoped write (users, keypairs, projects) lands in: any for a
    superadmin (who must name it), the caller's own for a domain admin (naming another is
    forbidden); users and monitors write nothing here."""
    if req.role == "superadmin":
        if not domain_name:
            raise errors.InvalidAPIParameters("domain_name is required")
        return domain_name
    if req.role != "admin":
        raise errors.GenericForbidden("admin privilege required")
    if domain_name is not None and domain_name != req.domain_name:
        raise errors.GenericForbidden("a domain admin writes only inside their own domain")
    return req.domain_name


def require_grantable_role(req: Requester, role: str) -> None:
    """Nobody creates or promotes an account above their own role (a domain admin cannot
    make a superadmin or a monitor that reads every domain)."""
    if role not in ROLE_RANK:
        raise errors.InvalidAPIParameters(f"unknown role {role!r} (one of {', '.join(ROLE_RANK)})")
    if req.role != "superadmin" and (role == "monitor" or ROLE_RANK[role] > ROLE_RANK[req.role]):
        raise errors.GenericForbidden(f"a {req.role} cannot grant the role {role!r}")


def require_manageable_account(req: Requester, role: str, domain_name: str) -> None:
    """Writes that touch an existing account (its profile, keypairs, memberships): a superadmin
    touches anyone; a domain admin only users and admins of their own domain (never a superadmin,
    nor a monitor, whose password would open every domain to them)."""
    if req.role == "superadmin":
        return
    writable_domain(req, domain_name)
    if role not in ("user", "admin"):
        raise errors.GenericForbidden(f"a domain admin cannot manage a {role} account")


def require_admin_write(req: Requester) -> None:
    """Account writes (users, keypairs, projects) need a superadmin or a domain admin; checked
    first, so a user or a monitor is refused before their input is even looked at."""
    if req.role not in ("superadmin", "admin"):
        raise errors.GenericForbidden("admin privilege required")
