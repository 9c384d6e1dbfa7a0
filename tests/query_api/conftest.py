"""An API client per backend and organisations with their own API keys."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import httpx
import pytest

from bulkmail.query_api.app import create_app
from bulkmail.shared.broker.memory import MemoryBroker
from bulkmail.shared.db import Database
from bulkmail.shared.organizations import create_organization
from bulkmail.shared.settings import Settings


@dataclass
class Tenant:
    organization_id: int
    user_id: int
    api_key: str
    client: httpx.AsyncClient


@pytest.fixture(scope="session")
async def broker(settings: Settings) -> AsyncIterator[MemoryBroker]:
    b = MemoryBroker(settings.broker_namespace)
    yield b
    await b.close()


@pytest.fixture(scope="session")
def app(settings: Settings, database: Database, broker: MemoryBroker):
    return create_app(settings, database=database, broker=broker)


@pytest.fixture(scope="session")
async def make_tenant(app, database: Database) -> AsyncIterator[Callable[..., Awaitable[Tenant]]]:
    clients: list[httpx.AsyncClient] = []

    async def make(name: str = "Acme", **user: str) -> Tenant:
        async with database.session() as session:
            new = await create_organization(
                session, name, user_email=user.pop("email", f"{uuid.uuid4().hex[:8]}@{name.lower()}.example"), **user
            )
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://testserver",
            headers={"Authorization": f"Bearer {new.api_key}"},
            follow_redirects=True,
        )
        clients.append(client)
        return Tenant(new.organization_id, new.user_id, new.api_key, client)

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
async def tenant(make_tenant) -> Tenant:
    return await make_tenant("Acme", first_name="Jane", last_name="Doe")
