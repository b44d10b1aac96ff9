"""The schema's scalars and the interfaces every object and list type implements."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import dateutil.parser
from ariadne import ScalarType

SDL = '''
"Canonical hyphenated UUID string."
scalar UUID

"ISO 8601 date and time."
scalar DateTime

"A JSON value serialised into a string."
scalar JSONString

"An integer that may exceed 32 bits (sent as a float beyond that range, as the original does)."
scalar BigInt

interface Item {
  id: ID
}

interface PaginatedList {
  items: [Item]!
  total_count: Int!
}
'''

uuid_scalar = ScalarType("UUID")
datetime_scalar = ScalarType("DateTime")
json_scalar = ScalarType("JSONString")
bigint_scalar = ScalarType("BigInt")
BINDABLES = (uuid_scalar, datetime_scalar, json_scalar, bigint_scalar)


@uuid_scalar.serializer
def _serialize_uuid(value: Any) -> str:
    return str(value)


@uuid_scalar.value_parser
def _parse_uuid(value: Any) -> uuid.UUID:
    if not isinstance(value, str):
        raise ValueError("UUID must be a string")
    return uuid.UUID(value)


@datetime_scalar.serializer
def _serialize_datetime(value: Any) -> str:
    return value if isinstance(value, str) else value.isoformat()


@datetime_scalar.value_parser
def _parse_datetime(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError("DateTime must be an ISO 8601 string")
    return dateutil.parser.isoparse(value)


@json_scalar.serializer
def _serialize_json(value: Any) -> str:
    return json.dumps(value, default=str)


@json_scalar.value_parser
def _parse_json(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("JSONString must be a string")
    return json.loads(value)


_SAFE_INT = 2**53 - 1
_INT32 = 2**31


@bigint_scalar.serializer
def _serialize_bigint(value: Any) -> int | float:
    """As the original: an Int within 32 bits, a float up to 2^53, an error beyond."""
    num = int(value)
    if not -_SAFE_INT <= num <= _SAFE_INT:
        raise ValueError("Cannot serialize integer out of the safe range.")
    return num if -_INT32 <= num < _INT32 else float(num)


@bigint_scalar.value_parser
def _parse_bigint(value: Any) -> int:
    return int(value)
