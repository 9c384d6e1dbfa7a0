"""search at scale: the snapshot without a foreign-key check per lead, leads in id order per organisation

Revision ID: 0016_search_scale
Revises: 0015_send_path
Create Date: 2026-12-02 03:00:00

- ``bulk_email_leads`` loses its foreign key to ``bulk_emails``. A snapshot is written by one
  ``INSERT ... SELECT`` of up to 100,000 lead ids, and the key was checked once per row: 245 of
  the 485 ms of a 100,000-lead snapshot at 1,000,000 leads. The row that key protected is the
  bulk email being created in the same transaction. What the key's ``ON DELETE CASCADE`` did
  (no snapshot rows outlive their bulk email, also when an organisation is deleted) a trigger
  on ``bulk_emails`` now does, once per bulk email deleted instead of once per lead written.
- ``ix_leads_search_id`` (organization_id, id): an organisation's leads in id order from the
  index alone. A count that excludes related rows (``not emailed_template:"Intro"``) merges
  them with the related rows' lead ids, read in order too (docs/search.md), instead of
  hashing hundreds of thousands of ids.
- ``ix_leads_search_addresses`` (organization_id, num_addresses): ``addresses > 1`` reads the
  5% of leads that match instead of every lead; with an order no index has
  (``sort:activities``, kept out of every index: see below) the first page still sorts all the
  matches, but reads 39,000 pages of leads instead of 88,000.

Nothing the send path changes (``num_emails``, ``last_emailed_at``) is in either index: its lead
updates stay HOT. PostgreSQL builds the indexes CONCURRENTLY, outside the migration's transaction.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0016_search_scale"
down_revision: str | None = "0015_send_path"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SNAPSHOT_FK = "fk_bulk_email_leads_bulk_email_id_bulk_emails"
TRIGGER = "bulk_emails_delete_snapshot"
# (name, columns) on leads, on both backends.
LEAD_INDEXES = [
    ("ix_leads_search_id", "organization_id, id"),
    ("ix_leads_search_addresses", "organization_id, num_addresses"),
]

POSTGRESQL_FUNCTION = f"""
CREATE OR REPLACE FUNCTION {TRIGGER}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM bulk_email_leads WHERE bulk_email_id = OLD.id;
    RETURN OLD;
END
$$
"""
POSTGRESQL_TRIGGER = f"CREATE TRIGGER {TRIGGER} AFTER DELETE ON bulk_emails FOR EACH ROW EXECUTE FUNCTION {TRIGGER}()"
SQLITE_TRIGGER = f"""
CREATE TRIGGER {TRIGGER} AFTER DELETE ON bulk_emails FOR EACH ROW
BEGIN
    DELETE FROM bulk_email_leads WHERE bulk_email_id = OLD.id;
END
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        # SQLite cannot drop a constraint in place: the small snapshot table is copied (nothing
        # refers to it, so the copy cascades nowhere).
        with op.batch_alter_table("bulk_email_leads") as batch:
            batch.drop_constraint(SNAPSHOT_FK, type_="foreignkey")
        op.execute(SQLITE_TRIGGER)
        for name, columns in LEAD_INDEXES:
            op.execute(f"CREATE INDEX {name} ON leads ({columns})")
        return
    op.execute(f"ALTER TABLE bulk_email_leads DROP CONSTRAINT IF EXISTS {SNAPSHOT_FK}")
    op.execute(POSTGRESQL_FUNCTION)
    op.execute(POSTGRESQL_TRIGGER)
    with op.get_context().autocommit_block():
        for name, columns in LEAD_INDEXES:
            op.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON leads ({columns})")
        op.execute("ANALYZE leads")


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        with op.get_context().autocommit_block():
            for name, _columns in reversed(LEAD_INDEXES):
                op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
        op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER} ON bulk_emails")
        op.execute(f"DROP FUNCTION IF EXISTS {TRIGGER}()")
    else:
        for name, _columns in reversed(LEAD_INDEXES):
            op.execute(f"DROP INDEX IF EXISTS {name}")
        op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER}")
    # Snapshot rows of bulk emails that no longer exist would fail the key: none can exist (the
    # trigger), but a database restored from parts might have some.
    op.execute("DELETE FROM bulk_email_leads WHERE bulk_email_id NOT IN (SELECT id FROM bulk_emails)")
    with op.batch_alter_table("bulk_email_leads") as batch:
        batch.create_foreign_key(SNAPSHOT_FK, "bulk_emails", ["bulk_email_id"], ["id"], ondelete="CASCADE")
