"""Long-lived SMTP connections per email account, reused for many messages.

Reconnecting and logging in for every message is what trips providers' login limits (Gmail's
``454 4.7.0 Too many login attempts``), so each account keeps a few open connections.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiosmtplib

from bulkmail.shared.models import ConnectionSecurity


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    security: ConnectionSecurity
    username: str = ""
    password: str = ""
    timeout: float = 30.0
    validate_certs: bool = True

    def __repr__(self) -> str:  # never print the password
        return f"SmtpSettings(host={self.host!r}, port={self.port}, security={self.security.value})"


class SmtpPool:
    def __init__(self, settings: SmtpSettings, size: int) -> None:
        self.settings = settings
        self.size = max(1, size)
        self._idle: list[aiosmtplib.SMTP] = []
        self._slots = asyncio.Semaphore(self.size)
        self._all: set[aiosmtplib.SMTP] = set()

    async def _connect(self) -> aiosmtplib.SMTP:
        s = self.settings
        client = aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            timeout=s.timeout,
            use_tls=s.security == ConnectionSecurity.tls,
            start_tls=s.security == ConnectionSecurity.starttls,
            validate_certs=s.validate_certs,
        )
        await client.connect()
        if s.username:
            await client.login(s.username, s.password)
        self._all.add(client)
        return client

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[aiosmtplib.SMTP]:
        """A connected client; if it is no longer connected afterwards it is dropped, not reused."""
        async with self._slots:
            client = self._idle.pop() if self._idle else None
            if client is None or not client.is_connected:
                if client is not None:
                    self._all.discard(client)
                client = await self._connect()
            try:
                yield client
            finally:
                if client.is_connected:
                    self._idle.append(client)
                else:
                    self._all.discard(client)

    async def close(self) -> None:
        clients, self._all, self._idle = list(self._all), set(), []
        for client in clients:
            if client.is_connected:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.quit(), timeout=5)
            client.close()
