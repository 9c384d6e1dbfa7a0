"""last emailed order: an index that walks an organisation's leads from the most recently emailed

Revision ID: 0020_last_emailed_order
Revises: 0019_custom_value_words
Create Date: 2026-12-02 11:40:00

``sort:-last_emailed`` (the leads page's "Recently emailed") sorted every lead of the organisation
by ``lead_activity.last_emailed_at`` before it could answer a page: ~240 ms for the first page at
1,000,000 leads. This index walks them in that order (newest first, never-emailed last, ties by
lead id, exactly as the compiler orders them), so a page reads its 26 rows. It lives on
``lead_activity``, which a send updates anyway (each update already changes the activities
index, so those updates are never HOT): it costs the send's counter update one more small index
entry, and ``leads`` none (docs/search.md, "What the search reads"). Filters on ``last_emailed``
read ``email_activities`` and do not need it. Built CONCURRENTLY on PostgreSQL.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0020_last_emailed_order"
down_revision: str | None = "0019_custom_value_words"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_lead_activity_search_last_emailed"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        # SQLite indexes take no NULLS LAST; the embedded mode's sizes do not need the walk.
        op.execute(
            f"CREATE INDEX IF NOT EXISTS {INDEX} ON lead_activity (organization_id, last_emailed_at DESC, lead_id)"
        )
        return
    with op.get_context().autocommit_block():
        op.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX}"
            " ON lead_activity (organization_id, last_emailed_at DESC NULLS LAST, lead_id)"
        )
        op.execute("ANALYZE lead_activity")


def downgrade() -> None:
    op.execute(f"DROP INDEX IF EXISTS {INDEX}")
