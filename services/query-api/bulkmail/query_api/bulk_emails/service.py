"""Bulk emails in the query-api: the audience, the pre-send audit, the snapshot, and user control."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.query_api.auth import Principal
from bulkmail.query_api.bulk_emails.schemas import BulkEmailIn, BulkEmailOut, PreviewIn, PreviewOut, RenderedSample
from bulkmail.query_api.deps import Outbox
from bulkmail.query_api.errors import BadRequest, Conflict, NotFound
from bulkmail.query_api.ownership import get_owned
from bulkmail.query_api.search import CompiledSearch, compile_search, load_search_context
from bulkmail.shared import bulk_emails, metrics
from bulkmail.shared.audience import Candidate, choose_candidates, decide, load_batch
from bulkmail.shared.contracts import DISPATCH_QUEUE, DispatchBulkEmail
from bulkmail.shared.logging import correlation_id
from bulkmail.shared.models import (
    BulkEmail,
    BulkEmailStatus,
    ContactPreference,
    EmailAccount,
    EmailTemplate,
    Recipient,
    RecipientState,
    SavedSearch,
    SkipReason,
    Suppression,
)
from bulkmail.shared.providers import limits_for_account
from bulkmail.shared.rate_limit import SessionFactory, describe_resume, eta
from bulkmail.shared.render_data import RecipientRef, load_render_contexts, sender_context
from bulkmail.shared.settings import Settings
from bulkmail.shared.templating import CompiledTemplate, TemplateError, compile_template

S = BulkEmailStatus
RESUME_WINDOW = timedelta(days=7)  # as Close: a bulk email paused longer cannot be resumed
AUDIT_BATCH = 5_000


@dataclass
class Audience:
    query: str
    compiled: CompiledSearch
    template: EmailTemplate
    compiled_template: CompiledTemplate
    account: EmailAccount
    n_leads: int


async def resolve_audience(session: AsyncSession, principal: Principal, payload: BulkEmailIn) -> Audience:
    org = principal.organization_id
    template = await get_owned(session, EmailTemplate, payload.template_id, org, what="email template")
    account = await get_owned(session, EmailAccount, payload.email_account_id, org, what="email account")
    try:
        compiled_template = compile_template(template.subject, template.body, template.body_text)
    except TemplateError as exc:
        raise BadRequest(f"Template {template.name!r} cannot be used: {exc}") from None
    if payload.saved_search_id is not None:
        view = await get_owned(session, SavedSearch, payload.saved_search_id, org, what="Smart View")
        query = view.query
    else:
        query = payload.query or ""
    ctx = await load_search_context(session, organization_id=org, user_id=principal.user_id)
    compiled = compile_search(query, ctx)  # QueryError → 400 through the app's handler
    n_leads = int(await session.scalar(compiled.count()) or 0)
    return Audience(query, compiled, template, compiled_template, account, n_leads)


def _too_many(n_leads: int, limit: int) -> str:
    return (
        f"The query matches {n_leads:,} leads; one bulk email can go to at most {limit:,}. "
        f"Add limit: to the query (e.g. limit:{limit // 2}) and send the rest in a second bulk email "
        f"(e.g. with slice:1/2 and slice:2/2)."
    )


async def create(
    session: AsyncSession, settings: Settings, principal: Principal, payload: BulkEmailIn, idempotency_key: str | None
) -> tuple[BulkEmail, bool]:
    """The bulk email and whether it is new (a retried request returns the first one)."""
    if idempotency_key:
        existing = await _by_idempotency_key(session, principal.organization_id, idempotency_key)
        if existing is not None:
            return existing, False
    audience = await resolve_audience(session, principal, payload)
    if audience.n_leads > settings.max_bulk_email_leads:
        raise BadRequest(_too_many(audience.n_leads, settings.max_bulk_email_leads))
    if audience.n_leads == 0:
        raise BadRequest("The query matches no leads; nothing to send.")
    bulk = BulkEmail(
        organization_id=principal.organization_id,
        user_id=principal.user_id,
        template_id=audience.template.id,
        email_account_id=audience.account.id,
        saved_search_id=payload.saved_search_id,
        query=audience.query,
        contact_preference=payload.contact_preference,
        send_done_email=payload.send_done_email,
        exclude_already_emailed=payload.exclude_already_emailed,
        status=S.created,
        idempotency_key=idempotency_key,
        correlation_id=correlation_id.get(),
    )
    try:
        async with session.begin_nested():
            session.add(bulk)
            await session.flush()
    except IntegrityError:
        # The same key raced in from a concurrent retry: that one wins.
        existing = await _by_idempotency_key(session, principal.organization_id, idempotency_key or "")
        if existing is None:
            raise
        return existing, False
    # The snapshot: the matching lead ids frozen now, in one INSERT ... SELECT.
    await session.execute(audience.compiled.snapshot_insert(bulk.id, settings.max_bulk_email_leads))
    bulk.n_leads = min(audience.n_leads, settings.max_bulk_email_leads)
    await session.flush()
    return bulk, True


async def create_and_queue(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    payload: BulkEmailIn,
    idempotency_key: str | None,
    outbox: Outbox,
) -> tuple[BulkEmail, bool]:
    """Create (or find the retried) bulk email; a new one is handed to the dispatcher after commit."""
    bulk, created = await create(session, settings, principal, payload, idempotency_key)
    if created:
        metrics.record_bulk_email_status(bulk.status.value)
        outbox.add(DISPATCH_QUEUE, DispatchBulkEmail(bulk_email_id=bulk.id, organization_id=bulk.organization_id))
        outbox.add_event(await bulk_emails.event_for(session, bulk, bulk.status))
    return bulk, created


async def control(session: AsyncSession, bulk: BulkEmail, to: str, outbox: Outbox) -> None:
    """Pause, resume or cancel; the event goes out after commit, and a resumed send is pumped again."""
    new_status = await change_status(session, bulk, to)
    await session.refresh(bulk)
    outbox.add_event(await bulk_emails.event_for(session, bulk, new_status))
    if to == "resuming":
        outbox.add(DISPATCH_QUEUE, DispatchBulkEmail(bulk_email_id=bulk.id, organization_id=bulk.organization_id))


async def retry_and_queue(session: AsyncSession, bulk: BulkEmail, include_unknown: bool, outbox: Outbox) -> int:
    n = await retry_failed(session, bulk, include_unknown)
    if n == 0:
        raise BadRequest(f"Bulk email {bulk.id} has no failed recipients to retry.")
    await session.refresh(bulk)
    outbox.add(DISPATCH_QUEUE, DispatchBulkEmail(bulk_email_id=bulk.id, organization_id=bulk.organization_id))
    return n


def recipients_of(bulk_email_id: int, state: RecipientState | None = None) -> Select[Any]:
    """The per-recipient delivery report, in ledger order, optionally of one state."""
    stmt = select(Recipient).where(Recipient.bulk_email_id == bulk_email_id).order_by(Recipient.id)
    return stmt.where(Recipient.state == state) if state is not None else stmt


async def _by_idempotency_key(session: AsyncSession, organization_id: int, key: str) -> BulkEmail | None:
    return await session.scalar(
        select(BulkEmail).where(BulkEmail.organization_id == organization_id, BulkEmail.idempotency_key == key)
    )


async def to_out(
    session: AsyncSession, bulk: BulkEmail, sessionmaker: SessionFactory | None = None, timezone: str = "UTC"
) -> BulkEmailOut:
    counts = await bulk_emails.recipient_counts(session, bulk.id)
    eta_at, eta_text = None, ""
    if sessionmaker is not None and bulk.status in (S.processing, S.resuming, S.loading, S.created):
        eta_at, eta_text = await _eta(
            session, sessionmaker, bulk, counts.pending + counts.deferred + counts.sending, timezone
        )
    return BulkEmailOut(
        id=bulk.id,
        status=bulk.status.value,
        contact_preference=bulk.contact_preference.value,
        template_id=bulk.template_id,
        email_account_id=bulk.email_account_id,
        saved_search_id=bulk.saved_search_id,
        query=bulk.query,
        n_leads=bulk.n_leads,
        n_leads_processed=bulk.n_leads_processed,
        n_objects=bulk.n_objects,
        n_objects_processed=counts.sent + counts.failed + counts.unknown,
        n_duplicates=bulk.n_duplicates,
        send_done_email=bulk.send_done_email,
        exclude_already_emailed=bulk.exclude_already_emailed,
        counts=counts,
        skipped=await bulk_emails.skip_reasons(session, bulk.id),
        eta=eta_at,
        eta_text=eta_text,
        error=bulk.error,
        date_created=bulk.created_at,
        date_updated=bulk.updated_at,
        date_done=bulk.done_at,
    )


async def _eta(
    session: AsyncSession, sessionmaker: SessionFactory, bulk: BulkEmail, remaining: int, timezone: str
) -> tuple[datetime | None, str]:
    """The time the last recipient can go out, and the user's words for it ("resumes tomorrow at 09:12")."""
    account = await session.get(EmailAccount, bulk.email_account_id)
    if account is None or remaining <= 0:
        return None, ""
    now = datetime.now(UTC)
    limits = limits_for_account(account)
    paused_until = account.paused_until if account.paused_until and account.paused_until > now else None
    finish = await eta(sessionmaker, account.id, limits, remaining, now=paused_until or now)
    if paused_until is not None:
        return finish, f"account paused; {describe_resume(paused_until, now, timezone)}"
    if limits.unlimited:
        return None, "sending now"
    first = await eta(sessionmaker, account.id, limits, 1, now=now)
    text = describe_resume(first, now, timezone)
    return finish, f"{text}; the last recipient goes out about {finish:%Y-%m-%d %H:%M} UTC"


