"""Plumbing shared by every ``backend.ai admin`` command: field specs (what to query, how to show
it), one renderer for items, lists and mutation results in console and JSON form, paging,
parameter types, and one runner that turns any failure into a single line and a non-zero exit.

Output contract (as the official client 24.03's ``--output json``):

* an item: ``{"count": 1, "total_count": 1, "items": [{...}]}``;
* a list: ``{"count": N, "total_count": T, "items": [...]}`` (a paged list gives one page:
  ``--limit`` items, 20 by default, from ``--offset``; the console prints every item, or
  ``--limit`` of them);
* a mutation: ``{"ok": true, "msg": ..., <extra keys>, <object>: {...}}``.

Nothing reaches stdout before every request has succeeded, so a failure prints no half table.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from ..common import ExitCode, get_cli_context, print_info, print_json

if TYPE_CHECKING:
    from ...request import APISession

T = TypeVar("T")

# ---------------------------------------------------------------------------------------------
# fields

_HUMANIZED = {
    "id": "ID", "uuid": "UUID", "group_id": "Group ID", "user_id": "User ID",
    "resource_policy": "Res.Policy", "concurrency_used": "Concur.Used",
}


def humanize(name: str) -> str:
    """The official client's column titles: known abbreviations, ``is_x`` -> ``X?``, Title Case."""
    if name in _HUMANIZED:
        return _HUMANIZED[name]
    if name.startswith("is_"):
        return humanize(name[3:]) + "?"
    return " ".join(w[:1].upper() + w[1:] for w in name.split("_"))


def _plain(value: Any) -> str:
    if value is None:
        return "(null)"
    if isinstance(value, (dict, list, tuple)) and not value:
        return "(empty)"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_plain(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_plain(v) for v in value) + "]"
    return str(value)


def _loads(value: Any) -> Any:
    """A JSONString field's value as data (the manager sends JSON text; tolerate objects)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def binary_size(num: Any) -> str:
    """``1536`` -> ``1.5 KiB`` (binary units, as the official console shows memory)."""
    try:
        n = float(num)
    except (TypeError, ValueError):
        return str(num)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(num)  # pragma: no cover - the loop always returns


def _console_slots(value: Any) -> str:
    slots = _loads(value)
    if value is None:
        return "(null)"
    if not isinstance(slots, dict):
        return _plain(slots)
    if not slots:
        return "(empty)"
    return ", ".join(f"{k}:{binary_size(v) if k == 'mem' else v}" for k, v in slots.items())


def _console_nested(value: Any) -> str:
    data = _loads(value)
    if not isinstance(data, dict):
        return _plain(data)
    return _nested_lines(data)


def _nested_lines(data: Mapping[str, Any]) -> str:
    if not data:
        return "(empty)"
    rows: list[str] = []
    for key, val in data.items():
        if isinstance(val, dict) and val:
            rows.append(f"+ {key}")
            rows.extend("  " + line for line in _nested_lines(val).splitlines())
        elif isinstance(val, dict):
            rows.append(f"+ {key}: (empty)")
        else:
            rows.append(f"- {key}: {_plain(val)}")
    return "\n".join(rows)


@dataclass(frozen=True)
class Field:
    """One column: ``ref`` is what goes into the GraphQL selection (``groups { id name }``)."""

    ref: str
    title: str = ""
    json_key: str = ""
    console: Callable[[Any], str] = _plain
    to_json: Callable[[Any], Any] = lambda v: v

    @property
    def name(self) -> str:
        return self.ref.partition(" ")[0]

    @property
    def header(self) -> str:
        return self.title or humanize(self.name)

    @property
    def key(self) -> str:
        return self.json_key or self.name


def plain(ref: str, title: str = "", json_key: str = "") -> Field:
    return Field(ref, title, json_key)


def slots(ref: str, title: str = "") -> Field:
    """A resource-slot JSONString: ``cpu:1, mem:4.0 GiB`` / a JSON object."""
    return Field(ref, title, console=_console_slots, to_json=_loads)


def nested(ref: str, title: str = "") -> Field:
    """Any other JSONString: an indented tree / a JSON value."""
    return Field(ref, title, console=_console_nested, to_json=_loads)


def slots_text(ref: str, title: str = "") -> Field:
    """A resource-slot JSONString the official client's JSON output leaves as text."""
    return Field(ref, title, console=_console_slots)


