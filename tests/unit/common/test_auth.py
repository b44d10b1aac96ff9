from datetime import UTC, datetime

import pytest

from bai.common import auth


def test_reference_vector() -> None:
    # The worked example of api-auth-and-conventions.md §4.6.
    sig = auth.signature(
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "GET", "/folders?group_id=abc",
        "2024-03-15T01:23:45.678901+00:00", "127.0.0.1:8081", "text/plain", "v8.20240315",
    )
    assert sig == "13c10f877137f6b0598c0609a812e9981275c0a39986129a354074dd64e8c10c"


def test_sign_then_parse_roundtrip() -> None:
    now = datetime(2026, 11, 26, 17, 37, 51, 80601, tzinfo=UTC)
    h = auth.sign_request("AKIAIOSFODNN7EXAMPLE", "secret", "POST", "/session", "127.0.0.1:8091",
                          "application/json", now=now)
    assert h.date == "2026-11-26T17:37:51.080601+00:00"
    parsed = auth.parse_authorization(h.authorization)
    assert parsed.access_key == "AKIAIOSFODNN7EXAMPLE" and parsed.hash_name == "sha256"
    assert parsed.signature == auth.signature("secret", "POST", "/session", h.date, "127.0.0.1:8091",
                                              "application/json", auth.API_VERSION)


@pytest.mark.parametrize("header", [
    "Basic abc", "BackendAI", "BackendAI signMethod=HMAC-SHA256", "BackendAI credential=AK:sig",
    "BackendAI signMethod=RSA-SHA256, credential=AK:sig", "BackendAI signMethod=HMAC-SHA256, credential=AK",
])
def test_malformed_authorization_rejected(header: str) -> None:
    with pytest.raises(ValueError):
        auth.parse_authorization(header)


def test_api_versions() -> None:
    assert auth.parse_api_version("v8.20240315") == (8, "20240315")
    assert "v8.20240315" in auth.ACCEPTED_VERSIONS and "v3.20170615" not in auth.ACCEPTED_VERSIONS
    with pytest.raises(ValueError):
        auth.parse_api_version("8.2024")
