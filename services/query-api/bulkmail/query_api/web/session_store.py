"""Server-side web sessions: one row per signed-in browser, found by the SHA-256 of its cookie.

The token is 256 random bits; only its hash is stored, so a copy of the database signs nobody
in. A session ends at its absolute expiry, after the idle timeout, or when revoked (sign-out).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.shared.models import User, WebSession
from bulkmail.shared.settings import Settings

# last_seen_at is written at most this often per session: idle expiry needs no finer grain, and a
# page that polls every second should not write every second.
TOUCH_INTERVAL = timedelta(seconds=60)


@dataclass(frozen=True)
class ActiveSession:
    session_id: int
    user: User


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def now_utc() -> datetime:
    return datetime.now(UTC)


async def start_session(session: AsyncSession, user: User, settings: Settings, *, user_agent: str = "") -> str:
    """A new session for ``user``; returns the token for the cookie (never stored as such)."""
    token = secrets.token_urlsafe(32)
    now = now_utc()
    session.add(
        WebSession(
            user_id=user.id,
            token_hash=hash_token(token),
            last_seen_at=now,
            expires_at=now + timedelta(seconds=settings.session_lifetime_s),
            user_agent=user_agent[:200],
        )
    )
    await session.flush()
    return token


async def resolve_session(session: AsyncSession, token: str, settings: Settings) -> ActiveSession | None:
    """The live session for a cookie token, or None if unknown, revoked, idle too long or expired."""
    now = now_utc()
    row = (
        await session.execute(
            select(WebSession, User)
            .join(User, User.id == WebSession.user_id)
            .where(
                WebSession.token_hash == hash_token(token),
                WebSession.revoked_at.is_(None),
                WebSession.expires_at > now,
                WebSession.last_seen_at > now - timedelta(seconds=settings.session_idle_timeout_s),
                User.password_hash.is_not(None),
            )
        )
    ).first()
    if row is None:
        return None
    web_session, user = row
    if now - web_session.last_seen_at >= TOUCH_INTERVAL:
        web_session.last_seen_at = now
    return ActiveSession(session_id=web_session.id, user=user)


async def revoke_session(session: AsyncSession, token: str) -> None:
    await session.execute(
        update(WebSession)
        .where(WebSession.token_hash == hash_token(token), WebSession.revoked_at.is_(None))
        .values(revoked_at=now_utc())
    )


async def revoke_user_sessions(session: AsyncSession, user_id: int) -> int:
    """Sign a user out everywhere (password changed, account removed); returns how many ended."""
    result = await session.execute(
        update(WebSession)
        .where(WebSession.user_id == user_id, WebSession.revoked_at.is_(None))
        .values(revoked_at=now_utc())
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def list_user_sessions(session: AsyncSession, user_id: int, settings: Settings) -> list[WebSession]:
    """The user's live sessions (signed-in browsers), most recently used first."""
    now = now_utc()
    rows = await session.scalars(
        select(WebSession)
        .where(
            WebSession.user_id == user_id,
            WebSession.revoked_at.is_(None),
            WebSession.expires_at > now,
            WebSession.last_seen_at > now - timedelta(seconds=settings.session_idle_timeout_s),
        )
        .order_by(WebSession.last_seen_at.desc(), WebSession.id.desc())
    )
    return list(rows)


async def revoke_other_sessions(session: AsyncSession, user_id: int, keep_session_id: int) -> int:
    """Sign the user out of every browser but this one; returns how many sessions ended."""
    result = await session.execute(
        update(WebSession)
        .where(WebSession.user_id == user_id, WebSession.id != keep_session_id, WebSession.revoked_at.is_(None))
        .values(revoked_at=now_utc())
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
