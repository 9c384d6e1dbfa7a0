"""send slots and SMTP connection leases carry their organisation

Revision ID: 0017_org_ids
Revises: 0016_search_scale
Create Date: 2026-12-02 03:00:00

Every other table says which organisation a row belongs to; these two said it only through their
email account. The column is back-filled from the account, then made NOT NULL with a foreign key
that deletes the rows with their organisation, like every other tenant row.

No new index: every query on these tables goes by email account (``send_slots`` through
``(email_account_id, reserved_at)``, the leases through their primary key), and a reservation is
on the send path, where each index is one more write per message. The only statement that looks
rows up by ``organization_id`` is the cascade when an organisation is deleted: rare, and it scans
tables that hold at most a day of history.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017_org_ids"
down_revision: str | None = "0016_search_scale"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("send_slots", "smtp_connection_leases")
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("organization_id", _ID))
        op.execute(
            f"UPDATE {table} SET organization_id = "
            f"(SELECT organization_id FROM email_accounts WHERE email_accounts.id = {table}.email_account_id)"
        )
        with op.batch_alter_table(table) as batch:
            batch.alter_column("organization_id", existing_type=_ID, nullable=False)
            batch.create_foreign_key(
                op.f(f"fk_{table}_organization_id_organizations"),
                "organizations",
                ["organization_id"],
                ["id"],
                ondelete="CASCADE",
            )


def downgrade() -> None:
    for table in reversed(TABLES):
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(op.f(f"fk_{table}_organization_id_organizations"), type_="foreignkey")
            batch.drop_column("organization_id")
