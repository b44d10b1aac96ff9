"""The GraphQL admin API, schema-first with ariadne: one module per object type (its SDL,
resolvers and row -> object mapping), ``schema`` assembling them, ``handlers`` serving
POST /admin/gql and /admin/graphql, ``limits`` bounding documents before they run. SQL lives in
the store modules of each noun, reached through services/gql_queries.py; the filter / order
mini-language is parsed by bai.manager.querylang."""

from .handlers import GraphQLAPIError, GraphQLRequest, handle_gql, handle_gql_legacy, routes
from .schema import SCHEMA

__all__ = ["SCHEMA", "GraphQLAPIError", "GraphQLRequest", "handle_gql", "handle_gql_legacy", "routes"]
