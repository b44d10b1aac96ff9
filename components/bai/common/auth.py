"""Backend.AI request signing (HMAC), shared by the client SDK and the manager.

The algorithm follows the original's code, not its published docs: the raw ``Date`` header
string is signed, the body hash is always the hash of empty bytes (API >= v4.20181215), and the
signing key is derived from the secret key, the request's calendar date and the Host header.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime

import dateutil.parser

API_VERSION = "v8.20240315"
AUTH_SCHEME = "BackendAI"
DEFAULT_HASH = "sha256"
#: Every version string the original's v8 manager accepts in ``X-BackendAI-Version``.
ACCEPTED_VERSIONS: frozenset[str] = frozenset(
    {
        "v4.20181215", "v4.20190115", "v4.20190315", "v4.20190615",
        "v5.20191215",
        "v6.20200815", "v6.20210815", "v6.20220315", "v6.20220615", "v6.20230315",
        "v7.20230615",
        "v8.20240315",
    }
)
CLOCK_SKEW_SECONDS = 15 * 60
#: Hashes a request may be signed with: the original allows ``hashlib.algorithms_guaranteed``, but
#: the SHAKE functions need a digest length that HMAC cannot give them, so they cannot sign.
SUPPORTED_HASHES: frozenset[str] = frozenset(
    name for name in hashlib.algorithms_guaranteed if not name.startswith("shake_")
)
#: Longest header values worth parsing; anything longer is malformed, not a credential.
MAX_AUTHORIZATION_LENGTH = 1024
MAX_DATE_LENGTH = 64
# An access key is printable ASCII (no blank, ``,`` or ``:``, which delimit it); a signature is
# hex. Checked before any lookup, so odd bytes never reach the database or compare_digest.
_ACCESS_KEY = re.compile(r"[!-+\--9;-~]{1,64}")
_SIGNATURE = re.compile(r"[0-9a-fA-F]{1,256}")
#: Headers are decoded with ``surrogateescape``: encoding back the same way signs the bytes sent.
_ENCODING = ("utf-8", "surrogateescape")


def parse_api_version(value: str) -> tuple[int, str]:
    """``"v8.20240315"`` -> ``(8, "20240315")``; raises ValueError on anything else."""
    if not value.startswith("v") or "." not in value:
        raise ValueError(value)
    major, _, date = value[1:].partition(".")
    if not major.isdigit() or len(date) != 8 or not date.isdigit():
        raise ValueError(value)
    return int(major), date


def parse_date(value: str) -> datetime:
    """Parse a request Date header as the original does (naive means UTC); ValueError if it is
    not a date (including overlong values and dates out of datetime's range)."""
    if len(value) > MAX_DATE_LENGTH:
        raise ValueError("Date header too long")
    try:
        parsed = datetime.fromisoformat(value)  # the SDK's format; ~50x faster than dateutil
    except ValueError:
        try:
            parsed = dateutil.parser.parse(value)
        except (OverflowError, TypeError) as exc:  # dateutil's other ways of saying "not a date"
            raise ValueError(str(exc)) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        parsed.astimezone(UTC)  # an offset that leaves datetime's range cannot be compared
    except OverflowError as exc:
        raise ValueError(str(exc)) from None
    return parsed


def string_to_sign(
    method: str, path: str, date_str: str, host: str, content_type: str, api_version: str,
    hash_name: str = DEFAULT_HASH, version_label: str = "x-backendai-version",
) -> bytes:
    body_hash = hashlib.new(hash_name, b"").hexdigest()
    return "\n".join(
        [
            method.upper(),
            path,
            date_str,
            f"host:{host}",
            f"content-type:{content_type.lower()}",
            f"{version_label}:{api_version}",
            body_hash,
        ]
    ).encode(*_ENCODING)


def signature(
    secret_key: str, method: str, path: str, date_str: str, host: str, content_type: str,
    api_version: str, hash_name: str = DEFAULT_HASH, version_label: str = "x-backendai-version",
) -> str:
    """Hex HMAC signature of a request, exactly as the original computes it."""
    date = parse_date(date_str)
    k1 = hmac.new(secret_key.encode(), date.strftime("%Y%m%d").encode(), hash_name).digest()
    sign_key = hmac.new(k1, host.encode(*_ENCODING), hash_name).digest()
    msg = string_to_sign(method, path, date_str, host, content_type, api_version, hash_name, version_label)
    return hmac.new(sign_key, msg, hash_name).hexdigest()


@dataclass(frozen=True)
class SignedHeaders:
    date: str
    authorization: str


def sign_request(
    access_key: str, secret_key: str, method: str, path: str, host: str, content_type: str,
    api_version: str = API_VERSION, now: datetime | None = None, hash_name: str = DEFAULT_HASH,
) -> SignedHeaders:
    """Headers a client adds to a request (``Date`` and ``Authorization``)."""
    date_str = (now or datetime.now(UTC)).isoformat()
    sig = signature(secret_key, method, path, date_str, host, content_type, api_version, hash_name)
    auth = f"{AUTH_SCHEME} signMethod=HMAC-{hash_name.upper()}, credential={access_key}:{sig}"
    return SignedHeaders(date=date_str, authorization=auth)


@dataclass(frozen=True)
class AuthorizationHeader:
    scheme: str
    hash_name: str
    access_key: str
    signature: str


def parse_authorization(value: str) -> AuthorizationHeader:
    """Parse ``BackendAI signMethod=HMAC-SHA256, credential=AK:SIG``; raises ValueError for
    anything else, including unsupported hashes and credentials that are not ASCII key and hex."""
    if len(value) > MAX_AUTHORIZATION_LENGTH:
        raise ValueError("Malformed authorization header")
    scheme, _, rest = value.strip().partition(" ")
    if scheme not in ("BackendAI", "Sorna"):
        raise ValueError("Invalid authorization type name")
    params: dict[str, str] = {}
    for part in rest.split(","):
        key, sep, val = part.strip().partition("=")
        if not sep:
            raise ValueError("Missing or malformed authorization parameters")
        params[key.strip()] = val.strip()
    try:
        method = params["signMethod"]
        access_key, sep, sig = params["credential"].partition(":")
    except KeyError:
        raise ValueError("Missing or malformed authorization parameters") from None
    mac, _, hash_name = method.partition("-")
    if not sep or not access_key or not sig or mac.lower() != "hmac" or not hash_name:
        raise ValueError("Missing or malformed authorization parameters")
    if not _ACCESS_KEY.fullmatch(access_key) or not _SIGNATURE.fullmatch(sig):
        raise ValueError("Missing or malformed authorization parameters")
    if hash_name.lower() not in SUPPORTED_HASHES:
        raise ValueError("Unsupported signing hash algorithm")
    return AuthorizationHeader(scheme, hash_name.lower(), access_key, sig)
