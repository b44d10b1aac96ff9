"""Read queries behind the GraphQL admin API, and the original's filter/order mini-language.

``filter`` text such as ``status == "RUNNING" & name ilike "%test%"`` is parsed here into a
SQLAlchemy expression over a per-type whitelist of fields; values always travel as bound
parameters. Any mistake in the text raises QueryError (a ValueError), never a database error.

Grammar (``&`` binds tighter than ``|``; ``!`` negates the factor after it)::

    expr   := term ("|" term)*
    term   := factor ("&" factor)*
    factor := "!" factor | "(" expr ")" | NAME OP value
    OP     := == != > >= < <= contains in isnot is like ilike
    value  := "string" | number | null | true | false | "[" [value ("," value)*] "]"

``order`` is a comma-separated list of field names, each optionally prefixed with ``+`` (ascending,
the default) or ``-`` (descending).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dateutil.parser
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from bai.common.types import SessionStatus, SessionTypes

from . import tables as t
from .agents import OCCUPYING_KERNEL_STATUSES

MAX_FILTER_LENGTH = 4096
MAX_NESTING = 32
AGENT_STATUSES = frozenset({"ALIVE", "LOST", "RESTARTING", "TERMINATED"})
SESSION_RESULTS = frozenset({"UNDEFINED", "SUCCESS", "FAILURE"})


class QueryError(ValueError):
    """The filter, order or status text of a list query is invalid."""


# ------------------------------------------------------------------ field whitelists

@dataclass(frozen=True)
class Field:
    """A filterable field: its SQL expression, its value kind and, for enums, the allowed values."""

    column: sa.ColumnElement[Any]
    kind: str  # str | int | uuid | datetime | bool | enum
    choices: frozenset[str] = frozenset()
    normalize: Callable[[str], str] = str


def _enum(column: sa.ColumnElement[Any], choices: Any, normalize: Callable[[str], str] = str.upper) -> Field:
    return Field(column, "enum", frozenset(str(c) for c in choices), normalize)


def _history_time(column: sa.ColumnElement[Any], status: str) -> sa.ColumnElement[Any]:
    return sa.cast(column[status].astext, sa.DateTime(timezone=True))


_s, _k, _a = t.sessions.c, t.kernels.c, t.agents.c

SESSION_FIELDS: dict[str, Field] = {
    "id": Field(_s.id, "uuid"),
    "session_id": Field(_s.id, "uuid"),
    "type": _enum(_s.session_type, (st.value for st in SessionTypes), str.lower),
    "name": Field(_s.name, "str"),
    "image": Field(_s.image, "str"),
    "architecture": Field(_s.architecture, "str"),
    "tag": Field(_s.tag, "str"),
    "domain_name": Field(_s.domain_name, "str"),
    "group_id": Field(_s.group_id, "uuid"),
    "group_name": Field(t.groups.c.name, "str"),
    "user_email": Field(t.users.c.email, "str"),
    "user_id": Field(_s.user_uuid, "uuid"),
    "full_name": Field(t.users.c.full_name, "str"),
    "access_key": Field(_s.access_key, "str"),
    "scaling_group": Field(_s.scaling_group_name, "str"),
    "cluster_mode": _enum(_s.cluster_mode, ("single-node", "multi-node"),
                          lambda v: v.lower().replace("_", "-")),
    "cluster_size": Field(_s.cluster_size, "int"),
    "status": _enum(_s.status, SessionStatus),
    "status_info": Field(_s.status_info, "str"),
    "result": _enum(_s.result, SESSION_RESULTS),
    "created_at": Field(_s.created_at, "datetime"),
    "terminated_at": Field(_s.terminated_at, "datetime"),
    "starts_at": Field(_s.starts_at, "datetime"),
    "scheduled_at": Field(_history_time(_s.status_history, "SCHEDULED"), "datetime"),
    "startup_command": Field(_s.startup_command, "str"),
    "num_queries": Field(_s.num_queries, "int"),
}

AGENT_FIELDS: dict[str, Field] = {
    "id": Field(_a.id, "str"),
    "status": _enum(_a.status, AGENT_STATUSES),
    "status_changed": Field(_a.status_changed, "datetime"),
    "region": Field(_a.region, "str"),
    "scaling_group": Field(_a.scaling_group, "str"),
    "schedulable": Field(_a.schedulable, "bool"),
    "addr": Field(_a.addr, "str"),
    "architecture": Field(_a.architecture, "str"),
    "version": Field(_a.version, "str"),
    "first_contact": Field(_a.first_contact, "datetime"),
    "lost_at": Field(_a.lost_at, "datetime"),
}

#: Fields ``order`` may name: every filterable field.
SESSION_ORDER = {name: f.column for name, f in SESSION_FIELDS.items()}
AGENT_ORDER = {name: f.column for name, f in AGENT_FIELDS.items()}


# ------------------------------------------------------------------ filter parsing

_TOKEN_RE = re.compile(r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<op>==|!=|>=|<=|>|<)
  | (?P<punct>[()\[\],&|!])
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
""", re.VERBOSE)
_WORD_OPS = frozenset({"contains", "in", "isnot", "is", "like", "ilike"})
_ATOMS: dict[str, Any] = {"null": None, "true": True, "false": False}
_ORDERED_KINDS = frozenset({"str", "int", "datetime", "uuid", "enum"})


