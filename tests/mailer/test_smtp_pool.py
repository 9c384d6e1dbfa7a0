"""The SMTP pool shares an account's connection leases with other mailers without flooding the database.

Real PostgreSQL (the leases) and a real SMTP server (Postfix smtp-sink).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest

from bulkmail.mailer import smtp_pool
from bulkmail.mailer.replies import Kind
from bulkmail.mailer.smtp_pool import NoConnectionSlot, SmtpPool, SmtpSettings
from bulkmail.mailer.smtp_transaction import send_one
from bulkmail.shared.db import Database
from bulkmail.shared.models import ConnectionSecurity, EmailAccount
from bulkmail.shared.organizations import create_organization
from bulkmail.shared.rate_limit import acquire_connection

if TYPE_CHECKING:
    from tests.mail_servers import SmtpSink

pytest_plugins = ["tests.mail_servers"]

MESSAGE = b"Subject: pool\r\nMessage-ID: <p@pool.example>\r\n\r\nhello\r\n"


@pytest.fixture
async def pg(pg_settings: Any) -> Any:
    database = Database(pg_settings)
    yield database
    await database.dispose()


async def _account(database: Database, port: int) -> int:
    async with database.session() as session:
        org = await create_organization(session, f"Pool {uuid.uuid4().hex[:6]}", user_email="o@pool.example")
        account = EmailAccount(
            organization_id=org.organization_id, email="me@pool.example", smtp_host="127.0.0.1", smtp_port=port
        )
        session.add(account)
        await session.flush()
        return account.id


async def _pool_beside_another_mailer(pg: Database, sink: SmtpSink, *, size: int, theirs: int) -> SmtpPool:
    """A pool for a new account of ``size`` connections, ``theirs`` of them leased by another mailer."""
    account_id = await _account(pg, sink.port)
    for slot in range(theirs):
        assert await acquire_connection(pg.sessionmaker, account_id, size, f"other:{slot}", ttl=timedelta(minutes=5))
    settings = SmtpSettings("127.0.0.1", sink.port, ConnectionSecurity.none)
    return SmtpPool(settings, size, account_id=account_id, session_factory=pg.sessionmaker)


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the pool's lease requests; each still goes to the database."""
    calls: list[int] = []

    async def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return await acquire_connection(*args, **kwargs)

    monkeypatch.setattr(smtp_pool, "acquire_connection", counted)
    return calls


async def test_all_leases_held_elsewhere_asks_the_database_once(
    pg: Database, smtp_sink: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = await _pool_beside_another_mailer(pg, smtp_sink(), size=3, theirs=3)  # it holds every connection
    calls = _counting(monkeypatch)

    async def attempt() -> str:
        try:
            async with pool.connection():
                return "connected"
        except NoConnectionSlot:
            return "no slot"

    results = await asyncio.gather(*(attempt() for _ in range(20)))
    await pool.close()
    assert results == ["no slot"] * 20
    assert len(calls) == 1  # not one lease request per waiting send


async def test_sends_share_the_leases_this_process_got(
    pg: Database, smtp_sink: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = await _pool_beside_another_mailer(pg, smtp_sink(), size=3, theirs=2)  # two of three are its
    calls = _counting(monkeypatch)

    async def send(i: int) -> Kind:
        async with pool.connection() as smtp:
            return (await send_one(smtp, "me@pool.example", f"r{i}@pool.example", MESSAGE)).kind

    kinds = await asyncio.gather(*(send(i) for i in range(30)))
    opened = len(pool._open)
    await pool.close()
    assert kinds == [Kind.sent] * 30
    assert opened == 1  # the one free lease; the others were never ours
    assert len(calls) <= 2  # the lease it got, and at most one "no" before the back-off


async def test_a_pool_gives_connections_back_to_a_waiting_mailer(pg: Database, smtp_sink: Any) -> None:
    """Two mailers, one account of two connections: the one holding both hands one over."""
    sink: SmtpSink = smtp_sink()
    account_id = await _account(pg, sink.port)
    settings = SmtpSettings("127.0.0.1", sink.port, ConnectionSecurity.none)
    first = SmtpPool(settings, 2, account_id=account_id, session_factory=pg.sessionmaker)
    second = SmtpPool(settings, 2, account_id=account_id, session_factory=pg.sessionmaker)
    second._process = "elsewhere:2"  # another mailer process
    try:

        async def send(pool: SmtpPool, i: int) -> Kind:
            async with pool.connection() as smtp:
                return (await send_one(smtp, "me@pool.example", f"r{i}@pool.example", MESSAGE)).kind

        first._idle.extend([await first._connect(), await first._connect()])  # it holds both
        with pytest.raises(NoConnectionSlot):
            await send(second, 0)

        await first.rebalance()  # sees the waiting mailer: keeps one of two
        assert await send(first, 1) is Kind.sent  # that connection is given back when returned
        assert len(first._open) == 1
        second._no_lease_until = 0.0  # its next attempt, without waiting for the back-off
        assert await send(second, 2) is Kind.sent
        assert len(second._open) == 1
        await first.rebalance()  # nobody waits now
        assert first._shed == 0
    finally:
        await first.close()
        await second.close()
