"""Account limits hold across worker processes and restarts, on PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from bulkmail.shared.db import Database
from bulkmail.shared.models import EmailAccount, Organization, SmtpConnectionLease
from bulkmail.shared.providers import AccountLimits
from bulkmail.shared.rate_limit import (
    WAITING_TTL,
    SendSlot,
    acquire_connection,
    day_window_frees_at,
    describe_resume,
    eta,
    fair_share,
    release_connection,
    renew_connection,
    reserve_send_slot,
    schedule_after,
)

T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


async def new_account(database: Database) -> int:
    async with database.session() as session:
        org = Organization(name=f"org-{uuid.uuid4().hex[:6]}")
        session.add(org)
        await session.flush()
        account = EmailAccount(organization_id=org.id, email="rep@example.test", smtp_host="smtp.example.test")
        session.add(account)
        await session.flush()
        return account.id


async def slot_times(database: Database, account_id: int) -> list[datetime]:
    async with database.session() as session:
        rows = await session.execute(
            select(SendSlot.reserved_at).where(SendSlot.email_account_id == account_id).order_by(SendSlot.reserved_at)
        )
        return list(rows.scalars())


async def test_unlimited_accounts_never_touch_the_database() -> None:
    def no_database() -> None:
        raise AssertionError("the database was used")

    started = time.perf_counter()
    for _ in range(10_000):
        r = await reserve_send_slot(no_database, 1, AccountLimits())  # type: ignore[arg-type]
        assert r.ok
    assert time.perf_counter() - started < 1.0


async def test_per_minute_limit_and_the_wait_until_a_slot_frees(database: Database) -> None:
    account = await new_account(database)
    limits = AccountLimits(per_minute=3)
    granted = [
        await reserve_send_slot(database.sessionmaker, account, limits, T0 + timedelta(seconds=s)) for s in (0, 10, 20)
    ]
    assert all(r.ok for r in granted)

    refused = await reserve_send_slot(database.sessionmaker, account, limits, T0 + timedelta(seconds=30))
    assert not refused.ok
    assert refused.wait == timedelta(seconds=30)  # the send at T0 leaves the window at T0+60s

    assert (await reserve_send_slot(database.sessionmaker, account, limits, T0 + timedelta(seconds=60))).ok


async def test_minimum_delay_between_messages(database: Database) -> None:
    account = await new_account(database)
    limits = AccountLimits(min_delay=timedelta(seconds=5))
    assert (await reserve_send_slot(database.sessionmaker, account, limits, T0)).ok
    too_soon = await reserve_send_slot(database.sessionmaker, account, limits, T0 + timedelta(seconds=2))
    assert not too_soon.ok and too_soon.wait == timedelta(seconds=3)
    assert (await reserve_send_slot(database.sessionmaker, account, limits, T0 + timedelta(seconds=5))).ok


async def test_rolling_day_limit_resumes_when_the_oldest_send_is_a_day_old(database: Database) -> None:
    account = await new_account(database)
    limits = AccountLimits(per_day=2, per_hour=10)
    assert (await reserve_send_slot(database.sessionmaker, account, limits, T0)).ok
    assert (await reserve_send_slot(database.sessionmaker, account, limits, T0 + timedelta(hours=3))).ok
    full = await reserve_send_slot(database.sessionmaker, account, limits, T0 + timedelta(hours=5))
    assert not full.ok and full.wait == timedelta(hours=19)

    assert await day_window_frees_at(database.sessionmaker, account, T0 + timedelta(hours=5)) == T0 + timedelta(days=1)
    # "Resumes tomorrow at 09:00", and 3 more messages take until the day after.
    resume = await eta(database.sessionmaker, account, limits, 1, T0 + timedelta(hours=5))
    assert resume == T0 + timedelta(days=1)
    assert await eta(database.sessionmaker, account, limits, 3, T0 + timedelta(hours=5)) == T0 + timedelta(days=2)


async def test_slots_and_leases_belong_to_the_accounts_organisation(database: Database) -> None:
    """Each organisation's rows say whose they are, though the callers name only the account."""
    accounts = [await new_account(database) for _ in range(2)]
    for account in accounts:
        assert (await reserve_send_slot(database.sessionmaker, account, AccountLimits(per_minute=1), T0)).ok
        assert await acquire_connection(database.sessionmaker, account, 1, "host:1:0", now=T0)
        assert await acquire_connection(database.sessionmaker, account, 1, "host:2:0", now=T0) is None  # waiting mark
    async with database.session() as session:
        owners = dict((await session.execute(select(EmailAccount.id, EmailAccount.organization_id))).all())
        slots = (
            await session.execute(
                select(SendSlot.email_account_id, SendSlot.organization_id).where(
                    SendSlot.email_account_id.in_(accounts)
                )
            )
        ).all()
        leases = (
            await session.execute(
                select(SmtpConnectionLease.email_account_id, SmtpConnectionLease.organization_id).where(
                    SmtpConnectionLease.email_account_id.in_(accounts)
                )
            )
        ).all()
    assert len({owners[a] for a in accounts}) == 2
    assert sorted(tuple(r) for r in slots) == sorted((a, owners[a]) for a in accounts)
    assert sorted(tuple(r) for r in leases) == sorted((a, owners[a]) for a in accounts for _ in range(2))


