"""A pooled connection that sat unused is pinged before use; one in steady use is not.

SQLAlchemy's pre-ping pinged on every checkout, three round trips on asyncpg, half the cost of
an API request's first statement (shared/db.py, ``PING_WHEN_IDLE_S``).
"""

from __future__ import annotations

import pytest
from sqlalchemy import text

from bulkmail.shared import db
from bulkmail.shared.db import Database, is_database_unavailable


async def backend_pid(database: Database) -> int:
    async with database.session() as session:
        return int(await session.scalar(text("SELECT pg_backend_pid()")))


async def terminate(admin: Database, pid: int) -> None:
    async with admin.session() as session:
        await session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})


async def test_a_connection_that_died_while_idle_is_replaced_before_use(pg_settings, monkeypatch):
    database, admin = Database(pg_settings, pool_size=1, max_overflow=0), Database(pg_settings)
    try:
        first = await backend_pid(database)
        await terminate(admin, first)
        monkeypatch.setattr(db, "PING_WHEN_IDLE_S", 0.0)  # every checkout counts as idle
        second = await backend_pid(database)  # no error: the ping found it dead
        assert second != first
    finally:
        await database.dispose()
        await admin.dispose()


async def test_a_connection_in_steady_use_is_not_pinged_and_fails_once(pg_settings, monkeypatch):
    database, admin = Database(pg_settings, pool_size=1, max_overflow=0), Database(pg_settings)
    try:
        first = await backend_pid(database)
        await terminate(admin, first)
        monkeypatch.setattr(db, "PING_WHEN_IDLE_S", 3600.0)  # never idle long enough
        with pytest.raises(Exception) as failed:
            await backend_pid(database)
        assert is_database_unavailable(failed.value)  # the API answers it 503
        assert await backend_pid(database) != first  # and the pool replaced the connection
    finally:
        await database.dispose()
        await admin.dispose()
