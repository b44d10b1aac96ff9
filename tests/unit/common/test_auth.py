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


@pytest.mark.parametrize("header", [
    "BackendAI signMethod=HMAC-SHA256, credential=AKIAé:abcdef",                 # non-ASCII key
    "BackendAI signMethod=HMAC-SHA256, credential=AKIA\x00KEY:abcdef",           # control character
    "BackendAI signMethod=HMAC-SHA256, credential=AKIAIOSFODNN7EXAMPLE:not-hex",
    "BackendAI signMethod=HMAC-SHA256, credential=AKIAIOSFODNN7EXAMPLE:" + "ab" * 200,
    "BackendAI signMethod=HMAC-SHAKE_128, credential=AK:abcdef",                 # no fixed digest size
    "BackendAI signMethod=HMAC-NOPE, credential=AK:abcdef",
    "BackendAI signMethod=HMAC-SHA256, credential=AK:ab, " + "x=y, " * 300,     # overlong
])
def test_unusable_credentials_rejected(header: str) -> None:
    with pytest.raises(ValueError):
        auth.parse_authorization(header)


def test_supported_hashes_all_sign() -> None:
    for name in sorted(auth.SUPPORTED_HASHES):
        h = auth.sign_request("AKIAIOSFODNN7EXAMPLE", "secret", "GET", "/", "h:1", "text/plain", hash_name=name)
        assert auth.parse_authorization(h.authorization).hash_name == name


@pytest.mark.parametrize("value", ["", "x" * 65, "not a date", "2026-13-45", "0001-01-01T00:00:00+23:59",
                                   "99999999999999999999", "9999-12-31T23:59:59-23:59"])
def test_bad_dates_are_value_errors(value: str) -> None:
    with pytest.raises(ValueError):
        auth.parse_date(value)


def test_undecodable_header_bytes_are_signed_as_sent() -> None:
    # aiohttp hands bytes that are not UTF-8 over as surrogate escapes; signing must not fail on
    # them and must sign the original bytes.
    host = b"127.0.0.1\xff".decode("utf-8", "surrogateescape")
    sig = auth.signature("secret", "GET", "/", "2026-11-26T17:37:51+00:00", host, "text/plain", auth.API_VERSION)
    assert sig != auth.signature("secret", "GET", "/", "2026-11-26T17:37:51+00:00", "127.0.0.1", "text/plain",
                                 auth.API_VERSION)
