"""The store's translation of parsed filters / orders into SQL over a field whitelist (compiled
for PostgreSQL, not run: values must travel as bound parameters, never inside the SQL text)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from bai.manager.querylang import QueryError
from bai.manager.store import filters as qf
from bai.manager.store.agents import AGENT_FIELDS
from bai.manager.store.sessions import SESSION_FIELDS


def sql(clause: Any) -> tuple[str, dict[str, Any]]:
    compiled = clause.compile(dialect=postgresql.dialect())
    return str(compiled), dict(compiled.params)


def test_values_are_bound_parameters() -> None:
    text, params = sql(qf.where('name == "x\'; drop table sessions; --" & status == "running"', SESSION_FIELDS))
    assert "drop table" not in text
    assert sorted(params.values()) == ["RUNNING", "x'; drop table sessions; --"]  # enum normalised
    assert text.count("%(") == 2 and " AND " in text


def test_operators_translate() -> None:
    assert " OR " in sql(qf.where('name == "a" | name == "b"', SESSION_FIELDS))[0]
    assert sql(qf.where('!(name == "a")', SESSION_FIELDS))[0].startswith("sessions.name !=")  # NOT folded
    assert "IS NULL" in sql(qf.where("terminated_at == null", SESSION_FIELDS))[0]
    assert "IS NOT NULL" in sql(qf.where("tag isnot null", SESSION_FIELDS))[0]
    assert "IS true" in sql(qf.where("schedulable is true", AGENT_FIELDS))[0]
    text, params = sql(qf.where('status in ["running", "pending"]', SESSION_FIELDS))
    assert " IN " in text and list(params.values()) == [["RUNNING", "PENDING"]]
    text, params = sql(qf.where('name contains "50%_"', SESSION_FIELDS))
    assert "LIKE" in text and list(params.values()) == ["50/%/_"]  # literal, escaped
    assert "ILIKE" in sql(qf.where('name ilike "%A%"', SESSION_FIELDS))[0]
    assert list(sql(qf.where('id == "%s"' % (sid := uuid.uuid4()), SESSION_FIELDS))[1].values()) == [sid]
    assert "ORDER" not in sql(qf.where("cluster_size >= 2", SESSION_FIELDS))[0]


@pytest.mark.parametrize(("text", "message"), [
    ('status == "BOGUS"', "Invalid filter: status must be one of"),
    ('cluster_size == "two"', 'Invalid filter: cluster_size cannot be compared with "two"'),
    ("cluster_size == 99999999999", "Invalid filter: 99999999999 is out of range for cluster_size"),
    ('id == "not-a-uuid"', "Invalid filter: id expects a UUID, got 'not-a-uuid'"),
    ('created_at > "yesterday"', "Invalid filter: created_at expects an ISO 8601 datetime"),
    ('status like "RUN%"', "Invalid filter: 'like' applies to text fields only, not status"),
    ("name is 1", "Invalid filter: 'is' takes null (or true/false for boolean fields)"),
    ('name in "a"', "Invalid filter: 'in' takes an array"),
    ('name == ["a"]', "Invalid filter: '==' does not take an array"),
    ("name > null", "Invalid filter: '>' cannot take null"),
    ("schedulable > true", "Invalid filter: '>' does not apply to schedulable"),
    ('cluster_size in [1, "x"]', 'Invalid filter: cluster_size cannot be compared with "x"'),
])
def test_type_errors(text: str, message: str) -> None:
    fields = AGENT_FIELDS if "schedulable" in text else SESSION_FIELDS
    with pytest.raises(QueryError) as info:
        qf.where(text, fields)
    assert str(info.value).startswith(message)


def test_order_by() -> None:
    clauses = qf.order_by("-created_at,+name", SESSION_FIELDS)
    assert [str(c.compile(dialect=postgresql.dialect())) for c in clauses] == [
        "sessions.created_at DESC", "sessions.name ASC"]
    with pytest.raises(QueryError, match="unknown field 'secret_key'"):
        qf.order_by("secret_key", SESSION_FIELDS)


def test_every_whitelisted_field_compiles() -> None:
    for fields in (SESSION_FIELDS, AGENT_FIELDS):
        for name, field in fields.items():
            assert isinstance(qf.where(f"{name} == null", fields), sa.ColumnElement)
            assert field.kind in {"str", "int", "uuid", "datetime", "bool", "enum"}
