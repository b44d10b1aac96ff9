"""Malformed headers and bodies get a 4xx problem+json, never a 5xx: generated requests (raw bytes
over a socket, so anything a client can send is covered) against the real middlewares, the real
/auth handlers, a real database and Redis.

Values that are not valid HTTP at all (control characters, header lines over aiohttp's 8190-byte
limit) are refused by the HTTP parser with a plain 400 before the application sees them; every
request that reaches the application is answered by it (``Server: BackendAI``) with problem+json.
"""

from __future__ import annotations

import asyncio
import json
import re
import string
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bai.common.auth import API_VERSION, sign_request

from .conftest import PROBS, AuthEnv

PROBLEM = "application/problem+json"
_FORBIDDEN_IN_FIELD = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
HEADER_LINE_LIMIT = 8190  # aiohttp's max_line_size / max_field_size
RESET = 0  # "status" of a connection reset before any reply could be read


@dataclass
class RawReply:
    status: int
    headers: dict[str, str]
    body: bytes


async def send_raw(port: int, request: bytes) -> RawReply:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 30)
    except (ConnectionResetError, BrokenPipeError):
        # The HTTP parser refused the request and aiohttp closed the socket with the rest of our
        # bytes unread, so the kernel reset the connection, possibly before its 400 was read (or
        # while we were still writing).
        return RawReply(RESET, {}, b"")
    finally:
        writer.close()
    if not raw:  # closed with no reply at all: only the parser does that (check_reply asserts so)
        return RawReply(RESET, {}, b"")
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawReply(status, headers, body)


def build(method: str, path: bytes, headers: list[tuple[bytes, bytes]], body: bytes | None) -> bytes:
    lines = [method.encode() + b" " + path + b" HTTP/1.1"]
    lines += [name + b": " + value for name, value in headers]
    if body is not None:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


def check_reply(reply: RawReply, sent: bytes) -> None:
    assert reply.status < 500, (reply.status, reply.body[:500], sent[:500])
    if reply.headers.get("server") == "BackendAI":
        if reply.status >= 400:
            assert reply.headers.get("content-type", "").startswith(PROBLEM), (reply.headers, sent[:300])
            problem = json.loads(reply.body)
            assert problem["type"].startswith(PROBS) and problem["title"]
    else:  # refused by the HTTP parser (a 400, or a reset): only for what is not valid HTTP
        head = sent.partition(b"\r\n\r\n")[0]
        # a generated field holding a blank line ends the head early: what follows is a second,
        # pipelined "request" of leftover bytes, which the parser rightly refuses
        cut_short = sent.find(b"\r\n\r\n") < sent.find(b"\r\nConnection: close\r\n\r\n")
        assert reply.status in (400, RESET), (reply.status, sent[:300])
        # (a line starting with a space or tab continues the previous one: obsolete line folding,
        # which the parser refuses too)
        assert cut_short or _FORBIDDEN_IN_FIELD.search(head.replace(b"\r\n", b"")) or any(
            len(line) > HEADER_LINE_LIMIT or line[:1] in (b" ", b"\t") for line in head.split(b"\r\n")), sent[:300]


# ------------------------------------------------------------------ strategies

_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FFF, exclude_characters="\x7f",
                              exclude_categories=("Cs",)), max_size=120).map(lambda s: s.encode())
_ascii = st.text(string.printable.strip() + " ", max_size=80).map(str.encode)
_any_bytes = st.binary(max_size=80)
_huge = st.integers(1_000, 9_000).map(lambda n: b"A" * n)
_field = st.one_of(_text, _ascii, _any_bytes, _huge, st.just(b""))
_hex = st.text("0123456789abcdef", min_size=1, max_size=70).map(str.encode)
_credential_part = st.one_of(_field, _hex, st.just(b"AKIAIOSFODNN7EXAMPLE"))
_authorization = st.one_of(
    _field,
    st.builds(lambda scheme, method, ak, sig: scheme + b" signMethod=" + method + b", credential=" + ak + b":" + sig,
              st.sampled_from([b"BackendAI", b"Sorna", b"Basic"]),
              st.one_of(st.sampled_from([b"HMAC-SHA256", b"HMAC-SHAKE_128", b"HMAC-MD5", b"HMAC-", b"HMAC-\xc3\xa9"]),
                        _field),
              _credential_part, _credential_part),
)
_now = datetime.now(UTC)
_date = st.one_of(
    _field,
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat().encode()),
    st.integers(-30, 30).map(lambda m: (_now + timedelta(minutes=m)).isoformat().encode()),
    st.sampled_from([b"Tue, 01 Dec 2026 14:00:00 GMT", b"0001-01-01T00:00:00-23:59", b"9999-12-31T23:59:59+23:59",
                     b"99999999999999999999", b"now", b"2026-13-45"]),
)
_version = st.one_of(_field, st.sampled_from([API_VERSION.encode(), b"v3.20170615", b"v8.2024031\xff"]))
_ctype = st.one_of(_field, st.sampled_from([b"application/json", b"text/plain",
                                            b"application/json; charset=nope", b"application/json; charset=utf-16",
                                            b"multipart/form-data; boundary=", b"text/yaml"]),
                   _text.map(lambda t: b"application/json; charset=" + t))
_json_value = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                      max_size=4), max_leaves=12)
_login_like = st.fixed_dictionaries({}, optional={
    "type": st.one_of(st.sampled_from(["keypair", "jwt"]), _json_value),
    "domain": st.one_of(st.just("default"), _json_value), "username": _json_value, "password": _json_value,
    "echo": _json_value, "email": _json_value, "group": _json_value})
