"""A session's bootstrap script as the kernel runs it, one rule for the manager and the agent.

The API documents ``bootstrap_script`` as base64 (templates store it so) while the official CLI
and the web UI send the text: base64 of UTF-8 text is decoded, anything else (text with a space,
a newline inside a line, a character outside base64, NULs once decoded) is taken as it is."""

from __future__ import annotations

import base64
import binascii
import re

_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


def script_text(raw: str) -> str:
    packed = raw.replace("\n", "").replace("\r", "")
    if not packed or len(packed) % 4 or not _BASE64.fullmatch(packed):
        return raw
    try:
        decoded = base64.b64decode(packed, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return raw
    return raw if "\x00" in decoded else decoded
