"""Email account limits that hold across every mailer worker and across restarts.

Every send first reserves a slot: a row in ``send_slots`` with its time. Counting those rows
over the last minute, hour and rolling 24 h says whether another send fits; the database is the
only state, so any number of worker processes (and a worker that restarts mid-window) see the
same history. Reservations for one account are serialised: on PostgreSQL by a transaction-scoped
advisory lock on the account, on SQLite by its single writer (our first statement writes).

Accounts without rate limits (sending services, the capture server) never touch the database.
Concurrent SMTP connections per account are leases in ``smtp_connection_leases``, which expire
so that a killed worker cannot hold a connection slot for ever.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, delete, func, insert, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bulkmail.shared.models import EmailAccount, SendSlot, SmtpConnectionLease
from bulkmail.shared.providers import AccountLimits

__all__ = [
    "AccountLimits",
    "ConnectionLease",
    "Reservation",
    "SendSlot",
    "SmtpConnectionLease",
    "acquire_connection",
    "day_window_frees_at",
    "describe_resume",
    "eta",
    "fair_share",
    "holder_process",
    "release_connection",
    "renew_connection",
    "reserve_send_slot",
    "schedule_after",
]

SessionFactory = async_sessionmaker[AsyncSession]

# History kept per account: a full day even without a daily limit, because a daily-quota reply
# pauses until the oldest send of the rolling 24 h turns 24 h old (replies.pause_until).
HISTORY = timedelta(hours=24)
# Old slots are deleted by one reservation in this many (they only cost space: queries skip them).
PRUNE_EVERY = 128
# Arbitrary first key of our advisory locks, so they never collide with another feature's.
_LOCK_NAMESPACE = 0x5E4D


async def _lock_account(session: AsyncSession, account_id: int) -> None:
    """Serialise this account's reservations until the transaction ends (PostgreSQL).

    On SQLite the callers' first statement writes, which takes the database's single write lock
    (waiting up to busy_timeout) before anything is read, with the same effect.
    """
    if session.get_bind().dialect.name == "postgresql":
        # synchronous_commit off: don't wait for the WAL flush, most of a reservation's time on a
        # real disk. A database crash can lose the last fraction of a second of reservations,
        # i.e. allow a few extra sends once; a rate limit can live with that.
        await session.execute(
            text("SELECT set_config('synchronous_commit', 'off', true), pg_advisory_xact_lock(:ns, :key)"),
            {"ns": _LOCK_NAMESPACE, "key": account_id % 2_147_483_647},
        )


def _organization_of(account_id: int) -> Any:
    """The account's organisation, read by the INSERT itself: the callers know only the account,
    and the statement stays one round trip."""
    return select(EmailAccount.organization_id).where(EmailAccount.id == account_id).scalar_subquery()


def _now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now


# ---------------------------------------------------------------------------------------------
# Send slots


@dataclass(frozen=True)
class Reservation:
    ok: bool
    wait: timedelta  # when not ok: how long until a slot frees up
    slot_id: int | None = None
    at: datetime | None = None


async def reserve_send_slot(
    session_factory: SessionFactory,
    account_id: int,
    limits: AccountLimits,
    now: datetime | None = None,
) -> Reservation:
    """Reserve the right to send one message now, or say how long to wait.

    A reservation counts even if the send then fails: providers count attempts too. The mailer
    reserves with a connection in hand, just before the transaction, so a server that cannot
    be reached uses no quota and no reservation ever needs giving back.
    """
    if limits.unlimited:
        return Reservation(True, timedelta(0))
    given = _now(now) if now is not None else None
    async with session_factory() as session, session.begin():
        await _lock_account(session, account_id)
        now = given or datetime.now(UTC)
        # Insert first, then check, and roll back when it does not fit: one statement fewer
        # than check-then-insert, and on SQLite the insert is what takes the write lock.
        slot_id = (
            await session.execute(
                insert(SendSlot)
                .values(email_account_id=account_id, organization_id=_organization_of(account_id), reserved_at=now)
                .returning(SendSlot.id)
            )
        ).scalar_one()
        wait = await _wait_for_slot(session, account_id, slot_id, limits, now)
        if wait > timedelta(0):
            await session.rollback()
            return Reservation(False, wait)
        if slot_id % PRUNE_EVERY == 0:
            await session.execute(
                delete(SendSlot).where(
                    SendSlot.email_account_id == account_id,
                    SendSlot.reserved_at <= now - max(HISTORY, limits.day),
                )
            )
    return Reservation(True, timedelta(0), slot_id=slot_id, at=now)


async def _wait_for_slot(
    session: AsyncSession, account_id: int, own_id: int, limits: AccountLimits, now: datetime
) -> timedelta:
    """How long until one more send fits, counting every other reservation (even newer-stamped ones)."""
    windows = limits.windows()
    columns: list[Any] = [func.max(SendSlot.reserved_at)]
    for _, length in windows:
        inside = SendSlot.reserved_at > now - length
        columns += [func.count().filter(inside), func.min(SendSlot.reserved_at).filter(inside)]
    row = (
        await session.execute(
            select(*columns).where(
                SendSlot.email_account_id == account_id,
                SendSlot.id != own_id,
                SendSlot.reserved_at > now - max([length for _, length in windows] + [limits.min_delay]),
            )
        )
    ).one()
    wait = timedelta(0)
    last = _aware(row[0])
    if last is not None and limits.min_delay > timedelta(0):
        wait = max(wait, last + limits.min_delay - now)
    for i, (limit, length) in enumerate(windows):
        count, oldest = row[1 + 2 * i], _aware(row[2 + 2 * i])
        if count >= limit and oldest is not None:
            # Full: the next slot opens when the oldest send in the window leaves it.
            wait = max(wait, oldest + length - now, timedelta(microseconds=1))
    return wait


def _aware(value: Any) -> datetime | None:
    # Aggregates bypass the UTCDateTime type: SQLite hands back text or naive datetimes.
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    moment: datetime = value
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def _history(session_factory: SessionFactory, account_id: int, since: datetime) -> list[datetime]:
    async with session_factory() as session:
        rows = await session.execute(
            select(SendSlot.reserved_at)
            .where(SendSlot.email_account_id == account_id, SendSlot.reserved_at > since)
            .order_by(SendSlot.reserved_at)
        )
        return [t for t in rows.scalars()]


async def day_window_frees_at(
    session_factory: SessionFactory, account_id: int, now: datetime | None = None, day: timedelta = HISTORY
) -> datetime | None:
    """When the oldest send of the rolling day turns a day old: a daily quota frees up then."""
    now = _now(now)
    async with session_factory() as session:
        value = (
            await session.execute(
                select(func.min(SendSlot.reserved_at)).where(
                    SendSlot.email_account_id == account_id, SendSlot.reserved_at > now - day
                )
            )
        ).scalar_one()
    oldest = _aware(value)
    return oldest + day if oldest is not None else None


async def eta(
    session_factory: SessionFactory,
    account_id: int,
    limits: AccountLimits,
    remaining: int,
    now: datetime | None = None,
) -> datetime:
    """When the last of ``remaining`` messages can go out, sending as fast as the limits allow.

    ``remaining=1`` gives when sending can resume ("resumes tomorrow at 09:12").
    """
    now = _now(now)
    if limits.unlimited or remaining <= 0:
        return now
    history = await _history(session_factory, account_id, now - max(HISTORY, limits.day))
    return schedule_after(history, limits, remaining, now)


def describe_resume(at: datetime, now: datetime, tz: str = "UTC") -> str:
    """The user's words for an ETA in their time zone: "resumes tomorrow at 09:12"."""
    zone = ZoneInfo(tz)
    local, today = at.astimezone(zone), now.astimezone(zone).date()
    if at <= now:
        return "sending now"
    days = (local.date() - today).days
    when = {0: "today", 1: "tomorrow"}.get(days, f"on {local:%a %d %b}")
    return f"resumes {when} at {local:%H:%M}"