_body = st.one_of(
    st.none(), st.just(b""), _any_bytes, _text,
    _json_value.map(lambda v: json.dumps(v).encode()), _login_like.map(lambda v: json.dumps(v).encode()),
    st.integers(1_000, 200_000).map(lambda n: b"[" * n), st.integers(1_000, 200_000).map(lambda n: b'{"a":' * n),
    _login_like.map(lambda v: json.dumps(v).encode("utf-16")),
)
_target = st.sampled_from([("POST", b"/auth/test"), ("GET", b"/auth/test"), ("POST", b"/auth/authorize"),
                           ("GET", b"/auth/role"), ("GET", b"/auth/role?group=%FF%FE"),
                           ("GET", b"/auth/test?echo=%C3%A9%00"), ("POST", b"/auth/signup"),
                           ("POST", b"/auth/update-password")])
_HEADER_NAMES = [b"Authorization", b"Date", b"X-BackendAI-Date", b"X-BackendAI-Version", b"X-Sorna-Version",
                 b"Content-Type", b"Host", b"X-Forwarded-For", b"X-Method-Override"]
_fuzzed_headers = st.dictionaries(
    st.sampled_from(_HEADER_NAMES),
    st.one_of(_field, _authorization, _date, _version, _ctype), max_size=6)


@dataclass(frozen=True)
class Case:
    target: tuple[str, bytes]
    headers: dict[bytes, bytes]
    body: bytes | None
    signed: bool


_cases = st.builds(
    Case, _target,
    st.fixed_dictionaries({}, optional={b"Authorization": _authorization, b"Date": _date,
                                        b"X-BackendAI-Version": _version, b"Content-Type": _ctype}) | _fuzzed_headers,
    _body, st.booleans())


# ------------------------------------------------------------------ tests

async def test_generated_requests_never_get_a_5xx(env: AuthEnv) -> None:
    loop = asyncio.get_running_loop()
    port = env.api.client.port
    host = env.api.host.encode()

    def request_bytes(case: Case) -> bytes:
        method, path = case.target
        headers: dict[bytes, bytes] = {b"Host": host}
        if case.signed:  # a valid signature, then the generated headers replace some of it
            signed = sign_request(env.admin.access_key, env.admin.secret_key, method, path.decode(),
                                  env.api.host, "application/json")
            headers.update({b"Date": signed.date.encode(), b"Authorization": signed.authorization.encode(),
                            b"Content-Type": b"application/json", b"X-BackendAI-Version": API_VERSION.encode()})
        headers.update(case.headers)
        return build(method, path, list(headers.items()), case.body)

    @settings(max_examples=400, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(_cases)
    def run(case: Case) -> None:
        sent = request_bytes(case)
        reply = asyncio.run_coroutine_threadsafe(send_raw(port, sent), loop).result(60)
        check_reply(reply, sent)

    await asyncio.wait_for(asyncio.to_thread(run), 240)


@pytest.mark.parametrize("authorization", [
    "BackendAI signMethod=HMAC-SHA256, credential=AKIAé:abcdef",          # the report
    "BackendAI signMethod=HMAC-SHA256, credential=AKIAIOSFODNN7EXAMPLE:ßig",
    "BackendAI signMethod=HMAC-SHAKE_128, credential=AKIAIOSFODNN7EXAMPLE:abcdef",
    "BackendAI signMethod=HMAC-SHA256, credential=" + "A" * 2000 + ":abcdef",
    "BackendAI signMethod=HMAC-SHA256, credential=AK\u2028IA:abcdef",
])
async def test_odd_credentials_are_bad_requests(env: AuthEnv, authorization: str) -> None:
    date = datetime.now(UTC).isoformat()
    got = await env.api.call("GET", "/auth/test", headers={"Authorization": authorization, "Date": date})
    assert (got.status, got.content_type, got.body["type"]) == (400, PROBLEM, PROBS + "invalid-auth-params")


async def test_invalid_utf8_and_surrogates_in_headers(env: AuthEnv) -> None:
    """Bytes that are not UTF-8 reach the app as surrogate escapes; signing them must not crash."""
    port, host = env.api.client.port, env.api.host.encode()
    signed = sign_request(env.admin.access_key, env.admin.secret_key, "GET", "/auth/test", env.api.host,
                          "text/plain")
    base = {b"Host": host, b"Date": signed.date.encode(), b"Authorization": signed.authorization.encode(),
            b"Content-Type": b"text/plain", b"X-BackendAI-Version": API_VERSION.encode()}
    for name, value in [(b"Host", b"127.0.0.1\xff\xfe"), (b"Date", signed.date.encode() + b"\xff"),
                        (b"Authorization", signed.authorization.encode() + b"\xc3"),
                        (b"X-BackendAI-Version", b"v8.\xff"), (b"Content-Type", b"text/\xffplain")]:
        sent = build("GET", b"/auth/test", list({**base, name: value}.items()), None)
        reply = await send_raw(port, sent)
        check_reply(reply, sent)
        assert reply.status in (400, 401), (name, reply.status)


@pytest.mark.parametrize("body", [
    b"{", b"[1, 2]", b'"text"', b"\xff\xfe\x00", b"[" * 100_000, b'{"domain": ' * 50_000,
    json.dumps({"type": "keypair", "domain": ["default"], "username": 1, "password": None}).encode(),
])
async def test_malformed_bodies(env: AuthEnv, body: bytes) -> None:
    sent = build("POST", b"/auth/authorize", [(b"Host", env.api.host.encode()),
                                               (b"Content-Type", b"application/json; charset=no-such")], body)
    reply = await send_raw(env.api.client.port, sent)
    check_reply(reply, sent)
    assert reply.status == 400 and json.loads(reply.body)["type"] == PROBS + "invalid-api-params"
