"""``bai-manager``: run the manager and administer its database and shared config."""

from __future__ import annotations

import asyncio
import json
import logging
import sys

import click

from bai.common.config import ConfigError


def _load(config_path: str | None):  # type: ignore[no-untyped-def]
    from bai.manager.config import load

    try:
        return load(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


config_option = click.option("--config", "-f", "config_path", type=click.Path(dir_okay=False),
                             help="manager.toml (default: BACKEND_CONFIG_FILE, ./, ~/.config/backend.ai, /etc/backend.ai)")


@click.group(help="The bai manager: API server, scheduler and admin tools.")
def main() -> None:
    pass


@main.command(help="Run the manager API server.")
@config_option
def start(config_path: str | None) -> None:
    cfg = _load(config_path)
    logging.basicConfig(
        level=cfg.logging.level.upper(), stream=sys.stderr,
        format='{"ts": "%(asctime)s", "level": "%(levelname)s", "logger": "%(name)s", "msg": %(message)r}',
    )
    from bai.manager.server import run

    run(cfg)


@main.group(help="Database schema.")
def db() -> None:
    pass


@db.command(help="Apply every pending schema migration (idempotent).")
@config_option
def upgrade(config_path: str | None) -> None:
    from bai.manager.store.migrate import upgrade as do_upgrade

    do_upgrade(_load(config_path).db.dsn)


@main.group(help="Initial data.")
def fixture() -> None:
    pass


@fixture.command(help="Create the default domain, project, resource group, policy and admin keypair (idempotent).")
@config_option
@click.option("--admin-password", envvar="BAI_ADMIN_PASSWORD", default=None)
@click.option("--json", "as_json", is_flag=True, help="Print the admin credentials as JSON.")
def populate(config_path: str | None, admin_password: str | None, as_json: bool) -> None:
    cfg = _load(config_path)

    async def go():  # type: ignore[no-untyped-def]
        from bai.manager.store.db import create_engine
        from bai.manager.store.fixtures import populate as do_populate

        engine = create_engine(cfg.db)
        try:
            async with engine.begin() as conn:
                return await do_populate(conn, admin_password)
        finally:
            await engine.dispose()

    creds = asyncio.run(go())
    host, port = cfg.service_host_port
    out = {"email": creds.email, "access_key": creds.access_key, "secret_key": creds.secret_key,
           "password": creds.password, "endpoint": f"http://{host}:{port}"}
    if as_json:
        click.echo(json.dumps(out))
    else:
        for k, v in out.items():
            click.echo(f"{k}: {v}")


@main.group(help="Shared configuration in etcd (keys relative to /sorna/<namespace>/).")
def etcd() -> None:
    pass


def _with_etcd(config_path: str | None, fn):  # type: ignore[no-untyped-def]
    cfg = _load(config_path)

    async def go():  # type: ignore[no-untyped-def]
        from bai.common.etcd import connect

        async with connect(cfg.etcd.addr, cfg.etcd.namespace) as store:
            return await fn(store)

    return asyncio.run(go())


@etcd.command("put", help="Set KEY to VALUE.")
@config_option
@click.argument("key")
@click.argument("value")
def etcd_put(config_path: str | None, key: str, value: str) -> None:
    _with_etcd(config_path, lambda s: s.put(key, value))


@etcd.command("get", help="Print KEY (or every key under it with --prefix).")
@config_option
@click.option("--prefix", is_flag=True)
@click.argument("key")
def etcd_get(config_path: str | None, key: str, prefix: bool) -> None:
    if prefix:
        click.echo(json.dumps(_with_etcd(config_path, lambda s: s.get_prefix(key)), indent=2))
        return
    value = _with_etcd(config_path, lambda s: s.get(key))
    if value is None:
        raise click.ClickException(f"no such key: {key}")
    click.echo(value)
