"""``python -m bai.appproxy.register``: make a resource group use this app proxy (the installer's
step). It sets the group's ``wsproxy_addr`` to ``--url`` and its ``wsproxy_api_token`` to the
proxy's ``api-secret``, read from the proxy's config file (never from the command line), over
the database named in the manager's config. ``--check`` changes nothing and exits 0 only when
the group already has both values (1 otherwise), so a rerun of the installer is a no-op.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import sqlalchemy as sa

from bai.manager import config as manager_config
from bai.manager.store import tables as t
from bai.manager.store.db import create_engine

from . import config as proxy_config


async def _register(manager_toml: str, proxy_toml: str, group: str, url: str, check: bool) -> int:
    secret = proxy_config.load(proxy_toml).app_proxy.api_secret
    engine = create_engine(manager_config.load(manager_toml).db)
    try:
        async with engine.begin() as conn:
            row = (await conn.execute(
                sa.select(t.scaling_groups.c.wsproxy_addr, t.scaling_groups.c.wsproxy_api_token)
                .where(t.scaling_groups.c.name == group))).first()
            if row is None:
                print(f"no resource group {group!r}", file=sys.stderr)
                return 2
            if (row.wsproxy_addr, row.wsproxy_api_token) == (url, secret):
                return 0
            if check:
                return 1
            await conn.execute(sa.update(t.scaling_groups).where(t.scaling_groups.c.name == group)
                               .values(wsproxy_addr=url, wsproxy_api_token=secret))
        print(f"resource group {group}: app proxy {url}")
        return 0
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bai.appproxy.register", description=__doc__)
    parser.add_argument("--manager-config", required=True)
    parser.add_argument("--app-proxy-config", required=True)
    parser.add_argument("--scaling-group", default="default")
    parser.add_argument("--url", required=True, help="the wsproxy_addr the manager calls")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    return asyncio.run(_register(args.manager_config, args.app_proxy_config, args.scaling_group, args.url,
                                 args.check))


if __name__ == "__main__":
    sys.exit(main())