@dataclass(frozen=True)
class _Tok:
    kind: str  # string | number | op | punct | name | end
    text: str
    pos: int


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            raise QueryError(f"Invalid filter: unexpected character {text[pos]!r} at position {pos}")
        kind = m.lastgroup or ""
        if kind != "ws":
            toks.append(_Tok(kind, m.group(), pos))
        pos = m.end()
    toks.append(_Tok("end", "", len(text)))
    return toks


class _FilterParser:
    def __init__(self, text: str, fields: dict[str, Field]) -> None:
        self.toks = _tokenize(text)
        self.i = 0
        self.fields = fields

    def parse(self) -> sa.ColumnElement[bool]:
        expr = self.expr(0)
        if self.peek().kind != "end":
            self.fail("unexpected", self.peek())
        return expr

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        if tok.kind != "end":
            self.i += 1
        return tok

    def accept(self, text: str) -> bool:
        tok = self.peek()
        if tok.kind in ("punct", "op") and tok.text == text:
            self.i += 1
            return True
        return False

    @staticmethod
    def fail(what: str, tok: _Tok) -> None:
        shown = repr(tok.text) if tok.kind != "end" else "end of input"
        raise QueryError(f"Invalid filter: {what} {shown} at position {tok.pos}")

    def expr(self, depth: int) -> sa.ColumnElement[bool]:
        if depth > MAX_NESTING:
            raise QueryError("Invalid filter: nested too deeply")
        terms = [self.term(depth)]
        while self.accept("|"):
            terms.append(self.term(depth))
        return terms[0] if len(terms) == 1 else sa.or_(*terms)

    def term(self, depth: int) -> sa.ColumnElement[bool]:
        factors = [self.factor(depth)]
        while self.accept("&"):
            factors.append(self.factor(depth))
        return factors[0] if len(factors) == 1 else sa.and_(*factors)

    def factor(self, depth: int) -> sa.ColumnElement[bool]:
        if self.accept("!"):
            return sa.not_(self.factor(depth + 1))
        if self.accept("("):
            inner = self.expr(depth + 1)
            if not self.accept(")"):
                self.fail("expected ')' but found", self.peek())
            return inner
        return self.comparison()

    def comparison(self) -> sa.ColumnElement[bool]:
        name_tok = self.take()
        if name_tok.kind != "name" or name_tok.text in _WORD_OPS or name_tok.text in _ATOMS:
            self.fail("expected a field name but found", name_tok)
        field = self.fields.get(name_tok.text)
        if field is None:
            raise QueryError(f"Invalid filter: unknown field {name_tok.text!r} "
                             f"(known: {', '.join(sorted(self.fields))})")
        op_tok = self.take()
        if not (op_tok.kind == "op" or (op_tok.kind == "name" and op_tok.text in _WORD_OPS)):
            self.fail("expected an operator but found", op_tok)
        value = self.value()
        return _compare(name_tok.text, field, op_tok.text, value)

    def value(self) -> Any:
        tok = self.take()
        if tok.kind == "string":
            try:
                return json.loads(tok.text)
            except ValueError:
                raise QueryError(f"Invalid filter: bad string literal at position {tok.pos}") from None
        if tok.kind == "number":
            return float(tok.text) if any(c in tok.text for c in ".eE") else int(tok.text)
        if tok.kind == "name" and tok.text in _ATOMS:
            return _ATOMS[tok.text]
        if tok.kind == "punct" and tok.text == "[":
            items: list[Any] = []
            if self.accept("]"):
                return items
            items.append(self.value())
            while self.accept(","):
                items.append(self.value())
            if not self.accept("]"):
                self.fail("expected ']' but found", self.peek())
            return items
        self.fail("expected a value but found", tok)
        raise AssertionError  # unreachable


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
    raise QueryError(f"Invalid filter: {name} cannot be compared with {json.dumps(value)}")


