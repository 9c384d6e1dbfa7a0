"""API keys: HTTP Basic with the key as user name (as Close does) or a Bearer token.

Keys are random, shown once, and stored only as their SHA-256, so a database leak does not
leak usable keys. Lookups are by hash, which also makes them constant-time in effect.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.shared.models import ApiKey, User
from bulkmail.shared.organizations import hash_api_key


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


async def authenticate(session: AsyncSession, key: str) -> Principal | None:
    row = (
        await session.execute(
            select(ApiKey.organization_id, ApiKey.user_id, User.timezone)
            .join(User, User.id == ApiKey.user_id)
            .where(ApiKey.key_hash == hash_api_key(key), ApiKey.revoked_at.is_(None))
        )
    ).first()
    if row is None:
        return None
    return Principal(organization_id=row[0], user_id=row[1], timezone=row[2])
