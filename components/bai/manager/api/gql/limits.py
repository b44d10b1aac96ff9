"""Limits on GraphQL documents, checked before validation, and parsing plus validation off the
event loop.

Without them one request can stall every other: graphql-core's validation is superlinear in the
number of fields (overlapping-field checks), fragments multiply selections exponentially, and
all of it is pure Python holding the event loop. So: the document's size is capped first (on the
loop, O(1)); then, in a small dedicated thread pool, the document is parsed, its depth, field
count and alias count are measured with fragments expanded (memoised, so measuring is linear
even when the expansion is exponential) and refused past the limits, and only then validated.
"""

from __future__ import annotations

import asyncio
import re
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    parse,
    specified_rules,
    validate,
)

from bai.manager.config import GraphQLConfig

#: Parsing and validation run here, not on the default pool that password hashing and file I/O
#: share: a burst of hostile queries waits its turn instead of occupying every worker.
_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="bai-gql")
#: Validation errors reported at most (graphql-core stops there).
MAX_VALIDATION_ERRORS = 50
#: Names a document may hold per allowed field before it is refused unparsed (arguments, types,
#: variables and fragment names are names too; the official client's queries have about 1.2).
NAMES_PER_FIELD = 4
# Strings (block and plain) and comments. An unterminated string runs to the end of its line (of
# the document for a block string), so an alternative that starts never fails and never
# backtracks: one left-to-right pass, linear in the document's length whatever it holds.
_IGNORED = re.compile(r'"""(?:[^"\\]|\\[\s\S]|"(?!""))*(?:"""|\\?\Z)|"(?:[^"\\\n]|\\.)*(?:"|\\?(?=\n|\Z))|#[^\n]*')
_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]*")
_BRACE = re.compile(r"[{}]")


class QueryTooComplex(Exception):
    """The document exceeds a configured limit; ``str()`` says which."""


@dataclass(frozen=True)
class Shape:
    depth: int = 0
    fields: int = 0
    aliases: int = 0

    def __add__(self, other: Shape) -> Shape:
        return Shape(max(self.depth, other.depth), self.fields + other.fields, self.aliases + other.aliases)


@dataclass(frozen=True)
class Prepared:
    """A parsed document and its validation errors, or the syntax error that stopped parsing."""

    document: DocumentNode | None
    syntax_error: GraphQLError | None
    validation_errors: list[GraphQLError]


def max_body_size(limits: GraphQLConfig) -> int:
    """Largest request body worth reading: the document JSON-escaped (up to 6 bytes a byte for
    ``\\uXXXX``) plus room for variables."""
    return 6 * limits.max_document_size + 2**20


def check_size(query: str, limits: GraphQLConfig) -> None:
    if len(query) > limits.max_document_size or len(query.encode("utf-8", "surrogatepass")) > limits.max_document_size:
        raise QueryTooComplex(f"The query is larger than {limits.max_document_size} bytes (max-document-size).")


def prescan(query: str, limits: GraphQLConfig) -> None:
    """Refuse documents that are plainly too big before parsing them: parsing allocates several
    objects per token, and a burst of big documents would bring on long garbage collections that
    stall the whole process. Counts names and brace nesting outside strings and comments; bounds
    only (``measure`` decides exactly), so every document within the limits passes."""
    text = _IGNORED.sub(" ", query)
    level = deepest = 0
    for brace in _BRACE.finditer(text):
        level += 1 if brace.group() == "{" else -1
        deepest = max(deepest, level)
    # A field level is at most one brace, an inline fragment adds one: twice the depth bounds it.
    if deepest > 2 * limits.max_depth + 1:
        raise QueryTooComplex(f"The query is nested deeper than {limits.max_depth} levels (max-depth).")
    if sum(1 for _ in _NAME.finditer(text)) > NAMES_PER_FIELD * limits.max_fields:
        raise QueryTooComplex(f"The query selects more than {limits.max_fields} fields (max-fields).")


