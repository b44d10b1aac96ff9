"""SQL for the ``filter`` / ``order`` mini-language (parsed by bai.manager.querylang): each
noun's store module declares a whitelist of fields (column, value kind, allowed values) and
this module turns a parsed tree into a WHERE clause and ORDER BY list over it. Values always
travel as bound parameters; any mistake raises QueryError, never a database error."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import dateutil.parser
import sqlalchemy as sa

from bai.manager import querylang as ql
from bai.manager.querylang import QueryError

_ORDERED_KINDS = frozenset({"str", "int", "datetime", "uuid", "enum"})


@dataclass(frozen=True)
class Field:
    """A filterable field: its SQL expression, its value kind and, for enums, the allowed values."""

    column: sa.ColumnElement[Any]
    kind: str  # str | int | uuid | datetime | bool | enum
    choices: frozenset[str] = frozenset()
    normalize: Callable[[str], str] = str


def enum(column: sa.ColumnElement[Any], choices: Any, normalize: Callable[[str], str] = str.upper) -> Field:
    return Field(column, "enum", frozenset(str(c) for c in choices), normalize)


def history_time(column: sa.ColumnElement[Any], status: str) -> sa.ColumnElement[Any]:
    """When a row entered ``status``, from its JSON status_history column."""
    return sa.cast(column[status].astext, sa.DateTime(timezone=True))


def where(text: str, fields: dict[str, Field]) -> sa.ColumnElement[bool]:
    """Filter text -> WHERE clause over ``fields``; raises QueryError."""
    return _clause(ql.parse_filter(text, fields), fields)


def order_by(text: str, fields: dict[str, Field]) -> list[sa.ColumnElement[Any]]:
    """Order text -> ORDER BY clauses over ``fields``; raises QueryError."""
    out: list[sa.ColumnElement[Any]] = []
    for key in ql.parse_order(text, fields):
        col = fields[key.field].column
        out.append(col.desc() if key.descending else col.asc())
    return out


def _clause(node: ql.Node, fields: dict[str, Field]) -> sa.ColumnElement[bool]:
    # Recursion is bounded: the parser refuses trees deeper than querylang.MAX_NESTING.
    if isinstance(node, ql.Comparison):
        return _compare(node.field, fields[node.field], node.op, node.value)
    if isinstance(node, ql.Not):
        return sa.not_(_clause(node.item, fields))
    parts = [_clause(item, fields) for item in node.items]
    return sa.and_(*parts) if isinstance(node, ql.And) else sa.or_(*parts)


def _convert(name: str, field: Field, value: Any) -> Any:
    """A filter literal as the Python value the field's column compares with."""
    if value is None:
        return None
    kind = field.kind
    if kind == "bool":
        if isinstance(value, bool):
            return value
    elif kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            bits = 63 if isinstance(field.column.type, sa.BigInteger) else 31
            if not -(2**bits) <= value < 2**bits:
                raise QueryError(f"Invalid filter: {value} is out of range for {name}")
            return value
    elif isinstance(value, str):
        if kind == "str":
            return value
        if kind == "uuid":
            try:
                return uuid.UUID(value)
            except ValueError:
                raise QueryError(f"Invalid filter: {name} expects a UUID, got {value!r}") from None
        if kind == "datetime":
            try:
                parsed = dateutil.parser.isoparse(value)
            except (ValueError, OverflowError):
                raise QueryError(f"Invalid filter: {name} expects an ISO 8601 datetime, got {value!r}") from None
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        if kind == "enum":
            normalized = field.normalize(value)
            if normalized not in field.choices:
                raise QueryError(f"Invalid filter: {name} must be one of {', '.join(sorted(field.choices))}, "
                                 f"got {value!r}")
            return normalized
    shown = json.dumps(list(value) if isinstance(value, tuple) else value)
    raise QueryError(f"Invalid filter: {name} cannot be compared with {shown}")


def _compare(name: str, field: Field, op: str, raw: ql.Value) -> sa.ColumnElement[bool]:
    col = field.column
    if op in ("is", "isnot"):
        if not (raw is None or (field.kind == "bool" and isinstance(raw, bool))):
            raise QueryError(f"Invalid filter: '{op}' takes null (or true/false for boolean fields)")
        return col.is_(raw) if op == "is" else col.is_not(raw)
    if op == "in":
        if not isinstance(raw, tuple):
            raise QueryError("Invalid filter: 'in' takes an array such as [\"a\", \"b\"]")
        return col.in_([_convert(name, field, v) for v in raw])
    if isinstance(raw, tuple):
        raise QueryError(f"Invalid filter: '{op}' does not take an array")
    if op in ("contains", "like", "ilike") and field.kind != "str":
        raise QueryError(f"Invalid filter: '{op}' applies to text fields only, not {name}")
    if op in (">", ">=", "<", "<=") and field.kind not in _ORDERED_KINDS:
        raise QueryError(f"Invalid filter: '{op}' does not apply to {name}")
    value = _convert(name, field, raw)
    if op == "==":
        return col.is_(None) if value is None else col == value
    if op == "!=":
        return col.is_not(None) if value is None else col != value
    if value is None:
        raise QueryError(f"Invalid filter: '{op}' cannot take null")
    if op == "contains":
        return col.contains(value, autoescape=True)
    if op in ("like", "ilike"):
        return col.like(value) if op == "like" else col.ilike(value)
    return {">": col > value, ">=": col >= value, "<": col < value, "<=": col <= value}[op]
