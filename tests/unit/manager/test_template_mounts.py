"""How a create-from-template request's ``config`` lays over the template's (merged_config), as
the official client (24.03) sends it: ``mounts`` always present, an empty list when no ``-m`` is
given; ``--no-mount`` adds an empty ``mount_map``."""

from __future__ import annotations

from typing import Any

import pytest

from bai.manager.services.schemas import CreationConfig
from bai.manager.services.session_templates import merged_config

TEMPLATE: dict[str, Any] = {"mounts": ["data", "models"], "mount_map": {"data": "/mnt/data"},
                            "environ": {"A": "1"}, "resources": {"cpu": "1"}}


def merged(request: dict[str, Any] | None) -> dict[str, Any]:
    return merged_config(dict(TEMPLATE), None if request is None else CreationConfig.model_validate(request))


@pytest.mark.parametrize("request_config", [None, {}, {"mounts": []}, {"mounts": None, "mount_map": None}])
def test_no_mounts_given_keeps_the_templates(request_config: dict[str, Any] | None) -> None:
    assert merged(request_config) == TEMPLATE


def test_no_mount_flag_mounts_nothing() -> None:
    """The official client's --no-mount: an empty list with an empty map."""
    assert merged({"mounts": [], "mount_map": {}}) == {**TEMPLATE, "mounts": [], "mount_map": {}}
    assert merged({"mounts": [], "mountMap": {}})["mounts"] == []


def test_given_mounts_replace_the_templates_keeping_its_paths_of_them() -> None:
    assert merged({"mounts": ["data", "other"]}) == {**TEMPLATE, "mounts": ["data", "other"],
                                                      "mount_map": {"data": "/mnt/data"}}
    assert merged({"mounts": ["data"], "mount_map": {"data": "/elsewhere"}})["mount_map"] == {"data": "/elsewhere"}


def test_other_keys_replace_the_templates_whole() -> None:
    assert merged({"mounts": [], "environ": {"B": "2"}}) == {**TEMPLATE, "environ": {"B": "2"}}
