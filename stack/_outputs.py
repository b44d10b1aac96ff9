"""Typed helpers around ``pulumi.Output`` (its generic signatures defeat mypy's inference)."""

from __future__ import annotations

from typing import cast

import pulumi


def secret(value: pulumi.Input[str]) -> pulumi.Output[str]:
    """``value`` as an Output marked secret (encrypted in the state, hidden in outputs)."""
    return cast("pulumi.Output[str]", pulumi.Output.secret(value))
