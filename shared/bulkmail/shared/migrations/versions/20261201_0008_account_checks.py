"""account checks: connection tests and test messages asked for in the web app

Revision ID: 0008_webpages
Revises: 0007
Create Date: 2026-12-01 23:40:00

The web app's "Test connection" and "Send a test to me" are carried out by a mailer (the
query-api has no IMAP client): the page writes a row here, a mailer fills in the outcome, and the
page reads it back.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_webpages"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "account_checks",
        sa.Column("id", ID, nullable=False),
        sa.Column("organization_id", ID, nullable=False),
        sa.Column("email_account_id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=True),
        sa.Column(
            "kind",
            sa.Enum("connection", "test_message", name="accountcheckkind", native_enum=False, length=20),
            nullable=False,
        ),
        sa.Column(
            "status",
            sa.Enum("pending", "ok", "failed", name="accountcheckstatus", native_enum=False, length=20),
            nullable=False,
        ),
        sa.Column("template_id", ID, nullable=True),
        sa.Column("lead_id", ID, nullable=True),
        sa.Column("contact_id", ID, nullable=True),
        sa.Column("rendered_for", sa.String(length=320), nullable=False),
        sa.Column("send_to", sa.String(length=320), nullable=False),
        sa.Column("result", sa.Text(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.text("(CURRENT_TIMESTAMP)"), nullable=False
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_account_checks_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["email_account_id"],
            ["email_accounts.id"],
            name=op.f("fk_account_checks_email_account_id_email_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_account_checks_user_id_users"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["email_templates.id"],
            name=op.f("fk_account_checks_template_id_email_templates"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account_checks")),
    )


def downgrade() -> None:
    op.drop_table("account_checks")
