"""Email templates: a template is saved only if every part compiles in the sandbox and nothing in it
can be known to explode; one in use cannot be deleted."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete as sql_delete
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.query_api.auth import Principal
from bulkmail.query_api.email_templates.rendering import check_limits_at_save, compile_or_400
from bulkmail.query_api.email_templates.schemas import EmailTemplateIn, EmailTemplateUpdate
from bulkmail.query_api.errors import Conflict
from bulkmail.query_api.ownership import ensure_name_free
from bulkmail.query_api.saved_searches.usage import views_using
from bulkmail.shared.models import BulkEmail, EmailTemplate, SavedSearch
from bulkmail.shared.settings import Settings


def validate(settings: Settings, subject: str, body: str, body_text: str) -> None:
    """Refuse a part that does not compile (400 naming the part, line and column) or that can be
    known to exceed the render limits (see ``bulkmail.shared.templating``)."""
    check_limits_at_save(compile_or_400(settings, subject, body, body_text))


async def create(
    session: AsyncSession, settings: Settings, organization_id: int, payload: EmailTemplateIn
) -> EmailTemplate:
    await ensure_name_free(session, EmailTemplate, organization_id, payload.name, None, "A template")
    validate(settings, payload.subject, payload.body, payload.body_text)
    row = EmailTemplate(organization_id=organization_id, **payload.model_dump())
    session.add(row)
    await session.flush()
    await session.refresh(row)
    return row


async def update(
    session: AsyncSession, settings: Settings, row: EmailTemplate, payload: EmailTemplateUpdate
) -> EmailTemplate:
    changes = payload.model_dump(exclude_none=True)
    if "name" in changes:
        await ensure_name_free(session, EmailTemplate, row.organization_id, changes["name"], row.id, "A template")
    validate(
        settings,
        changes.get("subject", row.subject),
        changes.get("body", row.body),
        changes.get("body_text", row.body_text),
    )
    for key, value in changes.items():
        setattr(row, key, value)
    row.updated_at = datetime.now(UTC)
    await session.flush()
    return row


async def delete(session: AsyncSession, principal: Principal, row: EmailTemplate) -> None:
    """Refused (409) while a bulk email (sending or done: its report shows the template) or a
    Smart View (``emailed_template:``) uses it."""
    org = principal.organization_id
    sent_with = list(
        await session.scalars(
            select(BulkEmail.id).where(BulkEmail.template_id == row.id).order_by(BulkEmail.id).limit(10)
        )
    )
    views = {
        name: query
        for name, query in await session.execute(
            select(SavedSearch.name, SavedSearch.query).where(SavedSearch.organization_id == org)
        )
    }
    users = await views_using(session, org, principal.user_id, views, template=row.name)
    if sent_with or users:
        uses = [f"bulk email {i}" for i in sent_with] + [f"Smart View {name!r}" for name in users]
        raise Conflict(
            f"Template {row.name!r} is used by {', '.join(uses)}; it cannot be deleted (rename it instead).",
            used_by={"bulk_emails": sent_with, "smart_views": users},
        )
    await session.execute(sql_delete(EmailTemplate).where(EmailTemplate.id == row.id))
