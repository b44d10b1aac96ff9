"""The OpenAPI document served at GET /openapi.json, fuzzed with schemathesis against a real node:
every operation (examples, coverage and random inputs, positive and negative) and stateful runs
along the document's links (create a session, then read, run code in, fetch logs of and destroy
it by name). Every answer must be a non-5xx that conforms to the document: status code, content
type, headers and body. Sessions the run creates are destroyed as soon as they are seen."""

from __future__ import annotations

import re
import time
from collections import Counter
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode

from bai.manager.api import openapi, routing
from bai.manager.config import ManagerConfig
from bai.manager.server import build_app

from .conftest import HmacAuth, LiveNode

#: Examples per operation; few where each one may start a container.
EXAMPLES = 30
SESSION_CREATES = ("create_session", "create_session_legacy")
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance", "response_headers_conformance", "negative_data_rejection",
          )


def _config() -> SchemathesisConfig:
    return SchemathesisConfig.from_dict({
        "request-timeout": 20,
        "generation": {"mode": "all", "max-examples": EXAMPLES, "database": "none", "deterministic": True},
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
        "phases": {"stateful": {"max-steps": 12, "generation": {"mode": "positive"}}},
        "operations": [
            *({"include-operation-id": op, "generation": {"max-examples": 4}} for op in SESSION_CREATES),
            # An event stream never ends by itself: schemathesis reads it until the request timeout.
            {"include-operation-id": "session_events", "request-timeout": 0.3, "generation": {"max-examples": 8}},
        ],
    })


class NodeAuth(HmacAuth):
    """Signs with the keys of the module's node, known once the node runs (collection is earlier)."""

    def __init__(self) -> None:
        super().__init__("", "")


# schemathesis' pytest integration parametrizes at collection time (its fixture-based loader does
# not work with pytest 9), so the document is built here by the code that serves it, from an app
# that is not started; test_served_document_is_the_generated_one ties the two together.
DOCUMENT = openapi.build(build_app(ManagerConfig())[routing.REGISTRY])
AUTH = NodeAuth()
schema = schemathesis.openapi.from_dict(DOCUMENT, config=_config())
schema.auth.set_from_requests(AUTH)


#: What a valid positive create may be turned into, so that stateful runs reach the operations
#: linked from a created session (random image names never match a real image).
STARTABLE = {"image": "python", "config": {"resources": {"cpu": "1", "mem": "256m"}}, "maxWaitSeconds": 30,
             "enqueueOnly": False, "reuseIfExists": True, "type": "interactive"}


@schema.hook
def flatmap_case(context: Any, case: Any) -> Any:
    """Half of the positive session creates ask for the real kernel image, with their own name."""
    if (_op(case) not in SESSION_CREATES or case.meta is None
            or case.meta.generation.mode != GenerationMode.POSITIVE or not isinstance(case.body, dict)):
        return st.just(case)
    startable = case.derive(keep_auth=True)
    startable.body = {"name": case.body["name"], **STARTABLE}
    return st.sampled_from([case, startable])


@pytest.fixture(scope="module", autouse=True)
def signing(live_node: LiveNode) -> None:
    AUTH.access_key, AUTH.secret_key = live_node.access_key, live_node.secret_key


def test_unsigned_requests_to_secured_operations_are_401(live_node: LiveNode) -> None:
    """What schemathesis' ignored_auth check would do, minus its garbage-credential probe (a malformed
    Authorization header is a 400 invalid-auth-params here, as in the original)."""
    secured = [(method, path) for path, ops in DOCUMENT["paths"].items() for method, op in ops.items()
               if op["security"]]
    assert len(secured) >= 20
    for method, path in secured:
        # every path parameter filled in ({ref}, {name}, {inv_id} ...), so the route itself answers
        resp = requests.request(method, live_node.url + re.sub(r"\{[^{}/]+\}", "some-name", path), timeout=10)
        assert resp.status_code == 401, (method, path, resp.status_code)
        assert resp.headers["Content-Type"].startswith("application/problem+json")


