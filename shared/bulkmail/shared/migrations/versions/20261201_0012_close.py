"""Close's fields: address labels, shared templates, full email activities, bulk email audience

Revision ID: 0012_close
Revises: 0007
Create Date: 2026-12-01 23:50:00

Scripts written for Close read and write these (docs/close-compatibility.md): an address's
``label``, a template's ``is_shared``, an email activity's sender, recipients and bodies, and a
bulk email's structured query (``s_query``), ``results_limit``, ``sort`` and ``updated_by``.
Every new column is nullable or has a constant default, so PostgreSQL 11+ rewrites no table.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_close"
down_revision: str | None = "0010_trust"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("addresses") as batch:
        batch.add_column(sa.Column("label", sa.String(30), nullable=False, server_default="business"))
    with op.batch_alter_table("email_templates") as batch:
        batch.add_column(sa.Column("is_shared", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("email_activities") as batch:
        batch.add_column(sa.Column("sender", sa.String(700), nullable=False, server_default=""))
        batch.add_column(sa.Column("to_list", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("body_text", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("body_html", sa.Text(), nullable=False, server_default=""))
    with op.batch_alter_table("saved_searches") as batch:
        batch.add_column(sa.Column("s_query", sa.JSON(), nullable=True))
    with op.batch_alter_table("bulk_emails") as batch:
        batch.add_column(sa.Column("s_query", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("results_limit", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("sort", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("updated_by_id", ID, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("bulk_emails") as batch:
        for name in ("updated_by_id", "sort", "results_limit", "s_query"):
            batch.drop_column(name)
    with op.batch_alter_table("saved_searches") as batch:
        batch.drop_column("s_query")
    with op.batch_alter_table("email_activities") as batch:
        for name in ("body_html", "body_text", "to_list", "sender"):
            batch.drop_column(name)
    with op.batch_alter_table("email_templates") as batch:
        batch.drop_column("is_shared")
    with op.batch_alter_table("addresses") as batch:
        batch.drop_column("label")
