"""Event signing and parsing: what a manager accepts from the stream."""

from __future__ import annotations

import json

import pytest

from bai.common.events import EventProducer, MalformedEvent, event_signing_key, parse_entry

KEY = event_signing_key("rpc-secret")


def fields(key: bytes | None = KEY, **args: object) -> dict[str, str]:
    return EventProducer(None, signing_key=key).entry("agent_heartbeat", "i-agent", **args)  # type: ignore[arg-type]


def test_signed_entry_round_trips() -> None:
    ev = parse_entry({k.encode(): v.encode() for k, v in fields(addr="http://127.0.0.1:6001").items()}, KEY)
    assert (ev.name, ev.source, ev.args) == ("agent_heartbeat", "i-agent", {"addr": "http://127.0.0.1:6001"})
    assert ev.ts > 0


def test_key_is_derived_not_the_secret_itself() -> None:
    assert KEY != b"rpc-secret" and len(KEY) == 32
    assert event_signing_key("other") != KEY


@pytest.mark.parametrize("tamper", [
    lambda f: f.pop("sig"),                                              # unsigned
    lambda f: f.update(sig="0" * 64),                                    # wrong signature
    lambda f: f.update(args=json.dumps({"addr": "http://evil:1"})),      # redirected address
    lambda f: f.update(source="i-other"),                                # another agent's name
    lambda f: f.update(ts="1"),                                          # replayed with a new time
    lambda f: f.update(name="agent_terminated"),                         # another event
])
def test_tampered_entries_are_refused(tamper) -> None:  # type: ignore[no-untyped-def]
    entry = fields(addr="http://127.0.0.1:6001")
    tamper(entry)
    with pytest.raises(MalformedEvent):
        parse_entry(entry, KEY)


def test_signed_with_another_key_is_refused() -> None:
    with pytest.raises(MalformedEvent):
        parse_entry(fields(event_signing_key("guess"), addr="x"), KEY)


@pytest.mark.parametrize("entry", [
    {},
    {"name": "x", "source": "a"},
    {"name": "x", "source": "a", "args": "{not json"},
    {"name": "x", "source": "a", "args": "[1, 2]"},
    {"name": "", "source": "a", "args": "{}"},
    {"name": "x", "source": "a", "args": "{}", "ts": "yesterday"},
    {b"name": b"\xff\xfe", b"source": b"a", b"args": b"\xff"},
])
def test_malformed_entries_are_refused(entry: dict) -> None:
    with pytest.raises(MalformedEvent):
        parse_entry(entry, None)


def test_unsigned_entries_pass_only_without_a_key() -> None:
    entry = fields(None, a=1)
    assert "sig" not in entry
    assert parse_entry(entry, None).args == {"a": 1}
    with pytest.raises(MalformedEvent):
        parse_entry(entry, KEY)
