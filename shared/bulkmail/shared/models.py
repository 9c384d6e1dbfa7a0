"""The CRM data model and the bulk email ledger.

Every row carries its organisation (``organization_id``): tenants are walled off by always
filtering on it, and composite indexes lead with it. Counters that the search language needs
(``num_contacts``, ``last_called_at``...) live on the lead, those a send changes on its narrow
``LeadActivity`` row; the write path keeps them current (see ``bulkmail.shared.counters``), so
a search never aggregates activity tables.
"""

from __future__ import annotations

import enum
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
    func,
)
from sqlalchemy import (
    text as sql_text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

# Stable constraint names, so Alembic migrations are reproducible on PostgreSQL and SQLite.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both backends (SQLite hands back naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        if value is not None and dialect.name == "sqlite":
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


# BIGINT on PostgreSQL, INTEGER on SQLite (where only INTEGER PRIMARY KEY auto-increments).
Id = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _now() -> Mapped[datetime]:
    return mapped_column(UTCDateTime(), server_default=func.now(), nullable=False)


def _org_fk() -> Mapped[int]:
    return mapped_column(Id, ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False)


class Organization(Base):
    __tablename__ = "organizations"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = _now()


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    organization_id: Mapped[int] = _org_fk()
    first_name: Mapped[str] = mapped_column(String(100), default="")
    last_name: Mapped[str] = mapped_column(String(100), default="")
    email: Mapped[str] = mapped_column(String(320))
    phone: Mapped[str] = mapped_column(String(50), default="")
    # IANA zone: "today" in the search language is the requesting user's today.
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    # argon2 hash (PHC string) for signing in to the web app; None: the user has no sign-in.
    password_hash: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = _now()

    __table_args__ = (
        UniqueConstraint("organization_id", "email"),
        # Signing in names no organisation, so an address that can sign in is unique across all of
        # them (stored lower-cased). Users without a password (API-only) stay unique per organisation.
        Index(
            "uq_users_sign_in_email",
            "email",
            unique=True,
            postgresql_where=sql_text("password_hash IS NOT NULL"),
            sqlite_where=sql_text("password_hash IS NOT NULL"),
        ),
    )

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()


class ApiKey(Base):
    """An API key is stored only as its SHA-256; the key itself is shown once, at creation."""

    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    organization_id: Mapped[int] = _org_fk()
    user_id: Mapped[int] = mapped_column(Id, ForeignKey("users.id", ondelete="CASCADE"))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # First characters of the key, so a user can tell their keys apart.
    prefix: Mapped[str] = mapped_column(String(12))
    created_at: Mapped[datetime] = _now()
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Refreshed at most once a minute per key (see query_api.auth), so a busy client costs no
    # write per request.
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class WebSession(Base):
    """A signed-in browser: the cookie holds a random token, the table only its SHA-256.

    A new row at every sign-in (a token planted before sign-in is never promoted); it ends at
    ``expires_at`` (absolute), after ``idle`` without a request, or when revoked (sign-out).
    """

    __tablename__ = "web_sessions"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    user_id: Mapped[int] = mapped_column(Id, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = _now()
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    user_agent: Mapped[str] = mapped_column(String(200), default="")


class SignInFailure(Base):
    """One failed sign-in, counted per account and per client address to slow and refuse guessing.

    In the database rather than in process memory: the query-api runs as several replicas, and a
    per-process count would give each replica (and each restart) a fresh budget.
    """

    __tablename__ = "sign_in_failures"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    client_address: Mapped[str] = mapped_column(String(64))
    failed_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)

    __table_args__ = (
        Index("ix_sign_in_failures_email_failed_at", "email", "failed_at"),
        Index("ix_sign_in_failures_client_address_failed_at", "client_address", "failed_at"),
    )


class LeadStatus(Base):
    __tablename__ = "lead_statuses"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    organization_id: Mapped[int] = _org_fk()
    label: Mapped[str] = mapped_column(String(100))
    position: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (UniqueConstraint("organization_id", "label"),)


class CustomFieldType(enum.StrEnum):
    text = "text"
    number = "number"
    date = "date"
    choices = "choices"


class CustomField(Base):
    """A lead custom field, named by the user ("Lead Source", "Employees")."""

    __tablename__ = "custom_fields"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    organization_id: Mapped[int] = _org_fk()
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[CustomFieldType] = mapped_column(
        Enum(CustomFieldType, native_enum=False, length=20), default=CustomFieldType.text
    )

    __table_args__ = (UniqueConstraint("organization_id", "name"),)


class Lead(Base):
    __tablename__ = "leads"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    organization_id: Mapped[int] = _org_fk()
    name: Mapped[str] = mapped_column(String(300), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    url: Mapped[str] = mapped_column(String(500), default="")
    status_id: Mapped[int | None] = mapped_column(Id, ForeignKey("lead_statuses.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    created_by_id: Mapped[int | None] = mapped_column(Id, ForeignKey("users.id", ondelete="SET NULL"))
    updated_by_id: Mapped[int | None] = mapped_column(Id, ForeignKey("users.id", ondelete="SET NULL"))

    # Kept current by the write path (bulkmail.shared.counters): the search reads, never aggregates.
    # Lower-cased text of every searchable field, for free-text word-prefix search.
    search_text: Mapped[str] = mapped_column(Text, default="")
    num_contacts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    num_addresses: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    num_email_addresses: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    num_phone_numbers: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    num_opportunities: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    num_tasks: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_called_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_email_opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The address a send with contact preference "lead" goes to (the first email of the first
    # contact that has one, normalised), and whether it may be mailed (not marked unsubscribed).
    primary_email: Mapped[str | None] = mapped_column(String(320))
    has_sendable_email: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sql_text("false"))

    status: Mapped[LeadStatus | None] = relationship(lazy="raise")
    contacts: Mapped[list[Contact]] = relationship(
        order_by="Contact.position", lazy="raise", cascade="all, delete-orphan", passive_deletes=True
    )
    addresses: Mapped[list[Address]] = relationship(
        order_by="Address.position", lazy="raise", cascade="all, delete-orphan", passive_deletes=True
    )
    custom_values: Mapped[list[LeadCustomValue]] = relationship(
        lazy="raise", cascade="all, delete-orphan", passive_deletes=True
    )
    # Every lead has one (a new lead gets it with its first flush: ``_lead_activity_rows``).
    activity: Mapped[LeadActivity] = relationship(
        back_populates="lead", lazy="raise", cascade="all, delete-orphan", passive_deletes=True
    )

    __table_args__ = (
        Index("ix_leads_organization_id_status_id", "organization_id", "status_id"),
        Index("ix_leads_organization_id_created_at", "organization_id", "created_at"),
    )

    @property
    def display_name(self) -> str:
        return self.name or (self.contacts[0].name if self.contacts else "") or f"Lead {self.id}"


class LeadActivity(Base):
    """The lead's counters that a send changes, in a narrow table of their own (one row per lead).

    Every sent email bumps ``num_emails`` and ``last_emailed_at``. On ``leads`` no index could
    name them without making each of those updates re-insert the lead into all of its indexes
    (migration 0004); here an update re-inserts a row of a few dozen bytes into three indexes,
    and ``sort:activities`` walks ``ix_lead_activity_search_activities`` in its order instead
    of sorting every match (migration 0018, docs/search.md); ``sort:-last_emailed`` likewise
    walks ``ix_lead_activity_search_last_emailed`` (migration 0020).

    Every lead has exactly one: the ORM adds it with the lead, the bulk loader writes it. Raw SQL
    that inserts leads must insert it too: a lead without one drops out of every search that
    reads these counters, and its sends go uncounted.
    """

    __tablename__ = "lead_activity"
    lead_id: Mapped[int] = mapped_column(Id, ForeignKey("leads.id", ondelete="CASCADE"), primary_key=True)
    organization_id: Mapped[int] = _org_fk()
    num_emails: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    num_calls: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_emailed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    lead: Mapped[Lead] = relationship(back_populates="activity", lazy="raise")


@event.listens_for(Session, "before_flush")
def _lead_activity_rows(session: Session, _context: Any, _instances: Any) -> None:
    """A new lead's ``LeadActivity`` row, written in the same flush (the bulk loader writes its own)."""
    for obj in session.new:
        if isinstance(obj, Lead) and obj.__dict__.get("activity") is None:
            obj.activity = LeadActivity(organization_id=obj.organization_id, num_emails=0, num_calls=0)


class LeadCustomValue(Base):
    """One typed value of a custom field on a lead; the column used follows the field's type."""

    __tablename__ = "lead_custom_values"
    lead_id: Mapped[int] = mapped_column(Id, ForeignKey("leads.id", ondelete="CASCADE"), primary_key=True)
    field_id: Mapped[int] = mapped_column(Id, ForeignKey("custom_fields.id", ondelete="CASCADE"), primary_key=True)
    organization_id: Mapped[int] = _org_fk()
    value_text: Mapped[str | None] = mapped_column(Text)
    value_number: Mapped[Decimal | None] = mapped_column(Numeric(20, 6))
    value_date: Mapped[datetime | None] = mapped_column(UTCDateTime())

    field: Mapped[CustomField] = relationship(lazy="raise")

    __table_args__ = (Index("ix_lead_custom_values_field_id_value_text", "field_id", "value_text"),)


class Contact(Base):
    __tablename__ = "contacts"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    organization_id: Mapped[int] = _org_fk()
    lead_id: Mapped[int] = mapped_column(Id, ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    name: Mapped[str] = mapped_column(String(300), default="")
    title: Mapped[str] = mapped_column(String(300), default="")

    emails: Mapped[list[ContactEmail]] = relationship(
        order_by="ContactEmail.position", lazy="raise", cascade="all, delete-orphan", passive_deletes=True
    )
    phones: Mapped[list[ContactPhone]] = relationship(
        order_by="ContactPhone.position", lazy="raise", cascade="all, delete-orphan", passive_deletes=True
    )

    @property
    def first_name(self) -> str:
        return self.name.split(" ", 1)[0] if self.name else ""

    @property
    def last_name(self) -> str:
        parts = self.name.split(" ", 1)
        return parts[1] if len(parts) > 1 else ""


class ContactEmail(Base):
    __tablename__ = "contact_emails"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    organization_id: Mapped[int] = _org_fk()
    contact_id: Mapped[int] = mapped_column(Id, ForeignKey("contacts.id", ondelete="CASCADE"), index=True)
    # Denormalised so "leads with an email like x" needs no join through contacts.
    lead_id: Mapped[int] = mapped_column(Id, ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    email: Mapped[str] = mapped_column(String(320))
    # Lower-cased, trimmed: the key for duplicates, suppression and unsubscribes.
    email_normalized: Mapped[str] = mapped_column(String(320))
    type: Mapped[str] = mapped_column(String(30), default="office")
    is_unsubscribed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sql_text("false"))

    __table_args__ = (
        Index("ix_contact_emails_organization_id_email_normalized", "organization_id", "email_normalized"),
    )


class ContactPhone(Base):
    __tablename__ = "contact_phones"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    organization_id: Mapped[int] = _org_fk()
    contact_id: Mapped[int] = mapped_column(Id, ForeignKey("contacts.id", ondelete="CASCADE"), index=True)
    lead_id: Mapped[int] = mapped_column(Id, ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    phone: Mapped[str] = mapped_column(String(50))
    type: Mapped[str] = mapped_column(String(30), default="office")


class Address(Base):
    __tablename__ = "addresses"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    organization_id: Mapped[int] = _org_fk()
    lead_id: Mapped[int] = mapped_column(Id, ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    address_1: Mapped[str] = mapped_column(String(300), default="")
    city: Mapped[str] = mapped_column(String(200), default="")
    state: Mapped[str] = mapped_column(String(200), default="")
    country: Mapped[str] = mapped_column(String(100), default="")
    zipcode: Mapped[str] = mapped_column(String(30), default="")
    label: Mapped[str] = mapped_column(String(30), default="business", server_default="business")  # as Close


class OpportunityStatus(enum.StrEnum):
    active = "active"
    won = "won"
    lost = "lost"
    on_hold = "on_hold"


class Opportunity(Base):
    __tablename__ = "opportunities"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    organization_id: Mapped[int] = _org_fk()
    lead_id: Mapped[int] = mapped_column(Id, ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    status: Mapped[OpportunityStatus] = mapped_column(
        Enum(OpportunityStatus, native_enum=False, length=20), default=OpportunityStatus.active
    )
    value: Mapped[Decimal] = mapped_column(Numeric(14, 2), default=Decimal(0))
    user_id: Mapped[int | None] = mapped_column(Id, ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = _now()


class CallDirection(enum.StrEnum):
    inbound = "inbound"
    outbound = "outbound"


class Call(Base):
    __tablename__ = "calls"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    organization_id: Mapped[int] = _org_fk()
    lead_id: Mapped[int] = mapped_column(Id, ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int | None] = mapped_column(Id, ForeignKey("users.id", ondelete="SET NULL"))
    date: Mapped[datetime] = mapped_column(UTCDateTime())
    duration: Mapped[int] = mapped_column(Integer, default=0)  # seconds
    recording_duration: Mapped[int] = mapped_column(Integer, default=0)
    voicemail_duration: Mapped[int] = mapped_column(Integer, default=0)
    direction: Mapped[CallDirection] = mapped_column(
        Enum(CallDirection, native_enum=False, length=20), default=CallDirection.outbound
    )


class Task(Base):
    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    organization_id: Mapped[int] = _org_fk()
    lead_id: Mapped[int] = mapped_column(Id, ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    text: Mapped[str] = mapped_column(Text, default="")
    is_complete: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sql_text("false"))
    assigned_to_id: Mapped[int | None] = mapped_column(Id, ForeignKey("users.id", ondelete="SET NULL"))
    created_by_id: Mapped[int | None] = mapped_column(Id, ForeignKey("users.id", ondelete="SET NULL"))
    date: Mapped[datetime | None] = mapped_column(UTCDateTime())  # due date
    created_at: Mapped[datetime] = _now()
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class EmailTemplate(Base):
    __tablename__ = "email_templates"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    organization_id: Mapped[int] = _org_fk()
    name: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(String(998), default="")
    body: Mapped[str] = mapped_column(Text, default="")  # HTML
    body_text: Mapped[str] = mapped_column(Text, default="")  # empty: derived from the HTML
    # Close's flag, kept and returned; every template is visible to its whole organisation here.
    is_shared: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sql_text("false"))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()

    __table_args__ = (UniqueConstraint("organization_id", "name"),)


class SavedSearch(Base):
    """A Smart View: a named search query."""

    __tablename__ = "saved_searches"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    organization_id: Mapped[int] = _org_fk()
    name: Mapped[str] = mapped_column(String(200))
    query: Mapped[str] = mapped_column(Text)
    s_query: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # Close's form, when saved that way
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()

    __table_args__ = (UniqueConstraint("organization_id", "name"),)


class ConnectionSecurity(enum.StrEnum):
    none = "none"
    starttls = "starttls"
    tls = "tls"


_NEEDS_QUOTES = re.compile(r'[()<>\[\]:;@\\,."]')


class EmailAccount(Base):
    """A user's sending account: their own SMTP server, and optionally their IMAP mailbox."""

    __tablename__ = "email_accounts"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    organization_id: Mapped[int] = _org_fk()
    user_id: Mapped[int | None] = mapped_column(Id, ForeignKey("users.id", ondelete="SET NULL"))
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(200), default="")
    smtp_host: Mapped[str] = mapped_column(String(255))
    smtp_port: Mapped[int] = mapped_column(Integer, default=587)
    smtp_security: Mapped[ConnectionSecurity] = mapped_column(
        Enum(ConnectionSecurity, native_enum=False, length=20), default=ConnectionSecurity.starttls
    )
    smtp_username: Mapped[str] = mapped_column(String(320), default="")
    # Fernet tokens (bulkmail.shared.secrets); never returned by the API, never logged.
    smtp_password_encrypted: Mapped[str] = mapped_column(Text, default="")
    imap_host: Mapped[str] = mapped_column(String(255), default="")
    imap_port: Mapped[int] = mapped_column(Integer, default=993)
    imap_security: Mapped[ConnectionSecurity] = mapped_column(
        Enum(ConnectionSecurity, native_enum=False, length=20), default=ConnectionSecurity.tls
    )
    imap_username: Mapped[str] = mapped_column(String(320), default="")
    imap_password_encrypted: Mapped[str] = mapped_column(Text, default="")
    sent_folder: Mapped[str] = mapped_column(String(300), default="")  # override; empty = discover
    sent_folder_discovered: Mapped[str] = mapped_column(String(300), default="")
    # "auto" follows the Gmail rules; "always"/"never" override them.
    sent_copy_mode: Mapped[str] = mapped_column(String(10), default="auto")
    limit_per_minute: Mapped[int | None] = mapped_column(Integer)
    limit_per_hour: Mapped[int | None] = mapped_column(Integer)
    limit_per_day: Mapped[int | None] = mapped_column(Integer)
    min_delay_ms: Mapped[int] = mapped_column(Integer, default=0)
    max_connections: Mapped[int] = mapped_column(Integer, default=3)
    # Set when the provider throttles or refuses us: no sending until then.
    paused_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    pause_reason: Mapped[str] = mapped_column(Text, default="")
    # Pauses since the last message sent: each lasts longer than the one before.
    pauses_in_a_row: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Attempts since the last message sent that could not reach or use the SMTP server.
    failures_in_a_row: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()

    @property
    def sender(self) -> str:
        """``Name <address>`` (the name quoted when it needs to be), as Close shows a sender."""
        if not self.name:
            return self.email
        name = self.name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{name}" <{self.email}>' if _NEEDS_QUOTES.search(self.name) else f"{self.name} <{self.email}>"


class SendSlot(Base):
    """One reserved send of an email account, at the time it was reserved."""

    __tablename__ = "send_slots"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    organization_id: Mapped[int] = _org_fk()  # the account's: queries go by account (migration 0017)
    email_account_id: Mapped[int] = mapped_column(Id, ForeignKey("email_accounts.id", ondelete="CASCADE"))
    reserved_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)

    __table_args__ = (Index("ix_send_slots_email_account_id_reserved_at", "email_account_id", "reserved_at"),)


class SmtpConnectionLease(Base):
    """One of an account's ``max_connections`` SMTP connection slots, held by a worker until it expires."""

    __tablename__ = "smtp_connection_leases"
    email_account_id: Mapped[int] = mapped_column(
        Id, ForeignKey("email_accounts.id", ondelete="CASCADE"), primary_key=True
    )
    organization_id: Mapped[int] = _org_fk()  # the account's
    slot: Mapped[int] = mapped_column(Integer, primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class AccountCheckKind(enum.StrEnum):
    connection = "connection"  # log in over SMTP and IMAP, find the Sent folder
    test_message = "test_message"  # one template rendered for one recipient, sent to the user who asked


class AccountCheckStatus(enum.StrEnum):
    pending = "pending"
    ok = "ok"
    failed = "failed"


class AccountCheck(Base):
    """A connection test or a test message, asked for in the web app and carried out by a mailer.

    The query-api speaks neither SMTP nor IMAP (its image carries no IMAP client): it writes this
    row, queues ``CheckEmailAccount``, and the page reads the row until a mailer has filled in the
    outcome (``result``: JSON with the servers' replies, never a password).
    """

    __tablename__ = "account_checks"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    organization_id: Mapped[int] = _org_fk()
    email_account_id: Mapped[int] = mapped_column(Id, ForeignKey("email_accounts.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(Id, ForeignKey("users.id", ondelete="SET NULL"))
    kind: Mapped[AccountCheckKind] = mapped_column(Enum(AccountCheckKind, native_enum=False, length=20))
    status: Mapped[AccountCheckStatus] = mapped_column(
        Enum(AccountCheckStatus, native_enum=False, length=20), default=AccountCheckStatus.pending
    )
    # A test message: the template, rendered for this lead's contact and address, goes to ``send_to``.
    template_id: Mapped[int | None] = mapped_column(Id, ForeignKey("email_templates.id", ondelete="CASCADE"))
    lead_id: Mapped[int | None] = mapped_column(Id)
    contact_id: Mapped[int | None] = mapped_column(Id)
    rendered_for: Mapped[str] = mapped_column(String(320), default="")
    send_to: Mapped[str] = mapped_column(String(320), default="")
    result: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = _now()
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Suppression(Base):
    """An address that must not be mailed again: unsubscribed or hard-bounced."""

    __tablename__ = "suppressions"
    organization_id: Mapped[int] = mapped_column(
        Id, ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    email_normalized: Mapped[str] = mapped_column(String(320), primary_key=True)
    # unsubscribed | hard_bounce | soft_bounces | complaint
    reason: Mapped[str] = mapped_column(String(40))
    detail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = _now()


class BulkEmailStatus(enum.StrEnum):
    created = "created"
    # The ledger is being written (n_objects is set when it is complete); its first chunks
    # are already being sent.
    loading = "loading"
    processing = "processing"
    done = "done"
    paused = "paused"
    resuming = "resuming"
    error = "error"
    cancelled = "cancelled"


class ContactPreference(enum.StrEnum):
    lead = "lead"  # first email of the first contact that has one
    contact = "contact"  # first email of each contact
    all = "all"  # every email of every contact


class BulkEmail(Base):
    __tablename__ = "bulk_emails"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    organization_id: Mapped[int] = _org_fk()
    user_id: Mapped[int | None] = mapped_column(Id, ForeignKey("users.id", ondelete="SET NULL"))
    template_id: Mapped[int] = mapped_column(Id, ForeignKey("email_templates.id"))
    email_account_id: Mapped[int] = mapped_column(Id, ForeignKey("email_accounts.id"))
    saved_search_id: Mapped[int | None] = mapped_column(Id, ForeignKey("saved_searches.id", ondelete="SET NULL"))
    query: Mapped[str] = mapped_column(Text, default="")
    # Close's structured filter when the audience was given that way (``query`` holds its translation).
    s_query: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    results_limit: Mapped[int | None] = mapped_column(Integer)
    sort: Mapped[list[Any] | None] = mapped_column(JSON)
    updated_by_id: Mapped[int | None] = mapped_column(Id)  # who last paused, resumed or cancelled it
    contact_preference: Mapped[ContactPreference] = mapped_column(
        Enum(ContactPreference, native_enum=False, length=20), default=ContactPreference.lead
    )
    send_done_email: Mapped[bool] = mapped_column(Boolean, default=True)
    # Leads that already received this template are skipped unless the user asks otherwise.
    exclude_already_emailed: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[BulkEmailStatus] = mapped_column(
        Enum(BulkEmailStatus, native_enum=False, length=20), default=BulkEmailStatus.created
    )
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    # SHA-256 of the request the key was first used for ("": before migration 0010, not known).
    idempotency_fingerprint: Mapped[str] = mapped_column(String(64), default="", server_default="")
    n_leads: Mapped[int] = mapped_column(Integer, default=0)
    n_leads_processed: Mapped[int] = mapped_column(Integer, default=0)
    n_objects: Mapped[int] = mapped_column(Integer, default=0)
    # Addresses shared with an earlier lead of the same send: one email per address, counted here.
    n_duplicates: Mapped[int] = mapped_column(Integer, default=0)
    # The pump's place in the ledger: every recipient not yet queued has a greater id. Without it
    # the next chunk's query walked the recipients already queued (the planner prefers the
    # primary key for "ORDER BY id LIMIT", and statistics cannot say that the rows left are the
    # last ones). Lowered when a chunk hands recipients back (sender._finish_chunk).
    queued_through_id: Mapped[int] = mapped_column(Id, default=0, server_default="0")
    error: Mapped[str] = mapped_column(Text, default="")
    correlation_id: Mapped[str] = mapped_column(String(64), default="")
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    done_email_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Open and click tracking, opt-in per bulk email (docs/feedback.md): off unless asked for.
    track_opens: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sql_text("false"))
    track_clicks: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sql_text("false"))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()

    __table_args__ = (
        UniqueConstraint("organization_id", "idempotency_key"),
        Index("ix_bulk_emails_organization_id_created_at", "organization_id", "created_at"),
    )


class BulkEmailLead(Base):
    """The snapshot: the lead ids a bulk email's query matched when it was created.

    No foreign key to ``bulk_emails``: checked once per row, it cost a 100,000-lead snapshot half
    its time. A trigger deletes a bulk email's snapshot with it (migration 0016_search_scale).
    """

    __tablename__ = "bulk_email_leads"
    bulk_email_id: Mapped[int] = mapped_column(Id, primary_key=True)
    lead_id: Mapped[int] = mapped_column(Id, primary_key=True)


class BulkEmailChunk(Base):
    """A batch of recipients handed to the mailers; the dispatcher keeps few in flight per send.

    A chunk of never-tried recipients is an id range of its bulk email's ledger
    (``first_recipient_id``..``last_recipient_id``): queueing it writes no recipient row. A chunk
    of retries has no range; its recipients carry its id in ``Recipient.chunk_id``
    (docs/ledger.md, "Chunks").
    """

    __tablename__ = "bulk_email_chunks"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    organization_id: Mapped[int] = _org_fk()
    bulk_email_id: Mapped[int] = mapped_column(Id, ForeignKey("bulk_emails.id", ondelete="CASCADE"))
    size: Mapped[int] = mapped_column(Integer, default=0)
    first_recipient_id: Mapped[int | None] = mapped_column(Id)
    last_recipient_id: Mapped[int | None] = mapped_column(Id)
    # NULL while parked: handed back unsent (its bulk email was paused), published again on resume.
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_bulk_email_chunks_bulk_email_id_done_at", "bulk_email_id", "done_at"),)


class RecipientState(enum.StrEnum):
    pending = "pending"
    sending = "sending"
    sent = "sent"
    failed = "failed"
    skipped = "skipped"
    deferred = "deferred"  # retry at next_attempt_at
    unknown = "unknown"  # died between handing to SMTP and recording the reply
    # What came back after `sent` (docs/feedback.md); written only by the ledger (shared/ledger/feedback.py).
    bounced = "bounced"  # a hard bounce: the address is suppressed
    complained = "complained"  # marked as spam (an ARF report or a provider's complaint)
    replied = "replied"  # a reply naming our Message-ID


# Accepted by the server: sent, whatever came back afterwards. These have a message (and a Sent copy).
ACCEPTED_STATES = (RecipientState.sent, RecipientState.bounced, RecipientState.complained, RecipientState.replied)
# Not accepted, or not known to be: what the failures list, the failures CSV and the done email show.
FAILED_STATES = (RecipientState.failed, RecipientState.unknown)


class SkipReason(enum.StrEnum):
    no_email = "no_email"
    unsubscribed = "unsubscribed"
    duplicate_address = "duplicate_address"
    already_received_template = "already_received_template"
    suppressed = "suppressed"
    # An address the mailer cannot deliver to (bulkmail.shared.addresses), stored before the API checked.
    invalid_address = "invalid_address"
    cancelled = "cancelled"
    # Found at the claim, after the ledger was built: the contact or its address went away.
    contact_deleted = "contact_deleted"
    address_changed = "address_changed"


class SentCopyState(enum.StrEnum):
    """The Sent-folder copy of a sent recipient, a sub-state kept apart from sending."""

    pending = "pending"
    copying = "copying"  # claimed by a worker, committed before the APPEND
    appended = "appended"
    skipped = "skipped"
    failed = "failed"  # nothing stored
    unknown = "unknown"  # may be stored: the retry searches for the Message-ID first


# Retries waiting for their time (the pump's due query), and recipients in a chunk of retries.
# Neither condition changes while a fresh recipient is claimed and recorded (next_attempt_at and
# chunk_id stay NULL), so those two writes can be HOT (docs/ledger.md, "Row writes").
WAITING = "next_attempt_at IS NOT NULL"
IN_A_RETRY_CHUNK = "chunk_id IS NOT NULL"
# Free space left in each page of the ledger when it is written: room for a row's claimed and
# recorded versions next to it, so that both updates stay on the page (HOT).
RECIPIENTS_FILLFACTOR = 50


class Recipient(Base):
    """The ledger: one row per bulk email and normalised address, written before any message about it.

    Only ``bulkmail.shared.ledger`` writes these rows, through named transitions; the states and
    the moves between them are in docs/ledger.md.
    """

    __tablename__ = "recipients"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    organization_id: Mapped[int] = _org_fk()
    bulk_email_id: Mapped[int] = mapped_column(Id, ForeignKey("bulk_emails.id", ondelete="CASCADE"))
    lead_id: Mapped[int] = mapped_column(Id)
    contact_id: Mapped[int | None] = mapped_column(Id)
    email: Mapped[str] = mapped_column(String(320))
    email_normalized: Mapped[str] = mapped_column(String(320))
    state: Mapped[RecipientState] = mapped_column(
        Enum(RecipientState, native_enum=False, length=20), default=RecipientState.pending
    )
    # The chunk of retries that carries this recipient to a mailer; NULL for a recipient never
    # tried, whose chunk is the id range it falls in (BulkEmailChunk).
    chunk_id: Mapped[int | None] = mapped_column(Id)
    skip_reason: Mapped[SkipReason | None] = mapped_column(Enum(SkipReason, native_enum=False, length=40))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    message_id: Mapped[str] = mapped_column(String(255), default="")
    smtp_reply: Mapped[str] = mapped_column(Text, default="")
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Sent-folder copy, separate from sending; NULL until the message is sent.
    sent_copy_state: Mapped[SentCopyState | None] = mapped_column(Enum(SentCopyState, native_enum=False, length=20))
    sent_copy_uid: Mapped[str] = mapped_column(String(64), default="")
    updated_at: Mapped[datetime] = _now()

    # No index names ``state`` (nor any column a send changes): a claim and an outcome then
    # write the row without touching an index, as HOT updates (docs/ledger.md, "Row writes").
    __table_args__ = (
        UniqueConstraint("bulk_email_id", "email_normalized"),
        # A bulk email's ledger in id order: chunks are id ranges of it.
        Index("ix_recipients_bulk_email_id_id", "bulk_email_id", "id"),
        Index(
            "ix_recipients_waiting",
            "bulk_email_id",
            "next_attempt_at",
            postgresql_where=sql_text(WAITING),
            sqlite_where=sql_text(WAITING),
        ),
        Index(
            "ix_recipients_retry_chunk",
            "chunk_id",
            postgresql_where=sql_text(IN_A_RETRY_CHUNK),
            sqlite_where=sql_text(IN_A_RETRY_CHUNK),
        ),
        {"postgresql_with": {"fillfactor": RECIPIENTS_FILLFACTOR}},
    )


class EmailActivity(Base):
    """An email on a lead's timeline; bulk sends record one per sent recipient."""

    __tablename__ = "email_activities"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    organization_id: Mapped[int] = _org_fk()
    lead_id: Mapped[int] = mapped_column(Id, ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    contact_id: Mapped[int | None] = mapped_column(Id, ForeignKey("contacts.id", ondelete="SET NULL"))
    template_id: Mapped[int | None] = mapped_column(Id, ForeignKey("email_templates.id", ondelete="SET NULL"))
    bulk_email_id: Mapped[int | None] = mapped_column(Id, ForeignKey("bulk_emails.id", ondelete="SET NULL"))
    user_id: Mapped[int | None] = mapped_column(Id, ForeignKey("users.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(20), default="sent")  # sent | draft | inbox | error
    direction: Mapped[str] = mapped_column(String(20), default="outgoing")  # outgoing | incoming
    subject: Mapped[str] = mapped_column(String(998), default="")
    to_address: Mapped[str] = mapped_column(String(320), default="")  # the first recipient: searched by to:
    to_list: Mapped[list[str] | None] = mapped_column(JSON)  # every recipient, when more than to_address
    sender: Mapped[str] = mapped_column(String(700), default="", server_default="")  # "Name" <address>
    body_text: Mapped[str] = mapped_column(Text, default="", server_default="")
    body_html: Mapped[str] = mapped_column(Text, default="", server_default="")
    message_id: Mapped[str] = mapped_column(String(255), default="")
    date_sent: Mapped[datetime | None] = mapped_column(UTCDateTime())
    date_opened: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = _now()

    __table_args__ = (Index("ix_email_activities_template_id_lead_id", "template_id", "lead_id"),)


class FeedbackKind(enum.StrEnum):
    """What came back about a sent message (docs/feedback.md)."""

    hard_bounce = "hard_bounce"
    soft_bounce = "soft_bounce"
    complaint = "complaint"
    reply = "reply"
    auto_reply = "auto_reply"  # out-of-office and other RFC 3834 answers: neither bounce nor reply
    unsubscribe = "unsubscribe"  # reported by a sending service
    open = "open"
    click = "click"


class EmailFeedback(Base):
    """One thing that came back: a bounce, complaint, reply, open or click, recorded once.

    ``dedup_key`` makes every source idempotent: the incoming message's Message-ID for mail read
    from the inbox, the provider's event id for webhooks. The report counts come from here.
    """

    __tablename__ = "email_feedback"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    organization_id: Mapped[int] = _org_fk()
    email_account_id: Mapped[int | None] = mapped_column(Id, ForeignKey("email_accounts.id", ondelete="SET NULL"))
    bulk_email_id: Mapped[int | None] = mapped_column(Id, ForeignKey("bulk_emails.id", ondelete="CASCADE"))
    recipient_id: Mapped[int | None] = mapped_column(Id)
    email_normalized: Mapped[str] = mapped_column(String(320), default="")
    kind: Mapped[FeedbackKind] = mapped_column(Enum(FeedbackKind, native_enum=False, length=20))
    # imap | ses | sendgrid | mailgun | postmark | tracking
    source: Mapped[str] = mapped_column(String(20))
    detail: Mapped[str] = mapped_column(Text, default="")
    # Probably not a person: a privacy proxy or a scanner fetching the pixel or the link.
    machine: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sql_text("false"))
    dedup_key: Mapped[str] = mapped_column(String(400))
    occurred_at: Mapped[datetime] = _now()
    created_at: Mapped[datetime] = _now()

    __table_args__ = (
        UniqueConstraint("organization_id", "dedup_key"),
        Index("ix_email_feedback_bulk_email_id_kind", "bulk_email_id", "kind"),
        Index("ix_email_feedback_organization_id_email_normalized", "organization_id", "email_normalized"),
    )


class InboxSync(Base):
    """How far the inbox sync has read an account's INBOX, and which worker holds its one login."""

    __tablename__ = "inbox_syncs"
    email_account_id: Mapped[int] = mapped_column(
        Id, ForeignKey("email_accounts.id", ondelete="CASCADE"), primary_key=True
    )
    organization_id: Mapped[int] = _org_fk()
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # The lease: one worker, so one IMAP login, per account at a time.
    leased_by: Mapped[str] = mapped_column(String(100), default="")
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str] = mapped_column(Text, default="")


class FeedbackWebhook(Base):
    """A sending service's webhook into one email account: an unguessable token in the URL."""

    __tablename__ = "feedback_webhooks"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    organization_id: Mapped[int] = _org_fk()
    email_account_id: Mapped[int] = mapped_column(Id, ForeignKey("email_accounts.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(String(20))  # ses | sendgrid | mailgun
    # SHA-256 of the token: the token itself is shown once, like an API key.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # Fernet-encrypted: Mailgun's signing key or SendGrid's public key (PEM/base64 DER).
    signing_key_encrypted: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = _now()


class WebhookDelivery(Base):
    """Signatures already accepted: a replayed webhook is refused even inside its time window."""

    __tablename__ = "webhook_deliveries"
    webhook_id: Mapped[int] = mapped_column(
        Id, ForeignKey("feedback_webhooks.id", ondelete="CASCADE"), primary_key=True
    )
    delivery_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    received_at: Mapped[datetime] = _now()
