"""``backend.ai config``."""

from __future__ import annotations

import sys
from typing import Any

import click

from .common import ExitCode, get_cli_context, print_json, report_error


def make_config_cmd(name: str = "config", help_text: str | None = None) -> click.Command:
    @click.command(name=name, help=help_text)
    def config() -> None:
        """Shows the current configuration."""
        from .. import __version__
        from ..config import format_api_version
        from ..exceptions import BackendError

        cli_ctx = get_cli_context()
        try:
            cfg = cli_ctx.get_config()
        except BackendError as e:
            report_error(e, json_mode=cli_ctx.json_mode)
            sys.exit(ExitCode.FAILURE)

        server_info: dict[str, Any] | None = None
        negotiated: str | None = None
        fetch_error: str | None = None
        try:
            server_info, negotiated = _fetch_versions(cfg)
        except BackendError as e:
            fetch_error = str(e)

        if cli_ctx.json_mode:
            result: dict[str, Any] = {
                "endpoint": cfg.endpoint,
                "endpoints": list(cfg.endpoints),
                "endpoint_type": cfg.endpoint_type,
                "client_version": __version__,
                "client_api_version": cfg.version,
                "server_version": (server_info or {}).get("manager"),
                "server_api_version": (server_info or {}).get("version"),
                "negotiated_api_version": negotiated,
                "domain": cfg.domain,
                "group": cfg.group,
                "access_key": cfg.access_key if not cfg.is_anonymous else None,
                "secret_key": cfg.masked_secret_key if not cfg.is_anonymous else None,
                "hash_type": cfg.hash_type,
                "skip_sslcert_validation": cfg.skip_sslcert_validation,
            }
            if fetch_error is not None:
                result["error"] = fetch_error
            print_json(result)
            return

        echo = click.echo
        echo(f"API endpoint: {cfg.endpoint} (mode: {cfg.endpoint_type})")
        echo(f"Client version: {__version__} (API: {cfg.version})")
        if server_info is not None:
            echo(
                "Server version: {} (API: {})".format(
                    server_info.get("manager", "pre-19.03"), server_info.get("version")
                )
            )
        else:
            echo("Server version: (failed to fetch)")
        echo(f"Negotiated API version: {negotiated or format_api_version(cfg.api_version)}")
        if cfg.domain:
            echo(f'Domain name: "{cfg.domain}"')
        if cfg.group:
            echo(f'Group name: "{cfg.group}"')
        if cfg.is_anonymous:
            echo("Access key: (this is an anonymous session)")
        else:
            echo(f'Access key: "{cfg.access_key}"')
            echo(f'Secret key: "{cfg.masked_secret_key}"')
        echo(f"Signature hash type: {cfg.hash_type}")
        echo(f"Skip SSL certificate validation? {cfg.skip_sslcert_validation}")
        if fetch_error is not None:
            click.echo(fetch_error, err=True)

    return config


def _fetch_versions(cfg: Any) -> tuple[dict[str, Any] | None, str]:
    import asyncio

    from ..request import APISession

    async def _go() -> tuple[dict[str, Any] | None, str]:
        async with APISession(cfg) as api:
            return api.server_info, api.api_version_str

    return asyncio.run(_go())
