"""The unsubscribe page behind every ``List-Unsubscribe`` link, and its RFC 8058 one-click POST.

GET only shows a confirmation button (mail scanners follow links; they must not unsubscribe
anyone). POST, from that button or from the mail client's one-click, marks the address
unsubscribed on every contact of the organisation and adds it to the suppression list.
"""

from __future__ import annotations

import html

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bulkmail.query_api.deps import SessionDep, SettingsDep
from bulkmail.shared.counters import refresh_primary_email
from bulkmail.shared.models import ContactEmail, Suppression
from bulkmail.shared.unsubscribe import read_token

router = APIRouter(prefix="/unsubscribe", tags=["unsubscribe"], include_in_schema=True)

_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Unsubscribe</title></head>
<body style="font-family:sans-serif;max-width:32em;margin:3em auto">{content}</body></html>"""


def _page(content: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(content=content), status_code=status_code)


_INVALID = "<h1>This unsubscribe link is not valid</h1><p>It may have been cut short by your mail program.</p>"


@router.get("/{token}", response_class=HTMLResponse)
async def unsubscribe_page(token: str, settings: SettingsDep) -> HTMLResponse:
    found = read_token(settings, token)
    if found is None:
        return _page(_INVALID, 404)
    _, email = found
    return _page(
        f"<h1>Unsubscribe {html.escape(email)}?</h1>"
        f'<form method="post"><button type="submit" name="List-Unsubscribe" value="One-Click">'
        f"Unsubscribe</button></form>"
    )


@router.post("/{token}", response_class=HTMLResponse)
async def unsubscribe(token: str, request: Request, session: SessionDep, settings: SettingsDep) -> HTMLResponse:
    found = read_token(settings, token)
    if found is None:
        return _page(_INVALID, 404)
    organization_id, email = found
    marked = await session.execute(
        update(ContactEmail)
        .where(ContactEmail.organization_id == organization_id, ContactEmail.email_normalized == email)
        .values(is_unsubscribed=True)
        .returning(ContactEmail.lead_id)
        .execution_options(synchronize_session=False)
    )
    await refresh_primary_email(session, sorted({lead_id for (lead_id,) in marked}))
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = insert(Suppression).values(organization_id=organization_id, email_normalized=email, reason="unsubscribed")
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["organization_id", "email_normalized"], set_={"reason": "unsubscribed"}
        )
    )
    return _page(f"<h1>Unsubscribed</h1><p>{html.escape(email)} will get no more of these emails.</p>")
