"""A mailer whose pool has no connection open yet claims one connection's worth first, so the
first messages are recorded without waiting for every connection to open; then full batches."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from bulkmail.mailer.sender import CLAIM_PER_CONNECTION
from bulkmail.shared import ledger
from bulkmail.shared.broker.memory import MemoryBroker
from bulkmail.shared.db import Database
from bulkmail.shared.settings import Settings
from tests.conftest import Tenant
from tests.one_send import Send, one_send

WHO = [f"r{i}" for i in range(10)]
CONNECTIONS = 2


@pytest.fixture
async def send(settings: Settings, database: Database, broker: MemoryBroker, tenant: Tenant) -> AsyncIterator[Send]:
    async with one_send(settings, database, broker, tenant) as send:
        yield send


async def test_a_cold_pool_claims_one_connections_worth_first(send: Send, monkeypatch: pytest.MonkeyPatch) -> None:
    bulk_id = await send.create(*WHO, max_connections=CONNECTIONS)
    limits: list[int] = []
    claim = ledger.claim

    async def counted(session: Any, chunk: ledger.ChunkScope, limit: int, *args: Any, **kwargs: Any) -> ledger.Claim:
        limits.append(limit)
        return await claim(session, chunk, limit, *args, **kwargs)

    monkeypatch.setattr(ledger, "claim", counted)
    await send.send(bulk_id)
    full = CONNECTIONS * CLAIM_PER_CONNECTION
    assert limits == [CLAIM_PER_CONNECTION, full, full]  # 4 sent, then the other 6, then none left
    assert sorted(send.smtp.delivered) == sorted(send.address(who) for who in WHO)
