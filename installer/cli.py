"""``bai-install``: install (or converge) a bai node from an inventory, check it first, show its
status. With no arguments on a terminal it opens the wizard (installer/tui/).

    bai-install                                   (a terminal: the wizard; otherwise this help, exit 2)
    bai-install wizard [--config bai-install.toml] (the wizard, its choices pre-filled)
    bai-install preflight [-i INV | --from-stack OUT.json] [--config F] [--json]
    bai-install install [-i INV | --from-stack OUT.json] [--config bai-install.toml]
                        [--set KEY.PATH=VALUE ...] [--non-interactive] [--dry-run] [--json]
                        [--skip-preflight] [--log-dir DIR]
    bai-install status  [-i INV | --from-stack OUT.json] [--json]

Exit codes: 0 done (preflight: no failed check), 1 a check or an operation failed (or the
inventory is invalid), 2 a usage error, 130 stopped on request.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import click
from rich.console import Console

from . import engine, preflight, runconfig, runner
from . import inventory as inventory_mod
from .runlog import RunLog, open_log

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


def _config(config_path: str | None, inventory_path: str | None, from_stack: str | None,
            sets: tuple[str, ...] = (), **flags: Any) -> runconfig.RunConfig:
    """The run's choices: the config file, then the flags that were given."""
    if inventory_path and from_stack:
        raise click.UsageError("give --inventory or --from-stack, not both")
    try:
        cfg = runconfig.load(config_path) if config_path else runconfig.RunConfig()
        if inventory_path or from_stack:
            cfg.inventory, cfg.from_stack = inventory_path, from_stack
        for key, value in flags.items():
            if value:
                setattr(cfg, key, value)
        if sets:
            cfg.settings = runconfig.merge(cfg.settings, runconfig.parse_set(sets))
    except runconfig.RunConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    return cfg


def _load(cfg: runconfig.RunConfig) -> inventory_mod.Inventory:
    try:
        return runconfig.load_inventory(cfg)
    except (inventory_mod.InventoryError, runconfig.RunConfigError) as exc:
        raise click.ClickException(str(exc)) from exc
    except ValueError as exc:  # settings that do not validate (roles.settings.SettingsError)
        raise click.ClickException(f"invalid settings: {exc}") from exc


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


def print_preflight(results: list[preflight.CheckResult]) -> None:
    style = {"ok": "green", "warn": "yellow", "fail": "red bold"}
    for r in results:
        err.print(f"[{style[r.status]}]{r.status.upper():<4}[/{style[r.status]}] "
                  f"{r.check:<9} {r.message}", markup=True, highlight=False)
        if r.status != "ok" and r.remedy:
            err.print(f"               -> {r.remedy}", style="dim", markup=False)
    s = preflight.summary(results)
    err.print(f"preflight: {s['ok']} ok, {s['warn']} warning(s), {s['fail']} failure(s)")


def _preflight_results(cfg: runconfig.RunConfig) -> list[preflight.CheckResult]:
    try:
        inv = runconfig.load_inventory(cfg)
    except (inventory_mod.InventoryError, runconfig.RunConfigError, ValueError) as exc:
        return preflight.inventory_error(exc, cfg.inventory or cfg.from_stack or "inventory")
    return preflight.run(inv, cfg.preflight)


@contextmanager
def _stop_on_signals(tracker: runner.Tracker) -> Iterator[None]:
    """Ctrl-C or SIGTERM stops the run after the operations under way (a second Ctrl-C aborts
    at once)."""
    def handle(signum: int, frame: FrameType | None) -> None:
        if tracker.cancelled and signum == signal.SIGINT:
            raise KeyboardInterrupt
        tracker.cancel()
        err.print("[yellow]stopping after the operations under way "
                  "(Ctrl-C again to abort at once)[/yellow]")

    old = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@click.group(invoke_without_command=True)
@click.pass_context
def main(ctx: click.Context) -> None:
    """Install and inspect a bai (Backend.AI) node. Without a command, on a terminal: the
    install wizard."""
    if ctx.invoked_subcommand is not None:
        return
    if sys.stdin.isatty() and sys.stdout.isatty():
        from .tui.app import run_wizard

        raise SystemExit(run_wizard())
    click.echo(ctx.get_help())
    click.echo("\n(no terminal: give a command, e.g. `bai-install install --non-interactive`)",
               err=True)
    raise SystemExit(2)


_source_options = [
    click.option("--inventory", "-i", "inventory_path", default=None,
                 help="inventory file (default: inventories/local.py, this machine)"),
    click.option("--from-stack", "from_stack", default=None, metavar="OUTPUT.json",
                 help="the inventory of a Pulumi stack (stack/): `pulumi stack output --json "
                      "--show-secrets` saved to a file"),
    click.option("--config", "config_path", default=None, metavar="bai-install.toml",
                 help="the run's choices in a file (inventory, settings overrides, thresholds); "
                      "flags win over it"),
]


