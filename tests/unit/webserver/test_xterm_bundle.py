"""bai.webserver.xterm_bundle: CommonJS modules wrapped into one ES module, every require()
resolved when the bundle is built. (That the bundle of Debian's node-xterm runs in a browser under
the strict CSP is shown by tests/e2e/test_web_ui.py's terminal.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bai.webserver.xterm_bundle import BundleError, build


def _tree(root: Path, files: dict[str, str]) -> tuple[Path, Path]:
    lib = root / "lib"
    for rel, text in files.items():
        path = lib / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    fit = root / "fit.js"
    fit.write_text("exports.apply = function (T) { T.prototype.fit = function () {}; };\n")
    return lib, fit


def _deps(bundle: str) -> dict[str, dict[str, str]]:
    return {m.group(1): json.loads(m.group(2))
            for m in re.finditer(r'^__deps\["([^"]+)"\] = (\{.*\});$', bundle, re.MULTILINE)}


def test_modules_are_wrapped_and_requires_resolved(tmp_path: Path) -> None:
    lib, fit = _tree(tmp_path, {
        "public/Terminal.js": 'var core = require("../core/Core");\nexports.Terminal = core.Core;\n'
                              "//# sourceMappingURL=Terminal.js.map\n",
        "core/Core.js": "var u = require('./util');\nexports.Core = function () {};\n",
        "core/util/index.js": "exports.x = 1;\n",
        "core/Core.test.js": 'require("chai");\n',  # tests are left out (they need node modules)
    })
    bundle = build(lib, fit).decode()
    assert _deps(bundle) == {
        "public/Terminal": {"../core/Core": "core/Core"},
        "core/Core": {"./util": "core/util/index"},
        "core/util/index": {},
        "addons/fit/fit": {},
    }
    assert "sourceMappingURL" not in bundle and "chai" not in bundle
    assert "eval(" not in bundle and "new Function" not in bundle
    assert bundle.rstrip().endswith("export default Terminal;")


def test_an_unknown_or_bare_require_fails_the_build(tmp_path: Path) -> None:
    lib, fit = _tree(tmp_path / "a", {"public/Terminal.js": 'require("./missing");\n'})
    with pytest.raises(BundleError, match=r"public/Terminal: require\('./missing'\) names no module"):
        build(lib, fit)
    lib, fit = _tree(tmp_path / "b", {"public/Terminal.js": 'require("fs");\n'})
    with pytest.raises(BundleError, match="is not a relative module"):
        build(lib, fit)


def test_missing_packages_are_named(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="install Debian's node-xterm"):
        build(tmp_path / "nothing", tmp_path / "fit.js")
    lib, _ = _tree(tmp_path, {"public/Terminal.js": ""})
    with pytest.raises(BundleError, match="install Debian's libjs-xterm"):
        build(lib, tmp_path / "no-fit.js")
