"""``bai-install upgrade`` and ``bai-install rollback`` (registered by installer/cli.py).

    bai-install upgrade --check [-i INV] [--to VERSION] [--json]
    bai-install upgrade [-i INV] [--to VERSION] [--yes] [--json] [--no-session-check]
    bai-install rollback [-i INV] [--yes] [--json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from installer import inventory as inventory_mod

from . import playbook
from .releases import ManifestError

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


def _load(path: str | None) -> inventory_mod.Inventory:
    try:
        return inventory_mod.load(path)
    except inventory_mod.InventoryError as exc:
        raise click.ClickException(str(exc)) from exc


def _print_check(c: playbook.Check) -> None:
    out.print(f"{'host':<24} {'component':<16} {'installed':<10} how")
    for h in c.hosts:
        for comp in h.components:
            out.print(f"{h.host:<24} {comp:<16} {h.version or '?':<10} {h.how}")
    out.print(f"target: {c.target}")
    if c.path is not None and c.path.allowed:
        if not c.path.steps:
            out.print("path: nothing to do (already there)")
        for step in c.path.steps:
            drain = "  (major: every session must be ended first)" if step.requires_drain else ""
            out.print(f"step: {step.source} -> {step.target}  {step.kind}{drain}")
    for problem in c.problems:
        out.print(f"[red]refused:[/red] {problem}")


def _progress(as_json: bool) -> playbook.Emit:
    def emit(line: dict[str, Any]) -> None:
        if as_json:
            return
        extra = f"  {line['seconds']}s" if "seconds" in line else ""
        msg = f"  {line.get('error', '')[-400:]}" if line.get("status") == "failed" else ""
        err.print(f"[bold]{line['phase']}[/bold] {line['status']}{extra}{msg}")
    return emit


@click.command()
@click.option("--inventory", "-i", "inventory_path", default=None,
              help="inventory file (default: inventories/local.py, this machine)")
@click.option("--to", "to", default=None, metavar="VERSION",
              help="the release to upgrade to (default: the newest, this tree's)")
@click.option("--check", "check_only", is_flag=True,
              help="print the installed releases, the target and the path; change nothing")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document on stdout")
@click.option("--yes", "-y", is_flag=True, help="do not ask before upgrading")
@click.option("--record-dir", default=playbook.DEFAULT_RECORD_DIR, show_default=True,
              help="where each run's JSON-lines record goes")
@click.option("--plain", is_flag=True, help="on a terminal too: print and ask, no full-screen view")
def upgrade(inventory_path: str | None, to: str | None, check_only: bool, as_json: bool,
            yes: bool, record_dir: str, plain: bool) -> None:
    """Upgrade every host to a newer release along the allowed path (backup first, automatic
    rollback of a failed step). On a terminal (without --check, --json, --yes or --plain) this
    opens the upgrade screen. Exit status: 0 done, 1 failed (rolled back), 2 refused."""
    if not (check_only or as_json or yes or plain) and sys.stdin.isatty() and sys.stdout.isatty():
        from installer.tui.upgrade import run_upgrade_tui

        run_upgrade_tui(inventory_path, to, record_dir)
        return
    inv = _load(inventory_path)
    try:
        c = playbook.check(inv, to)
    except ManifestError as exc:
        raise click.ClickException(str(exc)) from exc
    except Exception as exc:  # a host that cannot be reached, a connector error
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
    if check_only:
        if as_json:
            click.echo(json.dumps(c.as_dict(), indent=2))
        else:
            _print_check(c)
        raise SystemExit(0 if c.ok else 2)
    if not c.ok:
        if as_json:
            click.echo(json.dumps({"ok": False, "refused": c.problems, **c.as_dict()}, indent=2))
        else:
            _print_check(c)
        raise SystemExit(2)
    if not as_json:
        _print_check(c)
    if not yes and not as_json and sys.stdin.isatty() and \
            not click.confirm("Upgrade now?", default=False, err=True):
        raise SystemExit(1)
    try:
        done = playbook.upgrade(inv, to, record_dir=record_dir, emit=_progress(as_json))
    except playbook.Refused as exc:
        _fail(as_json, "refused", str(exc), 2)
    except playbook.StepFailed as exc:
        _fail(as_json, "failed", str(exc), 1, rolled_back=exc.rolled_back)
    except Exception as exc:  # before any change (a host unreachable while preparing)
        _fail(as_json, "failed", f"{type(exc).__name__}: {exc}", 1)
    if as_json:
        click.echo(json.dumps({"ok": True, **done}, indent=2))
    else:
        err.print(f"[green]upgraded[/green] {done['from']} -> {done['to']} "
                  f"(record: {done['record']})")


def _fail(as_json: bool, what: str, message: str, code: int, **extra: Any) -> None:
    if as_json:
        click.echo(json.dumps({"ok": False, what: message, **extra}, indent=2))
    else:
        err.print(f"[red bold]{what}[/red bold]: {message}")
    raise SystemExit(code)


@click.command()
@click.option("--inventory", "-i", "inventory_path", default=None)
@click.option("--json", "as_json", is_flag=True)
@click.option("--yes", "-y", is_flag=True, help="do not ask")
@click.option("--record-dir", default=playbook.DEFAULT_RECORD_DIR, show_default=True)
def rollback(inventory_path: str | None, as_json: bool, yes: bool, record_dir: str) -> None:
    """Undo the last upgrade step: the previous release's code and venv, database, etcd and
    configs (from the backup taken before the step), restarted in order and verified."""
    inv = _load(inventory_path)
    last = playbook.last_step(Path(record_dir))
    if last is None:
        _fail(as_json, "refused", f"no completed upgrade step to roll back in {record_dir}", 2)
    assert last is not None
    if not as_json:
        err.print(f"rolling back {last['to']} -> {last['from']} (backup {last['backup_dir']})")
    if not yes and not as_json and sys.stdin.isatty() and \
            not click.confirm("Roll back now?", default=False, err=True):
        raise SystemExit(1)
    try:
        done = playbook.rollback(inv, record_dir=record_dir, emit=_progress(as_json))
    except playbook.Refused as exc:
        _fail(as_json, "refused", str(exc), 2)
    except (playbook.StepFailed, RuntimeError) as exc:
        _fail(as_json, "failed", str(exc), 1)
    if as_json:
        click.echo(json.dumps({"ok": True, **done}, indent=2))
    else:
        err.print(f"[green]rolled back[/green] to {done['to']} (record: {done['record']})")