def test_resume_time_in_the_users_words() -> None:
    now = datetime(2026, 11, 28, 22, 0, tzinfo=UTC)
    assert describe_resume(now + timedelta(hours=11, minutes=12), now) == "resumes tomorrow at 09:12"
    assert describe_resume(now + timedelta(minutes=30), now) == "resumes today at 22:30"
    # In Berlin it is already 23:00, and 23:30 UTC is half past midnight: "tomorrow" there.
    assert describe_resume(now + timedelta(hours=1, minutes=30), now, "Europe/Berlin") == "resumes tomorrow at 00:30"
    assert describe_resume(now + timedelta(days=3), now) == "resumes on Tue 01 Dec at 22:00"
    assert describe_resume(now, now) == "sending now"


def test_schedule_honours_every_limit() -> None:
    limits = AccountLimits(per_minute=30, per_day=10_000, min_delay=timedelta(seconds=1))
    # 30 a minute, one a second at most: 60 messages need two full minutes less the last slot.
    assert schedule_after([], limits, 60, T0) == T0 + timedelta(seconds=89)
    assert schedule_after([], AccountLimits(per_day=500), 501, T0) == T0 + timedelta(days=1)
    assert schedule_after([], AccountLimits(), 10, T0) == T0


async def test_connection_leases_cap_concurrent_connections(database: Database) -> None:
    account = await new_account(database)
    factory = database.sessionmaker
    leases = [await acquire_connection(factory, account, 3, f"worker-{i}", now=T0) for i in range(3)]
    assert all(leases) and {lease.slot for lease in leases if lease} == {0, 1, 2}
    assert await acquire_connection(factory, account, 3, "worker-9", now=T0) is None

    first = leases[0]
    assert first is not None
    await release_connection(factory, first)
    assert await acquire_connection(factory, account, 3, "worker-9", now=T0) is not None

    # A worker that died stops renewing; its slot comes back when the lease expires.
    later = T0 + timedelta(minutes=3)
    assert await acquire_connection(factory, account, 3, "worker-10", now=later) is not None
    assert leases[1] is not None and await renew_connection(factory, leases[1], now=later) is None


async def test_a_waiting_process_gets_a_fair_share(database: Database) -> None:
    """A "no" leaves a waiting mark; holders then learn how many connections to keep."""
    account = await new_account(database)
    factory = database.sessionmaker
    for i in range(4):  # process A holds all four
        assert await acquire_connection(factory, account, 4, f"host:1:{i}", now=T0)
    assert await fair_share(factory, account, 4, "host:1", now=T0) is None  # nobody waits: keep them all

    assert await acquire_connection(factory, account, 4, "host:2:0", now=T0) is None  # process B is refused
    assert await fair_share(factory, account, 4, "host:1", now=T0) == 2  # A and B: two each
    assert await fair_share(factory, account, 4, "host:2", now=T0) is None  # B is the one waiting

    # The mark is short-lived: a process that stopped asking stops costing others connections.
    assert await fair_share(factory, account, 4, "host:1", now=T0 + WAITING_TTL) is None
    # Three processes sharing four connections: each may keep two (rounded up).
    assert await acquire_connection(factory, account, 4, "host:2:1", now=T0) is None
    assert await acquire_connection(factory, account, 4, "host:3:0", now=T0) is None
    assert await fair_share(factory, account, 4, "host:1", now=T0) == 2


