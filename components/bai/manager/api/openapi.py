"""The OpenAPI 3.1 document of the REST API, generated from the routes' own declarations
(``routing.add``): the request models are the ones handlers validate with, so the document cannot
drift from what the manager enforces. Served anonymously at ``GET /openapi.json``."""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, JsonSchemaValue, models_json_schema
from pydantic_core import core_schema

from bai.common.auth import ACCEPTED_VERSIONS, API_VERSION
from bai.manager import errors

from . import routing
from .routing import Answer, Endpoint

REF = "#/components/schemas/{model}"
SECURITY_SCHEME = "BackendAI-HMAC"
Refs = dict[Any, dict[str, Any]]  # (model, mode) -> {"$ref": ...}
_PATH_PARAM = re.compile(r"\{(\w+)(?::[^}]*)?\}")


NO_NUL = "^[^\\u0000]*$"  # strings holding NUL are refused (schemas.parse): PostgreSQL cannot store them


class _JsonSchema(GenerateJsonSchema):
    def str_schema(self, schema: core_schema.StringSchema) -> JsonSchemaValue:
        out = super().str_schema(schema)
        out.setdefault("pattern", NO_NUL)
        return out


class Problem(BaseModel):
    """An RFC 7807 problem, as every error of this API is answered."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"required": ["type", "title"]})
    type: str
    title: str
    msg: str | None = None
    data: Any = None


class OpenApiDocument(BaseModel):
    model_config = ConfigDict(extra="allow", json_schema_extra={"required": ["openapi", "info", "paths"]})
    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]


def _base_problems(endpoint: Endpoint) -> list[type[errors.ApiError]]:
    """What the middlewares and the input validation may answer for this endpoint."""
    found: list[type[errors.ApiError]] = [errors.GenericBadRequest]  # unsupported X-BackendAI-Version
    if endpoint.auth is not None:
        found += [errors.InvalidAuthParameters, errors.AuthorizationFailed, errors.RateLimitExceeded]
    if endpoint.body is not None or endpoint.query is not None:
        found.append(errors.InvalidAPIParameters)
    if endpoint.body is not None:
        found.append(errors.RequestTooLarge)
    return found + list(endpoint.problems)


def _models(endpoints: list[Endpoint]) -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    seen: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {(Problem, "serialization"): None}
    for e in endpoints:
        for model in (e.body, e.query):
            if model is not None:
                seen[(model, "validation")] = None
        for answer in e.answers:
            if answer.model is not None:
                seen[(answer.model, "serialization")] = None
    return list(seen)


def _query_parameters(model: type[BaseModel], schema: dict[str, Any], defs: dict[str, Any]) -> list[dict[str, Any]]:
    if "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[-1]]
    required = set(schema.get("required", ()))
    return [{"name": name, "in": "query", "required": name in required, "schema": prop}
            for name, prop in schema.get("properties", {}).items()]


def _responses(endpoint: Endpoint, refs: Refs) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for answer in endpoint.answers:
        out = responses.setdefault(str(answer.status), {"description": answer.description})
        if answer.media_type and answer.status != 101:
            media: dict[str, Any] = {}
            if answer.model is not None:
                media["schema"] = refs[(answer.model, "serialization")]
            out.setdefault("content", {})[answer.media_type] = media
        if 200 <= answer.status < 300 and endpoint.links:
            out["links"] = {name: {"operationId": link.operation_id, "parameters": dict(link.parameters),
                                   **({"description": link.description} if link.description else {})}
                            for name, link in endpoint.links.items()}
    by_status: dict[int, list[type[errors.ApiError]]] = defaultdict(list)
    for problem in _base_problems(endpoint):
        if problem not in by_status[problem.status]:
            by_status[problem.status].append(problem)
    for status, problems in sorted(by_status.items()):
        text = "; ".join(f"{p.error_type.rsplit('/', 1)[-1]} ({p.title})" for p in problems)
        existing = responses.setdefault(str(status), {"description": text, "content": {}})
        if existing["description"] != text:
            existing["description"] += "; " + text
        existing.setdefault("content", {})["application/problem+json"] = {
            "schema": refs[(Problem, "serialization")]}
    return responses


def _operation(endpoint: Endpoint, refs: Refs,
               defs: dict[str, Any]) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True,
         "schema": {"type": "string", "minLength": 1, "pattern": NO_NUL}}
        for name in _PATH_PARAM.findall(endpoint.path)
    ]
    if endpoint.query is not None:
        parameters += _query_parameters(endpoint.query, refs[(endpoint.query, "validation")], defs)
    parameters.append({
        "name": "X-BackendAI-Version", "in": "header", "required": False,
        "description": (f"API version, e.g. {API_VERSION} (what the SDK sends); absent or empty means "
                        "v5.20191215. Signed requests sign it."),
        "schema": {"type": "string", "enum": ["", *sorted(ACCEPTED_VERSIONS)]},
    })
    op: dict[str, Any] = {
        "operationId": endpoint.operation_id,
        "summary": endpoint.summary,
        "tags": [endpoint.tag],
        "parameters": parameters,
        "responses": _responses(endpoint, refs),
        "security": [{SECURITY_SCHEME: []}] if endpoint.auth is not None else [],
    }
    if endpoint.description:
        op["description"] = endpoint.description
    if endpoint.auth in ("admin", "superadmin"):
        op["description"] = (op.get("description", "") + f" Requires the {endpoint.auth} role.").strip()
    if endpoint.body is not None:
        # A body-less request is read as an empty object (its query string, as the original does),
        # which is valid exactly when the model has no required field.
        needed = any(f.is_required() for f in endpoint.body.model_fields.values())
        op["requestBody"] = {"required": needed,
                             "content": {"application/json": {"schema": refs[(endpoint.body, "validation")]}}}
    return op


def build(registry: routing.Registry) -> dict[str, Any]:
    endpoints = sorted(registry.endpoints.values(), key=lambda e: (e.path, e.method))
    refs, top = models_json_schema(_models(endpoints), ref_template=REF, schema_generator=_JsonSchema)
    defs: dict[str, Any] = top.get("$defs", {})
    paths: dict[str, dict[str, Any]] = defaultdict(dict)
    for e in endpoints:
        paths[_PATH_PARAM.sub(r"{\1}", e.path)][e.method.lower()] = _operation(e, refs, defs)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Backend.AI manager API (bai)", "version": API_VERSION,
                 "description": "Generated from the routes' declarations; errors are application/problem+json."},
        "paths": dict(paths),
        "components": {
            "schemas": defs,
            "securitySchemes": {SECURITY_SCHEME: {
                "type": "apiKey", "in": "header", "name": "Authorization",
                "description": (
                    "`Authorization: BackendAI signMethod=HMAC-SHA256, credential=<access key>:<signature>` "
                    "with a `Date` header (ISO 8601, within 15 minutes of the server's clock) and "
                    "`X-BackendAI-Version`. The signature is HMAC(HMAC(HMAC(secret key, yyyymmdd of Date), "
                    "Host), \"METHOD\\npath?query\\nDate\\nhost:Host\\ncontent-type:type\\n"
                    "x-backendai-version:version\\nSHA256 of empty bytes\"), hex-encoded."),
            }},
        },
    }


async def serve(request: web.Request) -> web.Response:
    reg = request.app[routing.REGISTRY]
    if reg.document is None:
        reg.document = build(reg)
    return web.json_response(reg.document)


def routes(app: web.Application) -> None:
    routing.add(app, "GET", "/openapi.json", serve, operation_id="openapi", tag="meta",
                summary="This document.", answers=(Answer(200, "The OpenAPI 3.1 document.", OpenApiDocument),))