async def change_status(session: AsyncSession, bulk: BulkEmail, to: str) -> BulkEmailStatus:
    now = datetime.now(UTC)
    if to == "paused":
        if not await bulk_emails.transition(
            session, bulk.id, [S.created, S.loading, S.processing, S.resuming], S.paused, paused_at=now
        ):
            raise Conflict(f"Bulk email {bulk.id} is {bulk.status.value}; only a sending bulk email can be paused.")
        return S.paused
    if to == "resuming":
        if bulk.status != S.paused:
            raise Conflict(f"Bulk email {bulk.id} is {bulk.status.value}, not paused.")
        if bulk.paused_at is not None and now - bulk.paused_at > RESUME_WINDOW:
            raise Conflict(
                f"Bulk email {bulk.id} was paused more than 7 days ago and cannot be resumed; create a new one."
            )
        # A bulk paused before its recipients were loaded goes back to loading; the dispatcher knows.
        loaded = await session.scalar(
            select(func.count()).select_from(Recipient).where(Recipient.bulk_email_id == bulk.id)
        )
        target = S.resuming if loaded else S.created
        await bulk_emails.transition(session, bulk.id, [S.paused], target, paused_at=None)
        return S.resuming
    if not await bulk_emails.transition(session, bulk.id, bulk_emails.ACTIVE_STATUSES, S.cancelled, done_at=now):
        raise Conflict(f"Bulk email {bulk.id} is already {bulk.status.value}.")
    await session.execute(
        update(Recipient)
        .where(
            Recipient.bulk_email_id == bulk.id, Recipient.state.in_([RecipientState.pending, RecipientState.deferred])
        )
        .values(state=RecipientState.skipped, skip_reason=SkipReason.cancelled.value, next_attempt_at=None)
        .execution_options(synchronize_session=False)
    )
    return S.cancelled


