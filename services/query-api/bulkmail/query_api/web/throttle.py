"""Password guessing: failed sign-ins slow the next attempts, then refuse them (429).

Counted per account (the address typed) and per client address over a sliding window, in the
database so every query-api replica shares the count. An attempt is recorded as a failure
*before* its password is checked (and removed if it was right), so guesses sent in parallel see
each other while their passwords are checked instead of all slipping under the limit (only those
judged within the same few milliseconds can). A refused attempt is answered without
checking the password at all, so it reveals nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.shared.models import SignInFailure
from bulkmail.shared.settings import Settings

MAX_DELAY_S = 4.0


@dataclass(frozen=True)
class Verdict:
    """Whether to answer this attempt at all, and how long to wait before checking it."""

    refused: bool
    retry_after_s: int = 0
    delay_s: float = 0.0


def delay_for(failures: int, settings: Settings) -> float:
    """0 up to the threshold, then 0.25 s doubling per failure, at most 4 s."""
    over = failures - settings.sign_in_failures_before_delay
    return 0.0 if over < 0 else min(0.25 * 2**over, MAX_DELAY_S)


async def judge(session: AsyncSession, settings: Settings, email: str, client_address: str, now: datetime) -> Verdict:
    since = now - timedelta(seconds=settings.sign_in_failure_window_s)
    by_account = await _failures(session, SignInFailure.email == email, since)
    by_address = await _failures(session, SignInFailure.client_address == client_address, since)
    refused_by = []
    if by_account[0] >= settings.sign_in_account_failures_before_refusal:
        refused_by.append(by_account)
    if by_address[0] >= settings.sign_in_address_failures_before_refusal:
        refused_by.append(by_address)
    if refused_by:
        # Open again when enough of the oldest failures have left the window; simply: the oldest.
        oldest = min(first for _n, first in refused_by if first is not None)
        wait = (oldest + timedelta(seconds=settings.sign_in_failure_window_s) - now).total_seconds()
        return Verdict(refused=True, retry_after_s=max(1, math.ceil(wait)))
    return Verdict(refused=False, delay_s=delay_for(max(by_account[0], by_address[0]), settings))


async def _failures(session: AsyncSession, where: ColumnElement[bool], since: datetime) -> tuple[int, datetime | None]:
    row = (
        await session.execute(
            select(func.count(), func.min(SignInFailure.failed_at)).where(where, SignInFailure.failed_at >= since)
        )
    ).one()
    return int(row[0]), row[1]


async def record_attempt(session: AsyncSession, email: str, client_address: str, now: datetime) -> int:
    """Count this attempt as a failure until proven right; returns its row id."""
    failure = SignInFailure(email=email, client_address=client_address[:64], failed_at=now)
    session.add(failure)
    await session.flush()
    return failure.id


async def forget_attempt(session: AsyncSession, attempt_id: int, email: str) -> None:
    """A right password: this attempt was no failure, and the account's earlier failures are forgiven.

    Forgiven failures lose their account but stay counted for their client address: one right
    password must not reset a spray of guesses across many accounts from that address.
    """
    await session.execute(delete(SignInFailure).where(SignInFailure.id == attempt_id))
    await session.execute(update(SignInFailure).where(SignInFailure.email == email).values(email=""))


async def prune(session: AsyncSession, settings: Settings, email: str, client_address: str, now: datetime) -> None:
    """Drop this account's and address's failures that have left the window (keeps the table small)."""
    since = now - timedelta(seconds=settings.sign_in_failure_window_s)
    await session.execute(
        delete(SignInFailure).where(
            or_(SignInFailure.email == email, SignInFailure.client_address == client_address),
            SignInFailure.failed_at < since,
        )
    )
