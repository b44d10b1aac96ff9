"""Rich console items from user code: ``media``, ``html`` and ``log`` (stdlib only).

User code imports this as ``bai_display`` (the child registers it under that name before any
user code runs; the runner's package itself stays off ``sys.path``)::

    import bai_display
    bai_display.display_media("image/png", png_bytes)   # ["media", ["image/png", "data:image/png;base64,..."]]
    bai_display.display_media("image/svg+xml", svg_text)  # ["media", ["image/svg+xml", "<svg ..."]]
    bai_display.display_html("<b>bold</b>")             # ["html", "<b>bold</b>"]
    bai_display.log("loaded 3 rows", level="INFO")     # ["log", ["INFO", "2024-..Z", "user", "loaded 3 rows"]]
    bai_display.display(obj)   # the richest of obj._repr_png_/_repr_svg_/_repr_html_, else its repr on stdout
    logging.getLogger().addHandler(bai_display.LogHandler())   # log records as log items

As with the original, binary media go out as ``data:`` URIs and text media (SVG, HTML, JSON...)
as text. Items take their place among stdout/stderr in the order they were produced. One item
carries at most :data:`MAX_ITEM_BYTES` of JSON (the runner's frames to the agent are 1 MiB):
a bigger one raises ``ValueError`` in user code rather than being cut.
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
from collections.abc import Callable
from typing import Any

#: The largest item (its data, as JSON) user code may emit.
MAX_ITEM_BYTES = 900 * 1024
#: MIME types whose data travel as text, not base64.
_TEXT_TYPES = ("text/", "image/svg+xml", "application/json", "application/javascript")

#: Set by the child: sends ``{"op": "console", "type", "data"}`` to the runner.
_emit: Callable[[str, Any], None] | None = None


def _install(emit: Callable[[str, Any], None]) -> None:
    global _emit
    _emit = emit


def _send(kind: str, data: Any) -> None:
    size = len(json.dumps(data))
    if size > MAX_ITEM_BYTES:
        raise ValueError(f"a {kind} item may carry at most {MAX_ITEM_BYTES} bytes (this one: {size})")
    if _emit is None:
        raise RuntimeError("bai_display works only inside a bai kernel")
    _emit(kind, data)


def display_media(mime: str, data: bytes | str) -> None:
    """Emit a ``media`` item: bytes are sent as a base64 ``data:`` URI, text as it is."""
    if not isinstance(mime, str) or "/" not in mime or len(mime) > 255:
        raise ValueError(f"not a MIME type: {mime!r}")
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
        if mime.startswith(_TEXT_TYPES):
            text = raw.decode("utf-8", "replace")
        else:
            text = f"data:{mime};base64,{base64.b64encode(raw).decode('ascii')}"
    elif isinstance(data, str):
        text = data
    else:
        raise TypeError(f"media data must be bytes or str, not {type(data).__name__}")
    _send("media", [mime, text])


def display_html(html: str) -> None:
    """Emit an ``html`` item."""
    if not isinstance(html, str):
        raise TypeError(f"html must be a str, not {type(html).__name__}")
    _send("html", html)


def log(message: str, level: str = "INFO", logger: str = "user") -> None:
    """Emit a ``log`` item: ``[level, ISO-8601 UTC timestamp, logger, message]``."""
    stamp = datetime.datetime.now(datetime.UTC).isoformat()
    _send("log", [str(level).upper(), stamp, str(logger), str(message)])


def display(obj: Any) -> None:
    """Show ``obj`` the richest way it offers (IPython's ``_repr_*_`` convention)."""
    for method, mime in (("_repr_png_", "image/png"), ("_repr_jpeg_", "image/jpeg"),
                         ("_repr_svg_", "image/svg+xml")):
        render = getattr(obj, method, None)
        if callable(render) and (data := render()) is not None:
            display_media(mime, data)
            return
    render = getattr(obj, "_repr_html_", None)
    if callable(render) and (html := render()) is not None:
        display_html(html)
        return
    print(repr(obj))


class LogHandler(logging.Handler):
    """A ``logging`` handler whose records become ``log`` items."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            log(self.format(record), level=record.levelname, logger=record.name)
        except Exception:  # noqa: BLE001 - logging must never raise into user code
            self.handleError(record)