def _with_source(fn: Any) -> Any:
    for option in reversed(_source_options):
        fn = option(fn)
    return fn


@main.command()
@click.option("--config", "config_path", default=None, metavar="bai-install.toml",
              help="pre-fill the wizard's choices (inventory, settings overrides, thresholds)")
def wizard(config_path: str | None) -> None:
    """The install wizard (what `bai-install` with no arguments opens on a terminal)."""
    cfg = _config(config_path, None, None)
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise click.UsageError("the wizard needs a terminal; without one use "
                               "`bai-install install --non-interactive [--config FILE]`")
    from .tui.app import run_wizard

    raise SystemExit(run_wizard(cfg))


@main.command("preflight")
@_with_source
@click.option("--json", "as_json", is_flag=True, help="print one JSON document on stdout")
def preflight_cmd(inventory_path: str | None, from_stack: str | None, config_path: str | None,
                  as_json: bool) -> None:
    """Check every host before installing: inventory, DNS, SSH, OS, ports, disk, memory,
    Docker, GPUs, clock. Changes nothing. Exit 0 when no check failed, 1 otherwise."""
    cfg = _config(config_path, inventory_path, from_stack)
    results = _preflight_results(cfg)
    ok = not preflight.failed(results)
    if as_json:
        click.echo(json.dumps({"ok": ok, "summary": preflight.summary(results),
                               "results": [r.as_dict() for r in results]}, indent=2))
    else:
        print_preflight(results)
    raise SystemExit(0 if ok else 1)


@main.command()
@_with_source
@click.option("--set", "sets", multiple=True, metavar="KEY.PATH=VALUE",
              help="override a setting on every host (nested: redis.maxmemory=1gb); repeatable")
@click.option("--non-interactive", is_flag=True, default=None, help="do not ask before applying")
@click.option("--dry-run", is_flag=True, help="show the plan; change nothing")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document on stdout")
@click.option("--skip-preflight", is_flag=True, default=None,
              help="experts: install even when preflight checks fail")
@click.option("--log-dir", default=None, help="where the run's log file goes (/var/log/bai)")
@click.option("--verbose", "-v", is_flag=True, help="show pyinfra's log (commands, noop reasons)")
def install(inventory_path: str | None, from_stack: str | None, config_path: str | None,
            sets: tuple[str, ...], non_interactive: bool | None, dry_run: bool, as_json: bool,
            skip_preflight: bool | None, log_dir: str | None, verbose: bool) -> None:
    """Install or converge every host of the inventory (idempotent: rerun at will). Runs the
    preflight checks first and changes nothing when one fails."""
    cfg = _config(config_path, inventory_path, from_stack, sets, non_interactive=non_interactive,
                  skip_preflight=skip_preflight, log_dir=log_dir)
    if verbose:
        engine.verbose_logging()
    inv = _load(cfg)
    if "@local" in inv.hosts and not dry_run and os.geteuid() != 0:
        raise click.ClickException("installing on @local needs root (packages, /etc, services)")
    try:
        log = open_log(cfg.log_dir)
    except OSError as exc:
        raise click.ClickException(f"cannot write the run log in {cfg.log_dir}: {exc}") from exc
    with log:
        log.line("command", " ".join(["bai-install", *sys.argv[1:]]))
        log.line("inventory", f"{inv.path} ({', '.join(inv.hosts)}); {cfg.source}")
        if not as_json:
            err.print(f"bai-install: inventory {inv.path} ({', '.join(inv.hosts)})")
            err.print(f"log: {log.path}")
        code = _install(inv, cfg, log, dry_run, as_json)
        log.line("exit", str(code))
    if not as_json:
        err.print(f"log: {log.path}")
    raise SystemExit(code)


