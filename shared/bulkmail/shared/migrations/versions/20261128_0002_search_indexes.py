"""search indexes: indexes that fit the lead search language

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 02:00:00

- Free text is a word-prefix LIKE on ``' ' || search_text`` (``'% acme%'``): a trigram GIN index
  on exactly that expression answers it on PostgreSQL (pg_trgm). SQLite scans.
- The bulk-email filter (status + has an email + not sent template T) reads a partial index of
  the leads that have an email, and an index of sent activities by template for the anti-join.
- Related-object clauses are EXISTS sub-queries keyed on ``lead_id``; composite indexes let the
  common ones (opportunity status, call date, task completion) be answered from the index.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (name, table, columns, partial WHERE or None): created on both backends (SQLite has partial indexes).
BTREE_INDEXES: list[tuple[str, str, list[str], str | None]] = [
    (
        "ix_leads_search_with_email",
        "leads",
        ["organization_id", "status_id", "id"],
        "num_email_addresses > 0",
    ),
    ("ix_leads_organization_id_updated_at", "leads", ["organization_id", "updated_at"], None),
    ("ix_leads_organization_id_last_called_at", "leads", ["organization_id", "last_called_at"], None),
    ("ix_leads_organization_id_last_emailed_at", "leads", ["organization_id", "last_emailed_at"], None),
    (
        "ix_email_activities_search_template",
        "email_activities",
        ["organization_id", "template_id", "lead_id"],
        "template_id IS NOT NULL",
    ),
    ("ix_opportunities_search_status", "opportunities", ["organization_id", "status", "lead_id"], None),
    ("ix_calls_lead_id_date", "calls", ["lead_id", "date"], None),
    ("ix_tasks_lead_id_is_complete", "tasks", ["lead_id", "is_complete"], None),
    ("ix_lead_custom_values_field_id_value_number", "lead_custom_values", ["field_id", "value_number"], None),
    ("ix_lead_custom_values_field_id_value_date", "lead_custom_values", ["field_id", "value_date"], None),
]


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for name, table, columns, where in BTREE_INDEXES:
        partial = sa.text(where) if where is not None else None
        op.create_index(name, table, columns, postgresql_where=partial, sqlite_where=partial)
    if postgres:
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        # The expression must match the compiler's `' ' || leads.search_text` exactly.
        op.execute("CREATE INDEX ix_leads_search_text_trgm ON leads USING gin ((' ' || search_text) gin_trgm_ops)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_leads_search_text_trgm")
    for name, table, _columns, _where in reversed(BTREE_INDEXES):
        op.drop_index(name, table_name=table)