async def retry_failed(session: AsyncSession, bulk: BulkEmail, include_unknown: bool) -> int:
    """Queue the failed recipients (and, if asked, the unknown ones) again; returns how many."""
    if bulk.status not in (S.done, S.processing, S.paused):
        raise Conflict(f"Bulk email {bulk.id} is {bulk.status.value}; retry applies to sent bulk emails.")
    states = [RecipientState.failed] + ([RecipientState.unknown] if include_unknown else [])
    suppressed = select(Suppression.email_normalized).where(Suppression.organization_id == bulk.organization_id)
    result = await session.execute(
        update(Recipient)
        .where(
            Recipient.bulk_email_id == bulk.id,
            Recipient.state.in_(states),
            Recipient.email_normalized.not_in(suppressed),  # hard bounces stay failed
        )
        .values(state=RecipientState.deferred, next_attempt_at=datetime.now(UTC), attempts=0, chunk_id=None)
        .execution_options(synchronize_session=False)
    )
    n = int(result.rowcount or 0)  # type: ignore[attr-defined]
    if n:
        await session.execute(
            update(BulkEmail).where(BulkEmail.id == bulk.id).values(done_email_sent_at=None, done_at=None)
        )
        if bulk.status == S.done:
            await bulk_emails.transition(session, bulk.id, [S.done], S.processing)
    return n


