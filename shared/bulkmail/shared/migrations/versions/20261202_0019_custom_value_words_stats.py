"""custom value words statistics: PostgreSQL estimates `custom.<text field>:word` from the values

Revision ID: 0019_custom_value_words_stats
Revises: 0018_lead_activity
Create Date: 2026-12-02 06:10:00

A text custom field is matched by word prefix: ``(' ' || lower(value_text)) LIKE '% referral%'``
(the search's ``words_match``). PostgreSQL has no statistics on that expression, so it used a
fixed guess for a pattern with a leading wildcard: ``"custom.Lead Source":referral`` was
estimated at 8 leads where 11,194 of 100,000 match. The API counts exactly what is estimated
small, so every such request spent its whole 100 ms counting budget and then answered the
estimate anyway. Extended statistics on the expression give ANALYZE its most common values
(a field with a handful of choices is all common values) and a histogram, which the pattern's
selectivity is read from. SQLite estimates nothing: nothing to do there.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0019_custom_value_words_stats"
down_revision: str | None = "0018_lead_activity"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATISTICS = "st_lead_custom_values_words"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # The expression exactly as the compiler writes it (fields.words_match), or the planner
    # does not connect the two.
    op.execute(f"CREATE STATISTICS IF NOT EXISTS {STATISTICS} ON ((' ' || lower(value_text))) FROM lead_custom_values")
    op.execute("ANALYZE lead_custom_values")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP STATISTICS IF EXISTS {STATISTICS}")
