"""The filter / order mini-language parser (pure: text in, syntax tree or QueryError out)."""

from __future__ import annotations

import pytest

from bai.manager.querylang import (
    MAX_FILTER_LENGTH,
    MAX_NESTING,
    MAX_ORDER_LENGTH,
    And,
    Comparison,
    Not,
    Or,
    OrderKey,
    QueryError,
    parse_filter,
    parse_order,
    parse_statuses,
)

FIELDS = {"status", "name", "cluster_size", "schedulable", "created_at", "id"}


def c(field: str, op: str, value: object) -> Comparison:
    return Comparison(field, op, value)  # type: ignore[arg-type]


@pytest.mark.parametrize("op", ["==", "!=", ">", ">=", "<", "<=", "contains", "like", "ilike"])
def test_every_binary_operator(op: str) -> None:
    assert parse_filter(f'name {op} "x"') == c("name", op, "x")


def test_the_documented_example() -> None:
    assert parse_filter('status == "RUNNING" & name ilike "%test%"', FIELDS) == And((
        c("status", "==", "RUNNING"), c("name", "ilike", "%test%")))


def test_and_binds_tighter_than_or() -> None:
    got = parse_filter('name == "a" | name == "b" & status == "RUNNING"')
    assert got == Or((c("name", "==", "a"), And((c("name", "==", "b"), c("status", "==", "RUNNING")))))
    got = parse_filter('name == "a" & name == "b" | status == "RUNNING"')
    assert got == Or((And((c("name", "==", "a"), c("name", "==", "b"))), c("status", "==", "RUNNING")))


def test_parentheses_override_precedence_and_chains_flatten() -> None:
    got = parse_filter('(name == "a" | name == "b") & status == "X" & id == "1"')
    assert got == And((Or((c("name", "==", "a"), c("name", "==", "b"))), c("status", "==", "X"), c("id", "==", "1")))


def test_negation_applies_to_the_next_factor() -> None:
    assert parse_filter('!name == "a" & id == "1"') == And((Not(c("name", "==", "a")), c("id", "==", "1")))
    assert parse_filter('!(name == "a" | id == "1")') == Not(Or((c("name", "==", "a"), c("id", "==", "1"))))
    assert parse_filter('!!name == "a"') == Not(Not(c("name", "==", "a")))


@pytest.mark.parametrize(("text", "value"), [
    (r'"a \"quoted\" word"', 'a "quoted" word'),
    (r'"back\\slash"', "back\\slash"),
    (r'"\u00e9t\u00e9"', "été"),
    ('"100%_off"', "100%_off"),  # like wildcards are the store's business, kept verbatim
    ('"a & b | !(c)"', "a & b | !(c)"),  # operators inside strings are text
    ('"한국어"', "한국어"),
    ('""', ""),
])
def test_string_quoting_and_escapes(text: str, value: str) -> None:
    assert parse_filter(f"name == {text}") == c("name", "==", value)


@pytest.mark.parametrize(("text", "value"), [
    ("0", 0), ("42", 42), ("-7", -7), ("3.5", 3.5), ("-0.25", -0.25), ("1e3", 1000.0), ("2E-2", 0.02),
    ("12345678901234567890", 12345678901234567890),
])
def test_numbers(text: str, value: object) -> None:
    got = parse_filter(f"cluster_size == {text}")
    assert got == c("cluster_size", "==", value) and type(got.value) is type(value)  # type: ignore[union-attr]


def test_null_and_booleans() -> None:
    assert parse_filter("name is null") == c("name", "is", None)
    assert parse_filter("name isnot null") == c("name", "isnot", None)
    assert parse_filter("schedulable == true") == c("schedulable", "==", True)
    assert parse_filter("schedulable != false") == c("schedulable", "!=", False)


def test_arrays() -> None:
    assert parse_filter('status in ["RUNNING", "PENDING"]') == c("status", "in", ("RUNNING", "PENDING"))
    assert parse_filter("cluster_size in [1, 2.5, null, true]") == c("cluster_size", "in", (1, 2.5, None, True))
    assert parse_filter("status in []") == c("status", "in", ())


def test_whitespace_is_free() -> None:
    assert parse_filter('\n\tname==  "a"&id=="1"  ') == And((c("name", "==", "a"), c("id", "==", "1")))


