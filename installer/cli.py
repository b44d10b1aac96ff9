"""``bai-install``: install (or converge) a bai node from an inventory, and show its status.

    bai-install install [--inventory inventories/local.py] [--non-interactive] [--dry-run] [--json]
    bai-install install --from-stack OUTPUT.json ...   (`pulumi stack output --json --show-secrets`)
    bai-install status  [--inventory inventories/local.py | --from-stack OUTPUT.json] [--json]
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import click
from rich.console import Console

from . import engine
from . import inventory as inventory_mod

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


def _load(path: str | None, from_stack: str | None = None) -> inventory_mod.Inventory:
    if path and from_stack:
        raise click.UsageError("give --inventory or --from-stack, not both")
    try:
        if from_stack:
            from . import stack_inventory

            return stack_inventory.load(from_stack)
        return inventory_mod.load(path)
    except inventory_mod.InventoryError as exc:
        raise click.ClickException(str(exc)) from exc


class _Printer:
    """Prints one line per finished operation (to stderr, so that --json stays clean)."""

    def __init__(self, dry: bool, quiet: bool) -> None:
        self.dry = dry
        self.quiet = quiet

    def __call__(self, ev: engine.Event) -> None:
        if self.quiet:
            return
        if ev.kind == "phase":
            err.print(f"[bold]== {ev.phase} ==[/bold]")
            return
        if ev.kind != "end" or ev.op is None:
            return
        op = ev.op
        width = len(str(ev.total))
        pos = f"[{ev.index:>{width}}/{ev.total}]"
        if op.ok is False:
            err.print(f"{pos} [red]FAILED[/red]  {op.host}  {op.label}")
            for line in (op.error or "").splitlines()[-20:]:
                err.print("      | " + line, markup=False, highlight=False, style="red")
            return
        if self.dry:
            mark = ("[yellow]change?[/yellow]" if op.conditional else "[yellow]change [/yellow]") \
                if op.changed else "[dim]ok     [/dim]"
            err.print(f"{pos} {mark} {op.host}  {op.label}")
            return
        secs = f"{op.seconds:.1f}s" if op.seconds is not None else ""
        if op.changed:
            err.print(f"{pos} [green]changed[/green] {op.host}  {op.label}  [dim]{secs}[/dim]")
        else:
            err.print(f"{pos} [dim]ok      {op.host}  {op.label}  {secs}[/dim]")


def _client_summary(inv: inventory_mod.Inventory, result: engine.RunResult) -> dict[str, Any]:
    """Endpoint and admin keypair, read back from the client env file on the first manager."""
    from roles._facts import KeyValueFile

    managers = inv.groups.get("manager") or []
    if not managers:
        return {}
    host = managers[0]
    settings = result.settings[host]
    env = engine.read_facts([(host, inv.data[host])], KeyValueFile,
                            path=settings.client_env)[host]
    return {
        "endpoint": env.get("BACKEND_ENDPOINT", settings.endpoint),
        "access_key": env.get("BACKEND_ACCESS_KEY"),
        "secret_key": env.get("BACKEND_SECRET_KEY"),
        "client_env": settings.client_env if env else None,
    }


@click.group()
def main() -> None:
    """Install and inspect a bai (Backend.AI) node."""


@main.command()
@click.option("--inventory", "-i", "inventory_path", default=None,
              help="inventory file (default: inventories/local.py, this machine)")
@click.option("--from-stack", "from_stack", default=None, metavar="OUTPUT.json",
              help="the inventory of a Pulumi stack (stack/): `pulumi stack output --json "
                   "--show-secrets` saved to a file")
@click.option("--non-interactive", is_flag=True, help="do not ask before applying")
@click.option("--dry-run", is_flag=True, help="show the plan; change nothing")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document on stdout")
@click.option("--verbose", "-v", is_flag=True, help="show pyinfra's log (commands, noop reasons)")
def install(inventory_path: str | None, from_stack: str | None, non_interactive: bool,
            dry_run: bool, as_json: bool, verbose: bool) -> None:
    """Install or converge every host of the inventory (idempotent: rerun at will)."""
    if verbose:
        engine.verbose_logging()
    inv = _load(inventory_path, from_stack)
    if "@local" in inv.hosts and not dry_run and os.geteuid() != 0:
        raise click.ClickException("installing on @local needs root (packages, /etc, services)")
    t0 = time.monotonic()
    if not as_json:
        err.print(f"bai-install: inventory {inv.path} ({', '.join(inv.hosts)})")

    interactive = not non_interactive and not dry_run and not as_json and sys.stdin.isatty()
    if interactive:
        try:
            plan = engine.plan(inv, on_event=_Printer(dry=True, quiet=True))
        except Exception as exc:
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
        if plan.failed:
            raise click.ClickException(f"planning failed: {plan.error}")
        pending = [op for op in plan.ops if op.changed and not op.conditional]
        err.print(f"{len(pending)} of {len(plan.ops)} operations would change something.")
        if not click.confirm("Apply?", default=True, err=True):
            raise SystemExit(1)

    try:
        result = (engine.plan if dry_run else engine.apply)(inv,
                                                            on_event=_Printer(dry_run, as_json))
    except Exception as exc:  # connection errors, a role raising at prepare time
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
    elapsed = round(time.monotonic() - t0, 1)
    changed = result.changed

    if dry_run:
        doc = {
            "mode": "plan",
            "ok": not result.failed,
            "error": result.error,
            "inventory": inv.path,
            "plan": [
                {"host": op.host, "phase": op.phase, "role": op.role, "name": op.name,
                 "label": op.label, "will_change": bool(op.changed), "conditional": op.conditional}
                for op in result.ops
            ],
            "will_change": len([op for op in changed if not op.conditional]),
        }
        if as_json:
            click.echo(json.dumps(doc, indent=2))
        else:
            err.print(f"plan: {doc['will_change']} of {len(result.ops)} operations would change "
                      "something (change? = only if an earlier step changes)")
        raise SystemExit(1 if result.failed else 0)

    summary: dict[str, Any] = {}
    if not result.failed:
        summary = _client_summary(inv, result)
    doc = {
        "mode": "apply",
        "ok": not result.failed,
        "error": result.error,
        "inventory": inv.path,
        "seconds": elapsed,
        "operations": len(result.ops),
        "changed": len(changed),
        "nothing_changed": not changed and not result.failed,
        "changed_ops": [f"{op.host}: {op.label}" for op in changed],
        "failed_ops": [{"host": op.host, "label": op.label, "error": op.error}
                       for op in result.ops if op.ok is False],
        **summary,
    }
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        raise SystemExit(0 if doc["ok"] else 1)

    if result.failed:
        err.print(f"[red bold]install failed[/red bold] after {elapsed}s: {result.error}")
        raise SystemExit(1)
    if changed:
        err.print(f"[green]done[/green] in {elapsed}s: {len(changed)} of {len(result.ops)} "
                  "operations changed something")
    else:
        err.print(f"[green]done[/green] in {elapsed}s: nothing changed "
                  f"({len(result.ops)} operations already in place)")
    if summary.get("access_key"):
        click.echo(f"endpoint:   {summary['endpoint']}")
        click.echo(f"access key: {summary['access_key']}")
        click.echo(f"secret key: {summary['secret_key']}")
        click.echo(f"client env: {summary['client_env']}  (use: . {summary['client_env']})")
    if not changed:
        click.echo("nothing changed")


@main.command()
@click.option("--inventory", "-i", "inventory_path", default=None)
@click.option("--from-stack", "from_stack", default=None, metavar="OUTPUT.json")
@click.option("--json", "as_json", is_flag=True)
def status(inventory_path: str | None, from_stack: str | None, as_json: bool) -> None:
    """Show each host's services: running under which manager, and answering or not."""
    inv = _load(inventory_path, from_stack)
    try:
        rows = engine.status(inv)
    except Exception as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        for row in rows:
            mark = "[green]ready[/green]" if row["ready"] else "[red]not ready[/red]"
            out.print(f"{row['host']:<12} {row['service']:<14} {row['manager']:<10} "
                      f"{row['state']:<18} {mark}")
    raise SystemExit(0 if all(r["ready"] for r in rows) else 3)


if __name__ == "__main__":
    main()
