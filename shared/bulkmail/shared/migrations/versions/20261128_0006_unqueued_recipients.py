"""unqueued recipients: a partial index for the pump's next chunk

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 08:10:00

The pump took the next recipients of a bulk email in id order by walking the primary key past
every recipient already queued: 50,000 rows (80 ms) half-way through a 100,000-recipient send,
for every chunk. Recipients that are pending and in no chunk yet now have an index of their
own, which they leave as they are queued. Built CONCURRENTLY on PostgreSQL: the ledger can be
large and keeps taking writes.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNQUEUED = "state = 'pending' AND chunk_id IS NULL"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.create_index(
                "ix_recipients_unqueued",
                "recipients",
                ["bulk_email_id", "id"],
                postgresql_where=sa.text(UNQUEUED),
                postgresql_concurrently=True,
                if_not_exists=True,
            )
    else:
        op.create_index("ix_recipients_unqueued", "recipients", ["bulk_email_id", "id"], sqlite_where=sa.text(UNQUEUED))


def downgrade() -> None:
    op.drop_index("ix_recipients_unqueued", table_name="recipients")
