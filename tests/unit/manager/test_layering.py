"""The manager stays layered one way, api -> services -> store: read from the source (ast, nothing
is imported), no layer imports one above it, SQL lives in store/ (api/ never imports sqlalchemy,
and only store/ sees the table definitions) and neither services/ nor store/ imports aiohttp
(HTTP is api/'s business)."""

from __future__ import annotations

import ast
from pathlib import Path

import bai.manager

#: Higher imports lower, never the other way.
RANK = {"store": 0, "services": 1, "api": 2}
#: Third-party packages a layer must not import.
FORBIDDEN = {"api": ("sqlalchemy",), "services": ("aiohttp",), "store": ("aiohttp",)}
#: Modules only their own layer may import.
PRIVATE = {"store.tables": "store"}


def _module_name(root: Path, path: Path, package: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def _imports(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in the file, relative ones resolved."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            # ``from . import x`` may name a submodule: count ``target.x`` too
            found.append((node.lineno, target))
            found.extend((node.lineno, f"{target}.{alias.name}") for alias in node.names)
    return found


def _layer(module: str, package: str) -> str | None:
    parts = module.split(".")
    prefix = package.split(".")
    if parts[: len(prefix)] != prefix or len(parts) <= len(prefix):
        return None
    return parts[len(prefix)] if parts[len(prefix)] in RANK else None


def layering_violations(root: Path, package: str) -> list[str]:
    """Every rule broken by the ``.py`` files under ``root`` (the directory of ``package``)."""
    problems: list[str] = []
    for path in sorted(root.rglob("*.py")):
        module = _module_name(root, path, package)
        layer = _layer(module, package)
        if layer is None:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        where = "/".join([*package.split("."), *path.relative_to(root).parts])
        reported: set[tuple[int, str]] = set()
        for line, imported in _imports(tree, module, path.name == "__init__.py"):
            target = _layer(imported, package)
            top = imported.split(".")[0]
            private = imported.removeprefix(package + ".")
            if target is not None and RANK[target] > RANK[layer]:
                why = f"{layer}/ imports {target}/ (upward)"
            elif PRIVATE.get(private, layer) != layer:
                why = f"{private} imported outside {PRIVATE[private]}/ (SQL only in store/)"
            elif top in FORBIDDEN[layer]:
                why = f"{top} imported in {layer}/"
            else:
                continue
            if (line, why) not in reported:
                reported.add((line, why))
                problems.append(f"{where}:{line}: {why}: {imported}")
    return problems


def test_the_manager_imports_only_downward() -> None:
    root = Path(bai.manager.__file__).parent
    problems = layering_violations(root, "bai.manager")
    assert not problems, "layering broken:\n" + "\n".join(problems)


def test_the_walk_finds_each_kind_of_violation(tmp_path: Path) -> None:
    pkg = tmp_path / "mgr"
    for sub in ("api", "services", "store", "services/inner"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "server.py").write_text("import aiohttp\nimport sqlalchemy\nfrom mgr.api import keys\n")  # no layer
    (pkg / "api" / "ok.py").write_text("from mgr.services import inner\nfrom ..store import keypairs\n")
    (pkg / "api" / "sql.py").write_text("def f():\n    from sqlalchemy.ext.asyncio import AsyncEngine\n")
    (pkg / "services" / "up.py").write_text("from ..api import ok\n")
    (pkg / "services" / "inner" / "deep.py").write_text("from ...api.ok import x\nimport aiohttp.web\n")
    (pkg / "services" / "inner" / "fine.py").write_text("from .. import up\nfrom ...store import db\n")
    (pkg / "store" / "sideways.py").write_text("from . import tables\nfrom mgr import services\n")
    (pkg / "store" / "web.py").write_text("from aiohttp import web\n")
    (pkg / "store" / "tables.py").write_text("")
    (pkg / "store" / "query.py").write_text("from . import tables\n")  # fine: store/ itself
    (pkg / "services" / "sql.py").write_text("from mgr.store import tables as t\n")
    assert layering_violations(pkg, "mgr") == [
        "mgr/api/sql.py:2: sqlalchemy imported in api/: sqlalchemy.ext.asyncio",
        "mgr/services/inner/deep.py:1: services/ imports api/ (upward): mgr.api.ok",
        "mgr/services/inner/deep.py:2: aiohttp imported in services/: aiohttp.web",
        "mgr/services/sql.py:1: store.tables imported outside store/ (SQL only in store/): mgr.store.tables",
        "mgr/services/up.py:1: services/ imports api/ (upward): mgr.api",
        "mgr/store/sideways.py:2: store/ imports services/ (upward): mgr.services",
        "mgr/store/web.py:1: aiohttp imported in store/: aiohttp",
    ]
