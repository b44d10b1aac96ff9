"""The engine through installer/pyinfra_driver.py, on this machine (@local) with tiny throwaway
roles that only touch a temporary directory: start/end events per operation, changed or not,
a failure's output in its record and the host stopping there, a plan that runs nothing, and no
pyinfra private attribute used anywhere."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from pyinfra.api import deploy

from installer import engine
from roles import _ops
from roles.catalog import Role
from roles.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def _role(tmp: Path, fail: bool = False, name: str = "t-role") -> Role:
    marker, after = shlex.quote(str(tmp / f"{name}-marker")), shlex.quote(str(tmp / f"{name}-after"))

    @deploy(name)
    def t_role(settings: Settings) -> None:
        _ops.ensure(name="Make the marker", check=f"test -f {marker}", commands=[f"touch {marker}"])
        if fail:
            _ops.ensure(name="Fail loudly", check="false",
                        commands=["echo to-stdout; echo 'the reason' >&2; exit 3"])
        _ops.ensure(name="Make another", check=f"test -f {after}", commands=[f"touch {after}"])

    return Role(name=name, groups=("agents",), deploy=t_role)


def _run(*roles: Role, dry: bool = False) -> tuple[engine.RunResult, list[engine.Event]]:
    events: list[engine.Event] = []
    result = engine.run({"@local": {}}, [engine.Phase("agents", {"@local": list(roles)})], dry=dry,
                        on_event=events.append)
    return result, events


def test_apply_reports_each_operation_and_a_rerun_changes_nothing(tmp_path: Path) -> None:
    role = _role(tmp_path)
    plan, _ = _run(role, dry=True)
    assert [(op.name, op.changed) for op in plan.ops] == [("Make the marker", True), ("Make another", True)]
    assert not (tmp_path / "t-role-marker").exists()  # a plan runs nothing

    result, events = _run(role)
    assert not result.failed
    assert [(e.kind, e.op.name if e.op else None, e.index, e.total) for e in events] == [
        ("phase", None, 0, 0),
        ("start", "Make the marker", 1, 2), ("end", "Make the marker", 1, 2),
        ("start", "Make another", 2, 2), ("end", "Make another", 2, 2),
    ]
    assert all(op.ok and op.changed and op.seconds is not None for op in result.ops)
    assert (tmp_path / "t-role-marker").exists() and (tmp_path / "t-role-after").exists()

    again, _ = _run(role)
    assert [op.changed for op in again.ops] == [False, False] and not again.failed
    plan, _ = _run(role, dry=True)
    assert [op.changed for op in plan.ops] == [False, False]


def test_a_failure_keeps_its_output_and_stops_the_host(tmp_path: Path) -> None:
    result, events = _run(_role(tmp_path, fail=True))
    assert result.failed and result.error == "@local: t-role | Fail loudly failed"
    by_name = {op.name: op for op in result.ops}
    assert by_name["Make the marker"].ok and by_name["Make the marker"].changed
    bad = by_name["Fail loudly"]
    assert bad.ok is False and bad.error is not None
    assert "the reason" in bad.error and "to-stdout" in bad.error
    assert by_name["Make another"].ok is None  # never ran
    assert not (tmp_path / "t-role-after").exists()
    assert [e.op.name for e in events if e.kind == "end" and e.op] == ["Make the marker", "Fail loudly"]


def test_plan_groups_operations_by_host_and_role(tmp_path: Path) -> None:
    plan, events = _run(_role(tmp_path, name="t-a"), _role(tmp_path, name="t-b"), dry=True)
    grouped = {host: {role: [op.name for op in ops] for role, ops in roles.items()}
               for host, roles in plan.by_host().items()}
    assert grouped == {"@local": {"t-a": ["Make the marker", "Make another"],
                                  "t-b": ["Make the marker", "Make another"]}}
    assert [(e.index, e.total) for e in events if e.kind == "end"] == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_no_private_pyinfra_attributes() -> None:
    """pyinfra is reached through public names only (the driver and our roles)."""
    private = re.compile(r"(?<!\bself)\.(_[a-z][A-Za-z0-9_]*)\b")  # (our own self._x aside)
    allowed = {"_ops", "_facts", "_service", "_common", "_if", "_secrets", "_registry_tool"}  # our modules
    files = [REPO / "installer" / "engine.py", REPO / "installer" / "pyinfra_driver.py",
             *sorted((REPO / "roles").glob("*.py"))]
    found = []
    for path in files:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            for name in private.findall(code):
                if name not in allowed and not code.lstrip().startswith(("from .", "import ")):
                    found.append(f"{path.name}:{n}: {name}")
    assert found == []
