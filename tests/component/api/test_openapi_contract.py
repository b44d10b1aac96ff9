"""The OpenAPI document served at GET /openapi.json, fuzzed with schemathesis against a real node:
every operation (examples, coverage and random inputs, positive and negative) and stateful runs
along the document's links (create a session, then read, run code in, fetch logs of and destroy
it by name). Every answer must be a non-5xx that conforms to the document: status code, content
type, headers and body. Sessions the run creates are destroyed as soon as they are seen."""

from __future__ import annotations

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
        resp = requests.request(method, live_node.url + path.replace("{ref}", "some-session"), timeout=10)
        assert resp.status_code == 401, (method, path, resp.status_code)
        assert resp.headers["Content-Type"].startswith("application/problem+json")


def test_served_document_is_the_generated_one(live_node: LiveNode) -> None:
    resp = requests.get(f"{live_node.url}/openapi.json", timeout=10)  # anonymous
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("application/json")
    assert resp.json() == DOCUMENT


#: (operation id, status) of every answer the run got, for the summary at the end.
SEEN: Counter[tuple[str, int]] = Counter()


def _op(case: Any) -> str:
    return str(case.operation.definition.raw.get("operationId"))


def _destroy_created(live_node: LiveNode, case: Any, response: Any) -> None:
    """A session the run created goes away at once (it holds agent slots)."""
    SEEN[(_op(case), response.status_code)] += 1
    if _op(case) in SESSION_CREATES and response.status_code == 201:
        name = response.json()["sessionName"]
        resp = requests.delete(f"{live_node.url}/session/{name}", params={"forced": "true"},
                               auth=live_node.auth, timeout=30)
        assert resp.status_code == 200, resp.text


@schema.parametrize()
@hypothesis.settings(deadline=None, suppress_health_check=list(hypothesis.HealthCheck))
def test_operation_conforms(case: Any, live_node: LiveNode) -> None:
    response = case.call(base_url=live_node.url)
    try:
        case.validate_response(response)
    finally:
        _destroy_created(live_node, case, response)


def test_stateful_links(live_node: LiveNode) -> None:
    node = live_node

    class Sessions(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": node.url}

        def after_call(self, response: Any, case: Any) -> None:
            super().after_call(response, case)
            SEEN[(_op(case) + " (stateful)", response.status_code)] += 1
            self.created = getattr(self, "created", [])
            if _op(case) in SESSION_CREATES and response.status_code == 201:
                self.created.append(response.json()["sessionName"])

        def teardown(self) -> None:
            for name in getattr(self, "created", []):
                requests.delete(f"{node.url}/session/{name}", params={"forced": "true"}, auth=node.auth,
                                timeout=30)

    Sessions.run(settings=hypothesis.settings(
        max_examples=10, deadline=None, stateful_step_count=6, database=None,
        suppress_health_check=list(hypothesis.HealthCheck)))


def test_run_left_no_session_behind(live_node: LiveNode) -> None:
    """Runs last in this module: every session the fuzzing created has been destroyed."""
    end = time.monotonic() + 30
    while (left := live_node.live_sessions()) and time.monotonic() < end:
        time.sleep(0.2)
    assert left == []
    by_op: dict[str, list[str]] = {}
    for (op, status), n in sorted(SEEN.items()):
        by_op.setdefault(op, []).append(f"{status}x{n}")
    print("\nanswers per operation:", *(f"  {op}: {' '.join(v)}" for op, v in by_op.items()), sep="\n")
