"""Account logic behind the /auth endpoints: login, signup, signout, password and profile
changes, roles and per-keypair SSH keys.

Passwords are only ever handled as PBKDF2 hashes (``store.fixtures``); hashing and verifying
run in a worker thread so the event loop keeps serving other requests meanwhile, a few at a time
(``throttle.HashingGate``). Logins and sign-ups are throttled per client address and per user
name before any hashing (``throttle.AttemptThrottle``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import importlib.util
import ipaddress
import logging
import os
import re
import struct
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError

from bai.common.tasks import raise_if_cancelling
from bai.manager import errors
from bai.manager.store import keypairs as keypair_store
from bai.manager.store import rotations as rotation_store
from bai.manager.store import users as store
from bai.manager.store.fixtures import generate_keypair, hash_password, verify_password
from bai.manager.store.keypairs import Requester

from .context import ManagerContext
from .privileges import require_grantable_role, writable_domain
from .throttle import guard_of

log = logging.getLogger(__name__)

#: Verified against when no such user exists, so a miss costs as much time as a wrong password.
_DUMMY_HASH = "pbkdf2_sha256$600000$" + "00" * 16 + "$" + "00" * 32
CREDENTIAL_MISMATCH = "User credential mismatch."
SSH_PUBKEY_MAX, SSH_PRIVKEY_MAX = 750, 2000  # the keypairs columns' sizes
_SSH_KEY_TYPES = frozenset({
    "ssh-rsa", "ssh-dss", "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
})
_PEM_BEGIN = re.compile(r"-----BEGIN ((?:[A-Z0-9]+ )*PRIVATE KEY)-----")
HAVE_CRYPTOGRAPHY = importlib.util.find_spec("cryptography") is not None


class NewPasswordMismatch(Exception):
    """``new_password`` and ``new_password2`` differ (answered with a non-problem 400)."""


#: Slots a signed-up user's keypair policy must limit (a policy without them is unlimited there).
REQUIRED_SIGNUP_SLOTS = ("cpu", "mem")


async def _verify(ctx: ManagerContext, password: str, stored: str | None) -> bool:
    ok = await guard_of(ctx).gate.run(verify_password, password, stored or _DUMMY_HASH)
    return ok and stored is not None


async def _hash(ctx: ManagerContext, password: str) -> str:
    return await guard_of(ctx).gate.run(hash_password, password)


async def hash_new_password(ctx: ManagerContext, password: str) -> str:
    """A password as it is stored (and verified at login), hashed off the event loop, a few at a time."""
    return await _hash(ctx, password)


@functools.lru_cache(maxsize=1024)
def _networks(allowed: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    out = []
    for entry in allowed:
        try:
            out.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:  # stored before validation existed: it allows nothing
            log.warning("ignoring a malformed allowed_client_ip entry %r", entry)
    return tuple(out)


def client_ip_allowed(allowed: tuple[str, ...] | None, address: str) -> bool:
    """Whether a user's ``allowed_client_ip`` list (addresses / CIDRs; None or empty: any
    address) admits a request from ``address``. An address that is not an IP (a unix socket
    peer) is admitted only by an empty list."""
    if not allowed:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in _networks(allowed))


@dataclass(frozen=True)
class Authorized:
    access_key: str
    secret_key: str
    role: str
    status: str
    user_uuid: uuid.UUID | None = None
    email: str | None = None


async def authorize(ctx: ManagerContext, domain: str, username: str, password: str,
                    client: str = "unknown") -> Authorized:
    """Check a user's password (``username`` is an email or a username) and hand out a keypair.

    Every attempt counts against ``client`` (its address) and ``username`` until the password
    proves right; past the limit the request is refused before any password is hashed."""
    attempt = await guard_of(ctx).throttle.reserve("login", client, username)
    async with ctx.db.connect() as conn:
        candidates = await store.login_candidates(conn, domain, username)
    user = None
    for row in candidates:
        if await _verify(ctx, password, row.password):
            user = row
            break
    if not candidates:
        await _verify(ctx, password, None)  # costs what a wrong password costs
    if user is None:
        raise errors.AuthorizationFailed(CREDENTIAL_MISMATCH)
    await attempt.forgive()  # the right password is not a failed attempt, whatever follows
    if user.status == "before-verification":
        raise errors.AuthorizationFailed("This account needs email verification.")
    if user.status != "active":
        raise errors.AuthorizationFailed(CREDENTIAL_MISMATCH)
    async with ctx.db.connect() as conn:
        keypair = await rotation_store.login_keypair(conn, user.uuid)
    if keypair is None:
        raise errors.AuthorizationFailed("No API keypairs found.")
    return Authorized(keypair.access_key, keypair.secret_key, user.role, user.status, user.uuid, user.email)


@dataclass(frozen=True)
class Signup:
    domain: str
    email: str
    password: str
    username: str | None = None
    full_name: str | None = None
    description: str | None = None


async def _signup_policy(ctx: ManagerContext) -> str:
    """The configured policy of signed-up keypairs, if it exists and limits every required slot."""
    name = ctx.config.auth.signup_resource_policy
    async with ctx.db.connect() as conn:
        policy = await keypair_store.get_policy(conn, name)
    unlimited = [s for s in REQUIRED_SIGNUP_SLOTS if policy is None or s not in policy.total_resource_slots]
    if unlimited:
        log.error("sign-up refused: keypair resource policy %r %s", name,
                  "does not exist" if policy is None else f"has no limit for {', '.join(unlimited)}")
        raise errors.ServerMisconfigured("Sign-up is not available: its resource policy is not set up.")
    return name


async def signup(ctx: ManagerContext, req: Signup, client: str = "unknown") -> tuple[str, str]:
    """Create the user, its keypair and its default-project membership in one transaction.

    Only when the operator enabled sign-up; every attempt counts against ``client`` (its address)
    and the email in the throttle, and signed-up keypairs get the configured, capped policy."""
    if not ctx.config.auth.signup_enabled:
        raise errors.SignupDisabled("Sign-up is disabled; ask the administrator for an account.")
    await guard_of(ctx).throttle.reserve("signup", client, req.email)
    policy = await _signup_policy(ctx)
    password_hash = await _hash(ctx, req.password)
    access_key, secret_key = generate_keypair()
    new = store.NewUser(
        domain=req.domain, email=req.email, username=req.username or req.email, password_hash=password_hash,
        full_name=req.full_name or "", description=req.description or "",
        access_key=access_key, secret_key=secret_key, keypair_policy=policy,
    )
    try:
        async with ctx.db.begin() as conn:
            if not await store.domain_is_active(conn, req.domain):
                raise errors.InvalidAPIParameters(f"No such domain or it is inactive: {req.domain}")
            if await store.identity_taken(conn, new.email, new.username):
                raise errors.InvalidAPIParameters("The email or username already exists.")
            await store.insert_signup(conn, new)
    except IntegrityError:  # lost a race with a concurrent signup: the transaction is rolled back
        raise errors.InvalidAPIParameters("The email or username already exists.") from None
    return access_key, secret_key


async def _caller(ctx: ManagerContext, r: Requester) -> Any:
    async with ctx.db.connect() as conn:
        user = await store.get_user(conn, r.user_uuid)
    if user is None:
        raise errors.AuthorizationFailed("Unauthorized access")
    return user


async def signout(ctx: ManagerContext, r: Requester, name: str, password: str) -> None:
    """Deactivate the caller's account and every keypair of it; they stop working at once."""
    user = await _caller(ctx, r)
    if name not in (user.email, user.username):
        raise errors.GenericForbidden("Not the account owner")
    if not await _verify(ctx, password, user.password):
        raise errors.AuthorizationFailed(CREDENTIAL_MISMATCH)
    async with ctx.db.begin() as conn:
        access_keys = await store.deactivate_user(conn, user.uuid)
    for ak in {*access_keys, r.access_key}:
        ctx.requesters.invalidate(ak)