def measure(document: DocumentNode, limits: GraphQLConfig | None = None) -> Shape:
    """Depth, field count and alias count of the document's operations, fragments expanded.
    Unknown or cyclic fragment spreads count as nothing (validation reports them). With
    ``limits``, stops with QueryTooComplex as soon as one is exceeded."""
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    memo: dict[str, Shape] = {}
    visiting: set[str] = set()

    def check(shape: Shape, level: int = 0) -> Shape:
        if limits is not None:
            if level + shape.depth > limits.max_depth:
                raise QueryTooComplex(f"The query is nested deeper than {limits.max_depth} levels (max-depth).")
            if shape.fields > limits.max_fields:
                raise QueryTooComplex(f"The query selects more than {limits.max_fields} fields (max-fields).")
            if shape.aliases > limits.max_aliases:
                raise QueryTooComplex(f"The query uses more than {limits.max_aliases} aliases (max-aliases).")
        return shape

    def selection_set(node: SelectionSetNode | None, level: int) -> Shape:
        """The shape below a field at depth ``level`` (checked on the way down, so a deep
        document is refused at the limit, not after recursing all the way)."""
        total = Shape()
        for sel in node.selections if node is not None else ():
            if isinstance(sel, FieldNode):
                check(Shape(1), level)
                inner = selection_set(sel.selection_set, level + 1)
                part = Shape(inner.depth + 1, inner.fields + 1, inner.aliases + (sel.alias is not None))
            elif isinstance(sel, InlineFragmentNode):
                part = selection_set(sel.selection_set, level)
            elif isinstance(sel, FragmentSpreadNode):
                part = fragment(sel.name.value)
            else:
                continue
            total = check(total + part, level)
        return total

    def fragment(name: str) -> Shape:
        """A fragment's shape relative to where it is spread (memoised: spreads multiply)."""
        if name in memo:
            return memo[name]
        definition = fragments.get(name)
        if definition is None or name in visiting:
            return Shape()
        visiting.add(name)
        try:
            memo[name] = selection_set(definition.selection_set, 0)
        finally:
            visiting.discard(name)
        return memo[name]

    operations: Iterable[OperationDefinitionNode] = (
        d for d in document.definitions if isinstance(d, OperationDefinitionNode))
    total = Shape()
    for op in operations:
        total = check(total + selection_set(op.selection_set, 0))
    return total


def prepare(schema: GraphQLSchema, query: str, limits: GraphQLConfig) -> Prepared:
    """Parse, measure (QueryTooComplex past a limit) and validate: the CPU-bound part."""
    check_size(query, limits)
    prescan(query, limits)
    too_deep = QueryTooComplex(f"The query is nested deeper than {limits.max_depth} levels (max-depth).")
    try:
        document = parse(query)
    except GraphQLError as exc:
        if "nested too deeply" in exc.message:  # graphql-core's own nesting guard
            raise too_deep from None
        return Prepared(None, exc, [])
    except RecursionError:  # the parser recurses per nesting level
        raise too_deep from None
    measure(document, limits)
    errors = validate(schema, document, rules=specified_rules, max_errors=MAX_VALIDATION_ERRORS)
    return Prepared(document, None, errors)


#: Valid documents already prepared, by (schema, limits, text): clients send the same few
#: queries again and again (the official client's are fixed texts with variables), and parsing
#: plus validation is most of a small query's cost (~2 ms). The result is a pure function of the
#: key and graphql-core never changes a document it executes. Only documents that parsed and
#: validated without error are kept, the most recently used ``PREPARED_CACHE_SIZE`` of them.
_prepared: OrderedDict[tuple[GraphQLSchema, GraphQLConfig, str], Prepared] = OrderedDict()
PREPARED_CACHE_SIZE = 256
#: Longer documents are prepared every time (keeps the cache's size small whatever is sent).
PREPARED_CACHE_MAX_LENGTH = 8192


async def prepare_off_loop(schema: GraphQLSchema, query: str, limits: GraphQLConfig) -> Prepared:
    check_size(query, limits)  # cheap, and keeps oversized documents out of the pool's queue
    key = (schema, limits, query)
    hit = _prepared.get(key)
    if hit is not None:
        _prepared.move_to_end(key)
        return hit
    prepared = await asyncio.get_running_loop().run_in_executor(_POOL, prepare, schema, query, limits)
    if (len(query) <= PREPARED_CACHE_MAX_LENGTH and prepared.syntax_error is None
            and not prepared.validation_errors):
        _prepared[key] = prepared
        if len(_prepared) > PREPARED_CACHE_SIZE:
            _prepared.popitem(last=False)
    return prepared


def ariadne_hooks(prepared: Prepared) -> dict[str, Any]:
    """Keyword arguments for ``ariadne.graphql`` that use the prepared document and errors
    instead of parsing and validating again on the event loop."""

    def parser(*_: Any) -> DocumentNode:
        if prepared.document is None:
            assert prepared.syntax_error is not None
            raise prepared.syntax_error
        return prepared.document

    def validator(*_: Any, **__: Any) -> list[GraphQLError]:
        return prepared.validation_errors

    return {"query_parser": parser, "query_validator": validator}
