"""Which upgrades are allowed: the original's rules, as a table, over the release manifest.

* ``known``: both releases are in the manifest.
* ``no-downgrade``: a target older than the installed release is refused; the only way back is
  ``bai-install rollback`` to the backup taken before the last step.
* ``patch-one-at-a-time``: within a line, a step goes to the next patch (the path chains them).
* ``major-from-latest-patch``: a step to a new line starts from the latest patch of its line.
* ``no-skipped-major``: a step goes to the next line at most, never past one.

:func:`check_step` applies the table to one step; :func:`plan` chains allowed steps from the
installed release to the target (patches up to the line's latest, then one major step to the
next line, landing on the target's patch when that line is the target's, else on the line's
latest) or says which rule forbids it. One upgrade crosses one line at most (``no-skipped-major``
applies to the whole upgrade, so that each major step is the operator's decision: it needs the
sessions drained).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from .releases import Manifest, Version


@dataclass(frozen=True)
class Rule:
    name: str
    text: str
    #: (manifest, source, target) -> why the step is forbidden, or None
    check: Callable[[Manifest, Version, Version], str | None]


def _known(m: Manifest, a: Version, b: Version) -> str | None:
    missing = [str(v) for v in (a, b) if m.get(v) is None]
    if missing:
        return (f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not a release "
                f"of the manifest (known: {', '.join(str(r.version) for r in m.releases)})")
    return None


def _no_downgrade(m: Manifest, a: Version, b: Version) -> str | None:
    if b < a:
        return (f"{b} is older than the installed {a}: downgrades are not supported; "
                "`bai-install rollback` restores the release backed up before the last step")
    return None


def _patch_one_at_a_time(m: Manifest, a: Version, b: Version) -> str | None:
    if a.line == b.line and b.patch > a.patch + 1:
        return (f"{a} -> {b} skips patches of {a.line}: patch upgrades go one at a time "
                f"(next: {a.line}.{a.patch + 1})")
    return None


def _major_from_latest(m: Manifest, a: Version, b: Version) -> str | None:
    if a.line != b.line:
        latest = m.latest_patch(a.line).version
        if a != latest:
            return (f"a major upgrade to {b.line} starts from the latest patch of {a.line} "
                    f"({latest}), not {a}")
    return None


def _no_skipped_major(m: Manifest, a: Version, b: Version) -> str | None:
    lines = m.lines()
    if a.line != b.line and lines.index(b.line) > lines.index(a.line) + 1:
        skipped = lines[lines.index(a.line) + 1:lines.index(b.line)]
        return f"{a} -> {b} skips the release line(s) {', '.join(skipped)}"
    return None


RULES: tuple[Rule, ...] = (
    Rule("known", "both releases are in the manifest", _known),
    Rule("no-downgrade", "never to an older release (rollback restores the backup)",
         _no_downgrade),
    Rule("patch-one-at-a-time", "within a line, one patch per step", _patch_one_at_a_time),
    Rule("major-from-latest-patch", "a new line only from the latest patch of the previous one",
         _major_from_latest),
    Rule("no-skipped-major", "never past the next line in one step", _no_skipped_major),
)


@dataclass(frozen=True)
class Step:
    source: Version
    target: Version

    @property
    def kind(self) -> Literal["patch", "major"]:
        return "patch" if self.source.line == self.target.line else "major"

    @property
    def requires_drain(self) -> bool:
        """A major step may change the schema and configuration incompatibly: no sessions may
        run across it (the original's rule)."""
        return self.kind == "major"

    def as_dict(self) -> dict[str, Any]:
        return {"from": str(self.source), "to": str(self.target), "kind": self.kind,
                "requires_drain": self.requires_drain}


@dataclass(frozen=True)
class Path:
    source: Version
    target: Version
    steps: tuple[Step, ...] = ()
    forbidden: str | None = None  # why, when the upgrade is refused
    rule: str | None = None  # the rule that forbids it

    @property
    def allowed(self) -> bool:
        return self.forbidden is None

    @property
    def requires_drain(self) -> bool:
        return any(s.requires_drain for s in self.steps)

    def as_dict(self) -> dict[str, Any]:
        return {"from": str(self.source), "to": str(self.target), "allowed": self.allowed,
                "forbidden": self.forbidden, "rule": self.rule,
                "steps": [s.as_dict() for s in self.steps],
                "requires_drain": self.requires_drain}


@dataclass(frozen=True)
class Verdict:
    rule: str | None = None
    reason: str | None = None
    checked: tuple[str, ...] = field(default=())


def check_step(m: Manifest, a: Version, b: Version) -> Verdict:
    """Apply every rule to the single step ``a -> b``; the first that objects wins."""
    for rule in RULES:
        reason = rule.check(m, a, b)
        if reason:
            return Verdict(rule.name, reason, tuple(r.name for r in RULES))
    return Verdict(checked=tuple(r.name for r in RULES))


def plan(m: Manifest, source: Version | str, target: Version | str) -> Path:
    """The chain of allowed steps from ``source`` to ``target``, or the reason there is none."""
    a = Version.parse(source) if isinstance(source, str) else source
    b = Version.parse(target) if isinstance(target, str) else target
    for name in ("known", "no-downgrade", "no-skipped-major"):
        rule = next(r for r in RULES if r.name == name)
        reason = rule.check(m, a, b)
        if reason:
            if name == "no-skipped-major":  # one major step per run: name the stop on the way
                lines = m.lines()
                stop = m.latest_patch(lines[lines.index(a.line) + 1]).version
                reason += f"; upgrade to {stop} first (one release line per upgrade)"
            return Path(a, b, forbidden=reason, rule=name)
    steps: list[Step] = []
    cur = a
    while cur != b:
        if cur.line == b.line:
            nxt = m.line_releases(cur.line)[cur.patch + 1].version
        elif cur != m.latest_patch(cur.line).version:
            nxt = m.line_releases(cur.line)[cur.patch + 1].version
        else:
            lines = m.lines()
            next_line = lines[lines.index(cur.line) + 1]
            nxt = b if next_line == b.line else m.latest_patch(next_line).version
        verdict = check_step(m, cur, nxt)
        if verdict.reason:  # the chain is built to obey the rules; a broken manifest ends here
            return Path(a, b, forbidden=verdict.reason, rule=verdict.rule)
        steps.append(Step(cur, nxt))
        cur = nxt
    return Path(a, b, tuple(steps))
