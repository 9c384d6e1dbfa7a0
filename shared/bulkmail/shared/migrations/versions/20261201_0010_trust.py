"""what an Idempotency-Key was first used for, so a reuse with another body is refused

Revision ID: 0010_trust
Revises: 0007
Create Date: 2026-12-01 23:45:00

A client that retries with the same ``Idempotency-Key`` gets the first bulk email back; one that
reuses the key for a different request is told so (422) instead of receiving the first request's
result as if it were the second's. The key's request is remembered as a SHA-256 of its canonical
body. Bulk emails created before this have none, and any body is taken as theirs.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_trust"
down_revision: str | None = "0008_web"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("bulk_emails") as batch:
        batch.add_column(sa.Column("idempotency_fingerprint", sa.String(64), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("bulk_emails") as batch:
        batch.drop_column("idempotency_fingerprint")
