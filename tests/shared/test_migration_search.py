"""Migration 0011_search on a database that already has leads: the primary email is back-filled."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text

from bulkmail.shared.migrate import upgrade
from tests.migration_db import downgrade, empty_database

# Leads 1-4 of one organisation, written as rows of revision 0007 (before the new columns):
# 1: two contacts, the first without email, the second's first address unsubscribed;
# 2: one contact, first address fine; 3: a contact without email; 4: no contacts.
ROWS = """
INSERT INTO organizations (id, name) VALUES (1, 'Old Co');
INSERT INTO leads (id, organization_id, name, description, url, search_text, num_email_addresses)
VALUES (1, 1, 'One', '', '', '', 2), (2, 1, 'Two', '', '', '', 2), (3, 1, 'Three', '', '', '', 0),
       (4, 1, 'Four', '', '', '', 0);
INSERT INTO contacts (id, organization_id, lead_id, position, name, title)
VALUES (10, 1, 1, 0, 'No Email', ''), (11, 1, 1, 1, 'Jane', ''), (12, 1, 2, 0, 'Bob', ''), (13, 1, 3, 0, 'X', '');
INSERT INTO contact_emails (id, organization_id, contact_id, lead_id, position, email, email_normalized, type,
                            is_unsubscribed)
VALUES (20, 1, 11, 1, 1, 'later@one.example', 'later@one.example', 'office', false),
       (21, 1, 11, 1, 0, 'Jane@One.example', 'jane@one.example', 'office', true),
       (22, 1, 12, 2, 0, 'bob@two.example', 'bob@two.example', 'office', false),
       (23, 1, 12, 2, 1, 'b2@two.example', 'b2@two.example', 'office', true);
"""


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
async def test_the_primary_email_is_back_filled_for_existing_leads(kind: str, tmp_path: Path):
    async with empty_database(kind, tmp_path) as (settings, database):
        await asyncio.to_thread(upgrade, settings, "0007")
        async with database.session() as session:
            for statement in ROWS.split(";"):
                if statement.strip():
                    await session.execute(text(statement))
        await asyncio.to_thread(upgrade, settings, "0011_search")
        async with database.session() as session:
            rows = (
                await session.execute(text("SELECT id, primary_email, has_sendable_email FROM leads ORDER BY id"))
            ).all()
        expected = [(1, "jane@one.example", False), (2, "bob@two.example", True), (3, None, False), (4, None, False)]
        assert [(r[0], r[1], bool(r[2])) for r in rows] == expected
        # Down and up again: the contacts survive, the columns come back filled.
        await asyncio.to_thread(downgrade, settings, "0007")
        await asyncio.to_thread(upgrade, settings, "0011_search")
        async with database.session() as session:
            again = (
                await session.execute(text("SELECT id, primary_email, has_sendable_email FROM leads ORDER BY id"))
            ).all()
            assert await session.scalar(text("SELECT count(*) FROM contact_emails")) == 4
        assert [(r[0], r[1], bool(r[2])) for r in again] == expected
