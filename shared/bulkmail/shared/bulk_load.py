"""The fast write path for many leads at once: the seeder and the lead importer both use it.

A lead arrives whole (``LeadIn``: its contacts, addresses, custom values and activities), so
its derived columns (counters, ``last_*`` dates, ``search_text``) are computed here, once, the
same way ``bulkmail.shared.counters.refresh_lead_counters`` would, and no UPDATE pass is needed.

Rows are buffered and written in batches inside the caller's transaction:

- PostgreSQL: binary COPY through the asyncpg connection under SQLAlchemy (~750k rows/s); the
  primary keys are taken from each table's sequence in growing blocks beforehand, because the
  children of a lead need its id before any row is sent.
- SQLite: ``executemany`` INSERTs; the loader first takes SQLite's single write lock, so
  ``max(id) + 1`` onwards is ours until the transaction ends.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

from sqlalchemy import Table, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.schema import ScalarElementColumnDefault

from bulkmail.shared.counters import build_search_text, normalize_email
from bulkmail.shared.models import (
    Address,
    Call,
    Contact,
    ContactEmail,
    ContactPhone,
    EmailActivity,
    Lead,
    LeadActivity,
    LeadCustomValue,
    Opportunity,
    Task,
)

__all__ = [
    "AddressIn",
    "CallIn",
    "ContactIn",
    "CustomValueIn",
    "EmailActivityIn",
    "EmailIn",
    "LeadIn",
    "LeadLoader",
    "OpportunityIn",
    "PhoneIn",
    "TaskIn",
    "deferred_indexes",
]


class EmailIn(NamedTuple):
    email: str
    type: str = "office"
    is_unsubscribed: bool = False


class PhoneIn(NamedTuple):
    phone: str
    type: str = "office"


class ContactIn(NamedTuple):
    name: str = ""
    title: str = ""
    emails: Sequence[EmailIn] = ()
    phones: Sequence[PhoneIn] = ()


class AddressIn(NamedTuple):
    city: str = ""
    state: str = ""
    country: str = ""
    zipcode: str = ""
    address_1: str = ""


class CustomValueIn(NamedTuple):
    field_id: int
    value_text: str | None = None
    value_number: Decimal | None = None
    value_date: datetime | None = None


class OpportunityIn(NamedTuple):
    status: str
    value: Decimal
    user_id: int | None
    created_at: datetime


class CallIn(NamedTuple):
    date: datetime
    duration: int
    direction: str
    user_id: int | None


class TaskIn(NamedTuple):
    text: str
    date: datetime | None
    created_at: datetime
    completed_at: datetime | None  # set means complete
    assigned_to_id: int | None


class EmailActivityIn(NamedTuple):
    contact_index: int | None  # index into the lead's contacts, or None
    to_address: str
    subject: str
    date_sent: datetime
    date_opened: datetime | None = None
    template_id: int | None = None
    user_id: int | None = None
    direction: str = "outgoing"
    status: str = "sent"
    message_id: str = ""


class LeadIn(NamedTuple):
    name: str
    created_at: datetime
    description: str = ""
    url: str = ""
    status_id: int | None = None
    user_id: int | None = None  # created_by / updated_by
    contacts: Sequence[ContactIn] = ()
    addresses: Sequence[AddressIn] = ()
    custom: Sequence[CustomValueIn] = ()
    opportunities: Sequence[OpportunityIn] = ()
    calls: Sequence[CallIn] = ()
    tasks: Sequence[TaskIn] = ()
    emails: Sequence[EmailActivityIn] = ()


def _table(model: Any) -> Table:
    table: Table = model.__table__
    return table


def _names(spec: str) -> tuple[str, ...]:
    return tuple(spec.split())


# Column order of the row tuples built below; parents before children (foreign keys are checked
# as each table is written).
COLUMNS: dict[Table, tuple[str, ...]] = {
    _table(Lead): _names("""id organization_id name description url status_id created_at updated_at created_by_id
        updated_by_id search_text num_contacts num_addresses num_email_addresses num_phone_numbers
        num_opportunities num_tasks last_called_at last_email_opened_at primary_email has_sendable_email"""),
    _table(LeadActivity): _names("lead_id organization_id num_emails num_calls last_emailed_at"),
    _table(Contact): _names("id organization_id lead_id position name title"),
    _table(ContactEmail): _names("""id organization_id contact_id lead_id position email email_normalized type
        is_unsubscribed"""),
    _table(ContactPhone): _names("id organization_id contact_id lead_id position phone type"),
    _table(Address): _names("id organization_id lead_id position address_1 city state country zipcode"),
    _table(LeadCustomValue): _names("lead_id field_id organization_id value_text value_number value_date"),
    _table(Opportunity): _names("id organization_id lead_id status value user_id created_at"),
    _table(Call): _names("""id organization_id lead_id user_id date duration recording_duration voicemail_duration
        direction"""),
    _table(Task): _names("""id organization_id lead_id text is_complete assigned_to_id created_by_id date created_at
        completed_at"""),
    _table(EmailActivity): _names("""id organization_id lead_id contact_id template_id user_id status direction subject
        to_address message_id date_sent date_opened created_at"""),
}


def _python_defaults(table: Table, columns: Sequence[str]) -> tuple[tuple[str, ...], tuple[Any, ...]]:
    """Columns we do not write that need a value only the ORM would give (no server default).

    COPY and raw INSERTs skip SQLAlchemy's Python-side defaults; filling scalar ones here keeps
    the loader working when a column is added to the model with ``default=`` only.
    """
    names: list[str] = []
    values: list[Any] = []
    for column in table.columns:
        if column.name in columns or column.server_default is not None or column.nullable:
            continue
        default = column.default
        if isinstance(default, ScalarElementColumnDefault):
            names.append(column.name)
            values.append(default.arg)
    return tuple(names), tuple(values)


class LeadLoader:
    """Buffers whole leads and writes them in batches through the caller's transaction.

    The caller owns the transaction (commit, or roll back to undo everything written).
    """

    def __init__(
        self,
        conn: AsyncConnection,
        organization_id: int,
        *,
        batch_size: int = 5_000,
        check_foreign_keys: bool = True,
    ) -> None:
        self.conn = conn
        self.check_foreign_keys = check_foreign_keys
        self.organization_id = organization_id
        self.batch_size = batch_size
        self.is_postgres = conn.dialect.name == "postgresql"
        self.rows: dict[Table, list[tuple[Any, ...]]] = {table: [] for table in COLUMNS}
        self.counts: dict[str, int] = {table.name: 0 for table in COLUMNS}
        self.load_seconds = 0.0
        self._pending_leads = 0
        self._ids: dict[Table, list[int]] = {table: [] for table in COLUMNS}
        self._next_block: dict[Table, int] = {table: 16 for table in COLUMNS}
        self._sqlite_next: dict[Table, int] = {}
        self._started = False

    @property
    def pending_leads(self) -> int:
        """Leads buffered and not yet written (0 right after a batch went out)."""
        return self._pending_leads

    async def add_lead(self, lead: LeadIn) -> int:
        """Queue one lead with everything on it; returns the new lead's id."""
        if not self._started:
            await self._start()
        n_emails = sum(len(c.emails) for c in lead.contacts)
        n_phones = sum(len(c.phones) for c in lead.contacts)
        await self._reserve(_table(Lead), 1)
        await self._reserve(_table(Contact), len(lead.contacts))
        await self._reserve(_table(ContactEmail), n_emails)
        await self._reserve(_table(ContactPhone), n_phones)
        await self._reserve(_table(Address), len(lead.addresses))
        await self._reserve(_table(Opportunity), len(lead.opportunities))
        await self._reserve(_table(Call), len(lead.calls))
        await self._reserve(_table(Task), len(lead.tasks))
        await self._reserve(_table(EmailActivity), len(lead.emails))
        lead_id = self._build(lead, n_emails, n_phones)
        self._pending_leads += 1
        if self._pending_leads >= self.batch_size:
            await self.flush()
        return lead_id

    def _build(self, lead: LeadIn, n_emails: int, n_phones: int) -> int:
        org = self.organization_id
        rows = self.rows
        ids = self._ids
        lead_id = ids[_table(Lead)].pop()
        text_parts: list[str | None] = [lead.name, lead.description, lead.url]
        contact_ids: list[int] = []

        contact_rows = rows[_table(Contact)]
        contact_id_pool = ids[_table(Contact)]
        for position, contact in enumerate(lead.contacts):
            contact_id = contact_id_pool.pop()
            contact_ids.append(contact_id)
            contact_rows.append((contact_id, org, lead_id, position, contact.name, contact.title))
            text_parts += (contact.name, contact.title)
        # refresh_lead_counters reads all emails after all contacts (then phones): same order here.
        email_rows = rows[_table(ContactEmail)]
        email_id_pool = ids[_table(ContactEmail)]
        for contact, contact_id in zip(lead.contacts, contact_ids, strict=True):
            for position, e in enumerate(contact.emails):
                email_rows.append(
                    (email_id_pool.pop(), org, contact_id, lead_id, position, e.email,
                     normalize_email(e.email), e.type, e.is_unsubscribed)
                )  # fmt: skip
                text_parts.append(e.email)
        phone_rows = rows[_table(ContactPhone)]
        phone_id_pool = ids[_table(ContactPhone)]
        for contact, contact_id in zip(lead.contacts, contact_ids, strict=True):
            for position, p in enumerate(contact.phones):
                phone_rows.append((phone_id_pool.pop(), org, contact_id, lead_id, position, p.phone, p.type))
                text_parts.append(p.phone)
        address_rows = rows[_table(Address)]
        address_id_pool = ids[_table(Address)]
        for position, a in enumerate(lead.addresses):
            address_rows.append(
                (address_id_pool.pop(), org, lead_id, position, a.address_1, a.city, a.state, a.country,
                 a.zipcode)
            )  # fmt: skip
            text_parts += (a.address_1, a.city, a.state, a.country, a.zipcode)
        custom_rows = rows[_table(LeadCustomValue)]
        # Sorted by field, the order of the (lead_id, field_id) key refresh_lead_counters reads by.
        for cv in sorted(lead.custom, key=lambda cv: cv.field_id):
            custom_rows.append((lead_id, cv.field_id, org, cv.value_text, cv.value_number, cv.value_date))
            text_parts.append(cv.value_text)

        opportunity_rows = rows[_table(Opportunity)]
        for o in lead.opportunities:
            opportunity_rows.append(
                (ids[_table(Opportunity)].pop(), org, lead_id, o.status, o.value, o.user_id, o.created_at)
            )
        call_rows = rows[_table(Call)]
        last_called_at = None
        for c in lead.calls:
            call_rows.append((ids[_table(Call)].pop(), org, lead_id, c.user_id, c.date, c.duration, 0, 0, c.direction))
            if last_called_at is None or c.date > last_called_at:
                last_called_at = c.date
        task_rows = rows[_table(Task)]
        for t in lead.tasks:
            task_rows.append(
                (ids[_table(Task)].pop(), org, lead_id, t.text, t.completed_at is not None,
                 t.assigned_to_id, lead.user_id, t.date, t.created_at, t.completed_at)
            )  # fmt: skip
        activity_rows = rows[_table(EmailActivity)]
        last_emailed_at = last_opened_at = None
        for m in lead.emails:
            activity_contact = contact_ids[m.contact_index] if m.contact_index is not None else None
            activity_rows.append(
                (ids[_table(EmailActivity)].pop(), org, lead_id, activity_contact, m.template_id, m.user_id,
                 m.status, m.direction, m.subject, m.to_address, m.message_id, m.date_sent,
                 m.date_opened, m.date_sent)
            )  # fmt: skip
            if m.direction == "outgoing" and (last_emailed_at is None or m.date_sent > last_emailed_at):
                last_emailed_at = m.date_sent
            if m.date_opened is not None and (last_opened_at is None or m.date_opened > last_opened_at):
                last_opened_at = m.date_opened

        # The primary email: the first email of the first contact that has one.
        primary = next((c.emails[0] for c in lead.contacts if c.emails), None)
        rows[_table(Lead)].append(
            (lead_id, org, lead.name, lead.description, lead.url, lead.status_id, lead.created_at,
             lead.created_at, lead.user_id, lead.user_id, build_search_text(text_parts),
             len(lead.contacts), len(lead.addresses), n_emails, n_phones, len(lead.opportunities),
             len(lead.tasks), last_called_at, last_opened_at,
             normalize_email(primary.email) if primary else None,
             primary is not None and not primary.is_unsubscribed)
        )  # fmt: skip
        rows[_table(LeadActivity)].append((lead_id, org, len(lead.emails), len(lead.calls), last_emailed_at))
        return lead_id

    async def flush(self) -> None:
        """Write the buffered rows (parents first)."""
        started = time.perf_counter()
        if self.is_postgres and not self.check_foreign_keys:
            await self._skip_foreign_key_checks()
        for table, rows in self.rows.items():
            if rows:
                await self._write(table, COLUMNS[table], rows)
                self.counts[table.name] += len(rows)
                self.rows[table] = []
        self._pending_leads = 0
        self.load_seconds += time.perf_counter() - started
        if not self.is_postgres:
            # The caller may commit now, releasing SQLite's write lock: ids counted locally are
            # no longer safe, so the next lead takes the lock again and re-reads max(id).
            self._started = False
            self._sqlite_next.clear()
            self._ids = {table: [] for table in COLUMNS}

    async def _skip_foreign_key_checks(self) -> None:
        """Turn PostgreSQL's per-row foreign key triggers off for this transaction, if allowed.

        They cost ~70% of COPY time (4.5 of 6.2 s for 345k rows). Only for callers whose rows are
        valid by construction (the seeder: every id was just allocated or read back), and only
        a superuser may do it; anyone else keeps the checks. ``SET LOCAL`` ends with the
        transaction, so it is repeated per batch (the seeder commits each one).
        """
        if await self.conn.scalar(text("SELECT current_setting('is_superuser') = 'on'")):
            await self.conn.execute(text("SET LOCAL session_replication_role = replica"))

    # -- ids -------------------------------------------------------------------------------------

    async def _start(self) -> None:
        self._started = True
        if not self.is_postgres:
            # Any write takes SQLite's one write lock until commit: from here on nobody else can
            # insert, so max(id) + 1 onwards is ours. (A plain SELECT would not take it.)
            await self.conn.execute(text("UPDATE leads SET id = id WHERE id < 0"))
        else:
            # COPY goes around SQLAlchemy; a statement through it first makes sure the asyncpg
            # transaction SQLAlchemy opens lazily is begun, so COPY lands inside it.
            await self.conn.execute(text("SELECT 1"))

    async def _reserve(self, table: Table, n: int) -> None:
        pool = self._ids[table]
        if len(pool) >= n:
            return
        # Blocks grow from 16 to 10,000 so a three-lead import does not burn thousands of ids.
        block = max(n - len(pool), self._next_block[table])
        self._next_block[table] = min(block * 2, 10_000)
        fresh = await self._allocate(table, block)
        # pop() takes from the end: keep the pool in descending order so ids come out ascending.
        fresh.reverse()
        self._ids[table] = fresh + pool

    async def _allocate(self, table: Table, n: int) -> list[int]:
        if self.is_postgres:
            # Sequences are outside transactions: these ids are ours even if another session
            # inserts meanwhile, and they are never handed out again (a rollback leaves a gap).
            result = await self.conn.execute(
                text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) FROM generate_series(1, :n)"),
                {"table": table.name, "n": n},
            )
            return [row[0] for row in result]
        if table not in self._sqlite_next:
            current = await self.conn.scalar(select(func.coalesce(func.max(table.c.id), 0)))
            self._sqlite_next[table] = int(current or 0) + 1
        first = self._sqlite_next[table]
        self._sqlite_next[table] = first + n
        return list(range(first, first + n))

    # -- writing ---------------------------------------------------------------------------------

    async def _write(self, table: Table, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
        extra_columns, extra_values = _python_defaults(table, columns)
        if extra_columns:
            columns = columns + extra_columns
            rows = [row + extra_values for row in rows]
        if self.is_postgres:
            raw = (await self.conn.get_raw_connection()).driver_connection
            assert raw is not None
            await raw.copy_records_to_table(table.name, records=rows, columns=list(columns))
        else:
            await self.conn.execute(table.insert(), [dict(zip(columns, row, strict=True)) for row in rows])


@dataclass
class IndexTiming:
    seconds: float = 0.0


@asynccontextmanager
async def deferred_indexes(conn: AsyncConnection, tables: Iterable[Table]) -> AsyncIterator[IndexTiming]:
    """PostgreSQL: drop the tables' secondary indexes for a big load, then build them again.

    One CREATE INDEX over the loaded table is far cheaper than maintaining the index row by
    row during COPY. Everything must happen in the caller's one transaction (no commit inside):
    DDL is transactional, so a failed load also brings the indexes back. Primary keys and
    unique constraints stay, so the load is still checked for duplicates.
    """
    result = await conn.execute(
        text(
            """SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
            FROM pg_index i
            WHERE i.indrelid = ANY(CAST(:tables AS regclass[]))
              AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)"""
        ),
        {"tables": [table.name for table in tables]},
    )
    indexes = [(str(name), str(definition)) for name, definition in result]
    # Statistics targets set on index columns (the search's expression indexes: migration
    # 0011_search) go with the index; without them the planner misjudged `phone:415` by 6x.
    targets = (
        await conn.execute(
            text(
                """SELECT a.attrelid::regclass::text, a.attnum, a.attstattarget FROM pg_attribute a
                WHERE a.attrelid = ANY(CAST(:indexes AS regclass[])) AND a.attstattarget > 0"""
            ),
            {"indexes": [name for name, _ in indexes]},
        )
    ).all()
    # DROP INDEX waits for every open transaction on the table: fail rather than hang behind one.
    await conn.execute(text("SET LOCAL lock_timeout = '30s'"))
    for name, _ in indexes:
        await conn.exec_driver_sql(f"DROP INDEX {name}")
    timing = IndexTiming()
    yield timing
    started = time.perf_counter()
    # Sorting (btree) and GIN builds go much faster with more memory than the 64 MB default.
    await conn.execute(text("SET LOCAL maintenance_work_mem = '512MB'"))
    for _, definition in indexes:
        await conn.exec_driver_sql(definition)
    for name, column, target in targets:
        await conn.exec_driver_sql(f"ALTER INDEX {name} ALTER COLUMN {int(column)} SET STATISTICS {int(target)}")
    timing.seconds = time.perf_counter() - started
