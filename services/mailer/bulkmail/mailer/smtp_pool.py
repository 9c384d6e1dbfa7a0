"""Long-lived SMTP connections per email account, reused for many messages.

Reconnecting and logging in for every message is what trips providers' login limits (Gmail's
``454 4.7.0 Too many login attempts``), so each account keeps a few open connections. How many
an account may have open across *all* mailer processes is held by leases in the database
(``rate_limit.acquire_connection``): a connection is opened only with a lease, renews it while
in use, and gives it back when closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from itertools import count

import aiosmtplib

from bulkmail.shared.models import ConnectionSecurity
from bulkmail.shared.rate_limit import (
    ConnectionLease,
    SessionFactory,
    acquire_connection,
    fair_share,
    release_connection,
    renew_connection,
)

LEASE_RENEW_S = 30.0
# An idle connection is closed after this long, giving its lease back: otherwise one mailer's
# idle connections would keep another mailer from sending for the same account.
IDLE_CLOSE_S = 1.0
# After the account's leases were all taken, wait this long before asking the database again;
# meanwhile sends share the connections this process already has.
LEASE_RETRY_S = 1.0
# After giving a connection back to a waiting mailer, don't take it again for this long: longer
# than LEASE_RETRY_S, so the waiting mailer asks again in the meantime.
SHED_BACK_OFF_S = 2.5
_holder_ids = count()


class NoConnectionSlot(Exception):
    """Every connection the account allows is open in some mailer; try again shortly."""


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    security: ConnectionSecurity
    username: str = ""
    password: str = field(default="", repr=False)  # never printed
    timeout: float = 30.0
    validate_certs: bool = True


@dataclass
class _Connection:
    client: aiosmtplib.SMTP
    lease: ConnectionLease | None
    renewed_at: float
    idle_since: float = 0.0


class SmtpPool:
    def __init__(
        self,
        settings: SmtpSettings,
        size: int,
        *,
        account_id: int | None = None,
        session_factory: SessionFactory | None = None,
    ) -> None:
        self.settings = settings
        self.size = max(1, size)
        self._account_id = account_id
        self._session_factory = session_factory
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(self.size)
        self._open: list[_Connection] = []
        self._returned = asyncio.Condition()
        self._no_lease_until = 0.0
        self._connecting = False
        self._process = f"{socket.gethostname()}:{os.getpid()}"
        # Connections to give back when they are next returned: another mailer waits for one.
        self._shed = 0

    @property
    def open_connections(self) -> int:
        return len(self._open)

    async def _connect(self) -> _Connection:
        lease = None
        if self._session_factory is not None and self._account_id is not None:
            holder = f"{self._process}:{next(_holder_ids)}"
            lease = await acquire_connection(self._session_factory, self._account_id, self.size, holder)
            if lease is None:
                raise NoConnectionSlot(f"all {self.size} connections of the account are in use")
        s = self.settings
        client = aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            timeout=s.timeout,
            use_tls=s.security == ConnectionSecurity.tls,
            start_tls=s.security == ConnectionSecurity.starttls,
            validate_certs=s.validate_certs,
        )
        try:
            await client.connect()
            if s.username:
                await client.login(s.username, s.password)
        except BaseException:
            client.close()
            await self._release(lease)
            raise
        conn = _Connection(client, lease, time.monotonic())
        self._open.append(conn)
        return conn

    async def _keep_lease(self, conn: _Connection) -> bool:
        if conn.lease is None or self._session_factory is None or time.monotonic() - conn.renewed_at < LEASE_RENEW_S:
            return True
        renewed = await renew_connection(self._session_factory, conn.lease)
        if renewed is None:
            return False
        conn.lease, conn.renewed_at = renewed, time.monotonic()
        return True

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[aiosmtplib.SMTP]:
        """A connected client; if it is no longer connected afterwards it is dropped, not reused."""
        async with self._slots:
            conn = self._idle.pop() if self._idle else None
            if conn is not None and (not conn.client.is_connected or not await self._keep_lease(conn)):
                await self._drop(conn)
                conn = None
            if conn is None:
                conn = await self._new_or_returned()
            try:
                yield conn.client
            finally:
                if self._shed > 0 and conn.client.is_connected:
                    self._shed -= 1
                    # Give the lease back and leave it to the waiting mailer for a while.
                    self._no_lease_until = time.monotonic() + SHED_BACK_OFF_S
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.client.quit(), timeout=5)
                    await self._drop(conn)
                elif conn.client.is_connected:
                    conn.idle_since = time.monotonic()
                    self._idle.append(conn)
                    async with self._returned:
                        self._returned.notify()
                else:
                    await self._drop(conn)

    async def _new_or_returned(self) -> _Connection:
        """A new connection if the account has a free lease, else the next one this process frees.

        One task at a time asks the database for a lease, and after a "no" nobody asks again for
        LEASE_RETRY_S: when many sends arrive together and other mailers hold the account's
        leases, they would otherwise all queue on the account's lock in the database, each
        holding a database connection, to hear "no".
        """
        while True:
            async with self._returned:
                while not self._idle and not self._may_connect():
                    if not self._open and not self._connecting:
                        raise NoConnectionSlot(f"all {self.size} connections of the account are in use")
                    await self._returned.wait()
                if self._idle:
                    return self._idle.pop()
                self._connecting = True
            try:
                return await self._connect()
            except NoConnectionSlot:
                self._no_lease_until = time.monotonic() + LEASE_RETRY_S
                if not self._open:
                    raise  # every connection is held by other mailers
            finally:
                self._connecting = False
                async with self._returned:
                    self._returned.notify_all()

    def _may_connect(self) -> bool:
        return not self._connecting and len(self._open) < self.size and time.monotonic() >= self._no_lease_until

    async def rebalance(self) -> None:
        """Give connections back while another mailer waits and this one holds more than its share.

        One at a time per call (the worker calls this twice a second), so the split settles
        over a few seconds without closing more than needed.
        """
        if self._session_factory is None or self._account_id is None or not self._open:
            return
        share = await fair_share(self._session_factory, self._account_id, self.size, self._process)
        if share is None:
            self._shed = 0
            return
        keep = len(self._open) - self._shed
        if keep > share:
            self._shed += 1

    async def close_idle(self, older_than: float = IDLE_CLOSE_S) -> None:
        """Close connections nobody has used for a while (and give their leases back)."""
        now = time.monotonic()
        stale = [c for c in self._idle if now - c.idle_since >= older_than]
        for conn in stale:
            self._idle.remove(conn)
            if conn.client.is_connected:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.client.quit(), timeout=5)
            await self._drop(conn)

    async def _drop(self, conn: _Connection) -> None:
        if conn in self._open:
            self._open.remove(conn)
        conn.client.close()
        await self._release(conn.lease)
        async with self._returned:  # a waiter may now open one, or learn there is none
            self._returned.notify_all()

    async def _release(self, lease: ConnectionLease | None) -> None:
        if lease is not None and self._session_factory is not None:
            with contextlib.suppress(Exception):  # an unreleased lease expires by itself
                await release_connection(self._session_factory, lease)

    async def close(self) -> None:
        conns, self._open, self._idle = list(self._open), [], []
        for conn in conns:
            if conn.client.is_connected:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.client.quit(), timeout=5)
            conn.client.close()
            await self._release(conn.lease)