@pytest.mark.parametrize(("method", "path", "body", "status", "where"), [
    ("POST", "/session", {"name": "nul-name", "image": "py\u0000thon"}, 400, "image"),
    ("POST", "/session", {"name": "nul-name", "image": "python", "config": {"environ": {"A\u0000": "1"}}},
     400, "config.environ.A\u0000"),
    ("POST", "/admin/gql", {"query": "{ x }", "variables": {"v": "\u0000"}}, 400, "variables.v"),
    ("GET", "/session/a%00b", None, 404, None),
    ("POST", "/session/a%00b", {"mode": "query", "runId": None, "code": "1"}, 404, None),
    ("POST", "/auth/ssh-keypair", {"pubkey": "ssh-rsa \u00e9\u00e9", "privkey": "k"}, 400, None),
    ("POST", "/session", {"name": "strict-bool", "image": "python", "reuseIfExists": 0}, 400, "reuseIfExists"),
])
def test_inputs_fuzzing_found_are_4xx(live_node: LiveNode, method: str, path: str, body: Any, status: int,
                                      where: str | None) -> None:
    """Regressions of what schemathesis found: each answered 500 (PostgreSQL refusing NUL, a base64
    decode of non-ASCII text) or was accepted against the document (0 taken for false)."""
    resp = requests.request(method, live_node.url + path, json=body, auth=live_node.auth, timeout=20)
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    if where is not None:
        assert where in resp.json()["data"], resp.json()


def test_served_document_is_the_generated_one(live_node: LiveNode) -> None:
    resp = requests.get(f"{live_node.url}/openapi.json", timeout=10)  # anonymous
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("application/json")
    assert resp.json() == DOCUMENT


#: (operation id, status) of every answer the run got, for the summary at the end.
SEEN: Counter[tuple[str, int]] = Counter()


def _op(case: Any) -> str:
    return str(case.operation.definition.raw.get("operationId"))


#: The session name of the create operations' example: kept alive through the run, so that the many
#: creates derived from the example reuse it instead of starting a container each.
EXAMPLE_NAME = "my-session"
#: Names of the sessions the run created, to destroy at the end.
CREATED: set[str] = set()


def _record(live_node: LiveNode, case: Any, response: Any, label: str = "") -> None:
    SEEN[(_op(case) + label, response.status_code)] += 1
    if _op(case) == "set_manager_status" and response.status_code == 204:
        # a fuzzed freeze is undone at once, or every later create/mutation answers 503 server-frozen
        resp = requests.put(f"{live_node.url}/manager/status", json={"status": "running"}, auth=live_node.auth,
                            timeout=30)
        assert resp.status_code == 204, resp.text
    if _op(case) in SESSION_CREATES and response.status_code == 201:
        body = response.json()
        CREATED.add(body["sessionName"])
        if body["created"] and body["sessionName"] != EXAMPLE_NAME:
            # Any other new session goes at once: it holds agent slots and counts against the
            # keypair's concurrency limit, which later creates would wait on.
            resp = requests.delete(f"{live_node.url}/session/{body['sessionName']}", params={"forced": "true"},
                                   auth=live_node.auth, timeout=30)
            assert resp.status_code == 200, resp.text


@schema.parametrize()
@hypothesis.settings(deadline=None, suppress_health_check=list(hypothesis.HealthCheck))
def test_operation_conforms(case: Any, live_node: LiveNode) -> None:
    response = case.call(base_url=live_node.url)
    try:
        case.validate_response(response)
    finally:
        _record(live_node, case, response)


def test_stateful_links(live_node: LiveNode) -> None:
    node = live_node

    class Sessions(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": node.url}

        def after_call(self, response: Any, case: Any) -> None:
            super().after_call(response, case)
            _record(node, case, response, " (stateful)")

    Sessions.run(settings=hypothesis.settings(
        max_examples=10, deadline=None, stateful_step_count=6, database=None,
        suppress_health_check=list(hypothesis.HealthCheck)))


def test_every_created_session_is_destroyed(live_node: LiveNode) -> None:
    """Runs last in this module: the sessions the run created go, and nothing else is left."""
    assert CREATED, "the run created no session: the create operations were not exercised"
    for name in CREATED:
        resp = requests.delete(f"{live_node.url}/session/{name}", params={"forced": "true"},
                               auth=live_node.auth, timeout=30)
        assert resp.status_code in (200, 404), resp.text  # 404: a stateful run destroyed it already
    end = time.monotonic() + 30
    while (left := live_node.live_sessions()) and time.monotonic() < end:
        time.sleep(0.2)
    assert left == []
    by_op: dict[str, list[str]] = {}
    for (op, status), n in sorted(SEEN.items()):
        by_op.setdefault(op, []).append(f"{status}x{n}")
    print("\nanswers per operation:", *(f"  {op}: {' '.join(v)}" for op, v in by_op.items()), sep="\n")
