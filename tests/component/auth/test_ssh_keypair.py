"""GET/PATCH/POST /auth/ssh-keypair against a real database, both key generators, and the
0002 migration's downgrade."""

from __future__ import annotations

import asyncio
import re
import secrets

import pytest
import sqlalchemy as sa
from alembic import command
from cryptography.hazmat.primitives import serialization as ser

from bai.manager.services import auth as auth_service
from bai.manager.store import migrate
from bai.manager.store import tables as t
from tests.fixtures.halfstack import HalfStack

from .conftest import PROBS, AuthEnv

PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKmt2fH4Ba9mBq0hVbR3sPuOzQm0mE2jXJHkmU1ytSkO me@host"
PRIV = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ==\n-----END OPENSSH PRIVATE KEY-----"


def _assert_matching_rsa_pair(pub: str, priv: str) -> None:
    assert pub.startswith("ssh-rsa ") and pub.endswith("\n") and not pub.endswith("\n\n")
    assert priv.startswith("-----BEGIN RSA PRIVATE KEY-----\n") and priv.endswith("-----END RSA PRIVATE KEY-----\n")
    key = ser.load_pem_private_key(priv.encode(), password=None)
    derived = key.public_key().public_bytes(ser.Encoding.OpenSSH, ser.PublicFormat.OpenSSH).decode()
    assert pub.split()[:2] == derived.split()[:2]


async def test_generate_get_and_upload(env: AuthEnv) -> None:
    _, _, creds = await env.signup()
    got = await env.api.call("GET", "/auth/ssh-keypair", creds=creds)
    assert (got.status, got.body) == (200, {"ssh_public_key": None})
    got = await env.api.call("PATCH", "/auth/ssh-keypair", creds=creds)
    assert got.status == 200 and set(got.body) == {"ssh_public_key", "ssh_private_key"}
    _assert_matching_rsa_pair(got.body["ssh_public_key"], got.body["ssh_private_key"])
    generated = got.body
    got = await env.api.call("GET", "/auth/ssh-keypair", creds=creds)
    assert got.body == {"ssh_public_key": generated["ssh_public_key"]}
    [kp] = await env.keypairs_of(await _email_of(env, creds.access_key))
    assert kp.ssh_private_key == generated["ssh_private_key"]

    got = await env.api.call("POST", "/auth/ssh-keypair", {"pubkey": PUB + "\n\n\n", "privkey": PRIV}, creds)
    assert (got.status, got.body) == (200, {"ssh_public_key": PUB + "\n", "ssh_private_key": PRIV + "\n"})
    got = await env.api.call("GET", "/auth/ssh-keypair", creds=creds)
    assert got.body == {"ssh_public_key": PUB + "\n"}


async def _email_of(env: AuthEnv, access_key: str) -> str:
    async with env.engine.connect() as conn:
        return str(await conn.scalar(sa.select(t.keypairs.c.user_id).where(t.keypairs.c.access_key == access_key)))


@pytest.mark.parametrize("body", [
    {"pubkey": "not a key", "privkey": PRIV},
    {"pubkey": "ssh-rsa !!!notbase64!!!", "privkey": PRIV},
    {"pubkey": "ssh-rsa " + PUB.split()[1], "privkey": PRIV},  # blob says ed25519
    {"pubkey": PUB + "\nssh-rsa AAAA", "privkey": PRIV},
    {"pubkey": PUB, "privkey": "just text"},
    {"pubkey": PUB, "privkey": PRIV.replace("-----END OPENSSH", "-----END RSA")},
    {"pubkey": PUB, "privkey": PRIV.replace("\n", "\n" + "A" * 2000 + "\n", 1)},
    {"pubkey": PUB},
    {"pubkey": PUB, "privkey": PRIV, "extra": "x"},
])
async def test_upload_rejects_malformed(env: AuthEnv, body: dict[str, str]) -> None:
    _, _, creds = await env.signup()
    got = await env.api.call("POST", "/auth/ssh-keypair", body, creds)
    assert (got.status, got.body["type"]) == (400, PROBS + "invalid-api-params")
    [kp] = await env.keypairs_of(await _email_of(env, creds.access_key))
    assert (kp.ssh_public_key, kp.ssh_private_key) == (None, None)


async def test_ssh_keypair_needs_auth(env: AuthEnv) -> None:
    for method, body in (("GET", None), ("PATCH", None), ("POST", {"pubkey": PUB, "privkey": PRIV})):
        got = await env.api.call(method, "/auth/ssh-keypair", body)
        assert (got.status, got.body["type"]) == (401, PROBS + "auth-failed")


async def test_ssh_keygen_fallback() -> None:
    pub, priv = await auth_service.rsa_with_ssh_keygen()
    _assert_matching_rsa_pair(pub, priv)
    assert auth_service.normalise_ssh_keypair(pub, priv) == (pub, priv)


async def test_migration_0002_downgrades_and_upgrades(halfstack: HalfStack) -> None:
    name = f"t_auth_mig_{secrets.token_hex(3)}"
    await asyncio.to_thread(halfstack.psql, f"create database {name}")
    try:
        cfg = migrate.alembic_config(halfstack.pg_dsn(name))
        cols = ("select string_agg(column_name, ',' order by column_name) from information_schema.columns "
                "where table_name in ('users','keypairs') and column_name ~ '^(ssh_|status_info|need_pass|password_ch)'")
        await asyncio.to_thread(command.upgrade, cfg, "heads")
        got = (await asyncio.to_thread(halfstack.psql, cols, name)).strip()
        assert got == "need_password_change,password_changed_at,ssh_private_key,ssh_public_key,status_info"
        await asyncio.to_thread(command.downgrade, cfg, "0001")
        assert (await asyncio.to_thread(halfstack.psql, cols, name)).strip() == ""
        await asyncio.to_thread(command.upgrade, cfg, "heads")
        assert re.fullmatch(r"[a-z_,]+", (await asyncio.to_thread(halfstack.psql, cols, name)).strip())
    finally:
        await asyncio.to_thread(halfstack.psql, f"drop database if exists {name} with (force)")
