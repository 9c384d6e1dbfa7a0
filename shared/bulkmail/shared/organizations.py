"""Organisations, their first user, and API keys: create, list, revoke (CLI, demo data, API, web app)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.shared.models import ApiKey, LeadStatus, Organization, User

API_KEY_PREFIX = "bm_"
DEFAULT_LEAD_STATUSES = ("Potential", "Bad Fit", "Qualified", "Customer")


@dataclass(frozen=True)
class NewOrganization:
    organization_id: int
    user_id: int
    api_key: str


def generate_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(30)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def add_api_key(session: AsyncSession, user: User, key: str | None = None) -> str:
    """Store a new key for ``user`` (only its hash) and return it; the caller shows it once."""
    key = key or generate_api_key()
    session.add(
        ApiKey(organization_id=user.organization_id, user_id=user.id, key_hash=hash_api_key(key), prefix=key[:8])
    )
    await session.flush()
    return key


async def list_api_keys(session: AsyncSession, organization_id: int) -> list[ApiKey]:
    """The organisation's keys, newest first, revoked ones included (they show as revoked)."""
    rows = await session.scalars(
        select(ApiKey).where(ApiKey.organization_id == organization_id).order_by(ApiKey.id.desc())
    )
    return list(rows)


async def revoke_api_key(session: AsyncSession, organization_id: int, key_id: int) -> ApiKey | None:
    """Revoke one of the organisation's keys at once; None if it has no such key (another
    organisation's key looks the same as a missing one). Revoking twice keeps the first time."""
    key = await session.scalar(select(ApiKey).where(ApiKey.id == key_id, ApiKey.organization_id == organization_id))
    if key is None:
        return None
    if key.revoked_at is None:
        await session.execute(
            update(ApiKey).where(ApiKey.id == key.id, ApiKey.revoked_at.is_(None)).values(revoked_at=datetime.now(UTC))
        )
        await session.refresh(key)
    return key


async def create_organization(
    session: AsyncSession,
    name: str,
    *,
    user_email: str,
    first_name: str = "",
    last_name: str = "",
    phone: str = "",
    timezone: str = "UTC",
    api_key: str | None = None,
    statuses: tuple[str, ...] = DEFAULT_LEAD_STATUSES,
) -> NewOrganization:
    org = Organization(name=name)
    session.add(org)
    await session.flush()
    user = User(
        organization_id=org.id,
        email=user_email,
        first_name=first_name,
        last_name=last_name,
        phone=phone,
        timezone=timezone,
    )
    session.add(user)
    for position, label in enumerate(statuses):
        session.add(LeadStatus(organization_id=org.id, label=label, position=position))
    await session.flush()
    key = await add_api_key(session, user, api_key)
    return NewOrganization(organization_id=org.id, user_id=user.id, api_key=key)
