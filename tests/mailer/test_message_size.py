"""The mailer refuses to hand SMTP a message over the configured size, and says why."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bulkmail.shared.broker.memory import MemoryBroker
from bulkmail.shared.db import Database
from bulkmail.shared.settings import Settings
from tests.conftest import Tenant
from tests.one_send import Send, one_send


@pytest.fixture
async def small_limit(
    settings: Settings, database: Database, broker: MemoryBroker, tenant: Tenant
) -> AsyncIterator[Send]:
    async with one_send(settings.model_copy(update={"max_message_bytes": 20_000}), database, broker, tenant) as send:
        yield send


async def test_a_message_over_the_size_limit_fails_with_the_reason(small_limit: Send) -> None:
    send = small_limit
    small = await send.create("small")
    await send.send(small)
    assert send.smtp.delivered == [send.address("small")]

    big = await send.create("big", body="<p>" + "all work and no play " * 2_000 + "</p>")
    await send.send(big)
    assert send.smtp.delivered == [send.address("small")]  # nothing more went out
    [recipient] = (await send.tenant.client.get(f"/api/v1/bulk_action/email/{big}/recipients/")).json()["data"]
    assert recipient["state"] == "failed"
    assert recipient["smtp_reply"].startswith("message too large: ")
    assert "over the limit of 20,000 (BULKMAIL_MAX_MESSAGE_BYTES)" in recipient["smtp_reply"]
