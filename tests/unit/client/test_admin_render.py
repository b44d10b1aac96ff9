"""The admin CLI's pure parts: GraphQL page documents, column titles, value formatting, tables
with multi-line cells and the parameter types."""

from __future__ import annotations

import click
import pytest

from bai.client.cli.admin import base
from bai.client.gql import paginated_document


def test_paginated_document_is_the_official_shape() -> None:
    doc = paginated_document("user_list", {"status": "String", "group_id": "UUID"}, ["uuid", "groups { id name }"])
    assert doc == (
        "query($limit:Int!, $offset:Int!, $status: String, $group_id: UUID) {\n"
        "  user_list(limit:$limit, offset:$offset, status:$status, group_id:$group_id) {\n"
        "    items { uuid groups { id name } }\n"
        "    total_count\n"
        "  }\n"
        "}"
    )


def test_titles_follow_the_official_client() -> None:
    assert [base.humanize(n) for n in ("uuid", "is_active", "resource_policy", "main_access_key")] == \
        ["UUID", "Active?", "Res.Policy", "Main Access Key"]
    assert base.plain("groups { id name }").name == "groups"
    assert base.sub("user_info { full_name }", "full_name").key == "full_name"


def test_values_in_console_and_json() -> None:
    slots = base.slots("total_resource_slots")
    assert slots.console('{"cpu": "2", "mem": "4294967296"}') == "cpu:2, mem:4.0 GiB"
    assert slots.console("{}") == "(empty)" and slots.console(None) == "(null)"
    assert slots.to_json('{"cpu": "2"}') == {"cpu": "2"}
    tree = base.nested("driver_opts").console('{"a": 1, "b": {"c": null}}')
    assert tree == "- a: 1\n+ b\n  - c: (null)"
    groups = base.names("groups { id name }")
    item = {"groups": [{"id": "1", "name": "a"}, {"id": "2", "name": "b"}], "uuid": "u"}
    assert groups.console(item["groups"]) == "a, b"
    assert base.json_row(item, [base.plain("uuid"), groups]) == item
    assert base.plain("x").console([]) == "(empty)" and base.plain("x").console(False) == "False"


def test_table_keeps_multiline_cells_in_their_column() -> None:
    out = base.table(["Field", "Value"], [["A", "one\ntwo"], ["Longer", "x"]])
    assert out.splitlines() == [
        "Field   Value",
        "------  -----",
        "A       one",
        "        two",
        "Longer  x",
    ]


def test_parameter_types() -> None:
    assert base.BoolExpr().convert("yes", None, None) is True
    assert base.BoolExpr().convert("0", None, None) is False
    with pytest.raises(click.BadParameter):
        base.BoolExpr().convert("maybe", None, None)
    assert base.JSONText().convert('{"cpu": "1"}', None, None) == '{"cpu": "1"}'
    with pytest.raises(click.BadParameter):
        base.JSONText().convert("{nope", None, None)
    assert base.CommaList().convert("a, b,,c", None, None) == ["a", "b", "c"]
    assert base.CommaList().convert("", None, None) == []
    assert base.set_if_given({"a": 1}, b=None, c=0) == {"a": 1, "c": 0}


def test_image_sizes_as_the_official_client() -> None:
    # humanize.naturalsize(n, binary=True, gnu=True), which the official client prints
    assert [base.gnu_size(n) for n in (0, 1023, 1536, 346214400, None)] == ["0B", "1023B", "1.5K", "330.2M", None]
    assert base.image_size("size_bytes").console(2**30) == "1.0G"
    text = base.slots_text("total_resource_slots")
    assert text.to_json('{"cpu": "1"}') == '{"cpu": "1"}' and text.console('{"cpu": "1"}') == "cpu:1"
