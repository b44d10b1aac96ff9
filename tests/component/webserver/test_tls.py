"""The webserver over TLS (a self-signed certificate made here): logins get Secure cookies, pages
get HSTS, and a browser's Origin must be the https one."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bai.webserver.config import WebserverConfig
from bai.webserver.server import running

from .conftest import USER_PASSWORD, Node, web_config


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


async def test_login_over_tls_sets_a_secure_cookie(node: Node, static_root: Path, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    base = web_config(node, static_root).model_dump()
    base["service"].update({"ssl_enabled": True, "ssl_cert": str(cert), "ssl_privkey": str(key)})
    cfg = WebserverConfig.model_validate(base)
    ctx = ssl.create_default_context(cafile=str(cert))
    url = f"https://127.0.0.1:{cfg.service.port}"
    async with running(cfg), aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx),
                                                   cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.post(url + "/server/login", json={"username": node.user_email, "password": USER_PASSWORD},
                             headers={"Origin": url}) as r:
            assert r.status == 200
            set_cookie = r.headers["Set-Cookie"]
            assert "Secure" in set_cookie and "HttpOnly" in set_cookie
            assert r.headers["Strict-Transport-Security"].startswith("max-age=")
            token = (await r.json())["csrf_token"]
        async with http.get(url + "/func/auth/test") as r:
            assert r.status == 200
        # the http:// spelling of our own origin is another origin
        async with http.post(url + "/server/logout", headers={"Origin": url.replace("https", "http"),
                                                              "X-BackendAI-CSRF-Token": token}) as r:
            assert r.status == 403
        async with http.post(url + "/server/logout", headers={"Origin": url, "X-BackendAI-CSRF-Token": token}) as r:
            assert r.status == 200
