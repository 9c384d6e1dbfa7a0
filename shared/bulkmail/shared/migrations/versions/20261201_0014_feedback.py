"""what comes back: bounces, complaints, replies, opens and clicks; inbox sync state; webhooks

Revision ID: 0014_feedback
Revises: 0007
Create Date: 2026-12-01 23:50:00

``email_feedback`` records each thing that came back once (a unique key per organisation), so
the inbox sync and the sending services' webhooks can both see the same event without counting
it twice. ``inbox_syncs`` keeps each account's UIDVALIDITY and last UID (no rescans) and the
lease that keeps one IMAP login per account. Recipient states ``bounced``, ``complained`` and
``replied`` need no schema change (the state column is a plain string). Tracking is opt-in per
bulk email: two booleans, false for every existing row.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_feedback"
down_revision: str | None = "0012_close"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("bulk_emails") as batch:
        batch.add_column(sa.Column("track_opens", sa.Boolean(), nullable=False, server_default=sa.text("false")))
        batch.add_column(sa.Column("track_clicks", sa.Boolean(), nullable=False, server_default=sa.text("false")))
    op.create_table(
        "email_feedback",
        sa.Column("id", ID, primary_key=True),
        sa.Column("organization_id", ID, nullable=False),
        sa.Column("email_account_id", ID, nullable=True),
        sa.Column("bulk_email_id", ID, nullable=True),
        sa.Column("recipient_id", ID, nullable=True),
        sa.Column("email_normalized", sa.String(320), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("machine", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.Column("dedup_key", sa.String(400), nullable=False),
        sa.Column("occurred_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_email_feedback_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["email_account_id"],
            ["email_accounts.id"],
            name=op.f("fk_email_feedback_email_account_id_email_accounts"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["bulk_email_id"],
            ["bulk_emails.id"],
            name=op.f("fk_email_feedback_bulk_email_id_bulk_emails"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_feedback")),
        sa.UniqueConstraint("organization_id", "dedup_key", name=op.f("uq_email_feedback_organization_id_dedup_key")),
    )
    op.create_index("ix_email_feedback_bulk_email_id_kind", "email_feedback", ["bulk_email_id", "kind"])
    op.create_index(
        "ix_email_feedback_organization_id_email_normalized", "email_feedback", ["organization_id", "email_normalized"]
    )
    op.create_table(
        "inbox_syncs",
        sa.Column("email_account_id", ID, nullable=False),
        sa.Column("organization_id", ID, nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=True),
        sa.Column("last_uid", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("leased_by", sa.String(100), nullable=False, server_default=""),
        sa.Column("lease_until", TS, nullable=True),
        sa.Column("synced_at", TS, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False, server_default=""),
        sa.ForeignKeyConstraint(
            ["email_account_id"],
            ["email_accounts.id"],
            name=op.f("fk_inbox_syncs_email_account_id_email_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_inbox_syncs_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("email_account_id", name=op.f("pk_inbox_syncs")),
    )
    op.create_table(
        "feedback_webhooks",
        sa.Column("id", ID, primary_key=True),
        sa.Column("organization_id", ID, nullable=False),
        sa.Column("email_account_id", ID, nullable=False),
        sa.Column("provider", sa.String(20), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("signing_key_encrypted", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_feedback_webhooks_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["email_account_id"],
            ["email_accounts.id"],
            name=op.f("fk_feedback_webhooks_email_account_id_email_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feedback_webhooks")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_feedback_webhooks_token_hash")),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("webhook_id", ID, nullable=False),
        sa.Column("delivery_key", sa.String(200), nullable=False),
        sa.Column("received_at", TS, nullable=False, server_default=sa.func.now()),
        sa.ForeignKeyConstraint(
            ["webhook_id"],
            ["feedback_webhooks.id"],
            name=op.f("fk_webhook_deliveries_webhook_id_feedback_webhooks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("webhook_id", "delivery_key", name=op.f("pk_webhook_deliveries")),
    )


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    op.drop_table("feedback_webhooks")
    op.drop_table("inbox_syncs")
    op.drop_index("ix_email_feedback_organization_id_email_normalized", table_name="email_feedback")
    op.drop_index("ix_email_feedback_bulk_email_id_kind", table_name="email_feedback")
    op.drop_table("email_feedback")
    with op.batch_alter_table("bulk_emails") as batch:
        batch.drop_column("track_clicks")
        batch.drop_column("track_opens")
