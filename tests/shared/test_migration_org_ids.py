"""Migration 0017_org_ids on a database with send history: each slot and lease gets its account's
organisation, and the column refuses a row without one afterwards."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from bulkmail.shared.migrate import upgrade
from bulkmail.shared.models import EmailAccount, Organization
from tests.migration_db import downgrade, empty_database

# Send history written as rows of 0009_ledger (the tables as they were, without the column).
ROWS = """
INSERT INTO send_slots (id, email_account_id, reserved_at) VALUES
    (1, 10, '2026-12-01 10:00:00+00'), (2, 20, '2026-12-01 10:00:01+00'), (3, 10, '2026-12-01 10:00:02+00');
INSERT INTO smtp_connection_leases (email_account_id, slot, holder, expires_at) VALUES
    (10, 0, 'host:1:0', '2026-12-01 10:02:00+00'), (20, 0, 'host:1:1', '2026-12-01 10:02:00+00');
"""


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
async def test_slots_and_leases_are_back_filled_from_their_account(kind: str, tmp_path: Path) -> None:
    async with empty_database(kind, tmp_path) as (settings, database):
        await asyncio.to_thread(upgrade, settings, "0009_ledger")
        async with database.session() as session:
            # Two organisations with one account each (those tables are as the models say).
            session.add_all([Organization(id=1, name="One"), Organization(id=2, name="Two")])
            await session.flush()
            session.add_all(
                [
                    EmailAccount(id=10, organization_id=1, email="a@one.example", smtp_host="smtp.one.example"),
                    EmailAccount(id=20, organization_id=2, email="b@two.example", smtp_host="smtp.two.example"),
                ]
            )
            await session.flush()
            for statement in ROWS.split(";"):
                if statement.strip():
                    await session.execute(text(statement))
        await asyncio.to_thread(upgrade, settings, "0017_org_ids")
        async with database.session() as session:
            slots = (await session.execute(text("SELECT id, organization_id FROM send_slots ORDER BY id"))).all()
            leases = (
                await session.execute(
                    text("SELECT email_account_id, organization_id FROM smtp_connection_leases ORDER BY 1")
                )
            ).all()
        assert [tuple(r) for r in slots] == [(1, 1), (2, 2), (3, 1)]
        assert [tuple(r) for r in leases] == [(10, 1), (20, 2)]
        # NOT NULL from now on: a slot written without its organisation is refused.
        with pytest.raises(IntegrityError):
            async with database.session() as session:
                await session.execute(
                    text("INSERT INTO send_slots (email_account_id, reserved_at) VALUES (10, '2026-12-01 11:00:00+00')")
                )
        # Down and up again: the history survives and is filled again.
        await asyncio.to_thread(downgrade, settings, "0009_ledger")
        await asyncio.to_thread(upgrade, settings, "0017_org_ids")
        async with database.session() as session:
            again = (await session.execute(text("SELECT id, organization_id FROM send_slots ORDER BY id"))).all()
        assert [tuple(r) for r in again] == [(1, 1), (2, 2), (3, 1)]