def check_new_password(ctx: ManagerContext, old: str, new: str) -> None:
    """The password policy of a changed password: long enough, and not the old one again."""
    minimum = ctx.config.auth.password_min_length
    if len(new) < minimum:
        raise errors.InvalidAPIParameters(f"The new password is too short: at least {minimum} characters.")
    if new == old:
        raise errors.InvalidAPIParameters("The new password must differ from the old one.")


async def update_password(ctx: ManagerContext, r: Requester, old: str, new: str, new2: str) -> None:
    """Check the old password (401), then the two new ones (the original's 400 on a mismatch)
    and the policy (400); only then store the new hash, which also clears need_password_change."""
    user = await _caller(ctx, r)
    if not await _verify(ctx, old, user.password):
        raise errors.AuthorizationFailed("Old password mismatch")
    if new != new2:
        raise NewPasswordMismatch()
    check_new_password(ctx, old, new)
    password_hash = await _hash(ctx, new)
    async with ctx.db.begin() as conn:
        await store.set_password(conn, user.uuid, password_hash)


async def update_full_name(ctx: ManagerContext, r: Requester, full_name: str) -> None:
    """Renames the caller (the original ignores the request's ``email``: only one's own name changes)."""
    async with ctx.db.begin() as conn:
        await store.set_full_name(conn, r.user_uuid, full_name)