def nested_text(ref: str, title: str = "") -> Field:
    """A JSONString the official client's JSON output leaves as text (shown as a tree here)."""
    return Field(ref, title, console=_console_nested)


def gnu_size(num: Any) -> Any:
    """``humanize.naturalsize(n, binary=True, gnu=True)`` as the official client prints image
    sizes, in both forms: ``0B``, ``1.5K``, ``330.2M``."""
    if num is None:
        return None
    n = float(num)
    if abs(n) < 1024:
        return f"{int(n)}B"
    for unit in "KMGTPEZY":
        n /= 1024
        if abs(n) < 1024 or unit == "Y":
            break
    return f"{n:.1f}{unit}"


def image_size(ref: str, title: str = "") -> Field:
    return Field(ref, title, console=lambda v: _plain(gnu_size(v)), to_json=gnu_size)


def size(ref: str, title: str = "") -> Field:
    """A byte count: ``64.0 MiB`` / the number."""
    return Field(ref, title, console=lambda v: "(null)" if v is None else binary_size(v))


def sub(ref: str, subfield: str, title: str = "") -> Field:
    """``user_info { full_name }`` shown as its one subfield (``json_key`` = the subfield)."""
    def pick(v: Any) -> Any:
        return v.get(subfield) if isinstance(v, dict) else None

    return Field(ref, title, subfield, console=lambda v: _plain(pick(v)), to_json=pick)


def names(ref: str, title: str = "") -> Field:
    """A list of ``{id name}`` objects shown as their names."""
    return Field(ref, title, console=lambda v: ", ".join(str(g.get("name")) for g in v or []))


def refs(fields: Sequence[Field]) -> list[str]:
    return [f.ref for f in fields]


def json_row(item: Mapping[str, Any], fields: Sequence[Field]) -> dict[str, Any]:
    return {f.key: f.to_json(item.get(f.name)) for f in fields if f.name in item}


def console_row(item: Mapping[str, Any], fields: Sequence[Field]) -> list[str]:
    return [f.console(item.get(f.name)) for f in fields]