# -- the pre-send audit ------------------------------------------------------------------------


async def preview(session: AsyncSession, settings: Settings, principal: Principal, payload: PreviewIn) -> PreviewOut:
    audience = await resolve_audience(session, principal, payload)
    limit = settings.max_bulk_email_leads
    warnings: list[str] = []
    limit_fix = None
    if audience.n_leads > limit:
        warnings.append(_too_many(audience.n_leads, limit))
        limit_fix = with_limit(audience.query, limit)
    n_audited = min(audience.n_leads, limit)
    excluded = {
        reason.value: 0
        for reason in (
            SkipReason.no_email,
            SkipReason.unsubscribed,
            SkipReason.suppressed,
            SkipReason.already_received_template,
        )
    }
    excluded["duplicate_address"] = 0
    recipients: list[Candidate] = []
    seen: set[str] = set()
    org = principal.organization_id
    # The leads the snapshot would take (same order, same cap), so the audit counts who will really get it.
    lead_ids = list(await session.scalars(audience.compiled.snapshot_ids(limit)))[:n_audited]
    already_received = 0
    for start in range(0, len(lead_ids), AUDIT_BATCH):
        batch = lead_ids[start : start + AUDIT_BATCH]
        # Earlier sends are always looked up: the re-send warning needs them even when they are not excluded.
        loaded = await load_batch(session, org, batch, audience.template.id)
        already_received += len(loaded.already_received)
        if not payload.exclude_already_emailed:
            loaded = replace(loaded, already_received=set())
        for d in decide(loaded, batch, payload.contact_preference, seen):
            if d.duplicate:
                excluded["duplicate_address"] += 1
            elif d.reason is not None:
                excluded[d.reason.value] += 1
            elif d.candidate is not None:
                recipients.append(d.candidate)
    resend_fix = None
    if already_received:
        name = audience.template.name
        if payload.exclude_already_emailed:
            warnings.append(f"{already_received:,} leads already received the template {name!r}; they are left out.")
        else:
            warnings.append(f"{already_received:,} leads already received the template {name!r} and will get it again.")
        resend_fix = without_template(audience.query, name)
    warnings += _provider_warnings(audience.account, len(recipients))
    samples = await _samples(session, principal, audience, recipients[: payload.samples])
    return PreviewOut(
        n_leads=audience.n_leads,
        n_leads_display=f"~{audience.n_leads:,}",
        recipients=len(recipients),
        excluded=excluded,
        warnings=warnings,
        samples=samples,
        already_received=already_received,
        resend_fix=resend_fix,
        limit_fix=limit_fix,
    )


_LIMIT = re.compile(r"\blimit\s*:\s*\d+", re.IGNORECASE)


def with_limit(query: str, limit: int) -> str:
    """The query capped at ``limit`` leads: its own `limit:` lowered, or one added."""
    if _LIMIT.search(query):
        return _LIMIT.sub(f"limit:{limit}", query, count=1)
    return f"{query.strip()} limit:{limit}"


def without_template(query: str, template_name: str) -> str:
    """The query minus the leads that were already sent ``template_name``."""
    quoted = template_name.replace("\\", "\\\\").replace('"', '\\"')
    base = query.strip()
    clause = f'not emailed_template:"{quoted}"'
    if not base or base == "*":
        return clause
    # Parenthesised: an `or` in the query must not swallow the exclusion.
    return f"({base}) {clause}" if re.search(r"\bor\b", base, re.IGNORECASE) else f"{base} {clause}"


def _provider_warnings(account: EmailAccount, n_recipients: int) -> list[str]:
    warnings = []
    limits = limits_for_account(account)
    per_day, per_hour, per_minute = limits.per_day, limits.per_hour, limits.per_minute
    if per_day and n_recipients > per_day:
        warnings.append(
            f"{n_recipients:,} recipients exceed this account's limit of {per_day:,} emails per 24 hours; "
            f"the send will take about {-(-n_recipients // per_day)} days."
        )
    rates = [r for r in (per_minute and per_minute * 60, per_hour, per_day and per_day / 24) if r]
    if rates and n_recipients:
        hours = n_recipients / min(rates)
        if hours >= 1:
            warnings.append(f"At this account's rate limits the send will take about {hours:,.1f} hours.")
    return warnings