def schedule_after(history: Sequence[datetime], limits: AccountLimits, remaining: int, now: datetime) -> datetime:
    """The time of the last of ``remaining`` sends, each placed as early as every limit allows.

    Greedy is exact here: a send at t fits a window (limit L, length W) when the L-th most recent
    send before it is at least W old, so each send goes at max(now, previous + min delay,
    L-th previous + W for every window).
    """
    times = list(history)
    windows = limits.windows()
    keep = max([limit for limit, _ in windows] + [1])
    t = now
    for _ in range(remaining):
        t = now
        if times:
            t = max(t, times[-1] + limits.min_delay)
        for limit, length in windows:
            if len(times) >= limit:
                t = max(t, times[-limit] + length)
        times.append(t)
        if len(times) > 2 * keep:
            del times[:-keep]  # only the last `keep` sends can still constrain the next one
    return t


# ---------------------------------------------------------------------------------------------
# Connection leases


@dataclass(frozen=True)
class ConnectionLease:
    account_id: int
    slot: int
    holder: str
    expires_at: datetime


# A process that found every slot taken leaves a row with a negative slot ("waiting") that lives
# this long; processes holding more than their fair share give connections back while it lives.
WAITING_TTL = timedelta(seconds=3)
# A connection slot not renewed for this long is free again: how long a crashed worker's
# connections keep counting against the account.
CONNECTION_LEASE_TTL = timedelta(minutes=2)


