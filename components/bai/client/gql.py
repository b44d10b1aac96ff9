"""GraphQL calls to ``POST /admin/gql``, shaped as the official SDK 24.03 sends them.

* :func:`query` — one document; GraphQL ``errors`` raise a 400 ``graphql-error``
  (:meth:`APISession.gql`);
* :func:`page` — one page of a ``*_list(limit, offset, ...)`` field (the document the official
  SDK's ``fetch_paginated_result`` builds: typed variables, ``items { ... } total_count``);
* :func:`mutate` — a mutation whose payload is ``{ok, msg, ...}``; ``ok: false`` raises
  :class:`MutationFailed` with the server's message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .exceptions import BackendClientError
from .request import APISession

__all__ = ("MAX_PAGE_SIZE", "Page", "MutationFailed", "query", "page", "mutate", "paginated_document")

#: The largest page the manager answers (``[graphql] max-page-size``), as the official SDK checks.
MAX_PAGE_SIZE = 100


@dataclass
class Page:
    items: list[dict[str, Any]]
    total_count: int


class MutationFailed(BackendClientError):
    """A mutation answered ``ok: false``; ``args[0]`` is the server's ``msg``."""


async def query(api: APISession, document: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
    data = await api.gql(document, dict(variables) if variables else None)
    if not isinstance(data, dict):
        raise BackendClientError("The API server returned a GraphQL answer without data")
    return data


def paginated_document(root_field: str, var_types: Mapping[str, str], field_refs: Sequence[str]) -> str:
    """``query($limit:Int!, $offset:Int!, $a: T, ...) { root(limit:$limit, offset:$offset, a:$a, ...)
    { items { <fields> } total_count } }``."""
    decls = "".join(f", ${name}: {gql_type}" for name, gql_type in var_types.items())
    args = "".join(f", {name}:${name}" for name in var_types)
    return (
        f"query($limit:Int!, $offset:Int!{decls}) {{\n"
        f"  {root_field}(limit:$limit, offset:$offset{args}) {{\n"
        f"    items {{ {' '.join(field_refs)} }}\n"
        "    total_count\n"
        "  }\n"
        "}"
    )


async def page(
    api: APISession,
    root_field: str,
    variables: Mapping[str, tuple[Any, str]],
    field_refs: Sequence[str],
    *,
    limit: int,
    offset: int,
) -> Page:
    """One page of ``root_field``; ``variables`` maps each argument to ``(value, GraphQL type)``."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise BackendClientError(f"The page size must be between 1 and {MAX_PAGE_SIZE}")
    document = paginated_document(root_field, {k: t for k, (_, t) in variables.items()}, field_refs)
    values = {k: v for k, (v, _) in variables.items()}
    values.update(limit=limit, offset=offset)
    data = await query(api, document, values)
    try:
        result = data[root_field]
        return Page(items=list(result["items"]), total_count=int(result["total_count"]))
    except (TypeError, KeyError, ValueError) as e:
        raise BackendClientError(f"The API server returned a malformed {root_field} page") from e


async def mutate(
    api: APISession, document: str, variables: Mapping[str, Any], root_field: str
) -> dict[str, Any]:
    """Run a mutation and return its payload when ``ok``; ``ok: false`` raises MutationFailed."""
    data = await query(api, document, variables)
    payload = data.get(root_field)
    if not isinstance(payload, dict):
        raise BackendClientError(f"The API server answered no {root_field} payload")
    if not payload.get("ok"):
        raise MutationFailed(str(payload.get("msg") or f"{root_field} failed"))
    return payload
