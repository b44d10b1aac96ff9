"""Small checks and helpers that roles run *on the target* with the bai venv's python
(``/opt/bai/venv/bin/python -m installer.probe ...``). Checks exit 0 (yes) or 1 (no).

    db-at-head --config F        the database revision equals the migrations' head(s)
    http-json URL [--expect K=V] GET URL answers 2xx with a JSON body (whose K is V)
    tcp HOST:PORT                something accepts connections there
    client-env JSON --endpoint E --out PATH [--bin-dir DIR]
                                 write the client env file from `fixture populate --json` output
                                 (with --bin-dir, sourcing it also puts DIR on PATH)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import socket
import sys
import urllib.request
from pathlib import Path
from typing import Any


def _migrations_dir() -> Path:
    try:
        from bai.manager.store.migrate import MIGRATIONS

        return Path(MIGRATIONS)
    except ImportError:
        import bai.manager

        for env in Path(bai.manager.__file__).parent.rglob("env.py"):
            if (env.parent / "versions").is_dir():
                return env.parent
    raise SystemExit("no alembic migrations found in bai.manager")


def db_at_head(config: str) -> bool:
    import asyncpg
    from alembic.script import ScriptDirectory

    from bai.manager.config import load

    cfg = load(config)
    heads = set(ScriptDirectory(str(_migrations_dir())).get_heads())
    # "host:port", or (HA) a primary and its replicas: "pg1:5432,pg2:5432", asked read-write
    addrs = [a.strip().rpartition(":") for a in cfg.db.addr.split(",") if a.strip()]
    where: dict[str, Any] = {"host": addrs[0][0], "port": int(addrs[0][2])}
    if len(addrs) > 1:
        where = {"host": [h for h, _, _ in addrs], "port": [int(p) for _, _, p in addrs],
                 "target_session_attrs": "read-write"}

    async def current() -> set[str]:
        conn = await asyncpg.connect(**where, user=cfg.db.user, password=cfg.db.password,
                                     database=cfg.db.name, timeout=10)
        try:
            rows = await conn.fetch("SELECT version_num FROM alembic_version")
        except asyncpg.UndefinedTableError:
            return set()
        finally:
            await conn.close()
        return {r["version_num"] for r in rows}

    return bool(heads) and asyncio.run(current()) == heads


def http_json(url: str, expect: dict[str, str] | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            body = json.loads(resp.read())
    except (OSError, ValueError):
        return False
    if not expect:
        return True
    return isinstance(body, dict) and all(str(body.get(k)) == v for k, v in expect.items())


def tcp(addr: str) -> bool:
    host, _, port = addr.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


def client_env(json_path: str, endpoint: str, out: str, bin_dir: str | None = None) -> None:
    text = Path(json_path).read_text()
    # tolerate log lines before the JSON document
    start = text.find("{")
    data = json.loads(text[start:]) if start >= 0 else {}
    ak, sk = data.get("access_key"), data.get("secret_key")
    if not ak or not sk:
        raise SystemExit(f"fixture output has no access_key/secret_key: {text[:200]!r}")
    endpoint = data.get("endpoint") or endpoint
    body = (
        "# Backend.AI client settings for this node, written by bai-install.\n"
        f"# Use: . {out}\n"
        f"export BACKEND_ENDPOINT={shlex.quote(endpoint)}\n"
        f"export BACKEND_ACCESS_KEY={shlex.quote(ak)}\n"
        f"export BACKEND_SECRET_KEY={shlex.quote(sk)}\n"
        "export BACKEND_ENDPOINT_TYPE=api\n"
    )
    if bin_dir:
        from roles.settings import path_line

        body += f"# the bai commands (backend.ai, ...)\n{path_line(bin_dir)}\n"
    tmp = f"{out}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(body)
    os.chmod(tmp, 0o600)
    os.replace(tmp, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m installer.probe")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("db-at-head")
    p.add_argument("--config", required=True)
    p = sub.add_parser("http-json")
    p.add_argument("url")
    p.add_argument("--expect", action="append", default=[], metavar="KEY=VALUE",
                   help="a top-level field the answer must have (repeatable)")
    p = sub.add_parser("tcp")
    p.add_argument("addr")
    p = sub.add_parser("client-env")
    p.add_argument("json_path")
    p.add_argument("--endpoint", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--bin-dir", default=None)
    args = parser.parse_args(argv)
    if args.cmd == "db-at-head":
        try:
            return 0 if db_at_head(args.config) else 1
        except Exception as exc:  # any failure means "not known to be at head"
            print(f"db-at-head: {exc}", file=sys.stderr)
            return 1
    if args.cmd == "http-json":
        expect = {k: v for k, _, v in (item.partition("=") for item in args.expect)}
        return 0 if http_json(args.url, expect) else 1
    if args.cmd == "tcp":
        return 0 if tcp(args.addr) else 1
    client_env(args.json_path, args.endpoint, args.out, args.bin_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
