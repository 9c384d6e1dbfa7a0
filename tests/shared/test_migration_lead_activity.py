"""Migration 0018_lead_activity on a database with leads: each lead's send-changed counters move to
its own lead_activity row (indexed on the activities sum), leads loses the columns, and the way
back puts them back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from bulkmail.shared.migrate import upgrade
from tests.migration_db import downgrade, empty_database

# Leads as 0017_org_ids had them: the counters on the lead.
ROWS = """
INSERT INTO organizations (id, name) VALUES (1, 'One'), (2, 'Two');
INSERT INTO leads (id, organization_id, name, description, url, search_text, num_emails, num_calls, last_emailed_at)
VALUES (1, 1, 'Mailed', '', '', '', 3, 1, '2026-11-30 10:00:00+00'),
       (2, 1, 'Quiet', '', '', '', 0, 0, NULL),
       (3, 2, 'Called', '', '', '', 0, 2, NULL);
"""
ACTIVITY = "SELECT lead_id, organization_id, num_emails, num_calls, last_emailed_at IS NOT NULL FROM lead_activity"
COUNTERS = {"num_emails", "num_calls", "last_emailed_at"}
INDEX = "ix_lead_activity_search_activities"


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
async def test_the_counters_move_to_lead_activity_and_back(kind: str, tmp_path: Path) -> None:

    async def columns_of_leads() -> set[str]:
        async with database.engine.connect() as conn:
            return set(await conn.run_sync(lambda c: [col["name"] for col in inspect(c).get_columns("leads")]))

    async with empty_database(kind, tmp_path) as (settings, database):
        await asyncio.to_thread(upgrade, settings, "0017_org_ids")
        async with database.session() as session:
            for statement in ROWS.split(";"):
                if statement.strip():
                    await session.execute(text(statement))
        await asyncio.to_thread(upgrade, settings, "0018_lead_activity")
        async with database.session() as session:
            rows = (await session.execute(text(ACTIVITY + " ORDER BY lead_id"))).all()
            catalogue = "pg_indexes WHERE indexname" if kind == "postgres" else "sqlite_master WHERE name"
            indexes = (await session.execute(text(f"SELECT count(*) FROM {catalogue} = '{INDEX}'"))).scalar_one()
        assert [tuple(r) for r in rows] == [(1, 1, 3, 1, True), (2, 1, 0, 0, False), (3, 2, 0, 2, False)]
        assert indexes == 1
        assert not COUNTERS & await columns_of_leads()
        # A lead deleted takes its row with it.
        async with database.session() as session:
            await session.execute(text("DELETE FROM leads WHERE id = 3"))
            assert (await session.execute(text("SELECT count(*) FROM lead_activity"))).scalar_one() == 2
        # Down again: the counters are back on the leads.
        await asyncio.to_thread(downgrade, settings, "0017_org_ids")
        assert await columns_of_leads() >= COUNTERS
        async with database.session() as session:
            back = (
                await session.execute(
                    text("SELECT id, num_emails, num_calls, last_emailed_at IS NOT NULL FROM leads ORDER BY id")
                )
            ).all()
        assert [tuple(r) for r in back] == [(1, 3, 1, True), (2, 0, 0, False)]


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
async def test_the_last_emailed_order_index_comes_and_goes(kind: str, tmp_path: Path) -> None:
    name = "ix_lead_activity_search_last_emailed"
    catalogue = "pg_indexes WHERE indexname" if kind == "postgres" else "sqlite_master WHERE name"

    async def present() -> int:
        async with database.session() as session:
            return int((await session.execute(text(f"SELECT count(*) FROM {catalogue} = '{name}'"))).scalar_one())

    async with empty_database(kind, tmp_path) as (settings, database):
        await asyncio.to_thread(upgrade, settings, "0020_last_emailed_order")
        assert await present() == 1
        await asyncio.to_thread(downgrade, settings, "0019_custom_value_words")
        assert await present() == 0
