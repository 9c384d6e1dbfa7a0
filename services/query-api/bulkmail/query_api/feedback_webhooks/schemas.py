"""Webhook endpoints for sending services: what the user gives, what they get back (the URL, once)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, SecretStr, StringConstraints, model_validator

from bulkmail.shared.models import FeedbackWebhook

Provider = Literal["ses", "sendgrid", "mailgun"]


class FeedbackWebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    provider: Provider
    # Mailgun: the HTTP webhook signing key. SendGrid: the verification key (base64 DER or PEM).
    # Amazon SES through SNS needs none: SNS signs with Amazon's certificate.
    signing_key: Annotated[SecretStr, StringConstraints(max_length=4000)] | None = None

    @model_validator(mode="after")
    def _key_where_needed(self) -> FeedbackWebhookIn:
        has_key = self.signing_key is not None and bool(self.signing_key.get_secret_value().strip())
        if self.provider in ("sendgrid", "mailgun") and not has_key:
            raise ValueError(f"signing_key is required for {self.provider}")
        if self.provider == "ses" and has_key:
            raise ValueError("signing_key is not used for ses (SNS messages carry Amazon's certificate signature)")
        return self


class FeedbackWebhookOut(BaseModel):
    id: int
    email_account_id: int
    provider: str
    date_created: datetime
    # Only in the answer to the creation: the token in it is not stored and cannot be shown again.
    url: str | None = None


def to_out(w: FeedbackWebhook, url: str | None = None) -> FeedbackWebhookOut:
    return FeedbackWebhookOut(
        id=w.id, email_account_id=w.email_account_id, provider=w.provider, date_created=w.created_at, url=url
    )


class WebhookAccepted(BaseModel):
    accepted: int  # events applied
    ignored: int  # events not about bounces/complaints/unsubscribes, or not about our mail
