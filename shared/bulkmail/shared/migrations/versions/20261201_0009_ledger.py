"""an email account's troubles in a row: pauses (for escalation) and failed attempts to reach its server

Revision ID: 0009_ledger
Revises: 0007
Create Date: 2026-12-01 23:50:00

A pause lasts longer each time the account is paused again without a successful send in
between, so the number of pauses in a row is kept (the pause reason alone could only say "at
least one"). Attempts that could not reach or use the account's SMTP server (refused connect,
TLS, no AUTH) are counted too: after a few in a row the account is paused with the server's
reply instead of retrying each recipient for hours. Both go back to 0 on the next message sent.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_ledger"
down_revision: str | None = "0011_search"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("email_accounts") as batch:
        batch.add_column(sa.Column("pauses_in_a_row", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("failures_in_a_row", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("email_accounts") as batch:
        batch.drop_column("failures_in_a_row")
        batch.drop_column("pauses_in_a_row")
