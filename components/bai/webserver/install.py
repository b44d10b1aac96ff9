"""What the installer's webserver role runs on the manager's host (``python -m bai.webserver.install``):

    admin-login --manager URL --secrets FILE --client-env FILE --web URL [--check]

The admin (``admin@lablup.com``) gets the password the installer generated (``webserver_admin_password`` in
the secrets file), and the client env file gets ``BAI_WEB_ENDPOINT``, ``BACKEND_USER_ID`` and
``BACKEND_PASSWORD`` (mode 600, its other lines kept). ``--check`` only tells (exit 0: both are
so already; 1: not). The password is checked with the manager's own login (``/auth/authorize``)
and, when it does not work, set with the admin keypair from the env file (GraphQL
``modify_user``); it never appears on a command line.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bai.common.auth import API_VERSION, sign_request

ADMIN_EMAIL = "admin@lablup.com"
KEYS = ("BAI_WEB_ENDPOINT", "BACKEND_USER_ID", "BACKEND_PASSWORD")


def _post(url: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "X-BackendAI-Version": API_VERSION,
                                          **headers})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


def password_works(manager: str, password: str) -> bool:
    status, _ = _post(manager + "/auth/authorize", {"type": "keypair", "domain": "default",
                                                    "username": ADMIN_EMAIL, "password": password}, {})
    if status == 429:
        raise SystemExit("the manager throttles admin logins right now; run the install again in a minute")
    return status == 200


def set_password(manager: str, access_key: str, secret_key: str, password: str) -> None:
    query = ("mutation($email: String!, $props: ModifyUserInput!) "
             "{ modify_user(email: $email, props: $props) { ok msg } }")
    signed = sign_request(access_key, secret_key, "POST", "/admin/gql", urlsplit(manager).netloc, "application/json")
    status, body = _post(manager + "/admin/gql", {"query": query, "variables": {
        "email": ADMIN_EMAIL, "props": {"password": password, "need_password_change": False}}},
        {"Date": signed.date, "Authorization": signed.authorization})
    ok = status == 200 and isinstance(body, dict) and (body.get("data") or {}).get("modify_user", {}).get("ok")
    if not ok:
        raise SystemExit(f"could not set the admin's password: HTTP {status} {body!r}")


def read_env(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("export ") and "=" in line:
            key, _, value = line[len("export "):].partition("=")
            try:
                parts = shlex.split(value)
            except ValueError:
                continue
            env[key] = parts[0] if parts else ""
    return env


def wanted_env(web: str, password: str) -> dict[str, str]:
    return {"BAI_WEB_ENDPOINT": web, "BACKEND_USER_ID": ADMIN_EMAIL, "BACKEND_PASSWORD": password}


def write_env(path: Path, values: dict[str, str]) -> None:
    kept = [line for line in path.read_text().splitlines()
            if not any(line.strip().startswith(f"export {k}=") for k in KEYS)
            and line.strip() != "# the web UI and its admin login (session mode: BACKEND_ENDPOINT_TYPE=session)"]
    kept.append("# the web UI and its admin login (session mode: BACKEND_ENDPOINT_TYPE=session)")
    kept += [f"export {k}={shlex.quote(v)}" for k, v in values.items()]
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(kept) + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def admin_login(manager: str, secrets: Path, client_env: Path, web: str, check: bool) -> bool:
    password = str(tomllib.loads(secrets.read_text()).get("webserver_admin_password", ""))
    if not password:
        raise SystemExit(f"{secrets} has no webserver_admin_password")
    env = read_env(client_env)
    want = wanted_env(web, password)
    env_ok = all(env.get(k) == v for k, v in want.items()) and os.stat(client_env).st_mode & 0o077 == 0
    works = password_works(manager, password)
    if check:
        return env_ok and works
    if not works:
        set_password(manager, env["BACKEND_ACCESS_KEY"], env["BACKEND_SECRET_KEY"], password)
        if not password_works(manager, password):
            raise SystemExit("the admin's new password does not log in")
    if not env_ok:
        write_env(client_env, want)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bai.webserver.install")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("admin-login")
    p.add_argument("--manager", required=True)
    p.add_argument("--secrets", required=True, type=Path)
    p.add_argument("--client-env", required=True, type=Path)
    p.add_argument("--web", required=True)
    p.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    ok = admin_login(args.manager.rstrip("/"), args.secrets, args.client_env, args.web, args.check)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
