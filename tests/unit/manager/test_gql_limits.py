"""GraphQL document limits: measuring with fragments expanded, the unparsed pre-scan, and that
what the official client and an introspection query send stays within the defaults."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from graphql import get_introspection_query, parse

from bai.manager.api import gql
from bai.manager.api.gql.limits import QueryTooComplex, Shape, measure, prepare, prescan
from bai.manager.config import GraphQLConfig

LIMITS = GraphQLConfig()
#: The wire captures of the official client, in ../shared/ beside the repository (CI lays it there too).
WIRE = Path(__file__).resolve().parents[4] / "shared" / "reference" / "wire"


def test_measure_expands_fragments_once_each() -> None:
    doc = parse("""
        query Q { a: keypair { ...K } compute_session_list(limit: 1, offset: 0) { items { ... on ComputeSession { id } } } }
        fragment K on KeyPair { access_key b: user_id ...U }
        fragment U on KeyPair { user_info { full_name } }
    """)
    # keypair(1) + access_key, user_id, user_info, full_name (4) + list, items, id (3)
    assert measure(doc) == Shape(depth=3, fields=8, aliases=2)


def test_measure_survives_cycles_and_unknown_fragments() -> None:
    doc = parse("query { ...A ...Missing } fragment A on Query { keypair { access_key } ...B } "
                "fragment B on Query { ...A }")
    assert measure(doc) == Shape(depth=2, fields=2, aliases=0)


def test_fragment_multiplication_is_counted_not_expanded() -> None:
    doc = parse("query { ...F0 } " + " ".join(f"fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }}"
                                              for i in range(60)) + " fragment F60 on Query { keypair { access_key } }")
    started = time.perf_counter()
    assert measure(doc).fields == 2 * 2**60
    assert time.perf_counter() - started < 0.5
    with pytest.raises(QueryTooComplex, match="max-fields"):
        measure(doc, LIMITS)


@pytest.mark.parametrize(("query", "limit"), [
    ("{ " + "a { " * 30 + "b" + " }" * 31, "max-depth"),
    ("{ " + " ".join(f"x{i}: keypair {{ access_key }}" for i in range(31)) + " }", "max-aliases"),
    ("{ keypair { " + "access_key " * 501 + "} }", "max-fields"),
    ("{ keypair { " + "access_key " * 2500 + "} }", "max-fields"),            # refused unparsed
    ("{" * 2000 + "}" * 2000, "max-depth"),                                   # refused unparsed
    ("{ " + "a { " * 300 + "b" + " }" * 301, "max-depth"),                    # graphql-core's own guard
    ("x" * (LIMITS.max_document_size + 1), "max-document-size"),
    ("{ a(s: \"" + "é" * (LIMITS.max_document_size // 2) + "\") }", "max-document-size"),  # bytes, not chars
])
def test_limits(query: str, limit: str) -> None:
    with pytest.raises(QueryTooComplex, match=limit):
        prepare(gql.SCHEMA, query, LIMITS)


def test_braces_and_names_inside_strings_and_comments_do_not_count() -> None:
    filler = "{" * 100 + " x" * 2500
    query = ('query { compute_session_list(limit: 1, offset: 0, filter: "' + filler.replace('"', "") + '") '
             '{ total_count } } # ' + filler + '\n')
    assert len(query) < LIMITS.max_document_size
    prescan(query, LIMITS)
    assert prepare(gql.SCHEMA, query, LIMITS).validation_errors == []


@pytest.mark.parametrize("pattern", ['"\\', '"""\\', '"""a"', '"\\\n', '"x', '\\', '"', '#"', '"""\n"'])
def test_prescan_is_linear_on_adversarial_input(pattern: str) -> None:
    query = (pattern * (LIMITS.max_document_size // len(pattern)))[:LIMITS.max_document_size]
    started = time.perf_counter()
    try:
        prescan(query, LIMITS)
    except QueryTooComplex:
        pass
    assert time.perf_counter() - started < 0.2


def _wire_queries() -> list[str]:
    found = []
    for path in sorted(WIRE.glob("*.txt")):
        for m in re.finditer(r'"query": "((?:[^"\\]|\\.)*)"', path.read_text()):
            found.append(json.loads('"' + m.group(1) + '"'))
    return found


def test_official_client_queries_and_introspection_fit_the_defaults() -> None:
    queries = _wire_queries()
    assert len(queries) >= 5
    queries.append(get_introspection_query(descriptions=True, specified_by_url=True, directive_is_repeatable=True,
                                           schema_description=True, input_value_deprecation=True))
    for query in queries:
        prepared = prepare(gql.SCHEMA, query, LIMITS)
        assert prepared.document is not None and prepared.syntax_error is None
