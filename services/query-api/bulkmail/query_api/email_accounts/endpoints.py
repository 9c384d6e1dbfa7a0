"""``/api/v1/email_account/``: sending accounts. Passwords are write-only and encrypted at rest."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Request, status
from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints
from sqlalchemy import delete, select

from bulkmail.query_api.deps import AuthDep, SessionDep
from bulkmail.query_api.errors import Conflict
from bulkmail.query_api.leads.schemas import EmailAddress
from bulkmail.query_api.ownership import get_owned
from bulkmail.query_api.pagination import ListResponse, PageDep, fetch_page
from bulkmail.shared import bulk_emails
from bulkmail.shared.models import BulkEmail, ConnectionSecurity, EmailAccount
from bulkmail.shared.secrets import SecretBox

router = APIRouter(prefix="/email_account", tags=["email_account"])

Host = Annotated[str, StringConstraints(strip_whitespace=True, max_length=255, pattern=r"^[A-Za-z0-9.\-:\[\]]*$")]
Port = Annotated[int, Field(ge=1, le=65535)]
Limit = Annotated[int, Field(ge=1, le=10_000_000)]
Username = Annotated[str, StringConstraints(max_length=320)]
Password = Annotated[SecretStr, Field(max_length=1000)]


class EmailAccountFields(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, StringConstraints(max_length=200)] | None = None
    smtp_port: Port | None = None
    smtp_security: ConnectionSecurity | None = None
    smtp_username: Username | None = None
    smtp_password: Password | None = None
    imap_host: Host | None = None
    imap_port: Port | None = None
    imap_security: ConnectionSecurity | None = None
    imap_username: Username | None = None
    imap_password: Password | None = None
    sent_folder: Annotated[str, StringConstraints(max_length=300)] | None = None
    sent_copy_mode: Literal["auto", "always", "never"] | None = None
    limit_per_minute: Limit | None = None
    limit_per_hour: Limit | None = None
    limit_per_day: Limit | None = None
    min_delay_ms: Annotated[int, Field(ge=0, le=3_600_000)] | None = None
    max_connections: Annotated[int, Field(ge=1, le=100)] | None = None


class EmailAccountIn(EmailAccountFields):
    email: EmailAddress
    smtp_host: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=255, pattern=r"^[A-Za-z0-9.\-:\[\]]*$"),
    ]


class EmailAccountUpdate(EmailAccountFields):
    email: EmailAddress | None = None
    smtp_host: Host | None = None


class EmailAccountOut(BaseModel):
    """Never carries a password: only whether one is set."""

    id: int
    email: str
    name: str
    smtp_host: str
    smtp_port: int
    smtp_security: str
    smtp_username: str
    smtp_password_set: bool
    imap_host: str
    imap_port: int
    imap_security: str
    imap_username: str
    imap_password_set: bool
    sent_folder: str
    sent_copy_mode: str
    limit_per_minute: int | None
    limit_per_hour: int | None
    limit_per_day: int | None
    min_delay_ms: int
    max_connections: int
    paused_until: datetime | None
    pause_reason: str
    date_created: datetime
    date_updated: datetime


def to_out(a: EmailAccount) -> EmailAccountOut:
    return EmailAccountOut(
        id=a.id,
        email=a.email,
        name=a.name,
        smtp_host=a.smtp_host,
        smtp_port=a.smtp_port,
        smtp_security=a.smtp_security.value,
        smtp_username=a.smtp_username,
        smtp_password_set=bool(a.smtp_password_encrypted),
        imap_host=a.imap_host,
        imap_port=a.imap_port,
        imap_security=a.imap_security.value,
        imap_username=a.imap_username,
        imap_password_set=bool(a.imap_password_encrypted),
        sent_folder=a.sent_folder,
        sent_copy_mode=a.sent_copy_mode,
        limit_per_minute=a.limit_per_minute,
        limit_per_hour=a.limit_per_hour,
        limit_per_day=a.limit_per_day,
        min_delay_ms=a.min_delay_ms,
        max_connections=a.max_connections,
        paused_until=a.paused_until,
        pause_reason=a.pause_reason,
        date_created=a.created_at,
        date_updated=a.updated_at,
    )


def _apply(account: EmailAccount, payload: EmailAccountFields, box: SecretBox) -> None:
    for key in payload.model_fields_set:
        value = getattr(payload, key)
        if key in ("smtp_password", "imap_password"):
            secret = value.get_secret_value() if value is not None else ""
            setattr(account, f"{key}_encrypted", box.encrypt(secret) if secret else "")
        elif value is not None or key.startswith("limit_"):
            setattr(account, key, value)


def _box(request: Request) -> SecretBox:
    return request.app.state.secret_box  # type: ignore[no-any-return]


@router.get("/", response_model=ListResponse[EmailAccountOut])
async def list_accounts(session: SessionDep, principal: AuthDep, page: PageDep) -> ListResponse[EmailAccountOut]:
    stmt = select(EmailAccount).where(EmailAccount.organization_id == principal.organization_id)
    rows, has_more = await fetch_page(session, stmt.order_by(EmailAccount.id), page)
    return ListResponse(data=[to_out(a) for a in rows], has_more=has_more)


@router.post("/", response_model=EmailAccountOut, status_code=status.HTTP_201_CREATED)
async def create_account(
    payload: EmailAccountIn, request: Request, session: SessionDep, principal: AuthDep
) -> EmailAccountOut:
    account = EmailAccount(organization_id=principal.organization_id, user_id=principal.user_id)
    _apply(account, payload, _box(request))
    session.add(account)
    await session.flush()
    await session.refresh(account)
    return to_out(account)


@router.get("/{account_id}/", response_model=EmailAccountOut)
async def get_account(account_id: int, session: SessionDep, principal: AuthDep) -> EmailAccountOut:
    return to_out(await get_owned(session, EmailAccount, account_id, principal.organization_id, what="email account"))


@router.put("/{account_id}/", response_model=EmailAccountOut)
async def update_account(
    account_id: int, payload: EmailAccountUpdate, request: Request, session: SessionDep, principal: AuthDep
) -> EmailAccountOut:
    account = await get_owned(session, EmailAccount, account_id, principal.organization_id, what="email account")
    _apply(account, payload, _box(request))
    account.updated_at = datetime.now(UTC)
    await session.flush()
    return to_out(account)


@router.delete("/{account_id}/")
async def delete_account(account_id: int, session: SessionDep, principal: AuthDep) -> dict[str, object]:
    account = await get_owned(session, EmailAccount, account_id, principal.organization_id, what="email account")
    busy = await session.scalar(
        select(BulkEmail.id).where(
            BulkEmail.email_account_id == account.id,
            BulkEmail.status.not_in(bulk_emails.FINAL_STATUSES),
        )
    )
    if busy is not None:
        raise Conflict(f"Bulk email {busy} is still sending from this account; cancel it first.")
    await session.execute(delete(EmailAccount).where(EmailAccount.id == account.id))
    return {}
