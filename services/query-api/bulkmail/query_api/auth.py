"""API keys: HTTP Basic with the key as user name (as Close does) or a Bearer token.

Keys are random, shown once, and stored only as their SHA-256, so a database leak does not
leak usable keys. Lookups are by hash, which also makes them constant-time in effect.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.shared.db import Database
from bulkmail.shared.logging import get_logger
from bulkmail.shared.models import ApiKey, User
from bulkmail.shared.organizations import hash_api_key

log = get_logger(__name__)

# How stale ``api_keys.last_used_at`` may get: a client calling many times a minute costs one write.
LAST_USED_GRAIN = timedelta(seconds=60)


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user of one organisation."""

    organization_id: int
    user_id: int
    timezone: str = "UTC"


def api_key_from_header(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    scheme = scheme.lower()
    value = value.strip()
    if scheme == "bearer":
        return value or None
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[0] or None
    return None


# Built once: every request runs it, and building it cost more Python than running it.
_BY_HASH = (
    select(ApiKey.organization_id, ApiKey.user_id, User.timezone, ApiKey.id, ApiKey.last_used_at)
    .join(User, User.id == ApiKey.user_id)
    .where(ApiKey.key_hash == bindparam("key_hash"), ApiKey.revoked_at.is_(None))
)


async def authenticate(session: AsyncSession, key: str) -> tuple[Principal, int | None] | None:
    """The caller a key belongs to, and the key's id if its ``last_used_at`` is due a refresh."""
    connection = await session.connection()  # a Core statement needs none of the ORM's result handling
    row = (await connection.execute(_BY_HASH, {"key_hash": hash_api_key(key)})).first()
    if row is None:
        return None
    stale = row[4] is None or datetime.now(UTC) - row[4] >= LAST_USED_GRAIN
    return Principal(organization_id=row[0], user_id=row[1], timezone=row[2]), row[3] if stale else None


class KeyUse:
    """Refreshes ``api_keys.last_used_at`` off the request path, once per key at a time.

    The request that finds its key's stamp stale must not write it itself: a second connection
    taken while the request still holds its own deadlocks the pool when a burst of requests all
    see the stale stamp at once (every connection held by a request waiting for another, until
    the pool's timeout), and waiting for the write would add a round trip to the request. So the
    write is a background task of this process, and a key whose write is in flight or was just
    made is not written again (docs/operations.md, "API performance").
    """

    def __init__(self) -> None:
        self._written: dict[int, datetime] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def note(self, database: Database, key_id: int) -> None:
        now = datetime.now(UTC)
        last = self._written.get(key_id)
        if last is not None and now - last < LAST_USED_GRAIN:
            return
        self._written[key_id] = now  # claimed before the write, so a burst starts one write
        task = asyncio.create_task(self._write(database, key_id, now))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, database: Database, key_id: int, now: datetime) -> None:
        try:
            # A transaction of its own, so no request ever holds the key's row lock.
            async with database.session() as session:
                await session.execute(
                    update(ApiKey)
                    .where(
                        ApiKey.id == key_id,
                        or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < now - LAST_USED_GRAIN),
                    )
                    .values(last_used_at=now)
                )
        except Exception as exc:  # the stamp is informational: never fail or retry loudly for it
            self._written.pop(key_id, None)
            log.warning("could not record an API key's use", key_id=key_id, error=repr(exc))

    async def drain(self) -> None:
        """Wait for the writes in flight (at shutdown)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
