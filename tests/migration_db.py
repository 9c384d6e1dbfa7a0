"""A fresh, empty database for a migration test, on either backend, dropped afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from alembic import command

from bulkmail.shared.db import Database
from bulkmail.shared.migrate import alembic_config
from bulkmail.shared.settings import Settings
from tests.conftest import FERNET_TEST_KEY, _create_pg_database, _drop_pg_database, _pg_url_for


@asynccontextmanager
async def empty_database(kind: str, tmp_path: Path) -> AsyncIterator[tuple[Settings, Database]]:
    """``kind`` "postgres" (a database of its own) or "sqlite" (a file under ``tmp_path``), no schema yet."""
    name = await _create_pg_database() if kind == "postgres" else ""
    url = _pg_url_for(name) if name else f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    settings = Settings(database_url=url, secret_key=FERNET_TEST_KEY)
    database = Database(settings)
    try:
        yield settings, database
    finally:
        await database.dispose()
        if name:
            await _drop_pg_database(name)


def downgrade(settings: Settings, revision: str) -> None:
    command.downgrade(alembic_config(settings.database_url), revision)
