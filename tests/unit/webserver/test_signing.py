"""The relay's signature is bai.common.auth.signature's, with the day's key derived once per
login object (bai.webserver.sessions.Login.signing_key): same result on any day and host, a new
day or a new keypair never signs with an old key."""

from __future__ import annotations

import hmac
import time
from dataclasses import asdict, replace

from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from bai.common.auth import API_VERSION, parse_authorization, signature, string_to_sign
from bai.webserver.config import WebserverConfig
from bai.webserver.proxy import ManagerLink
from bai.webserver.sessions import Login

HOST = "127.0.0.1:8081"


def _login(secret: str = "s" * 40) -> Login:
    return Login(access_key="AKIATEST", secret_key=secret, user_id="u@example.com", role="user", status="active",
                 domain="default", created=time.time(), csrf_token="c" * 43)


def _expected(login: Login, date: str, host: str, path: str = "/auth/test") -> str:
    return signature(login.secret_key, "GET", path, date, host, "application/octet-stream", API_VERSION)


def test_signing_key_follows_the_day_the_host_and_the_secret() -> None:
    login = _login()
    for date in ("2026-12-02T23:59:59.999999+00:00", "2026-12-03T00:00:00.000001+00:00",
                 "2026-12-02T23:59:59.999999+00:00"):  # across midnight and back: each day its own key
        for host in (HOST, "manager.example:443"):
            key = login.signing_key(date[:10].replace("-", ""), host)
            msg = string_to_sign("GET", "/auth/test", date, host, "application/octet-stream", API_VERSION)
            assert hmac.new(key, msg, "sha256").hexdigest() == _expected(login, date, host)
    other = replace(login, secret_key="t" * 40)  # a new keypair: a new login object, a new key
    assert other.signing_key("20261202", HOST) != login.signing_key("20261202", HOST)


def test_the_memo_is_not_part_of_the_stored_login() -> None:
    login = _login()
    login.signing_key("20261202", HOST)
    assert set(asdict(login)) == {"access_key", "secret_key", "user_id", "role", "status", "domain", "created",
                                  "csrf_token"}
    assert Login(**asdict(login)) == login


async def test_relayed_calls_carry_the_managers_signature() -> None:
    link = ManagerLink(WebserverConfig(), None)  # type: ignore[arg-type]  (no call goes out)
    try:
        login = _login()
        request = make_mocked_request("GET", "/func/folders?x=1", headers=CIMultiDict(
            {"Host": "web.example", "Cookie": "AIOHTTP_SESSION=abc", "Authorization": "forged"}))
        for _ in range(2):  # derived once, reused: the same answer
            headers = link.signed_headers(request, "/folders?x=1", login, "10.0.0.1")
            parsed = parse_authorization(headers["Authorization"])
            assert parsed.access_key == "AKIATEST"
            assert parsed.signature == _expected(login, headers["Date"], HOST, "/folders?x=1")
            assert "Cookie" not in headers and headers["X-Forwarded-For"] == "10.0.0.1"
    finally:
        link.close()