def _install(inv: inventory_mod.Inventory, cfg: runconfig.RunConfig, log: RunLog, dry_run: bool,
             as_json: bool) -> int:
    t0 = time.monotonic()
    checks: list[preflight.CheckResult] = []
    if not dry_run:
        if cfg.skip_preflight:
            log.line("preflight", "SKIPPED (--skip-preflight)")
            err.print("[red bold]!!! preflight checks SKIPPED (--skip-preflight): nothing checks "
                      "ports, disk, clocks or reachability before changes are made !!![/red bold]")
        else:
            checks = preflight.run(inv, cfg.preflight)
            log.data("preflight", [c.as_dict() for c in checks])
            bad = preflight.failed(checks)
            if not as_json and (bad or any(c.status == "warn" for c in checks)):
                print_preflight([c for c in checks if c.status != "ok"])
            if bad:
                log.line("preflight", f"{len(bad)} failure(s): nothing was changed")
                if as_json:
                    click.echo(json.dumps({"mode": "preflight", "ok": False,
                                           "inventory": inv.path,
                                           "preflight": [c.as_dict() for c in checks]}, indent=2))
                else:
                    err.print(f"[red bold]preflight failed[/red bold] ({len(bad)} failure(s)): "
                              "nothing was changed. Fix the above and run again "
                              "(`bai-install preflight` re-checks).")
                return 1

    interactive = not cfg.non_interactive and not dry_run and not as_json and sys.stdin.isatty()
    if interactive:
        try:
            plan = engine.plan(inv, on_event=runner.Tracker(log=log))
        except Exception as exc:
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
        if plan.failed:
            raise click.ClickException(f"planning failed: {plan.error}")
        pending = [op for op in plan.ops if op.changed and not op.conditional]
        err.print(f"{len(pending)} of {len(plan.ops)} operations would change something.")
        if not click.confirm("Apply?", default=True, err=True):
            log.line("answer", "not applied")
            return 1

    tracker = runner.Tracker(log=log, forward=_Printer(dry_run, as_json))
    try:
        with _stop_on_signals(tracker):
            result = (engine.plan if dry_run else engine.apply)(inv, on_event=tracker)
    except runner.Cancelled:
        return _stopped(inv, tracker, log, as_json, "stopped on request", 130)
    except Exception as exc:  # connection errors, a role raising at prepare time
        log.line("error", f"{type(exc).__name__}: {exc}")
        if tracker.done:
            return _stopped(inv, tracker, log, as_json, f"{type(exc).__name__}: {exc}", 1)
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
    elapsed = round(time.monotonic() - t0, 1)
    changed = result.changed

    if dry_run:
        doc: dict[str, Any] = {
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
        log.data("summary", {k: v for k, v in doc.items() if k != "plan"})
        if as_json:
            click.echo(json.dumps(doc, indent=2))
        else:
            err.print(f"plan: {doc['will_change']} of {len(result.ops)} operations would change "
                      "something (change? = only if an earlier step changes)")
        return 1 if result.failed else 0

    summary: dict[str, Any] = {}
    if not result.failed:
        summary = runner.client_summary(inv, result)
    doc = {
        "mode": "apply",
        "ok": not result.failed,
        "error": result.error,
        "inventory": inv.path,
        "log": str(log.path),
        "seconds": elapsed,
        "operations": len(result.ops),
        "changed": len(changed),
        "nothing_changed": not changed and not result.failed,
        "changed_ops": [f"{op.host}: {op.label}" for op in changed],
        "failed_ops": [{"host": op.host, "label": op.label, "error": op.error}
                       for op in result.ops if op.ok is False],
        "preflight": {"skipped": cfg.skip_preflight, **preflight.summary(checks)},
        **summary,
    }
    log.data("summary", {k: v for k, v in doc.items() if k not in ("secret_key", "web_password")})
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return 0 if doc["ok"] else 1

    if result.failed:
        err.print(f"[red bold]install failed[/red bold] after {elapsed}s: {result.error}")
        for line in runner.account(inv, tracker).lines():
            err.print(line, markup=False, highlight=False)
        return 1
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
        if summary.get("web"):
            click.echo(f"web UI:     {summary['web']}  (log in as {summary['web_user']} / {summary['web_password']})")
        click.echo(f"client env: {summary['client_env']}  (use: . {summary['client_env']})")
    if not changed:
        click.echo("nothing changed")
    return 0


def _stopped(inv: inventory_mod.Inventory, tracker: runner.Tracker, log: RunLog, as_json: bool,
             why: str, code: int) -> int:
    acct = runner.account(inv, tracker)
    log.data("summary", {"mode": "apply", "ok": False, "stopped": why, **acct.__dict__})
    if as_json:
        click.echo(json.dumps({"mode": "apply", "ok": False, "error": why, "inventory": inv.path,
                               "log": str(log.path), **acct.__dict__}, indent=2))
    else:
        err.print(f"[red bold]install stopped[/red bold]: {why}")
        for line in acct.lines():
            err.print(line, markup=False, highlight=False)
    return code


@main.command()
@click.option("--inventory", "-i", "inventory_path", default=None)
@click.option("--from-stack", "from_stack", default=None, metavar="OUTPUT.json")
@click.option("--json", "as_json", is_flag=True)
def status(inventory_path: str | None, from_stack: str | None, as_json: bool) -> None:
    """Show each host's services: running under which manager, and answering or not."""
    inv = _load(_config(None, inventory_path, from_stack))
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


# upgrade and rollback live in installer/upgrade/ (release manifest, path rules, playbook)
from .upgrade.cli import rollback as _rollback_cmd  # noqa: E402
from .upgrade.cli import upgrade as _upgrade_cmd  # noqa: E402

main.add_command(_upgrade_cmd, "upgrade")
main.add_command(_rollback_cmd, "rollback")


if __name__ == "__main__":
    main()
