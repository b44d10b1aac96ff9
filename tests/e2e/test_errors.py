"""Bad input gets the original's statuses and problem+json bodies, and creates nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bai.common.auth import API_VERSION, sign_request

from .conftest import unique_name

PROBS = "https://api.backend.ai/probs/"


def _live_count(api) -> int:
    # every live session of this keypair, through the public API
    status, body = api.call("POST", "/admin/gql", {
        "query": "query { compute_session_list(limit: 100, offset: 0) { total_count } }"})
    assert status == 200, body
    return body["data"]["compute_session_list"]["total_count"]


def test_unsigned_request_is_401(api) -> None:
    status, body = api.call("GET", "/session/whatever", sign=False)
    assert status == 401 and body["type"] == PROBS + "auth-failed" and body["msg"] == "Unauthorized access"


def test_tampered_signature_is_401(api) -> None:
    signed = sign_request(api.ak, api.sk, "GET", "/session/other", api.host, "text/plain")
    status, body = api.call("GET", "/session/whatever", sign=False, headers={
        "Date": signed.date, "Authorization": signed.authorization})
    assert status == 401 and body["msg"] == "Signature mismatch"


def test_unknown_access_key_is_401(api) -> None:
    signed = sign_request("AKIANOSUCHKEY0000000", "x", "GET", "/session/x", api.host, "text/plain")
    status, body = api.call("GET", "/session/x", sign=False, headers={
        "Date": signed.date, "Authorization": signed.authorization})
    assert status == 401 and body["type"] == PROBS + "auth-failed"


def test_stale_date_is_400(api) -> None:
    old = datetime.now(UTC) - timedelta(minutes=16)
    signed = sign_request(api.ak, api.sk, "GET", "/session/x", api.host, "text/plain", now=old)
    status, body = api.call("GET", "/session/x", sign=False, headers={
        "Date": signed.date, "Authorization": signed.authorization})
    assert status == 400 and body["type"] == PROBS + "invalid-auth-params" and body["msg"] == "Date/time sync error"


def test_unsupported_api_version_is_400(api) -> None:
    status, body = api.call("GET", "/session/x", headers={"X-BackendAI-Version": "v3.20170615"})
    assert status == 400 and body["type"] == PROBS + "generic-bad-request"
    assert body["msg"] == "Unsupported API version."
    assert API_VERSION == "v8.20240315"


@pytest.mark.parametrize(("raw", "field"), [
    (b"{not json", None),
    (b'{"name": "abcd", "image": "python", "sessionName": "x"}', "sessionName"),
    (b'{"image": "python"}', "name"),
])
def test_malformed_create_is_400_and_creates_nothing(api, raw: bytes, field: str | None) -> None:
    before = _live_count(api)
    status, body = api.call("POST", "/session", raw=raw)
    assert status == 400 and body["type"] == PROBS + "invalid-api-params", body
    if field:
        assert field in body["data"]
    assert _live_count(api) == before


def test_unknown_session_is_404(api) -> None:
    status, body = api.call("GET", "/session/no-such-session")
    assert status == 404 and body == {"type": PROBS + "object-not-found", "title": "No such session.",
                                      "msg": "Session (id=no-such-session) does not exist."}
    assert api.call("DELETE", "/session/no-such-session")[0] == 404
    assert api.call("POST", "/session/no-such-session", {"mode": "query", "code": "1", "runId": None})[0] == 404


def test_unknown_image_is_404_and_creates_nothing(api) -> None:
    before = _live_count(api)
    status, body = api.call("POST", "/session", {"name": unique_name(), "image": "no/such:image"})
    assert status == 404 and body["type"] == PROBS + "object-not-found"
    assert _live_count(api) == before


def test_unknown_slot_and_tiny_memory_are_400(api) -> None:
    status, body = api.call("POST", "/session", {"name": unique_name(), "image": "python",
                                                 "config": {"resources": {"tpu.device": 1}}})
    assert status == 400, body
    status, body = api.call("POST", "/session", {"name": unique_name(), "image": "python",
                                                 "config": {"resources": {"mem": "1m"}}})
    assert status == 400 and "minimum" in body["msg"]


def test_oversized_body_is_413(api) -> None:
    status, body = api.call("POST", "/session", raw=b'{"x": "' + b"a" * (17 * 2**20) + b'"}')
    assert status == 413 and body["type"].startswith(PROBS)


def test_unknown_url_is_404_problem(api) -> None:
    status, body = api.call("GET", "/no/such/path")
    assert status == 404 and body["type"] == PROBS + "url-not-found"
