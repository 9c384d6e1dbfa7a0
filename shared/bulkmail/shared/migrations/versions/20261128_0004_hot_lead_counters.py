"""hot lead counters: sending updates a lead's email counters without touching its indexes

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 02:10:00

Each sent email bumps ``leads.num_emails`` and ``leads.last_emailed_at``. With an index on
``last_emailed_at`` every such update was a non-HOT update, re-inserting the lead into all of
its indexes, the trigram GIN index on the search text included: measured, that was the largest
single cost of sending. Without that index, and with free space left on each page
(fillfactor 90), PostgreSQL updates the row in place (HOT). ``last_emailed`` searches filter
the organisation's leads instead, which stays fast at a million leads.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_leads_organization_id_last_emailed_at", table_name="leads")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE leads SET (fillfactor = 90)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE leads RESET (fillfactor)")
    op.create_index("ix_leads_organization_id_last_emailed_at", "leads", ["organization_id", "last_emailed_at"])