async def get_role(ctx: ManagerContext, r: Requester, group: uuid.UUID | None) -> dict[str, str | None]:
    group_role = None
    if group is not None:
        async with ctx.db.connect() as conn:
            if not await store.is_group_member(conn, r.user_uuid, group):
                raise errors.GroupNotFound("No such project or you are not the member of it.")
        group_role = "user"
    return {
        "global_role": "superadmin" if r.is_superadmin else "user",
        "domain_role": "admin" if r.is_admin or r.role in ("admin", "superadmin") else "user",
        "group_role": group_role,
    }


# --- keypair rotation ----------------------------------------------------------------------------

#: How often keypairs whose grace period ended are deactivated.
RETIRE_INTERVAL = 30.0


@dataclass(frozen=True)
class Rotation:
    access_key: str
    #: None when the caller is neither the keypair's owner nor a superadmin (a domain admin
    #: rotating a user's key does not get to read it; the owner does, by password login).
    secret_key: str | None
    previous_access_key: str
    previous_expires_at: datetime


def _may_rotate(r: Requester, target: Any) -> None:
    """One's own keypairs; a superadmin any; a domain admin those of their domain's accounts
    that do not outrank them (never a superadmin's or a monitor's)."""
    if target.user_uuid == r.user_uuid or r.is_superadmin:
        return
    writable_domain(r, target.domain_name)
    require_grantable_role(r, target.role)


async def rotate_keypair(ctx: ManagerContext, r: Requester, access_key: str | None) -> Rotation:
    """Replace a keypair by a new one of the same user with the same rights. The old one keeps
    working for ``[auth] rotation-grace`` (24 h by default), so running clients switch without
    downtime; then it is deactivated. The new one becomes the user's main keypair when the old
    one was, and is what a password login returns from now on.

    The grace is the operator's, not the caller's: whoever holds a key may rotate it, and a
    stolen key must not be able to lock its owner out at once. A leaked key is deactivated by an
    admin (``modify_keypair``) instead, which takes effect immediately."""
    wanted = access_key or r.access_key
    grace = ctx.config.auth.rotation_grace
    new_ak, new_sk = generate_keypair()
    async with ctx.db.begin() as conn:
        target = await rotation_store.lock_keypair(conn, wanted)
        if target is None:
            if r.role not in ("superadmin", "admin"):  # users learn nothing about others' keys
                raise errors.GenericForbidden("Not your keypair.")
            raise errors.ObjectNotFound("No such keypair.")
        _may_rotate(r, target)
        if not target.is_active:
            raise errors.InvalidAPIParameters("The keypair is inactive.")
        if target.rotated:
            raise errors.InvalidAPIParameters("The keypair was rotated already; rotate its successor.")
        expires_at = datetime.now(UTC) + timedelta(seconds=grace)
        await rotation_store.insert_successor(conn, wanted, new_ak, new_sk)
        await rotation_store.record_rotation(conn, wanted, new_ak, rotated_by=r.access_key,
                                             expires_at=expires_at, retire_now=grace == 0)
        if target.main_access_key in (None, wanted):
            await rotation_store.set_main_key(conn, target.user_uuid, new_ak)
    if grace == 0:
        ctx.requesters.invalidate(wanted)
    shown = new_sk if target.user_uuid == r.user_uuid or r.is_superadmin else None
    log.info("keypair %s rotated to %s by %s (old one valid until %s)", wanted, new_ak, r.access_key,
             expires_at.isoformat())
    return Rotation(new_ak, shown, wanted, expires_at)


