"""send slots: account rate-limit history and SMTP connection leases

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 03:00:00

- ``send_slots``: one row per reserved send, counted over the last minute, hour and rolling
  24 h by ``bulkmail.shared.rate_limit`` so limits hold across workers and restarts. Rows older
  than a day are pruned by the reservations themselves.
- ``smtp_connection_leases``: an account's concurrent SMTP connections, as expiring leases.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "send_slots",
        sa.Column("id", _ID, nullable=False),
        sa.Column("email_account_id", _ID, nullable=False),
        sa.Column("reserved_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["email_account_id"],
            ["email_accounts.id"],
            name=op.f("fk_send_slots_email_account_id_email_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_send_slots")),
    )
    op.create_index("ix_send_slots_email_account_id_reserved_at", "send_slots", ["email_account_id", "reserved_at"])
    op.create_table(
        "smtp_connection_leases",
        sa.Column("email_account_id", _ID, nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["email_account_id"],
            ["email_accounts.id"],
            name=op.f("fk_smtp_connection_leases_email_account_id_email_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("email_account_id", "slot", name=op.f("pk_smtp_connection_leases")),
    )


def downgrade() -> None:
    op.drop_table("smtp_connection_leases")
    op.drop_index("ix_send_slots_email_account_id_reserved_at", table_name="send_slots")
    op.drop_table("send_slots")
