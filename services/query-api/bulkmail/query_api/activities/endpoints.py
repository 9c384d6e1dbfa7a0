"""``/api/v1/activity/email/``: emails on leads' timelines (bulk sends record one per recipient)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, status

from bulkmail.query_api.activities import service
from bulkmail.query_api.activities.repository import ActivityFilter
from bulkmail.query_api.activities.schemas import EmailActivityIn, EmailActivityOut, to_out
from bulkmail.query_api.deps import AuthDep, SessionDep
from bulkmail.query_api.ownership import get_owned
from bulkmail.query_api.pagination import IdFilter, ListResponse, PageDep
from bulkmail.shared.models import EmailActivity

router = APIRouter(prefix="/activity/email", tags=["activity"])


@router.get("/", response_model=ListResponse[EmailActivityOut])
async def list_email_activities(
    session: SessionDep,
    principal: AuthDep,
    page: PageDep,
    lead_id: IdFilter = None,
    bulk_email_id: IdFilter = None,
    user_id: IdFilter = None,
    date_created__gt: Annotated[datetime | None, Query()] = None,
    date_created__lt: Annotated[datetime | None, Query()] = None,
) -> ListResponse[EmailActivityOut]:
    """Close's filters (lead, user, creation dates) and ours (the bulk email that sent it)."""
    where = ActivityFilter(lead_id, bulk_email_id, user_id, date_created__gt, date_created__lt)
    rows, has_more = await service.list_page(session, principal.organization_id, where, page)
    return ListResponse(data=[to_out(a) for a in rows], has_more=has_more)


@router.get("/{activity_id}/", response_model=EmailActivityOut)
async def get_email_activity(activity_id: int, session: SessionDep, principal: AuthDep) -> EmailActivityOut:
    return to_out(
        await get_owned(session, EmailActivity, activity_id, principal.organization_id, what="email activity")
    )


@router.post("/", response_model=EmailActivityOut, status_code=status.HTTP_201_CREATED)
async def log_email_activity(payload: EmailActivityIn, session: SessionDep, principal: AuthDep) -> EmailActivityOut:
    return to_out(await service.log(session, principal, payload))
