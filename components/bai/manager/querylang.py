"""The original's ``filter`` / ``order`` mini-language for GraphQL ``*_list`` queries, parsed
into a small syntax tree. Pure: no database, no web framework, so every layer may use it; the
store turns a tree into SQL over a per-type whitelist of columns (store/filters.py).

Grammar (``&`` binds tighter than ``|``; ``!`` negates the factor after it)::

    expr   := term ("|" term)*
    term   := factor ("&" factor)*
    factor := "!" factor | "(" expr ")" | NAME OP value
    OP     := == != > >= < <= contains in isnot is like ilike
    value  := scalar | "[" [scalar ("," scalar)*] "]"
    scalar := "string" | number | null | true | false

Strings are JSON string literals (double quotes, backslash escapes). ``order`` is a
comma-separated list of field names, each optionally prefixed with ``+`` (ascending, the
default) or ``-`` (descending).

Hostile input is bounded: the text is capped at MAX_FILTER_LENGTH characters and nesting (of
parentheses and negations together) at MAX_NESTING levels, refused with QueryError rather than
recursed into; arrays hold scalars only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

MAX_FILTER_LENGTH = 4096
MAX_ORDER_LENGTH = 1024
MAX_NESTING = 32

#: Comparison operators, as written.
OPERATORS = frozenset({"==", "!=", ">", ">=", "<", "<=", "contains", "in", "isnot", "is", "like", "ilike"})

Scalar = str | int | float | bool | None
Value = Scalar | tuple[Scalar, ...]


class QueryError(ValueError):
    """The filter, order or status text of a list query is invalid; ``str()`` says why."""


@dataclass(frozen=True)
class Comparison:
    field: str
    op: str
    value: Value  # an array literal is a tuple


@dataclass(frozen=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    item: Node


Node = Comparison | And | Or | Not


@dataclass(frozen=True)
class OrderKey:
    field: str
    descending: bool = False


# ------------------------------------------------------------------ tokens

_TOKEN_RE = re.compile(r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<op>==|!=|>=|<=|>|<)
  | (?P<punct>[()\[\],&|!])
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
""", re.VERBOSE)
_WORD_OPS = frozenset(op for op in OPERATORS if op.isalpha())
_ATOMS: dict[str, Scalar] = {"null": None, "true": True, "false": False}


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


# ------------------------------------------------------------------ filter

class _Parser:
    """Recursive descent; ``depth`` counts open parentheses and negations."""

    def __init__(self, text: str, fields: Collection[str] | None) -> None:
        self.toks = _tokenize(text)
        self.i = 0
        self.fields = fields

    def parse(self) -> Node:
        node = self.expr(0)
        if self.peek().kind != "end":
            self.fail("unexpected", self.peek())
        return node

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

    def expr(self, depth: int) -> Node:
        if depth > MAX_NESTING:
            raise QueryError("Invalid filter: nested too deeply")
        terms = [self.term(depth)]
        while self.accept("|"):
            terms.append(self.term(depth))
        return terms[0] if len(terms) == 1 else Or(tuple(terms))

    def term(self, depth: int) -> Node:
        factors = [self.factor(depth)]
        while self.accept("&"):
            factors.append(self.factor(depth))
        return factors[0] if len(factors) == 1 else And(tuple(factors))

    def factor(self, depth: int) -> Node:
        if self.accept("!"):
            if depth + 1 > MAX_NESTING:
                raise QueryError("Invalid filter: nested too deeply")
            return Not(self.factor(depth + 1))
        if self.accept("("):
            inner = self.expr(depth + 1)
            if not self.accept(")"):
                self.fail("expected ')' but found", self.peek())
            return inner
        return self.comparison()

    def comparison(self) -> Comparison:
        name_tok = self.take()
        if name_tok.kind != "name" or name_tok.text in _WORD_OPS or name_tok.text in _ATOMS:
            self.fail("expected a field name but found", name_tok)
        if self.fields is not None and name_tok.text not in self.fields:
            raise QueryError(f"Invalid filter: unknown field {name_tok.text!r} "
                             f"(known: {', '.join(sorted(self.fields))})")
        op_tok = self.take()
        if not (op_tok.kind == "op" or (op_tok.kind == "name" and op_tok.text in _WORD_OPS)):
            self.fail("expected an operator but found", op_tok)
        return Comparison(name_tok.text, op_tok.text, self.value())

    def value(self) -> Value:
        if self.accept("["):
            items: list[Scalar] = []
            if self.accept("]"):
                return ()
            items.append(self.scalar())
            while self.accept(","):
                items.append(self.scalar())
            if not self.accept("]"):
                self.fail("expected ']' but found", self.peek())
            return tuple(items)
        return self.scalar()

    def scalar(self) -> Scalar:
        tok = self.take()
        if tok.kind == "string":
            try:
                value = json.loads(tok.text)
            except ValueError:
                raise QueryError(f"Invalid filter: bad string literal at position {tok.pos}") from None
            assert isinstance(value, str)
            return value
        if tok.kind == "number":
            return float(tok.text) if any(c in tok.text for c in ".eE") else int(tok.text)
        if tok.kind == "name" and tok.text in _ATOMS:
            return _ATOMS[tok.text]
        self.fail("expected a value but found", tok)
        raise AssertionError  # unreachable: fail() raises


def parse_filter(text: str, fields: Collection[str] | None = None) -> Node:
    """Filter text -> syntax tree; with ``fields``, a field outside it is an error. Raises QueryError."""
    if len(text) > MAX_FILTER_LENGTH:
        raise QueryError(f"Invalid filter: longer than {MAX_FILTER_LENGTH} characters")
    if not text.strip():
        raise QueryError("Invalid filter: empty expression")
    return _Parser(text, fields).parse()


# ------------------------------------------------------------------ order and statuses

_ORDER_ITEM_RE = re.compile(r"^\s*([+-]?)\s*([A-Za-z_][A-Za-z0-9_]*)\s*$")


def parse_order(text: str, fields: Collection[str] | None = None) -> list[OrderKey]:
    """``"-created_at,+name"`` -> order keys; with ``fields``, a field outside it is an error."""
    if len(text) > MAX_ORDER_LENGTH:
        raise QueryError(f"Invalid order: longer than {MAX_ORDER_LENGTH} characters")
    keys: list[OrderKey] = []
    for item in text.split(","):
        m = _ORDER_ITEM_RE.match(item)
        if m is None:
            raise QueryError(f"Invalid order: {item.strip()!r} (expected [+|-]field)")
        sign, name = m.groups()
        if fields is not None and name not in fields:
            raise QueryError(f"Invalid order: unknown field {name!r} (known: {', '.join(sorted(fields))})")
        keys.append(OrderKey(name, sign == "-"))
    return keys


def parse_statuses(text: str, known: Sequence[str] | frozenset[str], what: str) -> list[str]:
    """Comma-separated status names, each checked against ``known``; raises QueryError."""
    names = [s.strip().upper() for s in text.split(",") if s.strip()]
    bad = [n for n in names if n not in known]
    if bad:
        raise QueryError(f"Unknown {what} status: {', '.join(bad)}")
    return names
