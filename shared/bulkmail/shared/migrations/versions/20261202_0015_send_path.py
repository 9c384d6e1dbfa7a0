"""the send path's row writes: chunks as id ranges, no index on what a send changes, room for HOT

Revision ID: 0015_send_path
Revises: 0009_ledger
Create Date: 2026-12-02 03:00:00

Each recipient was written three times on its way out (queued into a chunk, claimed, recorded),
and each write touched every index that names ``state`` or ``chunk_id``: none was HOT. Now:

- a chunk of never-tried recipients is an id range of the ledger (``first_recipient_id``,
  ``last_recipient_id``), so queueing it writes no recipient row; only retries are put into a
  chunk row by row (``chunk_id``);
- the indexes on ``(bulk_email_id, state)``, on ``chunk_id`` and the partial index of unqueued
  recipients (0006) give way to ``(bulk_email_id, id)`` and two partial indexes whose
  conditions a fresh recipient never meets (``next_attempt_at`` / ``chunk_id`` not NULL);
- the table keeps half of each new page free (fillfactor), room for a row's next versions.

So a claim and an outcome are the only writes of a recipient, and both can be HOT. Existing
pages keep their fill; chunks queued before the upgrade (recipients with a ``chunk_id``, no
range) are sent as chunks of retries are. Indexes are built CONCURRENTLY on PostgreSQL.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015_send_path"
down_revision: str | None = "0009_ledger"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
WAITING = "next_attempt_at IS NOT NULL"
IN_A_RETRY_CHUNK = "chunk_id IS NOT NULL"
UNQUEUED = "state = 'pending' AND chunk_id IS NULL"


def upgrade() -> None:
    with op.batch_alter_table("bulk_email_chunks") as batch:
        batch.add_column(sa.Column("first_recipient_id", ID, nullable=True))
        batch.add_column(sa.Column("last_recipient_id", ID, nullable=True))
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        op.execute("ALTER TABLE recipients SET (fillfactor = 50)")
        with op.get_context().autocommit_block():
            _create_indexes(concurrently=True)
            for name in ("ix_recipients_bulk_email_id_state", "ix_recipients_chunk_id", "ix_recipients_unqueued"):
                op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
    else:
        _create_indexes(concurrently=False)
        for name in ("ix_recipients_bulk_email_id_state", "ix_recipients_chunk_id", "ix_recipients_unqueued"):
            op.drop_index(name, table_name="recipients")


def _create_indexes(concurrently: bool) -> None:
    options = {"postgresql_concurrently": True, "if_not_exists": True} if concurrently else {}
    op.create_index("ix_recipients_bulk_email_id_id", "recipients", ["bulk_email_id", "id"], **options)
    op.create_index(
        "ix_recipients_waiting",
        "recipients",
        ["bulk_email_id", "next_attempt_at"],
        postgresql_where=sa.text(WAITING),
        sqlite_where=sa.text(WAITING),
        **options,
    )
    op.create_index(
        "ix_recipients_retry_chunk",
        "recipients",
        ["chunk_id"],
        postgresql_where=sa.text(IN_A_RETRY_CHUNK),
        sqlite_where=sa.text(IN_A_RETRY_CHUNK),
        **options,
    )


def downgrade() -> None:
    op.create_index("ix_recipients_bulk_email_id_state", "recipients", ["bulk_email_id", "state"])
    op.create_index("ix_recipients_chunk_id", "recipients", ["chunk_id"])
    op.create_index(
        "ix_recipients_unqueued",
        "recipients",
        ["bulk_email_id", "id"],
        postgresql_where=sa.text(UNQUEUED),
        sqlite_where=sa.text(UNQUEUED),
    )
    for name in ("ix_recipients_retry_chunk", "ix_recipients_waiting", "ix_recipients_bulk_email_id_id"):
        op.drop_index(name, table_name="recipients")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE recipients RESET (fillfactor)")
    with op.batch_alter_table("bulk_email_chunks") as batch:
        batch.drop_column("last_recipient_id")
        batch.drop_column("first_recipient_id")
