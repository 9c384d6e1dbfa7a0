"""A request holds one pooled connection, never two, even when its API key's stamp is stale.

The request that found ``api_keys.last_used_at`` due a refresh used to write it on a second
connection while still holding its own. A burst of requests that all found the stamp stale then
held every connection of the pool, each waiting for another, and the API stood still until the
pool's timeout (docs/operations.md, "API performance").
"""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import select, update

from bulkmail.query_api.app import create_app
from bulkmail.shared.broker.memory import MemoryBroker
from bulkmail.shared.db import Database
from bulkmail.shared.models import ApiKey
from bulkmail.shared.organizations import create_organization

POOL = 2


async def test_a_burst_with_a_stale_key_is_answered_on_a_small_pool(pg_settings):
    # A pool of two connections that gives up after 3 s: a request taking a second connection
    # while holding its first starves it at once.
    database = Database(pg_settings, pool_size=POOL, max_overflow=0, pool_timeout=3)
    broker = MemoryBroker(pg_settings.broker_namespace)
    app = create_app(pg_settings, database=database, broker=broker)
    try:
        async with database.session() as session:
            org = await create_organization(session, "Burst", user_email="burst@burst.example")
        async with database.session() as session:
            await session.execute(
                update(ApiKey).where(ApiKey.organization_id == org.organization_id).values(last_used_at=None)
            )
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://testserver",
            headers={"Authorization": f"Bearer {org.api_key}"},
        ) as client:
            answers = await asyncio.wait_for(
                asyncio.gather(*(client.get("/api/v1/lead/", params={"query": "*"}) for _ in range(4 * POOL))),
                timeout=60,
            )
        assert [a.status_code for a in answers] == [200] * (4 * POOL), answers[0].text

        # The stamp is still written, once, by the process in the background.
        await app.state.key_use.drain()
        async with database.session() as session:
            stamps = (
                await session.scalars(select(ApiKey.last_used_at).where(ApiKey.organization_id == org.organization_id))
            ).all()
        assert stamps and all(stamp is not None for stamp in stamps)
    finally:
        await database.dispose()
