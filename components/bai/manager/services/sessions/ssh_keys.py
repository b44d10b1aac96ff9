"""The keypair's SSH keypair, for its sessions (what ``backend.ai session ssh`` logs in with).

Every new kernel gets its owner's keypair SSH keypair (``/auth/ssh-keypair``) in the
create-kernel config (``configs[].ssh_keypair``, protocol 1.1): the agent writes the public key
into ``/home/work/.ssh/authorized_keys`` and the private key into ``/home/work/id_container``
(agent/dotfiles.py), as the original does. A keypair without one gets one at its first
session, made by the generator ``PATCH /auth/ssh-keypair`` uses and stored once: the row is
only written while it still has none, then read back, so sessions created at the same time all
get the pair that won. The private key is never logged; it travels only in the create-kernel
RPC body.

A cluster session (more than one kernel) also gets a keypair of its own, made when its kernels
are created (:func:`for_cluster`) and sent to every kernel as ``cluster_info.ssh_keypair``
(protocol 1.1), so its kernels ``ssh sub1`` each other without a password (what MPI launchers
need). It is never stored: it lives in the create-kernels RPC body and in the kernels' tmpfs
``~/.ssh`` only, and dies with the session.
"""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bai.common.tasks import raise_if_cancelling
from bai.manager.store import keypairs as keypair_store

from ..auth import generate_ssh_keypair

log = logging.getLogger(__name__)


def wire(pair: tuple[str, str]) -> dict[str, str]:
    """The create-kernel config's ``ssh_keypair`` field."""
    return {"public_key": pair[0], "private_key": pair[1]}


async def generate_once(db: AsyncEngine, access_key: str) -> tuple[str, str] | None:
    """The keypair's SSH keypair, made and stored now if it has none (whoever stores first wins);
    None when it cannot be had (no such keypair, or generation failed: the session starts
    without SSH rather than not at all)."""
    try:
        pub, priv = await generate_ssh_keypair()
    except Exception:
        raise_if_cancelling()
        log.warning("keypair %s: no SSH keypair could be generated; its session starts without one",
                    access_key, exc_info=True)
        return None
    async with db.begin() as conn:
        if await keypair_store.set_ssh_keypair_if_none(conn, access_key, pub, priv):
            log.info("keypair %s: generated its SSH keypair for its sessions", access_key)
        return await keypair_store.ssh_keypair_of(conn, access_key)


async def stored(conn: AsyncConnection, access_key: str | None) -> tuple[str, str] | None:
    """The keypair's SSH keypair if it has one (None for a session whose keypair is gone)."""
    return await keypair_store.ssh_keypair_of(conn, access_key) if access_key else None


async def for_cluster(kernel_count: int) -> dict[str, str] | None:
    """The create-kernels ``cluster_info.ssh_keypair`` of a session of ``kernel_count`` kernels:
    a new keypair for one of several kernels, None for a single kernel (nobody to reach) or when
    none could be made (the session starts without SSH between its kernels, not at all)."""
    if kernel_count < 2:
        return None
    try:
        return wire(await generate_ssh_keypair())
    except Exception:
        raise_if_cancelling()
        log.warning("no cluster SSH keypair could be generated; the kernels start without SSH between them",
                    exc_info=True)
        return None