@pytest.mark.parametrize(("text", "message"), [
    ("", "Invalid filter: empty expression"),
    ("   ", "Invalid filter: empty expression"),
    ('name == ', "Invalid filter: expected a value but found end of input at position 8"),
    ('name "a"', "Invalid filter: expected an operator but found '\"a\"' at position 5"),
    ('name = "a"', "Invalid filter: unexpected character '=' at position 5"),
    ('== "a"', "Invalid filter: expected a field name but found '==' at position 0"),
    ('null == "a"', "Invalid filter: expected a field name but found 'null' at position 0"),
    ('in == "a"', "Invalid filter: expected a field name but found 'in' at position 0"),
    ('(name == "a"', "Invalid filter: expected ')' but found end of input at position 12"),
    ('name == "a")', "Invalid filter: unexpected ')' at position 11"),
    ('name == "a" name == "b"', "Invalid filter: unexpected 'name' at position 12"),
    ('name == "a" &', "Invalid filter: expected a field name but found end of input at position 13"),
    ('name == "unterminated', "Invalid filter: unexpected character '\"' at position 8"),
    (r'name == "bad \x escape"', "Invalid filter: bad string literal at position 8"),
    ("name == 'single'", "Invalid filter: unexpected character \"'\" at position 8"),
    ('name == bare', "Invalid filter: expected a value but found 'bare' at position 8"),
    ('status in ["a", ["b"]]', "Invalid filter: expected a value but found '[' at position 16"),
    ('status in ["a" "b"]', "Invalid filter: expected ']' but found '\"b\"' at position 15"),
    ('name == "a"; drop table sessions', "Invalid filter: unexpected character ';' at position 11"),
])
def test_syntax_errors_say_what_and_where(text: str, message: str) -> None:
    with pytest.raises(QueryError) as info:
        parse_filter(text)
    assert str(info.value) == message


def test_unknown_fields_are_refused_with_the_known_ones() -> None:
    with pytest.raises(QueryError, match=r"^Invalid filter: unknown field 'password' \(known: cluster_size, "
                                         r"created_at, id, name, schedulable, status\)$"):
        parse_filter('name == "a" | password == "x"', FIELDS)
    assert parse_filter('password == "x"') == c("password", "==", "x")  # no whitelist: any name


def test_nesting_is_bounded_not_recursed() -> None:
    ok = "(" * MAX_NESTING + 'name == "a"' + ")" * MAX_NESTING
    assert parse_filter(ok) == c("name", "==", "a")
    for deep in ("(" * (MAX_NESTING + 1) + 'name == "a"' + ")" * (MAX_NESTING + 1),
                 "!" * (MAX_NESTING + 1) + 'name == "a"',
                 "!(" * MAX_NESTING + 'name == "a"' + ")" * MAX_NESTING,
                 "(" * 2000,  # far past Python's recursion limit if it were recursed into
                 "!" * 2000):
        with pytest.raises(QueryError, match="^Invalid filter: nested too deeply$"):
            parse_filter(deep)


def test_size_is_bounded() -> None:
    wide = " | ".join(['name == "a"'] * 250)  # long but within the limit: a flat Or
    assert len(wide) <= MAX_FILTER_LENGTH and len(parse_filter(wide).items) == 250  # type: ignore[union-attr]
    with pytest.raises(QueryError, match=f"^Invalid filter: longer than {MAX_FILTER_LENGTH} characters$"):
        parse_filter('name == "' + "a" * MAX_FILTER_LENGTH + '"')
    with pytest.raises(QueryError, match="^Invalid filter: longer than"):
        parse_filter("(" * 10**6)


def test_order() -> None:
    assert parse_order("-created_at") == [OrderKey("created_at", True)]
    assert parse_order(" +name , -created_at,id", FIELDS) == [
        OrderKey("name"), OrderKey("created_at", True), OrderKey("id")]


@pytest.mark.parametrize(("text", "message"), [
    ("", "Invalid order: '' (expected [+|-]field)"),
    ("name,", "Invalid order: '' (expected [+|-]field)"),
    ("--name", "Invalid order: '--name' (expected [+|-]field)"),
    ("-created_at;drop table sessions", "Invalid order: '-created_at;drop table sessions' (expected [+|-]field)"),
    ("name desc", "Invalid order: 'name desc' (expected [+|-]field)"),
    ("-secret", "Invalid order: unknown field 'secret' (known: cluster_size, created_at, id, name, "
                "schedulable, status)"),
])
def test_order_errors(text: str, message: str) -> None:
    with pytest.raises(QueryError) as info:
        parse_order(text, FIELDS)
    assert str(info.value) == message


def test_order_size_is_bounded() -> None:
    with pytest.raises(QueryError, match=f"^Invalid order: longer than {MAX_ORDER_LENGTH} characters$"):
        parse_order(",".join(["name"] * 1000))


def test_statuses() -> None:
    known = frozenset({"RUNNING", "PENDING"})
    assert parse_statuses(" running, PENDING ,,", known, "session") == ["RUNNING", "PENDING"]
    with pytest.raises(QueryError, match="^Unknown session status: BOGUS, NOPE$"):
        parse_statuses("RUNNING,bogus,nope", known, "session")