async def retire_rotated_keypairs(ctx: ManagerContext) -> list[str]:
    """Deactivate the rotated keypairs whose grace period is over; their access keys."""
    async with ctx.db.begin() as conn:
        retired = await rotation_store.retire_expired(conn)
    for ak in retired:
        ctx.requesters.invalidate(ak)
    if retired:
        log.info("rotated keypairs retired at the end of their grace period: %s", ", ".join(retired))
    return retired


async def retire_rotated_keypairs_forever(ctx: ManagerContext) -> None:
    while True:
        try:
            await retire_rotated_keypairs(ctx)
        except Exception:
            raise_if_cancelling()
            log.warning("retiring rotated keypairs failed; retrying", exc_info=True)
        await asyncio.sleep(RETIRE_INTERVAL)


# --- SSH keypairs -------------------------------------------------------------------------------

def normalise_ssh_keypair(pubkey: str, privkey: str) -> tuple[str, str]:
    """One trailing newline each; InvalidAPIParameters for keys that cannot be SSH keys."""
    pub, priv = f"{pubkey.rstrip()}\n", f"{privkey.rstrip()}\n"
    parts = pub.split()
    try:
        blob = base64.b64decode(parts[1], validate=True) if len(parts) >= 2 else b""
    except (binascii.Error, ValueError):  # ValueError: non-ASCII characters
        blob = b""
    (n,) = struct.unpack(">I", blob[:4]) if len(blob) >= 4 else (0,)
    if (pub.count("\n") != 1 or not parts or parts[0] not in _SSH_KEY_TYPES
            or blob[4:4 + n] != parts[0].encode() or len(pub) > SSH_PUBKEY_MAX):
        raise errors.InvalidAPIParameters("Malformed SSH public key")
    lines = priv.strip().splitlines()
    begin = _PEM_BEGIN.fullmatch(lines[0].strip()) if lines else None
    if (begin is None or len(lines) < 3 or lines[-1].strip() != f"-----END {begin.group(1)}-----"
            or len(priv) > SSH_PRIVKEY_MAX):
        raise errors.InvalidAPIParameters("Malformed SSH private key")
    return pub, priv


def _rsa_with_cryptography() -> tuple[str, str]:
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    priv = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.TraditionalOpenSSL, ser.NoEncryption())
    pub = key.public_key().public_bytes(ser.Encoding.OpenSSH, ser.PublicFormat.OpenSSH)
    return f"{pub.decode().rstrip()}\n", f"{priv.decode().rstrip()}\n"


async def rsa_with_ssh_keygen() -> tuple[str, str]:
    with tempfile.TemporaryDirectory(prefix="bai-sshkey-") as tmp:
        path = os.path.join(tmp, "id")
        proc = await asyncio.create_subprocess_exec(
            "ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "", "-C", "", "-f", path,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        if proc.returncode != 0:
            log.warning("ssh-keygen failed (%s): %s", proc.returncode, err.decode(errors="replace").strip())
            raise errors.InternalServerError("SSH keypair generation failed")
        pub, priv = await asyncio.to_thread(lambda: (Path(path + ".pub").read_text(), Path(path).read_text()))
    return f"{pub.rstrip()}\n", f"{priv.rstrip()}\n"


async def generate_ssh_keypair() -> tuple[str, str]:
    """An RSA-2048 keypair (OpenSSH public key, PEM private key), as the original makes."""
    if HAVE_CRYPTOGRAPHY:
        return await asyncio.to_thread(_rsa_with_cryptography)
    return await rsa_with_ssh_keygen()


async def get_ssh_public_key(ctx: ManagerContext, r: Requester) -> str | None:
    async with ctx.db.connect() as conn:
        return await store.get_ssh_public_key(conn, r.access_key)


async def store_ssh_keypair(ctx: ManagerContext, r: Requester, pubkey: str, privkey: str) -> None:
    async with ctx.db.begin() as conn:
        await store.set_ssh_keypair(conn, r.access_key, pubkey, privkey)