async def _samples(
    session: AsyncSession, principal: Principal, audience: Audience, chosen: list[Candidate]
) -> list[RenderedSample]:
    if not chosen:
        return []
    user, organization = await sender_context(session, principal.organization_id, principal.user_id)
    contexts = await load_render_contexts(
        session,
        principal.organization_id,
        [RecipientRef(c.lead_id, c.contact_id, c.email) for c in chosen],
        user,
        organization,
    )
    out = []
    for c, ctx in zip(chosen, contexts, strict=True):
        rendered = audience.compiled_template.render(ctx)
        out.append(
            RenderedSample(
                lead_id=c.lead_id,
                contact_id=c.contact_id,
                email=c.email,
                subject=rendered.subject,
                body=rendered.html,
                body_text=rendered.text,
                empty_tags=rendered.empty_tags,
                unknown_tags=rendered.unknown_tags,
            )
        )
    return out


async def render_recipient(
    session: AsyncSession, principal: Principal, template: EmailTemplate, recipient: RecipientRef
) -> RenderedSample:
    """The template as one recipient of the organisation would get it (the preview's email bodies)."""
    try:
        compiled_template = compile_template(template.subject, template.body, template.body_text)
    except TemplateError as exc:
        raise BadRequest(f"Template {template.name!r} cannot be rendered: {exc}") from None
    user, organization = await sender_context(session, principal.organization_id, principal.user_id)
    (ctx,) = await load_render_contexts(session, principal.organization_id, [recipient], user, organization)
    rendered = compiled_template.render(ctx)
    return RenderedSample(
        lead_id=recipient.lead_id,
        contact_id=recipient.contact_id,
        email=recipient.email,
        subject=rendered.subject,
        body=rendered.html,
        body_text=rendered.text,
        empty_tags=rendered.empty_tags,
        unknown_tags=rendered.unknown_tags,
    )


async def render_entry(
    session: AsyncSession, principal: Principal, template_id: int, query: str, entry: int, mode: str
) -> RenderedSample:
    org = principal.organization_id
    template = await get_owned(session, EmailTemplate, template_id, org, what="email template")
    try:
        compiled_template = compile_template(template.subject, template.body, template.body_text)
    except TemplateError as exc:
        raise BadRequest(f"Template {template.name!r} cannot be rendered: {exc}") from None
    return await render_for_entry(session, principal, compiled_template, query, entry, mode)


async def render_for_entry(
    session: AsyncSession, principal: Principal, compiled_template: CompiledTemplate, query: str, entry: int, mode: str
) -> RenderedSample:
    """A compiled template (saved, or a draft being edited) rendered for the ``entry``-th lead or contact."""
    org = principal.organization_id
    ctx = await load_search_context(session, organization_id=org, user_id=principal.user_id)
    compiled = compile_search(query, ctx)
    # Enough leads to reach the entry even when every lead has one contact (mode=contact).
    lead_ids = list(await session.scalars(compiled.page(0, entry + 1 if mode == "lead" else 100)))
    chosen: Candidate | None = None
    if mode == "lead":
        if entry < len(lead_ids):
            rows = (await load_batch(session, org, [lead_ids[entry]], None)).candidates[lead_ids[entry]]
            chosen = rows[0] if rows else Candidate(lead_ids[entry], None, "", "", False)
    else:
        by_lead = (await load_batch(session, org, lead_ids, None)).candidates if lead_ids else {}
        contacts = [
            c for lead_id in lead_ids for c in choose_candidates(by_lead.get(lead_id, []), ContactPreference.contact)
        ]
        chosen = contacts[entry] if entry < len(contacts) else None
    if chosen is None:
        raise NotFound(f"The search has no {mode} number {entry} (entries count from 0).")
    user, organization = await sender_context(session, org, principal.user_id)
    (render_ctx,) = await load_render_contexts(
        session, org, [RecipientRef(chosen.lead_id, chosen.contact_id, chosen.email)], user, organization
    )
    rendered = compiled_template.render(render_ctx)
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
