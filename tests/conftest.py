"""Test fixtures on real servers.

PostgreSQL and RabbitMQ are required: when they cannot be reached the tests fail, they never
skip. Each test session gets its own PostgreSQL database and its own broker namespace, so
parallel runs (and developers' own data) never collide.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from bulkmail.query_api.app import create_app
from bulkmail.shared.broker.memory import MemoryBroker
from bulkmail.shared.db import Database
from bulkmail.shared.migrate import upgrade
from bulkmail.shared.organizations import create_organization
from bulkmail.shared.settings import Settings

PG_ADMIN_URL = os.environ.get("BULKMAIL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_URL = os.environ.get("BULKMAIL_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
FERNET_TEST_KEY = "u3Vq0fK9xU1M2a6bq8d6u0xk7zH2r3s4t5v6w7x8y9A="


def _pg_url_for(dbname: str) -> str:
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base.replace('postgresql://', 'postgresql+asyncpg://', 1)}/{dbname}"


async def _create_pg_database() -> str:
    name = f"bulkmail_test_{uuid.uuid4().hex[:10]}"
    try:
        conn = await asyncpg.connect(PG_ADMIN_URL, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"PostgreSQL is required for the tests and is not reachable at {PG_ADMIN_URL}: {exc}")
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def _drop_pg_database(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_URL, timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def secret_key() -> str:
    return FERNET_TEST_KEY


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session."""
    name = asyncio.run(_create_pg_database())
    url = _pg_url_for(name)
    upgrade(Settings(database_url=url, secret_key=FERNET_TEST_KEY))
    yield url
    asyncio.run(_drop_pg_database(name))


@pytest.fixture(scope="session")
def sqlite_database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("sqlite") / "bulkmail.db"
    url = f"sqlite+aiosqlite:///{path}"
    upgrade(Settings(database_url=url, secret_key=FERNET_TEST_KEY))
    return url


@pytest.fixture(scope="session")
def amqp_url() -> str:
    return AMQP_URL


@pytest.fixture(scope="session", params=["postgres", "sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    """Parametrises a test over both database backends."""
    return str(request.param)


@pytest.fixture(scope="session")
def settings_for(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> object:
    """settings_for(backend) → Settings on that backend, the broker in memory."""

    def make(backend: str, **overrides: object) -> Settings:
        url = request.getfixturevalue("pg_database_url" if backend == "postgres" else "sqlite_database_url")
        values: dict[str, object] = {
            "database_url": url,
            "secret_key": FERNET_TEST_KEY,
            "amqp_url": "memory://",
            "broker_namespace": f"bulkmail-test-{uuid.uuid4().hex[:8]}",
            "data_dir": tmp_path_factory.mktemp("data"),
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return make


@pytest.fixture(scope="session")
def pg_settings(settings_for: object) -> Settings:
    return settings_for("postgres")  # type: ignore[operator,no-any-return]


@pytest.fixture(scope="session")
def sqlite_settings(settings_for: object) -> Settings:
    return settings_for("sqlite")  # type: ignore[operator,no-any-return]


@pytest.fixture(scope="session")
def settings(backend: str, settings_for: object) -> Settings:
    return settings_for(backend)  # type: ignore[operator,no-any-return]


@pytest.fixture(scope="session")
async def database(settings: Settings) -> AsyncIterator[Database]:
    db = Database(settings)
    yield db
    await db.dispose()


# --- the API and organisations with their own keys -----------------------------------------


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
