"""Users who sign in to the web app: argon2 password hashes and checking a sign-in.

Hashing is deliberately slow (argon2id, 64 MiB, 3 passes: tenths of a second), so it runs in a
worker thread: in the embedded mode the dispatcher and mailer share the event loop with the pages.
"""

from __future__ import annotations

import asyncio
from functools import cache

from pwdlib import PasswordHash
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.shared.models import User

MIN_PASSWORD_LENGTH = 8

_hasher = PasswordHash.recommended()


@cache
def _dummy_hash() -> str:
    """Verified against when the address is unknown, so a wrong address takes as long as a wrong
    password (made on first use: hashing at import would slow every start of the API and CLI)."""
    return _hasher.hash("not a password anyone has")


class UserError(ValueError):
    """A user cannot be created or changed as asked; the message says why."""


def normalize_email(email: str) -> str:
    return email.strip().lower()


async def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"The password must have at least {MIN_PASSWORD_LENGTH} characters.")
    return await asyncio.to_thread(_hasher.hash, password)


async def find_sign_in_user(session: AsyncSession, email: str) -> User | None:
    return await session.scalar(
        select(User).where(User.email == normalize_email(email), User.password_hash.is_not(None))
    )


async def create_user(
    session: AsyncSession, *, organization_id: int, email: str, name: str, password: str, timezone: str = "UTC"
) -> User:
    """A user of ``organization_id`` who can sign in; the address must not sign in anywhere yet."""
    email = normalize_email(email)
    if "@" not in email:
        raise UserError(f"{email!r} is not an email address.")
    if await find_sign_in_user(session, email) is not None:
        raise UserError(f"A user with the address {email} already exists.")
    first, _, last = name.strip().partition(" ")
    user = await session.scalar(select(User).where(User.organization_id == organization_id, User.email == email))
    if user is None:
        user = User(organization_id=organization_id, email=email, first_name=first, last_name=last, timezone=timezone)
        session.add(user)
    elif name.strip():
        user.first_name, user.last_name = first, last
    user.password_hash = await hash_password(password)
    await session.flush()
    return user


async def set_password(session: AsyncSession, user: User, password: str) -> None:
    user.password_hash = await hash_password(password)
    await session.flush()


async def verify_password(stored_hash: str | None, password: str) -> tuple[bool, str | None]:
    """Whether ``password`` matches ``stored_hash`` (None: no such user, checked as slowly), and a
    new hash when the hashing parameters were raised since it was made."""
    return await asyncio.to_thread(_hasher.verify_and_update, password, stored_hash or _dummy_hash())


async def check_password(session: AsyncSession, email: str, password: str) -> User | None:
    """The user if ``password`` is theirs; None for a wrong address or password (same time for both)."""
    user = await find_sign_in_user(session, email)
    valid, new_hash = await verify_password(user.password_hash if user is not None else None, password)
    if user is None or not valid:
        return None
    if new_hash is not None:
        user.password_hash = new_hash
    return user
