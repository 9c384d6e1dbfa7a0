"""search at a million leads: the lead's primary email, text indexes for every searched field

Revision ID: 0011_search
Revises: 0007
Create Date: 2026-12-01 23:45:00

- ``leads.primary_email`` / ``leads.has_sendable_email``: the address a send with contact
  preference "lead" goes to, and whether it is not marked unsubscribed; kept by the write path
  (``bulkmail.shared.counters``), back-filled here. A partial index on the leads that have one
  answers "who would get this send" from the index alone.
- Text fields of related objects (contact name and title, email addresses, phone digits,
  address parts) and the lead name get trigram GIN indexes (pg_trgm) on exactly the expressions
  the search compiler writes, so ``title:ceo`` or ``phone:415`` no longer read every row.
- ``last_emailed`` is answered from the sent emails (an index on their send date) rather than
  an index on ``leads.last_emailed_at``: sending updates that column for every recipient, and an
  index on it would make each such update re-insert the lead into every index of ``leads``
  (no HOT update), the cost migration 0004 removed.
- Lookups by user (task assignee, opportunity owner) and by call date get indexes that start
  with the organisation, so a count reads only the matching rows.

PostgreSQL builds every index CONCURRENTLY (no write lock on a live table), outside the
migration's transaction. SQLite gets the B-tree indexes; it has no trigram indexes.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_search"
down_revision: str | None = "0014_feedback"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (name, table, columns or expressions, partial WHERE or None): on both backends.
BTREE_INDEXES: list[tuple[str, str, list[str], str | None]] = [
    ("ix_leads_search_sendable", "leads", ["organization_id", "status_id", "id"], "has_sendable_email"),
    ("ix_tasks_search_assigned_to", "tasks", ["organization_id", "assigned_to_id", "lead_id"], None),
    ("ix_opportunities_search_user", "opportunities", ["organization_id", "user_id", "lead_id"], None),
    ("ix_calls_search_date", "calls", ["organization_id", "date", "lead_id"], None),
    # First pages of `sort:name` / `sort:display_name` and `sort:opportunities,created` read
    # these in order instead of sorting the organisation's leads. (Nothing changed by sending is
    # in them: the send path's lead updates stay HOT.)
    ("ix_leads_sort_name", "leads", ["organization_id", "lower(name)", "id"], None),
    # The default order (newest first, then id): a first page walks this index alone (index-only)
    # and checks each lead, instead of reading each lead's row to learn its id.
    ("ix_leads_search_created", "leads", ["organization_id", "created_at", "id"], None),
    ("ix_leads_sort_opportunities", "leads", ["organization_id", "num_opportunities", "created_at", "id"], None),
    (
        "ix_email_activities_search_sent",
        "email_activities",
        ["organization_id", "date_sent", "lead_id"],
        "direction = 'outgoing'",
    ),
]

# The digits of a phone number: the compiler's PhoneField writes the same nested replace().
PHONE_DIGITS = "replace(replace(replace(replace(replace(replace(replace(phone, ' ', ''), '-', ''), '(', ''), ')', ''), '.', ''), '+', ''), '/', '')"  # noqa: E501


def _words(column: str) -> str:
    """The compiler's word-prefix expression: ' ' || lower(column)."""
    return f"(' ' || lower({column}))"


# (name, table, expression): PostgreSQL only, GIN with gin_trgm_ops.
TRIGRAM_INDEXES: list[tuple[str, str, str]] = [
    ("ix_leads_name_trgm", "leads", _words("name")),
    ("ix_contacts_name_trgm", "contacts", _words("name")),
    ("ix_contacts_title_trgm", "contacts", _words("title")),
    ("ix_contact_emails_email_trgm", "contact_emails", "email_normalized"),
    ("ix_addresses_address_1_trgm", "addresses", _words("address_1")),
    ("ix_addresses_city_trgm", "addresses", _words("city")),
    ("ix_addresses_state_trgm", "addresses", _words("state")),
    ("ix_addresses_country_trgm", "addresses", _words("country")),
    ("ix_addresses_zipcode_trgm", "addresses", _words("zipcode")),
    ("ix_tasks_text_trgm", "tasks", _words("text")),
]

# A phone number's digits from the start, or after a country code of 1-3 digits: prefixes, so
# B-tree indexes (text_pattern_ops: the database's collation is not C) answer `phone:415`. A
# trigram index answered it too, but "415" is one trigram found in 1% of all numbers.
PHONE_INDEXES: list[tuple[str, str]] = [
    ("ix_contact_phones_digits", f"({PHONE_DIGITS})"),
    *((f"ix_contact_phones_digits_from_{n + 1}", f"substr({PHONE_DIGITS}, {n + 1})") for n in (1, 2, 3)),
]

