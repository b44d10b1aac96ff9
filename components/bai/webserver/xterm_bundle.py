"""xterm.js for the browser, assembled from Debian's ``node-xterm`` CommonJS modules.

Debian 12's ``libjs-xterm`` (3.8.1) ships a 288-byte ``xterm.js`` that only ``require()``s
modules it does not contain, so a browser cannot load it. ``node-xterm`` has the same release as
plain CommonJS files (``/usr/share/nodejs/xterm/lib``); :func:`build` wraps each of them in a
function, resolves every ``require("./...")`` when it builds (an unknown one is a build error, not
a runtime surprise) and appends a tiny loader, giving one ES module:
``import {Terminal} from "/vendor/xterm/bundle.js"`` (the ``fit`` addon already applied:
``term.fit()``). No ``eval``: the bundle runs under a strict Content-Security-Policy.
"""

from __future__ import annotations

import json
import posixpath
import re
from pathlib import Path

NODE_XTERM_LIB = Path("/usr/share/nodejs/xterm/lib")
FIT_ADDON = Path("/usr/share/javascript/xterm/addons/fit/fit.js")

_REQUIRE = re.compile(r"""\brequire\(\s*(["'])([^"']+)\1\s*\)""")
_SOURCE_MAP = re.compile(r"^//# sourceMappingURL=.*$", re.MULTILINE)

_LOADER = """
function __load(id) {
  var cached = __cache[id];
  if (cached) return cached.exports;
  var module = { exports: {} };
  __cache[id] = module;
  __defs[id].call(module.exports, function (name) { return __load(__deps[id][name]); }, module, module.exports);
  return module.exports;
}
var Terminal = __load("public/Terminal").Terminal;
Terminal.applyAddon(__load("addons/fit/fit"));
export { Terminal };
export default Terminal;
"""


class BundleError(Exception):
    """The sources cannot make a working bundle (a file missing, a require() nobody provides)."""


def _module_id(path: Path, root: Path) -> str:
    return path.relative_to(root).with_suffix("").as_posix()


def _resolve(importer: str, name: str, known: set[str]) -> str:
    if not name.startswith("."):
        raise BundleError(f"{importer}: require({name!r}) is not a relative module")
    base = posixpath.normpath(posixpath.join(posixpath.dirname(importer), name))
    for candidate in (base, base.removesuffix(".js"), posixpath.join(base, "index")):
        if candidate in known:
            return candidate
    raise BundleError(f"{importer}: require({name!r}) names no module of the bundle")


def build(lib: Path = NODE_XTERM_LIB, fit_addon: Path = FIT_ADDON) -> bytes:
    """The bundle's bytes (about 370 KB), built from ``lib`` (node-xterm) and the fit addon."""
    if not (lib / "public" / "Terminal.js").is_file():
        raise BundleError(f"{lib}/public/Terminal.js missing: install Debian's node-xterm")
    if not fit_addon.is_file():
        raise BundleError(f"{fit_addon} missing: install Debian's libjs-xterm")
    sources = {_module_id(p, lib): p.read_text(encoding="utf-8")
               for p in sorted(lib.rglob("*.js")) if not p.name.endswith(".test.js")}
    sources["addons/fit/fit"] = fit_addon.read_text(encoding="utf-8")
    known = set(sources)
    parts = ["// xterm.js (Debian node-xterm), bundled by bai.webserver.xterm_bundle\n",
             "var __defs = {}, __deps = {}, __cache = {};\n"]
    for module_id, text in sources.items():
        deps = {m.group(2): _resolve(module_id, m.group(2), known) for m in _REQUIRE.finditer(text)}
        body = _SOURCE_MAP.sub("", text)
        key = json.dumps(module_id)
        parts.append(f"__deps[{key}] = {json.dumps(deps, sort_keys=True)};\n")
        parts.append(f"__defs[{key}] = function (require, module, exports) {{\n{body}\n}};\n")
    parts.append(_LOADER)
    return "".join(parts).encode("utf-8")
