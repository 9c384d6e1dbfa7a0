"""``/bulk-emails`` and ``/bulk-emails/{id}``: the list, and one send's progress and controls.

The progress page polls ``/ui/bulk-emails/{id}`` every second for the same numbers the API's
``GET /bulk_action/email/{id}/`` gives (``service.to_out``, with the ETA in the user's words) and
for the fragments it shows. Pause, resume, cancel and retry are plain forms calling the same
service functions as the API's PUT and POST.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.query_api.bulk_emails import service
from bulkmail.query_api.bulk_emails.schemas import BulkEmailOut
from bulkmail.query_api.deps import DatabaseDep, OutboxDep, SessionDep
from bulkmail.query_api.errors import APIError
from bulkmail.query_api.ownership import get_owned
from bulkmail.query_api.pagination import Page
from bulkmail.query_api.web.charts import sent_chart
from bulkmail.query_api.web.page_errors import page_not_found
from bulkmail.query_api.web.rendering import render, templates
from bulkmail.query_api.web.session import CurrentUser, WebUserDep, csrf_token
from bulkmail.shared import bulk_emails
from bulkmail.shared.db import Database
from bulkmail.shared.models import (
    FAILED_STATES,
    BulkEmail,
    BulkEmailStatus,
    EmailAccount,
    EmailTemplate,
    Recipient,
    RecipientState,
)

router = APIRouter()

S = BulkEmailStatus
LIST_PAGE = 50
RECIPIENT_PAGE = 50
STATUS_BADGES = {
    S.done: "badge-success",
    S.error: "badge-danger",
    S.cancelled: "badge-muted",
    S.paused: "badge-warning",
}
STATE_BADGES = {
    "sent": "badge-success",
    "failed": "badge-danger",
    "unknown": "badge-danger",
    "deferred": "badge-warning",
}
STATES = [s.value for s in RecipientState]


@dataclass
class Progress:
    """What the page shows of one bulk email."""

    bulk: BulkEmailOut
    template_name: str
    account_email: str

    @property
    def finished(self) -> bool:
        return self.bulk.status in {s.value for s in bulk_emails.FINAL_STATUSES}

    @property
    def total(self) -> int:
        c = self.bulk.counts
        return c.pending + c.sending + c.sent + c.failed + c.deferred + c.unknown

    @property
    def processed(self) -> int:
        c = self.bulk.counts
        return c.sent + c.failed + c.unknown

    @property
    def percent(self) -> float:
        if self.bulk.status == S.done.value:
            return 100.0
        return round(100.0 * self.processed / self.total, 1) if self.total else 0.0

    @property
    def controls(self) -> list[str]:
        status = S(self.bulk.status)
        out = []
        if status in bulk_emails.UNFINISHED_STATUSES:
            out.append("pause")
        if status == S.paused:
            out.append("resume")
        if status in bulk_emails.ACTIVE_STATUSES:
            out.append("cancel")
        if status in bulk_emails.RETRYABLE_STATUSES and self.bulk.counts.failed + self.bulk.counts.unknown > 0:
            out.append("retry")
        return out

    @property
    def eta_words(self) -> str:
        if self.bulk.status == S.done.value:
            missed = self.bulk.counts.failed + self.bulk.counts.unknown
            return f"Done; {missed:,} not delivered." if missed else "Done."
        if self.bulk.status == S.paused.value:
            return "Paused. Resume to carry on."
        if self.finished:
            return f"{self.bulk.status.capitalize()}."
        return self.bulk.eta_text or "Starting…"


async def _progress(session: AsyncSession, database: Database, user: CurrentUser, bulk: BulkEmail) -> Progress:
    out = await service.to_out(session, bulk, database.sessionmaker, user.timezone)
    template = await session.get(EmailTemplate, bulk.template_id)
    account = await session.get(EmailAccount, bulk.email_account_id)
    return Progress(
        out, template.name if template else f"Template {bulk.template_id}", account.email if account else ""
    )


async def _recipients(
    session: AsyncSession, bulk_id: int, state: str, page: int
) -> tuple[list[Recipient], bool, dict[str, str | None]]:
    chosen = RecipientState(state) if state in STATES else None
    rows, has_more = await service.recipients_page(
        session, bulk_id, chosen, Page(limit=RECIPIENT_PAGE, skip=(page - 1) * RECIPIENT_PAGE)
    )

    def link(p: int) -> str:
        return f"/bulk-emails/{bulk_id}?" + urlencode({k: v for k, v in {"state": state, "page": p}.items() if v})

    pages = {
        "previous": link(page - 1) if page > 1 else None,
        "next": link(page + 1) if has_more else None,
    }
    return rows, has_more, pages


def _context(
    progress: Progress, chart: str, recipients: list[Recipient], pages: dict[str, Any], state: str, page: int
) -> dict[str, Any]:
    return {
        "p": progress,
        "chart": chart,
        "recipients": recipients,
        "pages": pages,
        "state": state,
        "page": page,
        "states": STATES,
        "status_badges": STATUS_BADGES,
        "state_badges": STATE_BADGES,
    }


async def _owned(session: AsyncSession, user: CurrentUser, bulk_id: int) -> BulkEmail:
    return await get_owned(session, BulkEmail, bulk_id, user.organization_id, what="bulk email")


@router.get("/bulk-emails")
async def bulk_email_list(request: Request, session: SessionDep, user: WebUserDep, page: int = 1) -> Response:
    page = max(1, page)
    rows = list(
        await session.scalars(
            select(BulkEmail)
            .where(BulkEmail.organization_id == user.organization_id)
            .order_by(BulkEmail.id.desc())
            .offset((page - 1) * LIST_PAGE)
            .limit(LIST_PAGE + 1)
        )
    )
    items = []
    for bulk in rows[:LIST_PAGE]:
        template = await session.get(EmailTemplate, bulk.template_id)
        account = await session.get(EmailAccount, bulk.email_account_id)
        out = await service.to_out(session, bulk)
        items.append(Progress(out, template.name if template else "", account.email if account else ""))
    return render(
        request,
        "bulk_emails/list.html",
        {
            "items": items,
            "page": page,
            "has_more": len(rows) > LIST_PAGE,
            "status_badges": STATUS_BADGES,
            "timezone": user.timezone,
        },
    )


@router.get("/bulk-emails/{bulk_id}")
async def progress_page(
    request: Request,
    session: SessionDep,
    database: DatabaseDep,
    user: WebUserDep,
    bulk_id: int,
    state: str = "",
    page: int = 1,
    notice: str = "",
) -> Response:
    try:
        bulk = await _owned(session, user, bulk_id)
    except APIError as exc:
        return page_not_found(request, exc.detail)
    page = max(1, page)
    progress = await _progress(session, database, user, bulk)
    recipients, _more, pages = await _recipients(session, bulk.id, state, page)
    context = _context(progress, await sent_chart(session, bulk.id), recipients, pages, state, page)
    return render(request, "bulk_emails/progress.html", {**context, "notice": notice})


@router.get("/ui/bulk-emails/{bulk_id}")
async def live_progress(
    request: Request,
    session: SessionDep,
    database: DatabaseDep,
    user: WebUserDep,
    bulk_id: int,
    state: str = "",
    page: int = 1,
) -> JSONResponse:
    """The progress page's numbers and fragments, polled every second."""
    try:
        bulk = await _owned(session, user, bulk_id)
    except APIError as exc:
        return JSONResponse(exc.body(), status_code=exc.status_code)
    progress = await _progress(session, database, user, bulk)
    recipients, _more, pages = await _recipients(session, bulk.id, state, max(1, page))
    context = _context(
        progress, await sent_chart(session, bulk.id, fresh=progress.finished), recipients, pages, state, page
    )
    context["csrf_token"] = csrf_token(request)
    return JSONResponse(
        {
            "status": progress.bulk.status,
            "finished": progress.finished,
            "percent": progress.percent,
            "counts": progress.bulk.counts.model_dump(),
            "eta": progress.eta_words,
            "summary_html": templates.get_template("bulk_emails/_summary.html").render(context),
            "chart_html": context["chart"],
            "controls_html": templates.get_template("bulk_emails/_controls.html").render(context),
            "recipients_html": templates.get_template("bulk_emails/_recipients.html").render(context),
        }
    )


