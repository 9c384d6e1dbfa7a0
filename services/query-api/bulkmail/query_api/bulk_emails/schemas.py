"""Bulk email payloads: Close's BulkEmailAction fields plus our ledger counts."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from bulkmail.query_api.email_templates.schemas import RenderedSample
from bulkmail.shared.contracts import BulkEmailCounts
from bulkmail.shared.models import ContactPreference, Recipient


class BulkEmailIn(BaseModel):
    """The audience is one of ``query`` (the classic language), ``saved_search_id`` or Close's
    structured ``s_query``; the account is ``email_account_id`` or Close's ``sender`` (its address)."""

    model_config = ConfigDict(extra="forbid")
    query: Annotated[str, StringConstraints(max_length=10_000)] | None = None
    saved_search_id: int | None = None
    s_query: dict[str, Any] | None = None
    results_limit: Annotated[int, Field(ge=1)] | None = None
    sort: list[dict[str, Any]] | None = Field(default=None, max_length=20)
    template_id: int
    email_account_id: int | None = None
    sender: Annotated[str, StringConstraints(min_length=3, max_length=700)] | None = None
    contact_preference: ContactPreference = ContactPreference.lead
    send_done_email: bool = True
    exclude_already_emailed: bool = True
    # Open and click tracking: off unless asked for (docs/feedback.md).
    track_opens: bool = False
    track_clicks: bool = False

    @model_validator(mode="after")
    def _one_audience(self) -> BulkEmailIn:
        given = [self.query is not None and bool(self.query.strip()), self.saved_search_id is not None]
        given.append(self.s_query is not None)
        if sum(given) != 1:
            raise ValueError("give exactly one of 'query', 'saved_search_id' or 's_query'")
        if self.email_account_id is None and self.sender is None:
            raise ValueError("give 'email_account_id' or 'sender' (the address of one of your email accounts)")
        return self


class PreviewIn(BulkEmailIn):
    samples: Annotated[int, Field(ge=0, le=100)] = 3


class BulkEmailStatusIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["paused", "resuming", "cancelled"]


class RetryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Recipients whose outcome is unknown may already have the email: resend them only on request.
    include_unknown: bool = False


class ReportOut(BaseModel):
    """What came back (docs/feedback.md): unique recipients per outcome; machine opens and clicks apart."""

    delivered: int = 0
    bounced_hard: int = 0
    bounced_soft: int = 0
    complained: int = 0
    unsubscribed: int = 0
    replied: int = 0
    auto_replied: int = 0
    opened: int = 0
    opened_machine: int = 0
    clicked: int = 0
    clicked_machine: int = 0


class BulkEmailOut(BaseModel):
    id: int
    organization_id: int
    status: str
    contact_preference: str
    template_id: int
    email_account_id: int
    sender: str  # the account's "Name" <address>, as Close shows it
    saved_search_id: int | None
    query: str
    s_query: dict[str, Any] | None
    results_limit: int | None
    sort: list[dict[str, Any]]
    created_by: int | None
    updated_by: int | None
    n_leads: int
    n_leads_processed: int
    n_objects: int
    n_objects_processed: int
    n_duplicates: int
    send_done_email: bool
    exclude_already_emailed: bool
    counts: BulkEmailCounts
    skipped: dict[str, int]
    error: str
    date_created: datetime
    date_updated: datetime
    date_done: datetime | None
    # When the last recipient is expected to go out, honouring the account's limits and pauses.
    eta: datetime | None = None
    eta_text: str = ""
    track_opens: bool = False
    track_clicks: bool = False
    report: ReportOut = Field(default_factory=ReportOut)


class BulkEmailList(BaseModel):
    data: list[BulkEmailOut]
    has_more: bool


class RecipientOut(BaseModel):
    id: int
    lead_id: int
    contact_id: int | None
    email: str
    state: str
    skip_reason: str | None
    attempts: int
    next_attempt_at: datetime | None
    message_id: str
    smtp_reply: str
    sent_at: datetime | None


def recipient_out(r: Recipient) -> RecipientOut:
    return RecipientOut(
        id=r.id,
        lead_id=r.lead_id,
        contact_id=r.contact_id,
        email=r.email,
        state=r.state.value,
        skip_reason=r.skip_reason,
        attempts=r.attempts,
        next_attempt_at=r.next_attempt_at,
        message_id=r.message_id,
        smtp_reply=r.smtp_reply,
        sent_at=r.sent_at,
    )


class RecipientList(BaseModel):
    data: list[RecipientOut]
    has_more: bool


class PreviewOut(BaseModel):
    n_leads: int
    n_leads_display: str
    recipients: int
    excluded: dict[str, int]
    # The reasons behind excluded["suppressed"]: hard_bounce, soft_bounces, complaint...
    suppressed_by_reason: dict[str, int] = Field(default_factory=dict)
    warnings: list[str]
    samples: list[RenderedSample]
    # Leads of the audience that were already sent this template (left out unless asked otherwise).
    already_received: int = 0
    # One-click fixes: the query with `not emailed_template:"..."` added, and capped with `limit:`.
    resend_fix: str | None = None
    limit_fix: str | None = None
