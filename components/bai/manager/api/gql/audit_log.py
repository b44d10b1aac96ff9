"""AuditLog (beyond the original): SDL, resolver and row -> object mapping. Superadmins and
monitors read it; everyone else gets a privilege error and no data."""

from __future__ import annotations

from typing import Any

from ariadne import QueryType

from bai.manager.services import audit as svc

from .context import context_of

QUERIES = '''
  "A page of the audit log, newest first unless `order` says otherwise (superadmins and monitors)."
  audit_log_list(limit: Int!, offset: Int!, filter: String, order: String): AuditLogList
'''

SDL = '''
"One audited operation: a GraphQL mutation field, an admin REST call or a refused authentication."
type AuditLog implements Item {
  id: ID
  created_at: DateTime
  "The caller's access key, user, email and role (null when authentication failed)."
  access_key: String
  user_id: UUID
  email: String
  role: String
  client_ip: String
  "graphql, rest, or system (the log's own notes, e.g. audit.dropped)."
  kind: String
  "The mutation field name, or METHOD /route for REST."
  operation: String
  "The arguments naming what was acted on, as k=v pairs."
  target: String
  "Every argument, secrets replaced by ***."
  args: JSONString
  "ok, failed or denied."
  outcome: String
  message: String
  duration_ms: Float
}

type AuditLogList implements PaginatedList {
  items: [AuditLog]!
  total_count: Int!
}
'''

query = QueryType()
BINDABLES = (query,)


def audit_obj(row: Any) -> dict[str, Any]:
    return {
        "id": row.id, "created_at": row.created_at, "access_key": row.access_key, "user_id": row.user_id,
        "email": row.email, "role": row.role, "client_ip": row.client_ip, "kind": row.kind,
        "operation": row.operation, "target": row.target, "args": row.args, "outcome": row.outcome,
        "message": row.message, "duration_ms": row.duration_ms,
    }


@query.field("audit_log_list")
async def resolve_audit_log_list(_: Any, info: Any, limit: int, offset: int, filter: str | None = None,
                                 order: str | None = None) -> dict[str, Any]:
    ctx = context_of(info)
    page = await svc.audit_page(ctx.manager.db, ctx.requester, limit=limit, offset=offset,
                                max_page_size=ctx.max_page_size, filter_=filter, order=order)
    return {"items": [audit_obj(r) for r in page.rows], "total_count": page.total_count}
