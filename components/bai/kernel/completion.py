"""Auto-completion of query-mode code against the live ``__main__`` namespace (stdlib only).

The child answers ``{"op": "complete", "id", "code", "options": {"row", "col", "line", "post"}}``
with the candidates :mod:`rlcompleter` finds for the word before the cursor: ``line`` up to
``col`` when a line is given (what an editor sends), else the end of ``code``. Completing an
attribute evaluates the expression before the last dot, as rlcompleter (and a REPL's tab key)
does, so only plain dotted names are evaluated here: never calls, subscripts or operators.
"""

from __future__ import annotations

import re
from typing import Any

#: Candidates returned at most.
MAX_COMPLETIONS = 200
#: The trailing "word" completed: a dotted name, possibly empty after the last dot.
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*\.?[A-Za-z0-9_]*$|[A-Za-z_][A-Za-z0-9_]*$")


def _prefix(code: str, options: dict[str, Any]) -> str:
    line = options.get("line")
    col = options.get("col")
    if isinstance(line, str) and line:
        text = line[:col] if isinstance(col, int) and 0 <= col <= len(line) else line
    else:
        text = code.splitlines()[-1] if code.strip() else ""
    match = _WORD.search(text)
    return match.group(0) if match else ""


def complete(namespace: dict[str, Any], code: str, options: dict[str, Any]) -> list[str]:
    """Sorted, de-duplicated candidates for the word before the cursor ([] when there is none)."""
    word = _prefix(code, options)
    if not word:
        return []
    import rlcompleter  # here: it imports readline, which the child's start-up does not need

    completer = rlcompleter.Completer(namespace)
    found: list[str] = []
    seen: set[str] = set()
    for state in range(MAX_COMPLETIONS * 2):
        try:
            candidate = completer.complete(word, state)
        except Exception:  # noqa: BLE001 - a property of user code may raise anything
            break
        if candidate is None:
            break
        if candidate not in seen:
            seen.add(candidate)
            found.append(candidate)
            if len(found) >= MAX_COMPLETIONS:
                break
    return sorted(found)
