"""Email templates: a template is saved only if every part compiles in the sandbox."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.query_api.email_templates.schemas import EmailTemplateIn, EmailTemplateUpdate
from bulkmail.query_api.errors import BadRequest
from bulkmail.query_api.ownership import ensure_name_free
from bulkmail.shared.models import EmailTemplate
from bulkmail.shared.templating import TemplateError, compile_template


def validate(subject: str, body: str, body_text: str) -> None:
    """Refuse a part that does not compile, naming the part, line and column (400)."""
    try:
        compile_template(subject, body, body_text)
    except TemplateError as exc:
        raise BadRequest(
            f"The template's {exc.part} does not compile at line {exc.line}, column {exc.column}: {exc.message}",
            part=exc.part,
            line=exc.line,
            column=exc.column,
        ) from None


async def create(session: AsyncSession, organization_id: int, payload: EmailTemplateIn) -> EmailTemplate:
    await ensure_name_free(session, EmailTemplate, organization_id, payload.name, None, "A template")
    validate(payload.subject, payload.body, payload.body_text)
    row = EmailTemplate(organization_id=organization_id, **payload.model_dump())
    session.add(row)
    await session.flush()
    await session.refresh(row)
    return row


async def update(session: AsyncSession, row: EmailTemplate, payload: EmailTemplateUpdate) -> EmailTemplate:
    changes = payload.model_dump(exclude_none=True)
    if "name" in changes:
        await ensure_name_free(session, EmailTemplate, row.organization_id, changes["name"], row.id, "A template")
    validate(
        changes.get("subject", row.subject), changes.get("body", row.body), changes.get("body_text", row.body_text)
    )
    for key, value in changes.items():
        setattr(row, key, value)
    row.updated_at = datetime.now(UTC)
    await session.flush()
    return row