# ---------------------------------------------------------------------------------------------
# tables


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """tabulate's "simple" layout, with multi-line cells (continuation lines stay in their column)."""
    split = [[cell.splitlines() or [""] for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in split:
        for i, lines in enumerate(row):
            widths[i] = max(widths[i], *(len(ln) for ln in lines))
    out = ["  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip(),
           "  ".join("-" * w for w in widths)]
    for row in split:
        height = max(len(lines) for lines in row)
        for n in range(height):
            out.append("  ".join((lines[n] if n < len(lines) else "").ljust(widths[i])
                                 for i, lines in enumerate(row)).rstrip())
    return "\n".join(out)


def print_item(item: Mapping[str, Any] | None, fields: Sequence[Field], *, what: str) -> None:
    """One object as a Field/Value table (or the one-item JSON list); None fails the command."""
    if item is None:
        fail(f"No matching {what} found.")
    if get_cli_context().json_mode:
        print_json({"count": 1, "total_count": 1, "items": [json_row(item, fields)]})
        return
    click.echo(table(["Field", "Value"], [[f.header, f.console(item.get(f.name))] for f in fields
                                          if f.name in item]))


def print_list(items: Sequence[Mapping[str, Any]], fields: Sequence[Field],
               total_count: int | None = None) -> None:
    if get_cli_context().json_mode:
        print_json({
            "count": len(items),
            "total_count": len(items) if total_count is None else total_count,
            "items": [json_row(item, fields) for item in items],
        })
        return
    if not items:
        print_info("No matching items.")
        return
    click.echo(table([f.header for f in fields], [console_row(item, fields) for item in items]))


def print_mutation(payload: Mapping[str, Any], *, item_key: str | None = None,
                   extra: Mapping[str, Any] | None = None, fields: Sequence[Field] = ()) -> None:
    """``ok``/``msg``, the extra facts, then the returned object's fields (when ``item_key``)."""
    obj = payload.get(item_key) if item_key else None
    field_map = {f.name: f for f in fields}
    if get_cli_context().json_mode:
        data: dict[str, Any] = {"ok": bool(payload.get("ok")), "msg": payload.get("msg"), **(extra or {})}
        if isinstance(obj, dict):
            data[item_key or ""] = {
                (field_map[k].key if k in field_map else k): (field_map[k].to_json(v) if k in field_map else v)
                for k, v in obj.items()
            }
        print_json(data)
        return
    rows = [["ok", _plain(payload.get("ok"))], ["msg", _plain(payload.get("msg"))]]
    rows += [[k, _plain(v)] for k, v in (extra or {}).items()]
    if isinstance(obj, dict):
        rows += [[k, field_map[k].console(v) if k in field_map else _plain(v)] for k, v in obj.items()
                 if (extra or {}).get(k, object()) != v]  # a fact already shown above is not repeated
    click.echo(table(["Field", "Value"], rows))


# ---------------------------------------------------------------------------------------------
# running


def fail(msg: str, code: int = ExitCode.FAILURE, *, problem: BaseException | None = None) -> NoReturn:
    """One line on stderr (a JSON object with --output json) and a non-zero exit. With
    ``problem`` (an API error), the JSON object also carries the server's problem body under
    ``api``, as the official client's JSON error output does."""
    msg = " ".join(msg.split())
    if get_cli_context().json_mode:
        from ..common import error_json

        api = error_json(problem).get("api") if problem is not None else None
        click.echo(json.dumps({"error": msg, **({"api": api} if api else {})}, ensure_ascii=False,
                              default=str), err=True)
    else:
        mark = click.style("\u2717", fg="bright_red") if _stderr_is_tty() else "\u2717"
        click.echo(f"{mark} {msg}", err=True)
    sys.exit(code)


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def describe(exc: BaseException) -> str:
    """An API/client error as one line (GraphQL errors: their messages, joined)."""
    from ...exceptions import BackendAPIError

    if isinstance(exc, BackendAPIError):
        if exc.type_slug == "graphql-error":
            msgs = [str(e.get("message")) if isinstance(e, dict) else str(e) for e in exc.data.get("data") or []]
            return "GraphQL error: " + ("; ".join(msgs) or exc.title)
        detail = exc.msg or ""
        title = exc.title.rstrip(".")
        fields = exc.data.get("data") if exc.type_slug == "invalid-api-params" else None
        if isinstance(fields, dict) and fields:  # which parameter is wrong, and why
            detail = f"{detail.rstrip('.')}: " + "; ".join(f"{k}: {v}" for k, v in fields.items())
        return f"{title} (HTTP {exc.status})" + (f": {detail}" if detail and detail.rstrip(".") != title else "")
    return str(exc)


def call(fn: Callable[[APISession], Awaitable[T]], *, action: str) -> T:
    """Run ``fn`` with an open API session; any failure ends the command with
    ``<action> failed: <reason>``."""
    from ...exceptions import BackendError
    from ...gql import MutationFailed

    cli_ctx = get_cli_context()
    try:
        cfg = cli_ctx.get_config()
    except BackendError as e:
        fail(f"{action} failed: {e}")

    async def _go() -> T:
        from ...request import APISession

        async with APISession(cfg) as api:
            return await fn(api)

    try:
        return asyncio.run(_go())
    except MutationFailed as e:
        fail(f"{action} failed: {e}")
    except BackendError as e:
        fail(f"{action} failed: {describe(e)}", problem=e)
    except KeyboardInterrupt:
        click.echo("Interrupted!", err=True)
        sys.exit(130)


def run_mutation(document: str, variables: Mapping[str, Any], root_field: str, *, action: str
                 ) -> dict[str, Any]:
    """One mutation; ``ok: false`` fails the command with the server's message."""
    async def _go(api: APISession) -> dict[str, Any]:
        from ...gql import mutate

        return await mutate(api, document, variables, root_field)

    return call(_go, action=action)


# ---------------------------------------------------------------------------------------------
# paging


def paging_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--filter``, ``--order``, ``--offset``, ``--limit`` of the official paged lists."""
    fn = click.option("--limit", type=click.IntRange(min=1), default=None,
                      help="The page size for pagination (console: the most items to show; "
                           "JSON: one page, 20 by default).")(fn)
    fn = click.option("--offset", type=click.IntRange(min=0), default=0,
                      help="The index of the current page start for pagination.")(fn)
    fn = click.option("--order", default=None,
                      help="Set the query ordering expression, e.g. '-created_at' or '+email'.")(fn)
    fn = click.option("--filter", "filter_", default=None,
                      help="""Set the query filter expression, e.g. 'status == "ACTIVE" & email ilike "%@example.com"'.""")(fn)
    return fn


@dataclass
class Paging:
    offset: int = 0
    limit: int | None = None
    filter: str | None = None
    order: str | None = None
    json_page_size: int = 20
    extra: dict[str, tuple[Any, str]] = field(default_factory=dict)


async def fetch_list(api: APISession, root_field: str, fields: Sequence[Field], paging: Paging
                     ) -> tuple[list[dict[str, Any]], int]:
    """JSON: one page (``--limit`` or 20 items); console: every item from ``--offset`` on, or
    ``--limit`` of them, fetched in pages of at most 100."""
    from ...gql import MAX_PAGE_SIZE, page

    variables = {**paging.extra, "filter": (paging.filter, "String"), "order": (paging.order, "String")}
    if get_cli_context().json_mode:
        size = min(paging.limit or paging.json_page_size, MAX_PAGE_SIZE)
        result = await page(api, root_field, variables, refs(fields), limit=size, offset=paging.offset)
        return result.items, result.total_count
    items: list[dict[str, Any]] = []
    offset, total = paging.offset, 0
    while True:
        want = MAX_PAGE_SIZE if paging.limit is None else min(MAX_PAGE_SIZE, paging.limit - len(items))
        if want <= 0:
            break
        result = await page(api, root_field, variables, refs(fields), limit=want, offset=offset)
        total = result.total_count
        items.extend(result.items)
        offset += len(result.items)
        if not result.items or offset >= total:
            break
    return items, total


# ---------------------------------------------------------------------------------------------
# parameter types


class BoolExpr(click.ParamType):
    """``true/false``, ``yes/no``, ``on/off``, ``1/0`` (the official ``BoolExprType``)."""

    name = "boolean"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "t", "yes", "y", "on", "1"):
            return True
        if text in ("false", "f", "no", "n", "off", "0"):
            return False
        self.fail(f"Cannot parse {value!r} as a boolean (use true or false).", param, ctx)


class JSONText(click.ParamType):
    """A JSON document, checked here and sent as text (GraphQL ``JSONString``)."""

    name = "json-string"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if not isinstance(value, str):
            return json.dumps(value)
        try:
            json.loads(value)
        except ValueError:
            self.fail(f"cannot parse {value!r} as JSON", param, ctx)
        return value


class CommaList(click.ParamType):
    """``a,b,c`` -> ``["a", "b", "c"]`` (an empty string is an empty list)."""

    name = "list"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> list[str]:
        if isinstance(value, list):
            return value
        return [v.strip() for v in str(value).split(",") if v.strip()]


def set_if_given(target: dict[str, Any], **values: Any) -> dict[str, Any]:
    """Copy the options that were given (None means "leave as is")."""
    target.update({k: v for k, v in values.items() if v is not None})
    return target


def is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def confirm(yes: bool, prompt: str = "Are you sure?") -> None:
    """Ask before an irreversible action (``-y`` skips); no answer or "no" cancels it."""
    if yes:
        return
    try:
        ok = click.confirm(prompt, default=True, err=True)
    except click.Abort:  # no answer (end of input)
        click.echo("", err=True)
        ok = False
    if not ok:
        fail("Cancelled.")


def yes_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("-y", "--yes", is_flag=True,
                        help="Do not ask for confirmation (for scripts).")(fn)