Action = Annotated[str, Form(pattern="^(pause|resume|cancel)$")]


@router.post("/bulk-emails/{bulk_id}/status")
async def change_status(
    request: Request, session: SessionDep, user: WebUserDep, outbox: OutboxDep, bulk_id: int, action: Action
) -> Response:
    try:
        bulk = await _owned(session, user, bulk_id)
        to = {"pause": "paused", "resume": "resuming", "cancel": "cancelled"}[action]
        await service.control(session, bulk, to, user.user_id, outbox)
        notice = {"pause": "Paused.", "resume": "Resuming.", "cancel": "Cancelled."}[action]
    except APIError as exc:
        if exc.status_code == 404:
            return page_not_found(request, exc.detail)
        notice = exc.detail
    return RedirectResponse(f"/bulk-emails/{bulk_id}?" + urlencode({"notice": notice}), status_code=303)


@router.post("/bulk-emails/{bulk_id}/retry")
async def retry_failed(
    request: Request, session: SessionDep, user: WebUserDep, outbox: OutboxDep, bulk_id: int
) -> Response:
    try:
        bulk = await _owned(session, user, bulk_id)
        n = await service.retry_and_queue(session, bulk, False, outbox)
        notice = f"Sending again to {n:,} failed recipient{'s' if n != 1 else ''}."
    except APIError as exc:
        if exc.status_code == 404:
            return page_not_found(request, exc.detail)
        notice = exc.detail
    return RedirectResponse(f"/bulk-emails/{bulk_id}?" + urlencode({"notice": notice}), status_code=303)


