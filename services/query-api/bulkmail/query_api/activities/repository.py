"""Every query of the email activity domain."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select

from bulkmail.shared.models import EmailActivity


@dataclass(frozen=True)
class ActivityFilter:
    """Close's filters (lead, user, creation dates) and ours (the bulk email that sent it)."""

    lead_id: int | None = None
    bulk_email_id: int | None = None
    user_id: int | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


def activities_of(organization_id: int, where: ActivityFilter) -> Select[Any]:
    """The organisation's email activities matching ``where``, newest first."""
    stmt = select(EmailActivity).where(EmailActivity.organization_id == organization_id)
    if where.lead_id is not None:
        stmt = stmt.where(EmailActivity.lead_id == where.lead_id)
    if where.user_id is not None:
        stmt = stmt.where(EmailActivity.user_id == where.user_id)
    if where.created_after is not None:
        stmt = stmt.where(EmailActivity.created_at > where.created_after)
    if where.created_before is not None:
        stmt = stmt.where(EmailActivity.created_at < where.created_before)
    if where.bulk_email_id is not None:
        stmt = stmt.where(EmailActivity.bulk_email_id == where.bulk_email_id)
    return stmt.order_by(EmailActivity.id.desc())
