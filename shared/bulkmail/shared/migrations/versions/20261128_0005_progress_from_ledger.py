"""progress from the ledger: drop bulk_emails.n_objects_processed

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 02:40:00

The number of recipients processed is a count over the recipients ledger (sent + failed +
unknown), computed when progress is read. Keeping it as a column meant every mailer batch
updated the bulk email's row, and all mailers of a send queued on that one row lock.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("bulk_emails") as batch:
        batch.drop_column("n_objects_processed")


def downgrade() -> None:
    with op.batch_alter_table("bulk_emails") as batch:
        batch.add_column(sa.Column("n_objects_processed", sa.Integer(), nullable=False, server_default="0"))
