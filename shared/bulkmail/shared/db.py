"""Database engine and sessions, the same code for PostgreSQL (asyncpg) and SQLite (aiosqlite).

Sessions are opened by the boundary (one per HTTP request, one per broker message), which
commits; services below it only flush.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, any_, bindparam, event
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import InstrumentedAttribute

from bulkmail.shared.settings import Settings


def create_engine(settings: Settings, **kwargs: Any) -> AsyncEngine:
    url = settings.database_url
    if settings.is_sqlite:
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 10)
    # asyncpg waits 60 s for a connection by default: a server that swallows packets (a cut
    # network) would hold every request and probe that long.
    kwargs.setdefault("connect_args", {"timeout": CONNECT_TIMEOUT_S})
    ping_when_idle = kwargs.pop("pool_pre_ping", None) is None
    engine = create_async_engine(url, **kwargs)
    if ping_when_idle:
        event.listen(engine.sync_engine.pool, "connect", _note_returned)
        event.listen(engine.sync_engine.pool, "checkin", _note_returned)
        event.listen(engine.sync_engine.pool, "checkout", _ping_if_idle)
    return engine


# A pooled connection that sat unused this long is pinged before it is handed out, so a restarted
# server costs no request an error. SQLAlchemy's own pre-ping does so on every checkout, and on
# asyncpg a ping is three round trips (BEGIN, an empty statement, ROLLBACK): for the API under
# load half the cost of a request's first statement (docs/operations.md, "API performance"). A
# connection in steady use is not pinged; one that died within the last second fails its
# request with a 503, and the pool then replaces every connection made before the failure.
PING_WHEN_IDLE_S = 1.0


def _note_returned(_dbapi_connection: Any, record: Any, *_args: Any) -> None:
    record.info["returned_at"] = time.monotonic()


def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    if time.monotonic() - record.info.get("returned_at", 0.0) < PING_WHEN_IDLE_S:
        return
    try:
        dbapi_connection.ping()
    except Exception as exc:
        raise DisconnectionError("the pooled connection did not answer a ping") from exc


CONNECT_TIMEOUT_S = 10.0
# SQLSTATEs that mean "the server or the connection is gone (for now)", not "the statement is
# wrong": 08 connection exception; 57P01-57P03 shutdown by an administrator, crash shutdown,
# "the database system is starting up"; 53300 too many connections (every slot taken).
_UNAVAILABLE_SQLSTATES = ("08", "57P", "53300")


def is_database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the database cannot be reached right now.

    Such a failure says nothing about the work itself: the caller waits and tries again
    rather than reporting the work as failed.
    """
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        e = pending.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, DBAPIError) and e.connection_invalidated:
            return True
        # Refused, reset, unreachable, timed out: every socket failure is an OSError.
        if isinstance(e, OSError | TimeoutError):
            return True
        sqlstate = getattr(e, "sqlstate", None) or getattr(e, "pgcode", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_UNAVAILABLE_SQLSTATES):
            return True
        if type(e).__name__ == "InterfaceError" and "connection is closed" in str(e):
            return True
        pending += [getattr(e, "orig", None), e.__cause__, e.__context__]
    return False


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API read while the mailer writes; foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


PING_TIMEOUT_S = 3.0


class Database:
    """Owns the engine and hands out sessions; one per process."""

    def __init__(self, settings: Settings, **engine_kwargs: Any) -> None:
        self.settings = settings
        self.engine = create_engine(settings, **engine_kwargs)
        self.sessionmaker = create_sessionmaker(self.engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session whose transaction commits when the block ends without error."""
        async with self.sessionmaker() as session, session.begin():
            yield session

    async def ping(self, timeout: float = PING_TIMEOUT_S) -> None:
        """One round trip to the server; raises if it cannot be made within ``timeout``."""
        from sqlalchemy import text

        async def round_trip() -> None:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))

        await asyncio.wait_for(round_trip(), timeout)

    async def dispose(self) -> None:
        await self.engine.dispose()


def among(column: InstrumentedAttribute[Any], values: Sequence[Any], postgresql: bool) -> ColumnElement[bool]:
    """``column IN values``; on PostgreSQL ``= ANY(array)``: one parameter instead of hundreds,
    so a batch is neither rendered, prepared nor planned as a list of that many items (and the
    statement is the same whatever the batch's size)."""
    if not postgresql:
        return column.in_(values)
    return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