# The first email of the first contact that has one, in the order the dispatcher reads them.
_FIRST_EMAIL = """
    SELECT {column} FROM contact_emails ce JOIN contacts c ON c.id = ce.contact_id
    WHERE ce.lead_id = leads.id
    ORDER BY c.position, c.id, ce.position, ce.id
    LIMIT 1
"""
BACKFILL = f"""
UPDATE leads SET
    primary_email = ({_FIRST_EMAIL.format(column="ce.email_normalized")}),
    has_sendable_email = coalesce(({_FIRST_EMAIL.format(column="NOT ce.is_unsubscribed")}), false)
WHERE num_email_addresses > 0
"""
# The same on PostgreSQL, one range of lead ids per transaction: a single UPDATE of every lead
# would hold each row's lock (blocking the send path's counter updates) until the end.
BACKFILL_BATCH = 20_000
BACKFILL_POSTGRESQL = """
UPDATE leads SET primary_email = first.email_normalized, has_sendable_email = NOT first.is_unsubscribed
FROM (
    SELECT DISTINCT ON (ce.lead_id) ce.lead_id, ce.email_normalized, ce.is_unsubscribed
    FROM contact_emails ce JOIN contacts c ON c.id = ce.contact_id
    WHERE ce.lead_id >= {first} AND ce.lead_id < {end}
    ORDER BY ce.lead_id, c.position, c.id, ce.position, ce.id
) AS first
WHERE leads.id = first.lead_id AND leads.id >= {first} AND leads.id < {end}
"""


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    # Plain ALTER TABLE ADD COLUMN on both backends: SQLite's batch mode would copy the table,
    # and dropping the old copy cascades (ON DELETE CASCADE) to every contact and email.
    op.add_column("leads", sa.Column("primary_email", sa.String(320), nullable=True))
    op.add_column("leads", sa.Column("has_sendable_email", sa.Boolean(), nullable=False, server_default=sa.false()))
    if not postgres:
        op.execute(BACKFILL)
        for name, table, columns, where in BTREE_INDEXES:
            parts = [sa.text(c) if "(" in c else c for c in columns]
            op.create_index(name, table, parts, sqlite_where=sa.text(where) if where else None)
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    with op.get_context().autocommit_block():
        bind = op.get_bind()
        last = bind.execute(sa.text("SELECT coalesce(max(id), 0) FROM leads")).scalar_one()
        for first in range(0, int(last) + 1, BACKFILL_BATCH):
            op.execute(BACKFILL_POSTGRESQL.format(first=first, end=first + BACKFILL_BATCH))
        for name, table, columns, where in BTREE_INDEXES:
            partial = f" WHERE {where}" if where else ""
            op.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {table} ({', '.join(columns)}){partial}")
        for name, table, expression in TRIGRAM_INDEXES:
            op.execute(
                f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {table} USING gin ({expression} gin_trgm_ops)"
            )
        for name, expression in PHONE_INDEXES:
            op.execute(
                f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON contact_phones ({expression} text_pattern_ops)"
            )
        # Statistics on the indexed expressions (ANALYZE keeps them for expression indexes), ten
        # times the default sample: `phone:415` was estimated at 13,500 leads for 4,200 with the
        # default, and the planner walked the leads instead of reading the few matches.
        for name in [*(n for n, _, _ in TRIGRAM_INDEXES if n != "ix_contact_emails_email_trgm"), *dict(PHONE_INDEXES)]:
            op.execute(f"ALTER INDEX {name} ALTER COLUMN 1 SET STATISTICS 1000")
        for table in sorted(
            {table for _, table, _ in TRIGRAM_INDEXES} | {"leads", "email_activities", "contact_phones"}
        ):
            op.execute(f"ANALYZE {table}")


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        with op.get_context().autocommit_block():
            for name, _expression in reversed(PHONE_INDEXES):
                op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
            for name, _table, _expression in reversed(TRIGRAM_INDEXES):
                op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
            for name, _table, _columns, _where in reversed(BTREE_INDEXES):
                op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
    else:
        for name, table, _columns, _where in reversed(BTREE_INDEXES):
            op.drop_index(name, table_name=table)
    # SQLite 3.35+ drops a column in place (no table copy, so no cascade).
    op.drop_column("leads", "has_sendable_email")
    op.drop_column("leads", "primary_email")
