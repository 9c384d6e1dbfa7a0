"""web sign-in: user passwords, server-side sessions, failed sign-ins

Revision ID: 0008_web
Revises: 0008_webpages
Create Date: 2026-12-01 23:40:00

The web app signs users in with an email and password: ``users.password_hash`` (argon2), an
address unique among users who can sign in, ``web_sessions`` (the cookie's token stored as its
SHA-256, expiring and revocable) and ``sign_in_failures`` (counted per account and per client
address to slow and then refuse password guessing, shared by every query-api replica).
``api_keys.last_used_at`` is shown on the settings page.

It follows 0008_webpages (account checks) only because both were written on the same branch.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_web"
down_revision: str | None = "0008_webpages"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
CAN_SIGN_IN = "password_hash IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("password_hash", sa.String(255), nullable=True))
    # No user has a password yet, so the partial index is empty and quick to build.
    op.create_index(
        "uq_users_sign_in_email",
        "users",
        ["email"],
        unique=True,
        postgresql_where=sa.text(CAN_SIGN_IN),
        sqlite_where=sa.text(CAN_SIGN_IN),
    )
    # When a key was last used, for the settings page (written at most once a minute per key).
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "web_sessions",
        sa.Column("id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("user_agent", sa.String(200), nullable=False, server_default=""),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_web_sessions_user_id_users", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_web_sessions"),
        sa.UniqueConstraint("token_hash", name="uq_web_sessions_token_hash"),
    )
    op.create_index("ix_web_sessions_user_id", "web_sessions", ["user_id"])
    op.create_table(
        "sign_in_failures",
        sa.Column("id", ID, nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("client_address", sa.String(64), nullable=False),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sign_in_failures"),
    )
    op.create_index("ix_sign_in_failures_email_failed_at", "sign_in_failures", ["email", "failed_at"])
    op.create_index("ix_sign_in_failures_client_address_failed_at", "sign_in_failures", ["client_address", "failed_at"])


def downgrade() -> None:
    op.drop_table("sign_in_failures")
    op.drop_table("web_sessions")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("last_used_at")
    op.drop_index("uq_users_sign_in_email", table_name="users")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("password_hash")
