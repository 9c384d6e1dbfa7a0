"""Email templates: a template is saved only if every part compiles in the sandbox and nothing in it
can be known to explode; one in use cannot be deleted. A template is rendered for a recipient the
way a bulk email would send it: for the pre-send audit's samples, Close's render route, and the
web app's live preview of a draft."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete as sql_delete
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.query_api.auth import Principal
from bulkmail.query_api.email_templates import repository
from bulkmail.query_api.email_templates.rendering import check_limits_at_save, compile_or_400, render_or_400
from bulkmail.query_api.email_templates.schemas import EmailTemplateIn, EmailTemplateUpdate, RenderedSample
from bulkmail.query_api.errors import BadRequest, Conflict
from bulkmail.query_api.ownership import ensure_name_free, get_owned
from bulkmail.query_api.pagination import Page, fetch_page
from bulkmail.query_api.recent import Kept
from bulkmail.query_api.saved_searches.repository import smart_view_queries
from bulkmail.query_api.saved_searches.usage import views_using
from bulkmail.query_api.search import compile_search, context_for
from bulkmail.shared.audience import Candidate, choose_candidates, load_batch
from bulkmail.shared.models import Contact, ContactPreference, EmailTemplate, Lead
from bulkmail.shared.render_data import RecipientRef, load_render_contexts, sender_context
from bulkmail.shared.settings import Settings
from bulkmail.shared.templating import CompiledTemplate, RenderContext, RenderResult


def validate(settings: Settings, subject: str, body: str, body_text: str) -> None:
    """Refuse a part that does not compile (400 naming the part, line and column) or that can be
    known to exceed the render limits (see ``bulkmail.shared.templating``)."""
    check_limits_at_save(compile_or_400(settings, subject, body, body_text))


async def list_page(session: AsyncSession, organization_id: int, page: Page) -> tuple[list[EmailTemplate], bool]:
    return await fetch_page(session, repository.templates_of(organization_id), page)


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
    sent_with = await repository.bulk_emails_using(session, row.id, limit=10)
    views = await smart_view_queries(session, org)
    users = await views_using(session, org, principal.user_id, views, template=row.name)
    if sent_with or users:
        uses = [f"bulk email {i}" for i in sent_with] + [f"Smart View {name!r}" for name in users]
        raise Conflict(
            f"Template {row.name!r} is used by {', '.join(uses)}; it cannot be deleted (rename it instead).",
            used_by={"bulk_emails": sent_with, "smart_views": users},
        )
    await session.execute(sql_delete(EmailTemplate).where(EmailTemplate.id == row.id))


# -- rendered for a recipient ---------------------------------------------------------------


async def render_samples(
    session: AsyncSession,
    principal: Principal,
    compiled_template: CompiledTemplate,
    template_name: str,
    chosen: list[Candidate],
) -> list[RenderedSample]:
    """The template as each chosen recipient would get it (the pre-send audit's samples)."""
    if not chosen:
        return []
    contexts = await render_contexts(session, principal, chosen)
    return [
        _sample(c, render_or_400(compiled_template, ctx, template_name, c.email))
        for c, ctx in zip(chosen, contexts, strict=True)
    ]


async def render_contexts(session: AsyncSession, principal: Principal, chosen: list[Candidate]) -> list[RenderContext]:
    """What each chosen recipient's template sees, with the signed-in user as the sender."""
    user, organization = await sender_context(session, principal.organization_id, principal.user_id)
    refs = [RecipientRef(c.lead_id, c.contact_id, c.email) for c in chosen]
    return await load_render_contexts(session, principal.organization_id, refs, user, organization)


def _sample(chosen: Candidate, rendered: RenderResult) -> RenderedSample:
    return RenderedSample(
        lead_id=chosen.lead_id,
        contact_id=chosen.contact_id,
        email=chosen.email,
        subject=rendered.subject,
        body=rendered.html,
        body_text=rendered.text,
        empty_tags=rendered.empty_tags,
        unknown_tags=rendered.unknown_tags,
    )


async def render_recipient(
    session: AsyncSession, settings: Settings, principal: Principal, template: EmailTemplate, recipient: RecipientRef
) -> RenderedSample:
    """The template as one recipient of the organisation would get it (the preview's email bodies)."""
    compiled_template = compile_or_400(settings, template.subject, template.body, template.body_text, template.name)
    chosen = Candidate(recipient.lead_id, recipient.contact_id, recipient.email, "", False)
    return await _render_for(session, principal, compiled_template, chosen, template.name)


async def render_entry(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    template_id: int,
    query: str,
    entry: int,
    mode: str,
    kept: Kept | None = None,
) -> RenderedSample | None:
    """Close's search preview: the ``entry``-th lead (its first contact) or contact with an email
    address among the search's results; None past the end (Close answers an empty object)."""
    org = principal.organization_id
    template, compiled_template = await _compiled_template(session, settings, org, template_id)
    return await render_for_entry(session, principal, compiled_template, query, entry, mode, template.name, kept)


async def render_for_entry(
    session: AsyncSession,
    principal: Principal,
    compiled_template: CompiledTemplate,
    query: str,
    entry: int,
    mode: str,
    template_name: str = "",
    kept: Kept | None = None,
) -> RenderedSample | None:
    """A compiled template (saved, or a draft being edited) rendered for the ``entry``-th lead (its
    first contact) or contact with an email address among the search's results; None past the end.
    ``kept``: catalogues recent requests read (``query_api.recent``)."""
    org = principal.organization_id
    compiled = compile_search(query, await context_for(session, principal, kept))
    if compiled.limit is not None and entry >= compiled.limit:
        return None
    # As Close: leads without an email address are skipped, so only leads with one are read.
    with_email = repository.leads_with_email(compiled)
    if mode == "lead":
        lead_ids = list(await session.scalars(with_email.offset(entry).limit(1)))
        rows = (await load_batch(session, org, lead_ids, None)).candidates.get(lead_ids[0], []) if lead_ids else []
        chosen = rows[0] if rows else None
    else:
        # Every such lead has at least one contact with an email: entry + 1 leads reach the entry.
        lead_ids = list(await session.scalars(with_email.limit(entry + 1)))
        by_lead = (await load_batch(session, org, lead_ids, None)).candidates if lead_ids else {}
        contacts = [
            c for lead_id in lead_ids for c in choose_candidates(by_lead.get(lead_id, []), ContactPreference.contact)
        ]
        chosen = contacts[entry] if entry < len(contacts) else None
    if chosen is None:
        return None
    return await _render_for(session, principal, compiled_template, chosen, template_name)


async def render_for_lead(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    template_id: int,
    lead_id: int,
    contact_id: int | None,
) -> RenderedSample:
    """Close's single form: the template for one lead and one of its contacts (the first with an
    email address when ``contact_id`` is not given)."""
    org = principal.organization_id
    template, compiled_template = await _compiled_template(session, settings, org, template_id)
    lead = await get_owned(session, Lead, lead_id, org, what="lead")
    rows = (await load_batch(session, org, [lead.id], None)).candidates.get(lead.id, [])
    if contact_id is not None:
        contact = await get_owned(session, Contact, contact_id, org, what="contact")
        if contact.lead_id != lead.id:
            raise BadRequest(
                f"Contact {contact_id} does not belong to lead {lead_id}.",
                **{"field-errors": {"contact_id": "not a contact of this lead"}},
            )
        rows = [r for r in rows if r.contact_id == contact.id]
        chosen = rows[0] if rows else Candidate(lead.id, contact.id, "", "", False)
    else:
        chosen = rows[0] if rows else Candidate(lead.id, None, "", "", False)
    return await _render_for(session, principal, compiled_template, chosen, template.name)


async def _compiled_template(
    session: AsyncSession, settings: Settings, organization_id: int, template_id: int
) -> tuple[EmailTemplate, CompiledTemplate]:
    template = await get_owned(session, EmailTemplate, template_id, organization_id, what="email template")
    return template, compile_or_400(settings, template.subject, template.body, template.body_text, template.name)


async def _render_for(
    session: AsyncSession,
    principal: Principal,
    compiled_template: CompiledTemplate,
    chosen: Candidate,
    template_name: str,
) -> RenderedSample:
    (render_ctx,) = await render_contexts(session, principal, [chosen])
    return _sample(chosen, render_or_400(compiled_template, render_ctx, template_name, chosen.email))
