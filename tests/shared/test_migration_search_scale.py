"""Migration 0016_search_scale, down and up again on both backends: the snapshot's foreign key
goes (a trigger takes over its cascade) and comes back on a downgrade."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from bulkmail.shared.db import Database
from bulkmail.shared.migrate import upgrade
from bulkmail.shared.models import BulkEmail, EmailAccount, EmailTemplate, Organization
from tests.migration_db import downgrade, empty_database

SNAPSHOT = "INSERT INTO bulk_email_leads (bulk_email_id, lead_id) VALUES (7, 1), (7, 2), (8, 1)"


async def _bulk_emails(database: Database) -> None:
    """Bulk emails 7 and 8 of one organisation (through the models: every column's default)."""
    async with database.session() as session:
        org = Organization(name="Old Co")
        session.add(org)
        await session.flush()
        template = EmailTemplate(organization_id=org.id, name="Intro")
        account = EmailAccount(organization_id=org.id, email="a@old.example", smtp_host="h")
        session.add_all([template, account])
        await session.flush()
        session.add_all(
            BulkEmail(id=i, organization_id=org.id, template_id=template.id, email_account_id=account.id)
            for i in (7, 8)
        )


async def _execute(database: Database, sql: str) -> None:
    async with database.session() as session:
        for statement in sql.split(";"):
            if statement.strip():
                await session.execute(text(statement))


async def _snapshot(database: Database) -> list[tuple[int, int]]:
    async with database.session() as session:
        rows = await session.execute(text("SELECT bulk_email_id, lead_id FROM bulk_email_leads ORDER BY 1, 2"))
        return [(int(a), int(b)) for a, b in rows]


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
async def test_the_snapshot_key_becomes_a_trigger_and_back(kind: str, tmp_path: Path):
    async with empty_database(kind, tmp_path) as (settings, database):
        await asyncio.to_thread(upgrade, settings, "0009_ledger")
        await _bulk_emails(database)
        await _execute(database, SNAPSHOT)
        await asyncio.to_thread(upgrade, settings, "0016_search_scale")
        assert await _snapshot(database) == [(7, 1), (7, 2), (8, 1)]
        # No key any more: a snapshot row is written without a check ...
        await _execute(database, "INSERT INTO bulk_email_leads (bulk_email_id, lead_id) VALUES (99, 1)")
        # ... and a bulk email deleted takes its snapshot along.
        await _execute(database, "DELETE FROM bulk_emails WHERE id = 7")
        assert await _snapshot(database) == [(8, 1), (99, 1)]
        # Down: the key is back (rows of missing bulk emails dropped first), and holds.
        await asyncio.to_thread(downgrade, settings, "0009_ledger")
        assert await _snapshot(database) == [(8, 1)]
        with pytest.raises(IntegrityError):
            await _execute(database, "INSERT INTO bulk_email_leads (bulk_email_id, lead_id) VALUES (99, 2)")
        await asyncio.to_thread(upgrade, settings, "0016_search_scale")
        await _execute(database, "DELETE FROM bulk_emails WHERE id = 8")
        assert await _snapshot(database) == []
