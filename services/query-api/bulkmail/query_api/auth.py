"""API keys: HTTP Basic with the key as user name (as Close does) or a Bearer token.

Keys are random, shown once, and stored only as their SHA-256, so a database leak does not
leak usable keys. Lookups are by hash, which also makes them constant-time in effect.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.shared.db import Database
from bulkmail.shared.models import ApiKey, User
from bulkmail.shared.organizations import hash_api_key

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


async def note_key_used(database: Database, key_id: int) -> None:
    """Refresh ``last_used_at`` in a transaction of its own, so the request never holds the key's
    row lock (parallel requests with one key would queue behind each other)."""
    now = datetime.now(UTC)
    async with database.session() as session:
        await session.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id, or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < now - LAST_USED_GRAIN))
            .values(last_used_at=now)
        )
