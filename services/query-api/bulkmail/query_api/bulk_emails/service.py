"""Bulk emails in the query-api: the audience, the pre-send audit, the snapshot, and user control."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.query_api.auth import Principal
from bulkmail.query_api.bulk_emails.schemas import (
    BulkEmailIn,
    BulkEmailOut,
    PreviewIn,
    PreviewOut,
    RenderedSample,
    ReportOut,
)
from bulkmail.query_api.deps import Outbox
from bulkmail.query_api.email_templates.rendering import compile_or_400, render_error, render_or_400
from bulkmail.query_api.errors import APIError, BadRequest, Conflict
from bulkmail.query_api.ownership import get_owned
from bulkmail.query_api.search import CompiledSearch, compile_search, load_search_context
from bulkmail.query_api.search.structured import directives, structured_query_text
from bulkmail.shared import bulk_emails, feedback, ledger, metrics
from bulkmail.shared.audience import Candidate, choose_candidates, decide, load_batch
from bulkmail.shared.contracts import DISPATCH_QUEUE, DispatchBulkEmail
from bulkmail.shared.logging import correlation_id
from bulkmail.shared.models import (
    BulkEmail,
    BulkEmailStatus,
    Contact,
    ContactPreference,
    EmailAccount,
    EmailTemplate,
    Lead,
    Recipient,
    RecipientState,
    SavedSearch,
    SkipReason,
)
from bulkmail.shared.providers import limits_for_account
from bulkmail.shared.rate_limit import SessionFactory, describe_resume, eta
from bulkmail.shared.render_data import RecipientRef, load_render_contexts, sender_context
from bulkmail.shared.settings import Settings
from bulkmail.shared.templating import CompiledTemplate, RenderContext, RenderResult, TemplateRenderError

S = BulkEmailStatus


class IdempotencyKeyReused(APIError):
    status_code = 422
    error = "Idempotency key reused"


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


async def resolve_audience(
    session: AsyncSession, settings: Settings, principal: Principal, payload: BulkEmailIn
) -> Audience:
    org = principal.organization_id
    template = await get_owned(session, EmailTemplate, payload.template_id, org, what="email template")
    account = await _account(session, org, payload)
    compiled_template = compile_or_400(settings, template.subject, template.body, template.body_text, template.name)
    if payload.s_query is not None:
        query = await structured_query_text(session, org, payload.s_query, payload.results_limit, payload.sort)
    else:
        if payload.saved_search_id is not None:
            view = await get_owned(session, SavedSearch, payload.saved_search_id, org, what="Smart View")
            query = view.query
        else:
            query = payload.query or ""
        if payload.results_limit is not None or payload.sort:
            query = f"({query}) {directives(payload.results_limit, payload.sort)}"
    ctx = await load_search_context(session, organization_id=org, user_id=principal.user_id)
    compiled = compile_search(query, ctx)  # QueryError → 400 through the app's handler
    n_leads = int(await session.scalar(compiled.count()) or 0)
    return Audience(query, compiled, template, compiled_template, account, n_leads)


async def _account(session: AsyncSession, organization_id: int, payload: BulkEmailIn) -> EmailAccount:
    """The sending account by id, or by Close's ``sender`` ("Name" <address> or the address)."""
    if payload.email_account_id is not None:
        return await get_owned(session, EmailAccount, payload.email_account_id, organization_id, what="email account")
    address = parseaddr(payload.sender or "")[1].strip().lower()
    account = await session.scalar(
        select(EmailAccount)
        .where(EmailAccount.organization_id == organization_id, func.lower(EmailAccount.email) == address)
        .order_by(EmailAccount.id)
        .limit(1)
    )
    if account is None:
        raise BadRequest(
            f"No email account sends as {payload.sender!r}; add it with POST /api/v1/email_account/.",
            **{"field-errors": {"sender": "not one of your email accounts"}},
        )
    return account


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
    fingerprint = request_fingerprint(payload)
    if idempotency_key:
        existing = await _by_idempotency_key(session, principal.organization_id, idempotency_key)
        if existing is not None:
            return _same_request(existing, fingerprint), False
    audience = await resolve_audience(session, settings, principal, payload)
    if audience.n_leads > settings.max_bulk_email_leads:
        raise BadRequest(_too_many(audience.n_leads, settings.max_bulk_email_leads))
    if audience.n_leads == 0:
        raise BadRequest("The query matches no leads; nothing to send.")
    await _renders_for_someone(session, principal, audience, payload.contact_preference)
    bulk = BulkEmail(
        organization_id=principal.organization_id,
        user_id=principal.user_id,
        template_id=audience.template.id,
        email_account_id=audience.account.id,
        saved_search_id=payload.saved_search_id,
        query=audience.query,
        s_query=payload.s_query,
        results_limit=payload.results_limit,
        sort=payload.sort,
        contact_preference=payload.contact_preference,
        send_done_email=payload.send_done_email,
        exclude_already_emailed=payload.exclude_already_emailed,
        track_opens=payload.track_opens,
        track_clicks=payload.track_clicks,
        status=S.created,
        idempotency_key=idempotency_key,
        idempotency_fingerprint=fingerprint if idempotency_key else "",
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
        return _same_request(existing, fingerprint), False
    # The snapshot: the matching lead ids frozen now, in one INSERT ... SELECT.
    await session.execute(audience.compiled.snapshot_insert(bulk.id, settings.max_bulk_email_leads))
    bulk.n_leads = min(audience.n_leads, settings.max_bulk_email_leads)
    await session.flush()
    return bulk, True


def request_fingerprint(payload: BulkEmailIn) -> str:
    """SHA-256 of the request as validated (defaults filled in, keys sorted), so the same request
    spelt differently (key order, an omitted default) is still the same."""
    canonical = json.dumps(payload.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _same_request(existing: BulkEmail, fingerprint: str) -> BulkEmail:
    if existing.idempotency_fingerprint and existing.idempotency_fingerprint != fingerprint:
        raise IdempotencyKeyReused(
            f"This Idempotency-Key was already used for a different request (bulk email {existing.id}); "
            "send the same body to get that bulk email back, or use a new key for a new bulk email.",
            bulk_email_id=existing.id,
        )
    return existing


RENDER_CHECK_RECIPIENTS = 20


async def _renders_for_someone(
    session: AsyncSession, principal: Principal, audience: Audience, preference: ContactPreference
) -> None:
    """Refuse a template that renders for none of the first recipients, with the first error: it
    would fail for (nearly) everyone. One that renders for the first is accepted at once."""
    lead_ids = list(await session.scalars(audience.compiled.page(0, RENDER_CHECK_RECIPIENTS)))
    batch = await load_batch(session, principal.organization_id, lead_ids, None)
    chosen = [d.candidate for d in decide(batch, lead_ids, preference, set()) if d.candidate is not None]
    chosen = chosen[:RENDER_CHECK_RECIPIENTS]
    if not chosen:
        return  # nobody to send to: the ledger will say so, per lead
    contexts = await _render_contexts(session, principal, chosen)
    first: tuple[Candidate, TemplateRenderError] | None = None
    for candidate, ctx in zip(chosen, contexts, strict=True):
        try:
            audience.compiled_template.render(ctx)
            return
        except TemplateRenderError as exc:
            first = first or (candidate, exc)
    assert first is not None
    error = render_error(first[1], audience.template.name, first[0].email)
    error.detail = f"It renders for none of the first {len(chosen)} recipients. {error.detail}"
    raise error


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


async def control(session: AsyncSession, bulk: BulkEmail, to: str, user_id: int | None, outbox: Outbox) -> None:
    """Pause, resume or cancel; the event goes out after commit, and a resumed send is pumped again."""
    new_status = await change_status(session, bulk, to, user_id)
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
    if sessionmaker is not None and bulk.status in bulk_emails.UNFINISHED_STATUSES:
        eta_at, eta_text = await _eta(
            session, sessionmaker, bulk, counts.pending + counts.deferred + counts.sending, timezone
        )
    account = await session.get(EmailAccount, bulk.email_account_id)
    return BulkEmailOut(
        id=bulk.id,
        organization_id=bulk.organization_id,
        status=bulk.status.value,
        contact_preference=bulk.contact_preference.value,
        template_id=bulk.template_id,
        email_account_id=bulk.email_account_id,
        sender=account.sender if account is not None else "",
        saved_search_id=bulk.saved_search_id,
        query=bulk.query,
        s_query=bulk.s_query,
        results_limit=bulk.results_limit,
        sort=bulk.sort or [],
        created_by=bulk.user_id,
        updated_by=bulk.updated_by_id if bulk.updated_by_id is not None else bulk.user_id,
        n_leads=bulk.n_leads,
        n_leads_processed=bulk.n_leads_processed,
        n_objects=bulk.n_objects,
        n_objects_processed=counts.sent
        + counts.failed
        + counts.unknown
        + counts.bounced
        + counts.complained
        + counts.replied,
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
        track_opens=bulk.track_opens,
        track_clicks=bulk.track_clicks,
        report=ReportOut(**vars(await feedback.report_counts(session, bulk.id))),
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
        reason = f": {account.pause_reason}" if account.pause_reason else ""
        return finish, f"account paused{reason}; {describe_resume(paused_until, now, timezone)}"
    if limits.unlimited:
        return None, "sending now"
    first = await eta(sessionmaker, account.id, limits, 1, now=now)
    text = describe_resume(first, now, timezone)
    return finish, f"{text}; the last recipient goes out about {finish:%Y-%m-%d %H:%M} UTC"


async def change_status(session: AsyncSession, bulk: BulkEmail, to: str, user_id: int | None) -> BulkEmailStatus:
    new_status = await _change_status(session, bulk, to)
    await session.execute(update(BulkEmail).where(BulkEmail.id == bulk.id).values(updated_by_id=user_id))
    return new_status


async def _change_status(session: AsyncSession, bulk: BulkEmail, to: str) -> BulkEmailStatus:
    now = datetime.now(UTC)
    if to == "paused":
        if not await bulk_emails.transition(session, bulk.id, bulk_emails.UNFINISHED_STATUSES, S.paused, paused_at=now):
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
    await ledger.cancel_unsent(session, bulk.id)
    return S.cancelled


async def retry_failed(session: AsyncSession, bulk: BulkEmail, include_unknown: bool) -> int:
    """Queue the failed recipients (and, if asked, the unknown ones) again; returns how many."""
    if bulk.status not in bulk_emails.RETRYABLE_STATUSES:
        raise Conflict(f"Bulk email {bulk.id} is {bulk.status.value}; retry applies to sent bulk emails.")
    # A hard-bounced address (on the suppression list) stays failed.
    n = await ledger.requeue_failed(session, bulk.id, bulk.organization_id, include_unknown)
    if n:
        await session.execute(
            update(BulkEmail).where(BulkEmail.id == bulk.id).values(done_email_sent_at=None, done_at=None)
        )
        if bulk.status == S.done:
            await bulk_emails.transition(session, bulk.id, [S.done], S.processing)
    return n


# -- the pre-send audit ------------------------------------------------------------------------


async def preview(session: AsyncSession, settings: Settings, principal: Principal, payload: PreviewIn) -> PreviewOut:
    audience = await resolve_audience(session, settings, principal, payload)
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
            SkipReason.invalid_address,
        )
    }
    excluded["duplicate_address"] = 0
    suppressed_by_reason: dict[str, int] = {}
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
                if d.reason == SkipReason.suppressed and d.candidate is not None:
                    why = loaded.suppressed.get(d.candidate.email_normalized, "")
                    suppressed_by_reason[why] = suppressed_by_reason.get(why, 0) + 1
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
        suppressed_by_reason=suppressed_by_reason,
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
    contexts = await _render_contexts(session, principal, chosen)
    return [
        _sample(c, render_or_400(audience.compiled_template, ctx, audience.template.name, c.email))
        for c, ctx in zip(chosen, contexts, strict=True)
    ]


async def _render_contexts(session: AsyncSession, principal: Principal, chosen: list[Candidate]) -> list[RenderContext]:
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
) -> RenderedSample | None:
    """Close's search preview: the ``entry``-th lead (its first contact) or contact with an email
    address among the search's results; None past the end (Close answers an empty object)."""
    org = principal.organization_id
    template, compiled_template = await _compiled_template(session, settings, org, template_id)
    return await render_for_entry(session, principal, compiled_template, query, entry, mode, template.name)


async def render_for_entry(
    session: AsyncSession,
    principal: Principal,
    compiled_template: CompiledTemplate,
    query: str,
    entry: int,
    mode: str,
    template_name: str = "",
) -> RenderedSample | None:
    """A compiled template (saved, or a draft being edited) rendered for the ``entry``-th lead (its
    first contact) or contact with an email address among the search's results; None past the end."""
    org = principal.organization_id
    ctx = await load_search_context(
        session, organization_id=org, user_id=principal.user_id, timezone=principal.timezone
    )
    compiled = compile_search(query, ctx)
    if compiled.limit is not None and entry >= compiled.limit:
        return None
    # As Close: leads without an email address are skipped, so only leads with one are read.
    with_email = select(Lead.id).where(compiled.where, Lead.num_email_addresses > 0).order_by(*compiled.order_by)
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
    (render_ctx,) = await _render_contexts(session, principal, [chosen])
    return _sample(chosen, render_or_400(compiled_template, render_ctx, template_name, chosen.email))
