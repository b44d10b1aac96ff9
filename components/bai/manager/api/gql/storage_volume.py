"""StorageVolume and the volume-host permission names: ``storage_volume(id)``,
``storage_volume_list`` (superadmins and monitors; the official client's ``admin storage``) and
``vfolder_host_permissions`` (everyone: the names ``allowed_vfolder_hosts`` takes)."""

from __future__ import annotations

from typing import Any

from ariadne import QueryType

from bai.manager.querylang import QueryError
from bai.manager.services import gql_queries as page_rules
from bai.manager.services.vfolders import access
from bai.manager.services.vfolders import queries as svc

from .context import context_of

QUERIES = '''
  "A storage volume by its `<proxy>:<volume>` ID (superadmins and monitors), or null."
  storage_volume(id: String): StorageVolume

  "Every volume of every storage proxy that answers (superadmins and monitors)."
  storage_volume_list(limit: Int!, offset: Int!, filter: String, order: String): StorageVolumeList

  "The permission names of allowed_vfolder_hosts."
  vfolder_host_permissions: PredefinedAtomicPermission
'''

SDL = '''
type StorageVolume implements Item {
  id: ID
  backend: String
  fsprefix: String
  path: String
  capabilities: [String]
  hardware_metadata: JSONString
  performance_metric: JSONString
  usage: JSONString
}

type StorageVolumeList implements PaginatedList {
  items: [StorageVolume]!
  total_count: Int!
}

type PredefinedAtomicPermission {
  vfolder_host_permission_list: [String]
}
'''

query = QueryType()
BINDABLES = (query,)


@query.field("storage_volume")
async def resolve_storage_volume(_: Any, info: Any, id: str | None = None) -> dict[str, Any] | None:
    if not id:
        return None
    ctx = context_of(info)
    found = await svc.storage_volumes(ctx.manager, ctx.requester, id)
    return found[0] if found else None


@query.field("storage_volume_list")
async def resolve_storage_volume_list(_: Any, info: Any, limit: int, offset: int, filter: str | None = None,
                                      order: str | None = None) -> dict[str, Any]:
    ctx = context_of(info)
    page_rules.check_page(limit, offset, ctx.max_page_size)
    if filter or order:
        raise QueryError("filter and order are not supported on storage volumes")
    every = await svc.storage_volumes(ctx.manager, ctx.requester)
    return {"items": every[offset:offset + limit], "total_count": len(every)}


@query.field("vfolder_host_permissions")
async def resolve_vfolder_host_permissions(_: Any, info: Any) -> dict[str, Any]:
    return {"vfolder_host_permission_list": list(access.HOST_PERMISSIONS)}