def holder_process(holder: str) -> str:
    """The process part of a holder name ("host:pid:n" → "host:pid")."""
    return holder.rsplit(":", 1)[0]


def _waiting_slot(process: str) -> int:
    return -1 - zlib.crc32(process.encode()) % 1_000_000


async def acquire_connection(
    session_factory: SessionFactory,
    account_id: int,
    max_connections: int | None,
    holder: str,
    *,
    ttl: timedelta = CONNECTION_LEASE_TTL,
    now: datetime | None = None,
) -> ConnectionLease | None:
    """Take one of the account's connection slots, or None when all are held.

    The holder renews its lease while the connection lives (:func:`renew_connection`); a lease
    that is not renewed expires, so a crashed worker's slot comes back after ``ttl``. A "no"
    leaves a waiting mark (see :func:`fair_share`) so other holders make room.
    """
    now = _now(now)
    if max_connections is None:
        return ConnectionLease(account_id, -1, holder, now + ttl)
    waiting = _waiting_slot(holder_process(holder))
    async with session_factory() as session, session.begin():
        await _lock_account(session, account_id)
        await session.execute(
            delete(SmtpConnectionLease).where(
                SmtpConnectionLease.email_account_id == account_id,
                or_(SmtpConnectionLease.expires_at <= now, SmtpConnectionLease.slot == waiting),
            )
        )
        held = set(
            (
                await session.execute(
                    select(SmtpConnectionLease.slot).where(
                        SmtpConnectionLease.email_account_id == account_id, SmtpConnectionLease.slot >= 0
                    )
                )
            ).scalars()
        )
        free = next((s for s in range(max_connections) if s not in held), None)
        if free is None:
            await session.execute(
                insert(SmtpConnectionLease).values(
                    email_account_id=account_id,
                    organization_id=_organization_of(account_id),
                    slot=waiting,
                    holder=holder,
                    expires_at=now + WAITING_TTL,
                )
            )
            return None
        await session.execute(
            insert(SmtpConnectionLease).values(
                email_account_id=account_id,
                organization_id=_organization_of(account_id),
                slot=free,
                holder=holder,
                expires_at=now + ttl,
            )
        )
    return ConnectionLease(account_id, free, holder, now + ttl)


async def fair_share(
    session_factory: SessionFactory, account_id: int, max_connections: int, process: str, *, now: datetime | None = None
) -> int | None:
    """How many connections ``process`` should hold at most, when another process is waiting for one.

    None when nobody else waits: then a process may hold as many as it can use. Otherwise the
    account's connections are split evenly between the processes holding or waiting for them
    (rounded up, so the split always adds up to at least ``max_connections``).
    """
    now = _now(now)
    async with session_factory() as session:
        rows = (
            await session.execute(
                select(SmtpConnectionLease.slot, SmtpConnectionLease.holder).where(
                    SmtpConnectionLease.email_account_id == account_id, SmtpConnectionLease.expires_at > now
                )
            )
        ).all()
    waiting = {holder_process(h) for slot, h in rows if slot < 0} - {process}
    if not waiting:
        return None
    sharing = waiting | {holder_process(h) for slot, h in rows if slot >= 0} | {process}
    return -(-max_connections // len(sharing))


async def renew_connection(
    session_factory: SessionFactory,
    lease: ConnectionLease,
    *,
    ttl: timedelta = CONNECTION_LEASE_TTL,
    now: datetime | None = None,
) -> ConnectionLease | None:
    """Extend a lease; None when it was lost (expired and taken): close that connection."""
    now = _now(now)
    if lease.slot < 0:
        return ConnectionLease(lease.account_id, lease.slot, lease.holder, now + ttl)
    async with session_factory() as session, session.begin():
        result = await session.execute(
            update(SmtpConnectionLease)
            .where(
                and_(
                    SmtpConnectionLease.email_account_id == lease.account_id,
                    SmtpConnectionLease.slot == lease.slot,
                    SmtpConnectionLease.holder == lease.holder,
                )
            )
            .values(expires_at=now + ttl)
        )
        if getattr(result, "rowcount", 0) != 1:
            return None
    return ConnectionLease(lease.account_id, lease.slot, lease.holder, now + ttl)


async def release_connection(session_factory: SessionFactory, lease: ConnectionLease) -> None:
    if lease.slot < 0:
        return
    async with session_factory() as session, session.begin():
        await session.execute(
            delete(SmtpConnectionLease).where(
                SmtpConnectionLease.email_account_id == lease.account_id,
                SmtpConnectionLease.slot == lease.slot,
                SmtpConnectionLease.holder == lease.holder,
            )
        )
