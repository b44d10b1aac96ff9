"""The prepared-document cache in front of GraphQL parsing and validation (api/gql/limits.py)."""

from __future__ import annotations

import asyncio

import pytest

from bai.manager.api.gql import limits
from bai.manager.api.gql.schema import SCHEMA
from bai.manager.config import GraphQLConfig

pytestmark = pytest.mark.timeout(30)

VALID = "query { compute_session_list(limit: 1, offset: 0) { total_count } }"


@pytest.fixture(autouse=True)
def empty_cache() -> None:
    limits._prepared.clear()


def run(query: str, config: GraphQLConfig) -> limits.Prepared:
    return asyncio.run(limits.prepare_off_loop(SCHEMA, query, config))


def test_a_valid_document_is_prepared_once_and_reused() -> None:
    config = GraphQLConfig()
    first = run(VALID, config)
    assert first.document is not None and first.validation_errors == []
    assert run(VALID, config) is first


def test_documents_with_errors_are_never_cached() -> None:
    config = GraphQLConfig()
    bad_syntax, invalid = "query { compute_session_list(", "query { no_such_field }"
    assert run(bad_syntax, config).syntax_error is not None
    second = run(invalid, config)
    assert second.validation_errors
    assert run(invalid, config) is not second
    assert limits._prepared == {}


def test_other_limits_prepare_again_and_are_enforced() -> None:
    run(VALID, GraphQLConfig())
    with pytest.raises(limits.QueryTooComplex):
        run(VALID, GraphQLConfig.model_validate({"max-depth": 1}))


def test_the_cache_keeps_only_the_most_recent_documents() -> None:
    config = GraphQLConfig()
    for n in range(limits.PREPARED_CACHE_SIZE + 5):
        run(f"query Q{n} {{ compute_session_list(limit: 1, offset: 0) {{ total_count }} }}", config)
    assert len(limits._prepared) == limits.PREPARED_CACHE_SIZE
    assert (SCHEMA, config, "query Q0 { compute_session_list(limit: 1, offset: 0) { total_count } }") not in limits._prepared
