"""``backend.ai`` entry point.

Start-up time matters (``backend.ai run`` is used as a one-shot command), so this module imports
only ``click``; subcommands live in their own modules and are imported when invoked, and
aiohttp/rich are imported inside the commands that need them.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from .common import CLIContext, LazyGroup

#: name -> (module, factory, short help). The factory takes the help text and returns a command.
LAZY_COMMANDS: dict[str, tuple[str, str, str]] = {
    "admin": ("bai.client.cli.admin", "make_admin_group", "Administrative command set"),
    "app": ("bai.client.cli.app", "make_app_cmd", "Run a local proxy to a service of a session."),
    "apps": ("bai.client.cli.app", "make_apps_cmd", "List the services (apps) of a session."),
    "config": ("bai.client.cli.config_cmd", "make_config_cmd", "Shows the current configuration."),
    "run": (
        "bai.client.cli.run",
        "make_run_cmd",
        "Run the given code snippet or file in a session.",
    ),
    "session": ("bai.client.cli.session", "make_session_group", "Set of compute session operations"),
    "start": ("bai.client.cli.session", "make_create_cmd", 'Alias of "session create"'),
    "ps": ("bai.client.cli.session", "make_list_cmd", 'Alias of "session list"'),
    "info": ("bai.client.cli.session", "make_info_cmd", 'Alias of "session info"'),
    "rm": ("bai.client.cli.session", "make_destroy_cmd", 'Alias of "session destroy"'),
    "kill": ("bai.client.cli.session", "make_destroy_cmd", 'Alias of "session destroy"'),
    "vfolder": ("bai.client.cli.vfolder", "make_group", "Set of vfolder operations"),
    "session-template": ("bai.client.cli.session_template", "make_group", "Set of session template operations"),
    "sesstpl": ("bai.client.cli.session_template", "make_group", 'Alias of "session-template"'),
    "create-from-template": ("bai.client.cli.session", "make_create_from_template_cmd",
                             'Alias of "session create-from-template"'),
    "start-from-template": ("bai.client.cli.session", "make_create_from_template_cmd",
                            'Alias of "session create-from-template"'),
    "dotfile": ("bai.client.cli.dotfile", "make_group", "Provides dotfile operations."),
    "image": ("bai.client.cli.image", "make_group", "Image commands."),
    "events": ("bai.client.cli.session_events", "make_events_cmd", 'Alias of "session events"'),
}


@click.group(
    cls=LazyGroup,
    lazy_commands=LAZY_COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option(
    "--skip-sslcert-validation",
    is_flag=True,
    help="Skip SSL certificate validation for all API requests.",
)
@click.option(
    "--output",
    type=click.Choice(["console", "json"]),
    default="console",
    show_default=True,
    help="Set the output style of the command results (json: machine-readable).",
)
@click.version_option(package_name="bai", prog_name="backend.ai", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, skip_sslcert_validation: bool, output: str) -> None:
    """
    Backend.AI command line interface (bai).

    Configure it with the BACKEND_ENDPOINT, BACKEND_ACCESS_KEY and BACKEND_SECRET_KEY
    environment variables (or a .env file); see "backend.ai config".
    """
    ctx.obj = CLIContext(output=output, skip_sslcert_validation=skip_sslcert_validation)
    import warnings

    def _show_warning(message: Any, category: Any, filename: Any, lineno: Any, file: Any = None,
                      line: Any = None) -> None:
        print(f"{category.__name__}: {message}", file=sys.stderr)

    warnings.showwarning = _show_warning


def main(argv: list[str] | None = None) -> Any:
    """Console-script entry point."""
    return cli.main(args=argv, prog_name="backend.ai")


if __name__ == "__main__":  # pragma: no cover
    main()