# ---------------------------------------------------------------------------------------------
# Separate processes, killed and restarted mid-window

WORKER = """
import asyncio, sys, time
from datetime import timedelta
from bulkmail.shared.db import Database
from bulkmail.shared.providers import AccountLimits
from bulkmail.shared.rate_limit import reserve_send_slot
from bulkmail.shared.settings import Settings

async def main(url, account_id, per_window, window_s, min_delay_s):
    db = Database(Settings(database_url=url))
    await db.ping()
    limits = AccountLimits(per_minute=per_window, minute=timedelta(seconds=window_s),
                           min_delay=timedelta(seconds=min_delay_s))
    print("ready", flush=True)
    # Imports take seconds on a busy machine: start on the parent's word, for a given duration.
    run_for = float(await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline))
    stop_at = time.monotonic() + run_for
    while time.monotonic() < stop_at:
        r = await reserve_send_slot(db.sessionmaker, account_id, limits)
        if not r.ok:
            await asyncio.sleep(min(r.wait.total_seconds(), max(0.0, stop_at - time.monotonic())))
    await db.dispose()

a = sys.argv[1:]
asyncio.run(main(a[0], int(a[1]), int(a[2]), float(a[3]), float(a[4])))
"""

PER_WINDOW = 4
WINDOW = timedelta(seconds=1)
MIN_DELAY = timedelta(milliseconds=50)
Procs = list[asyncio.subprocess.Process]


async def start_workers(url: str, account: int, n: int) -> Procs:
    """n worker processes, imported, connected and waiting for :func:`go`."""
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            WORKER,
            url,
            str(account),
            str(PER_WINDOW),
            str(WINDOW.total_seconds()),
            str(MIN_DELAY.total_seconds()),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(n)
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), timeout=90)).strip() == b"ready"
    return procs


def go(procs: Procs, seconds: float) -> None:
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(f"{seconds}\n".encode())


def assert_limits_held(times: list[datetime]) -> None:
    for earlier, later in zip(times, times[PER_WINDOW:], strict=False):
        assert later - earlier >= WINDOW, f"{PER_WINDOW + 1} sends within {WINDOW}: {earlier} .. {later}"
    for earlier, later in itertools.pairwise(times):
        assert later - earlier >= MIN_DELAY


async def test_three_worker_processes_and_a_restart_never_exceed_the_limit(database: Database) -> None:
    account = await new_account(database)
    url = database.settings.database_url
    # The replacements are ready before the kill, so that they begin right after it, mid-window.
    first, second = await asyncio.gather(start_workers(url, account, 3), start_workers(url, account, 3))
    go(first, 60)
    await asyncio.sleep(2.5)  # two and a half windows
    for proc in first:
        proc.kill()  # our own children, by PID: kill -9 in the middle of whatever they were doing
    killed_at = datetime.now(UTC)
    go(second, 3.0)
    for proc in first:
        await proc.communicate()
    for proc in second:
        await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0

    times = await slot_times(database, account)
    assert_limits_held(times)
    before = [t for t in times if t < killed_at]
    after = [t for t in times if t >= killed_at]
    # The workers kept sending at the limit (about 4 a window), not merely respected it by stalling.
    # A loose bound: on a busy 2-core machine each reservation can take tens of milliseconds.
    assert len(before) > PER_WINDOW and len(after) > PER_WINDOW, (len(before), len(after))
    # The first sends after the restart waited for the window the killed workers had filled.
    assert after[0] - before[-PER_WINDOW] >= WINDOW