def _compare(name: str, field: Field, op: str, raw: Any) -> sa.ColumnElement[bool]:
    col = field.column
    if op in ("is", "isnot"):
        if not (raw is None or (field.kind == "bool" and isinstance(raw, bool))):
            raise QueryError(f"Invalid filter: '{op}' takes null (or true/false for boolean fields)")
        return col.is_(raw) if op == "is" else col.is_not(raw)
    if op == "in":
        if not isinstance(raw, list):
            raise QueryError("Invalid filter: 'in' takes an array such as [\"a\", \"b\"]")
        return col.in_([_convert(name, field, v) for v in raw])
    if isinstance(raw, list):
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


def parse_filter(text: str, fields: dict[str, Field]) -> sa.ColumnElement[bool]:
    """Turn filter text into a WHERE clause over ``fields``; raises QueryError."""
    if len(text) > MAX_FILTER_LENGTH:
        raise QueryError(f"Invalid filter: longer than {MAX_FILTER_LENGTH} characters")
    if not text.strip():
        raise QueryError("Invalid filter: empty expression")
    return _FilterParser(text, fields).parse()


_ORDER_ITEM_RE = re.compile(r"^\s*([+-]?)\s*([A-Za-z_][A-Za-z0-9_]*)\s*$")


def parse_order(text: str, columns: dict[str, sa.ColumnElement[Any]]) -> list[sa.ColumnElement[Any]]:
    """``"-created_at,+name"`` -> ORDER BY clauses over ``columns``; raises QueryError."""
    clauses: list[sa.ColumnElement[Any]] = []
    for item in text.split(","):
        m = _ORDER_ITEM_RE.match(item)
        if m is None:
            raise QueryError(f"Invalid order: {item.strip()!r} (expected [+|-]field)")
        sign, name = m.groups()
        col = columns.get(name)
        if col is None:
            raise QueryError(f"Invalid order: unknown field {name!r} (known: {', '.join(sorted(columns))})")
        clauses.append(col.desc() if sign == "-" else col.asc())
    return clauses


def parse_statuses(text: str, known: Sequence[str] | frozenset[str], what: str) -> list[str]:
    """Comma-separated status names, each checked against ``known``; raises QueryError."""
    names = [s.strip().upper() for s in text.split(",") if s.strip()]
    bad = [n for n in names if n not in known]
    if bad:
        raise QueryError(f"Unknown {what} status: {', '.join(bad)}")
    return names


# ------------------------------------------------------------------ sessions

@dataclass(frozen=True)
class SessionScope:
    """What the caller may see, after role scoping: None means unrestricted."""

    domain_name: str | None = None
    group_id: uuid.UUID | None = None
    access_key: str | None = None


_main = t.kernels.alias("main_kernel")
_session_from = (
    t.sessions.join(t.groups, t.groups.c.id == t.sessions.c.group_id)
    .join(t.users, t.users.c.uuid == t.sessions.c.user_uuid)
    .outerjoin(_main, sa.and_(_main.c.session_id == t.sessions.c.id, _main.c.cluster_role == "main"))
    .outerjoin(t.keypairs, t.keypairs.c.access_key == t.sessions.c.access_key)
    .outerjoin(t.keypair_resource_policies,
               t.keypair_resource_policies.c.name == t.keypairs.c.resource_policy)
)
_session_select = sa.select(
    t.sessions,
    t.groups.c.name.label("group_name"),
    t.users.c.email.label("user_email"),
    t.users.c.full_name.label("full_name"),
    _main.c.id.label("main_kernel_id"),
    _main.c.registry.label("main_registry"),
    _main.c.architecture.label("main_architecture"),
    _main.c.service_ports.label("main_service_ports"),
    t.keypair_resource_policies.c.max_session_lifetime,
).select_from(_session_from)

#: The original's default: most recently created or terminated first.
DEFAULT_SESSION_ORDER = (sa.func.greatest(_s.created_at, _s.terminated_at).desc(), _s.id)


def _session_conds(scope: SessionScope, statuses: Sequence[str] | None,
                   filter_: str | None) -> list[sa.ColumnElement[bool]]:
    conds: list[sa.ColumnElement[bool]] = []
    if scope.domain_name is not None:
        conds.append(_s.domain_name == scope.domain_name)
    if scope.group_id is not None:
        conds.append(_s.group_id == scope.group_id)
    if scope.access_key is not None:
        conds.append(_s.access_key == scope.access_key)
    if statuses is not None:
        conds.append(_s.status.in_(list(statuses)))
    if filter_ is not None:
        conds.append(parse_filter(filter_, SESSION_FIELDS))
    return conds