CSV_BATCH = 5_000


@router.get("/bulk-emails/{bulk_id}/failures.csv")
async def failures_csv(request: Request, session: SessionDep, user: WebUserDep, bulk_id: int) -> Response:
    """The recipients that were not delivered (failed, or outcome unknown), with the server's reply."""
    try:
        bulk = await _owned(session, user, bulk_id)
    except APIError as exc:
        return page_not_found(request, exc.detail)
    rows: list[Any] = []
    after = 0
    while True:  # batches by id, plain tuples: the response streams after the session has closed
        batch = (
            await session.execute(
                select(
                    Recipient.id,
                    Recipient.email,
                    Recipient.state,
                    Recipient.attempts,
                    Recipient.smtp_reply,
                    Recipient.lead_id,
                    Recipient.updated_at,
                )
                .where(
                    Recipient.bulk_email_id == bulk.id,
                    Recipient.state.in_(FAILED_STATES),
                    Recipient.id > after,
                )
                .order_by(Recipient.id)
                .limit(CSV_BATCH)
            )
        ).all()
        rows.extend(batch)
        if len(batch) < CSV_BATCH:
            break
        after = batch[-1][0]

    async def lines() -> AsyncIterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["email", "state", "attempts", "smtp_reply", "lead_id", "last_attempt_utc"])
        for _id, email, state, attempts, reply, lead_id, updated in rows:
            writer.writerow([_cell(email), state.value, attempts, _cell(reply), lead_id, updated.isoformat()])
            if buffer.tell() > 64_000:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()

    return StreamingResponse(
        lines(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="bulk-email-{bulk.id}-failures.csv"'},
    )


def _cell(value: str) -> str:
    """A spreadsheet must not run what a recipient address or server reply says (CSV injection)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
