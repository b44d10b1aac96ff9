"""The upgrade path rules over a manifest shaped like the original's history (lines 23.03, 23.09,
24.03), one table row per rule and per chained path, and over the real manifest."""

from __future__ import annotations

import pytest

from installer.upgrade import paths
from installer.upgrade.releases import Manifest, Version, load, parse

LINES = {"23.03": 12, "23.09": 11, "24.03": 6}  # patches per line: 23.03.0-11, 23.09.0-10, ...


def _manifest() -> Manifest:
    entries = []
    n = 0
    total = sum(LINES.values())
    for line, count in LINES.items():
        for patch in range(count):
            n += 1
            entry = {"version": f"{line}.{patch}", "config-version": 1}
            if n < total:
                entry |= {"commit": f"{n:040x}", "migration-head": f"r{n}"}
            entries.append(entry)
    return parse({"release": entries}, tree_head="tree")


M = _manifest()

STEPS = [  # (from, to, the rule that forbids the single step, or None)
    ("23.09.10", "24.03.0", None),
    ("23.09.10", "24.03.5", None),  # a major step may land on any patch of the next line
    ("23.09.3", "23.09.4", None),
    ("23.09.9", "24.03.0", "major-from-latest-patch"),
    ("23.03.11", "24.03.0", "no-skipped-major"),
    ("23.03.0", "24.03.0", "major-from-latest-patch"),  # (also skips; the first rule wins)
    ("23.09.3", "23.09.5", "patch-one-at-a-time"),
    ("24.03.0", "23.09.10", "no-downgrade"),
    ("23.09.4", "23.09.3", "no-downgrade"),
    ("23.09.4", "23.09.11", "known"),
    ("22.09.0", "23.03.0", "known"),
]


@pytest.mark.parametrize(("a", "b", "rule"), STEPS)
def test_single_step_rules(a: str, b: str, rule: str | None) -> None:
    verdict = paths.check_step(M, Version.parse(a), Version.parse(b))
    assert verdict.rule == rule, verdict.reason
    assert (verdict.reason is None) == (rule is None)
    assert verdict.checked == tuple(r.name for r in paths.RULES)


def test_every_rule_is_exercised() -> None:
    assert {rule for _, _, rule in STEPS if rule} == {r.name for r in paths.RULES}


PATHS = [  # (from, to, the chain of versions, or the rule that refuses the upgrade)
    ("23.09.10", "24.03.0", ["23.09.10", "24.03.0"]),
    ("23.09.10", "24.03.5", ["23.09.10", "24.03.5"]),
    ("23.09.9", "24.03.0", ["23.09.9", "23.09.10", "24.03.0"]),  # the original's example
    ("23.09.7", "24.03.2", ["23.09.7", "23.09.8", "23.09.9", "23.09.10", "24.03.2"]),
    ("24.03.1", "24.03.4", ["24.03.1", "24.03.2", "24.03.3", "24.03.4"]),
    ("23.03.11", "23.09.0", ["23.03.11", "23.09.0"]),
    ("23.03.10", "23.09.10", ["23.03.10", "23.03.11", "23.09.10"]),
    ("24.03.3", "24.03.3", ["24.03.3"]),  # nothing to do
    ("23.03.0", "24.03.0", "no-skipped-major"),
    ("23.03.11", "24.03.5", "no-skipped-major"),
    ("24.03.0", "23.09.10", "no-downgrade"),
    ("24.03.5", "24.03.4", "no-downgrade"),
    ("24.03.5", "24.03.6", "known"),
    ("nope", None, "parse"),
]


@pytest.mark.parametrize(("a", "b", "want"), PATHS)
def test_chained_paths(a: str, b: str | None, want: list[str] | str) -> None:
    if want == "parse":
        with pytest.raises(ValueError, match="not a release version"):
            paths.plan(M, a, "24.03.0")
        return
    assert b is not None
    path = paths.plan(M, a, b)
    if isinstance(want, str):
        assert not path.allowed and path.rule == want and path.steps == ()
        assert path.forbidden
        if want == "no-skipped-major":
            assert "upgrade to 23.09.10 first" in path.forbidden
        return
    assert path.allowed, path.forbidden
    chain = [str(path.source)] + [str(s.target) for s in path.steps]
    assert chain == want
    for step in path.steps:  # every chained step obeys every rule on its own
        assert paths.check_step(M, step.source, step.target).reason is None
        assert step.requires_drain == (step.source.line != step.target.line)
    assert path.requires_drain == any(s.kind == "major" for s in path.steps)


def test_json_shape() -> None:
    doc = paths.plan(M, "23.09.9", "24.03.0").as_dict()
    assert doc == {
        "from": "23.09.9", "to": "24.03.0", "allowed": True, "forbidden": None, "rule": None,
        "requires_drain": True,
        "steps": [
            {"from": "23.09.9", "to": "23.09.10", "kind": "patch", "requires_drain": False},
            {"from": "23.09.10", "to": "24.03.0", "kind": "major", "requires_drain": True},
        ],
    }


def test_real_manifest_paths() -> None:
    """The project's own releases: the walking skeleton reaches the tree in one major step (its
    line has one patch); the start of this line in one patch; nothing goes back."""
    m = load()
    tree = m.current.version
    first, start = m.releases[0].version, m.releases[1].version
    path = paths.plan(m, first, tree)
    assert path.allowed and path.requires_drain and len(path.steps) == 1
    assert paths.plan(m, start, tree).steps[0].kind == "patch"
    assert paths.plan(m, tree, first).rule == "no-downgrade"