async def session_page(
    conn: AsyncConnection, scope: SessionScope, *, limit: int, offset: int,
    statuses: Sequence[str] | None = None, filter_: str | None = None, order: str | None = None,
) -> tuple[list[sa.Row[Any]], int]:
    """One page of sessions (with group, user, main kernel and policy columns) and the total count."""
    conds = _session_conds(scope, statuses, filter_)
    ordering = [*parse_order(order, SESSION_ORDER), _s.id] if order else list(DEFAULT_SESSION_ORDER)
    total = await conn.scalar(sa.select(sa.func.count()).select_from(_session_from).where(*conds))
    q = _session_select.where(*conds).order_by(*ordering).limit(limit).offset(offset)
    return list((await conn.execute(q)).all()), int(total or 0)


async def session_by_id(conn: AsyncConnection, session_id: uuid.UUID, scope: SessionScope) -> sa.Row[Any] | None:
    q = _session_select.where(_s.id == session_id, *_session_conds(scope, None, None))
    return (await conn.execute(q.limit(1))).first()


async def kernels_by_session(conn: AsyncConnection, session_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[sa.Row[Any]]]:
    """Every kernel of the given sessions in one query, grouped by session, main kernel first."""
    out: dict[uuid.UUID, list[sa.Row[Any]]] = {sid: [] for sid in session_ids}
    if not session_ids:
        return out
    q = (sa.select(t.kernels).where(_k.session_id.in_(list(session_ids)))
         .order_by(_k.session_id, (_k.cluster_role != "main"), _k.cluster_idx, _k.local_rank))
    for row in await conn.execute(q):
        out.setdefault(row.session_id, []).append(row)
    return out


# ------------------------------------------------------------------ keypairs

async def keypair_with_user(conn: AsyncConnection, access_key: str, domain_name: str | None) -> sa.Row[Any] | None:
    q = (
        sa.select(t.keypairs, t.users.c.email.label("user_email"), t.users.c.full_name.label("full_name"),
                  t.users.c.domain_name.label("domain_name"))
        .select_from(t.keypairs.join(t.users, t.users.c.uuid == t.keypairs.c.user))
        .where(t.keypairs.c.access_key == access_key)
    )
    if domain_name is not None:
        q = q.where(t.users.c.domain_name == domain_name)
    return (await conn.execute(q)).first()


async def concurrency_used(conn: AsyncConnection, access_key: str) -> int:
    """Sessions of the keypair that hold (or are about to hold) agent resources."""
    q = sa.select(sa.func.count()).select_from(t.sessions).where(
        _s.access_key == access_key,
        _s.status.in_(["SCHEDULED", "PREPARING", "PULLING", "RUNNING", "RESTARTING", "RUNNING_DEGRADED",
                       "TERMINATING"]),
    )
    return int(await conn.scalar(q) or 0)


# ------------------------------------------------------------------ agents

_container_count = (
    sa.select(sa.func.count()).select_from(t.kernels)
    .where(_k.agent == _a.id, _k.status.in_(OCCUPYING_KERNEL_STATUSES))
    .scalar_subquery()
)


async def agent_page(
    conn: AsyncConnection, *, limit: int, offset: int, scaling_group: str | None = None,
    statuses: Sequence[str] | None = None, filter_: str | None = None, order: str | None = None,
) -> tuple[list[sa.Row[Any]], int]:
    conds: list[sa.ColumnElement[bool]] = []
    if scaling_group is not None:
        conds.append(_a.scaling_group == scaling_group)
    if statuses is not None:
        conds.append(_a.status.in_(list(statuses)))
    if filter_ is not None:
        conds.append(parse_filter(filter_, AGENT_FIELDS))
    ordering = [*parse_order(order, AGENT_ORDER), _a.id] if order else [_a.id]
    total = await conn.scalar(sa.select(sa.func.count()).select_from(t.agents).where(*conds))
    q = (sa.select(t.agents, _container_count.label("container_count"))
         .where(*conds).order_by(*ordering).limit(limit).offset(offset))
    return list((await conn.execute(q)).all()), int(total or 0)


def history_time(history: dict[str, Any] | None, status: str) -> datetime | None:
    """When a row entered ``status`` according to its status_history (ISO strings)."""
    raw = (history or {}).get(status)
    if not isinstance(raw, str):
        return None
    try:
        return datetime.fromisoformat(raw)
    except ValueError:
        return None

