"""While PostgreSQL cannot be reached the API answers 503 with Retry-After, never a 500; a broken
query is still an ordinary error. The database here is a real one, or a port nothing listens on."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from bulkmail.query_api.app import create_app
from bulkmail.shared import metrics
from bulkmail.shared.broker.memory import MemoryBroker
from bulkmail.shared.db import Database, is_database_unavailable
from bulkmail.shared.settings import Settings
from tests.conftest import free_port


@pytest.fixture
def unreachable_settings(pg_settings: Settings) -> Settings:
    url = pg_settings.database_url.replace("127.0.0.1:5432", f"127.0.0.1:{free_port()}")
    assert url != pg_settings.database_url
    return pg_settings.model_copy(update={"database_url": url})


async def test_a_refused_connection_counts_as_unavailable_and_a_bad_query_does_not(
    pg_settings: Settings, unreachable_settings: Settings
) -> None:
    down = Database(unreachable_settings)
    up = Database(pg_settings)
    try:
        with pytest.raises(Exception) as refused:
            await down.ping()
        assert is_database_unavailable(refused.value)
        with pytest.raises(DBAPIError) as bad_query:
            async with up.session() as session:
                await session.execute(text("SELECT no_such_column FROM leads"))
        assert not is_database_unavailable(bad_query.value)
    finally:
        await down.dispose()
        await up.dispose()


async def test_the_api_answers_503_with_retry_after_while_the_database_is_unreachable(
    unreachable_settings: Settings,
) -> None:
    database = Database(unreachable_settings)
    broker = MemoryBroker("unavailable-test")
    app = create_app(unreachable_settings, database=database, broker=broker)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            leads = await client.get("/api/v1/lead/", headers={"Authorization": "Bearer bm_whatever"})
            assert leads.status_code == 503, leads.text
            assert int(leads.headers["Retry-After"]) > 0
            assert leads.json()["error"] == "Service unavailable"
            assert metrics.dependency_up("database") is False

            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert "database" in ready.json()
    finally:
        await database.dispose()
