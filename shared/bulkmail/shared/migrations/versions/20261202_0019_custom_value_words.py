"""custom value words: a trigram index on the words of text custom values, and their statistics

Revision ID: 0019_custom_value_words
Revises: 0018_lead_activity
Create Date: 2026-12-02 06:10:00

A text custom field is matched by word prefix: ``(' ' || lower(value_text)) LIKE '% referral%'``
(the search's ``words_match``, as for the lead's own text). Nothing indexed that expression, so:

- PostgreSQL had no statistics on it and used a fixed guess for a pattern with a leading
  wildcard: ``"custom.Lead Source":referral`` was estimated at 8 leads where 11,194 of 100,000
  match (81 for 114,090 at 1,000,000). The API counts exactly what is estimated small, so every
  such request spent its 100 ms budget counting and then answered the estimate (wrong by three
  orders of magnitude at a million leads).
- The count read every value of the field and computed ``lower()`` of each (80,000 at 100,000
  leads): 90-110 ms.

ANALYZE keeps statistics on an index's expressions, so this one index fixes both: the estimate
is 3,472 (the statistics cover all fields' values together, hence still low by the share of other
fields' rows) and the count reads the 11,194 matching values from the index: 50-60 ms. Built
CONCURRENTLY on PostgreSQL; SQLite has neither trigram indexes nor estimates.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0019_custom_value_words"
down_revision: str | None = "0018_lead_activity"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_lead_custom_values_words_trgm"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    with op.get_context().autocommit_block():
        # The expression exactly as the compiler writes it (fields.words_match), or the planner
        # connects neither the index nor its statistics to the condition.
        op.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} ON lead_custom_values"
            " USING gin ((' ' || lower(value_text)) gin_trgm_ops)"
        )
        op.execute("ANALYZE lead_custom_values")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP INDEX IF EXISTS {INDEX}")
