"""Sending's transitions: claim (with the consent check), mark unknown, record outcomes.

The order is the invariant: a recipient is ``sending`` (committed) before its message is handed
to SMTP, and its outcome is committed before the chunk's delivery is acknowledged. A recipient
found still ``sending`` when its chunk comes round again was in the hands of a worker that
died: it becomes ``unknown`` (reported, never resent blindly).

Recording outcomes is the mailer's hottest database work (once per few dozen messages, on every
mailer). On PostgreSQL it is a single statement: the outcomes travel as a handful of arrays, and
data-modifying CTEs update the ledger, add the activities and bump the lead's counters (on its
narrow ``lead_activity`` row, not on ``leads``) in one round trip. Elsewhere (SQLite, the
embedded default) the same effect takes a statement per row and two executemany.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

from sqlalchemy import bindparam, case, func, literal, not_, null, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.shared.ledger.chunks import ChunkScope
from bulkmail.shared.ledger.rows import changed, table_of
from bulkmail.shared.models import (
    Contact,
    ContactEmail,
    EmailActivity,
    LeadActivity,
    Recipient,
    RecipientState,
    SentCopyState,
    SkipReason,
    Suppression,
)

R = RecipientState

_recipients = table_of(Recipient)
_contacts = table_of(Contact)
_addresses = table_of(ContactEmail)
_suppressions = table_of(Suppression)
_TAKEABLE = (R.pending, R.deferred)

# -- the claim, with consent -------------------------------------------------------------------
# A recipient is sent only if, when it is claimed, its contact still exists, still has this
# address, has not unsubscribed it, and the address is not on the organisation's suppression
# list. The claim looks these up for the next recipients of the chunk (three index lookups a
# row: the contact, its addresses by contact, the suppression key) and, in the same UPDATE,
# marks each one `sending` or `skipped` with the reason. One statement, so an unsubscribe
# committed before the claim always wins, and the claim costs one round trip as before.
_c = _recipients.alias("candidate")
_contact_exists = select(_contacts.c.id).where(_contacts.c.id == _c.c.contact_id).exists()
# NULL: the contact no longer has this address; 1: it has, subscribed; 2: it has, unsubscribed.
_address = (
    select(func.max(case((_addresses.c.is_unsubscribed, 2), else_=1)))
    .where(_addresses.c.contact_id == _c.c.contact_id, _addresses.c.email_normalized == _c.c.email_normalized)
    .scalar_subquery()
)
_suppression = (
    select(_suppressions.c.reason)
    .where(
        _suppressions.c.organization_id == _c.c.organization_id,
        _suppressions.c.email_normalized == _c.c.email_normalized,
    )
    .scalar_subquery()
)


@cache
def _claim_statement(of_a_range: bool) -> Any:
    """The claim of the next ``claim_limit`` takeable recipients of a chunk past ``claim_after``
    (built once per kind of chunk: the chunk's own values are parameters)."""
    chunk = ChunkScope(0, 0, 0, 0) if of_a_range else ChunkScope(0, 0)
    checked = (
        select(
            _c.c.id.label("id"),
            _contact_exists.label("has_contact"),
            _address.label("address"),
            _suppression.label("suppression"),
        )
        .where(chunk.takeable(_c), _c.c.id > bindparam("claim_after"))
        .order_by(_c.c.id)
        .limit(bindparam("claim_limit"))
        .subquery("checked")
    )
    # Why a recipient may not be sent (the first that applies), or NULL when it may.
    why_not = case(
        (not_(checked.c.has_contact), literal(SkipReason.contact_deleted.value)),
        (checked.c.address.is_(None), literal(SkipReason.address_changed.value)),
        (
            or_(checked.c.address == 2, checked.c.suppression == SkipReason.unsubscribed.value),
            literal(SkipReason.unsubscribed.value),
        ),
        (checked.c.suppression.is_not(None), literal(SkipReason.suppressed.value)),
        else_=null(),
    )
    may_send = why_not.is_(None)
    # Core, not ORM: this runs for every few dozen messages and the ORM layer doubled its cost.
    # The row's columns that an index names (id, bulk_email_id, email_normalized, chunk_id,
    # next_attempt_at) are left as they are, so the update is HOT when the page has room.
    return (
        update(_recipients)
        .where(_recipients.c.id == checked.c.id, _recipients.c.state.in_(_TAKEABLE))
        .values(
            state=case((may_send, literal(R.sending.value)), else_=literal(R.skipped.value)),
            skip_reason=why_not,
            attempts=_recipients.c.attempts + case((may_send, 1), else_=0),
            updated_at=bindparam("claim_now"),
        )
        .returning(
            _recipients.c.id,
            _recipients.c.lead_id,
            _recipients.c.contact_id,
            _recipients.c.email,
            _recipients.c.email_normalized,
            _recipients.c.attempts,
            _recipients.c.skip_reason,
        )
    )


@dataclass(frozen=True)
class Claimed:
    id: int
    lead_id: int
    contact_id: int | None
    email: str
    email_normalized: str
    attempts: int


@dataclass
class Claim:
    claimed: list[Claimed] = field(default_factory=list)
    # Recipients found without consent at the claim, by skip reason.
    skipped: Counter[str] = field(default_factory=Counter)
    # The greatest id this claim moved: the next claim of the chunk starts after it.
    through_id: int = 0


async def claim(
    session: AsyncSession, chunk: ChunkScope, limit: int, now: datetime | None = None, after_id: int = 0
) -> Claim:
    """queued (pending | deferred, in ``chunk``) → sending, at most ``limit``, in id order, from
    ``after_id`` on; those without consent → skipped (unsubscribed, suppressed, contact_deleted,
    address_changed). A sender passes the previous claim's ``through_id`` as ``after_id``, so a
    claim never walks the rows of its chunk already sent."""
    statement = _claim_statement(chunk.is_range)
    params = {**chunk.params, "claim_after": after_id, "claim_limit": limit, "claim_now": now or _now()}
    result = Claim(through_id=after_id)
    while True:
        rows = (await session.execute(statement, params)).all()
        skipped = [row.skip_reason for row in rows if row.skip_reason is not None]
        result.skipped.update(str(reason) for reason in skipped)
        result.claimed = sorted((Claimed(*row[:6]) for row in rows if row.skip_reason is None), key=lambda c: c.id)
        result.through_id = max([result.through_id, *(row.id for row in rows)])
        # A batch all without consent says nothing of the next one: look again.
        if result.claimed or not skipped:
            return result
        params["claim_after"] = result.through_id


async def mark_unknown(session: AsyncSession, chunk: ChunkScope) -> int:
    """sending → unknown: the chunk came round again with recipients a stopped worker had in
    flight. Their message may have gone out; they are reported, never resent blindly."""
    result = await session.execute(
        update(_recipients)
        .where(chunk.in_flight(_recipients))
        .values(state=R.unknown, smtp_reply="outcome unknown: the worker sending it stopped", updated_at=_now())
        .execution_options(synchronize_session=False),
        chunk.params,
    )
    return changed(result)


@dataclass(frozen=True)
class OutcomeRow:
    recipient_id: int
    lead_id: int
    contact_id: int | None
    email: str
    state: RecipientState
    next_attempt_at: datetime | None
    smtp_reply: str
    message_id: str
    sent_at: datetime | None
    attempts: int
    sent_copy_state: SentCopyState | None
    # What the recipient was sent, for the email activity (Close's subject, body_text, body_html).
    subject: str = ""
    body_text: str = ""
    body_html: str = ""


@dataclass(frozen=True)
class ActivitySource:
    """What every email activity of the batch shares."""

    organization_id: int
    template_id: int | None
    bulk_email_id: int
    user_id: int | None = None  # who created the bulk email: the activity is theirs, as in Close
    sender: str = ""  # "Name" <address> of the sending account


_PG_WRITE = text(
    """
WITH v AS (
    SELECT * FROM unnest(
        CAST(:ids AS bigint[]), CAST(:states AS varchar[]), CAST(:next_at AS timestamptz[]),
        CAST(:replies AS text[]), CAST(:message_ids AS varchar[]), CAST(:sent_at AS timestamptz[]),
        CAST(:attempts AS integer[]), CAST(:copy_states AS varchar[]), CAST(:subjects AS text[]),
        CAST(:bodies_text AS text[]), CAST(:bodies_html AS text[])
    ) AS v(id, state, next_at, reply, message_id, sent_at, attempts, copy_state, subject, body_text, body_html)
),
recorded AS (
    UPDATE recipients AS r
    SET state = v.state, next_attempt_at = v.next_at, smtp_reply = v.reply, message_id = v.message_id,
        sent_at = v.sent_at, attempts = v.attempts, sent_copy_state = v.copy_state,
        updated_at = CAST(:now AS timestamptz)
    FROM v
    WHERE r.id = v.id AND r.state IN ('sending', 'unknown')
    RETURNING r.id, r.lead_id, r.contact_id, r.email, r.message_id, r.state
),
activities AS (
    INSERT INTO email_activities (
        organization_id, lead_id, contact_id, template_id, bulk_email_id, user_id, status, direction,
        subject, to_address, sender, body_text, body_html, message_id, date_sent, created_at
    )
    SELECT CAST(:organization_id AS bigint), recorded.lead_id, recorded.contact_id, CAST(:template_id AS bigint),
           CAST(:bulk_email_id AS bigint), CAST(:user_id AS bigint), 'sent', 'outgoing',
           v.subject, recorded.email, CAST(:sender AS varchar), v.body_text, v.body_html, recorded.message_id,
           CAST(:now AS timestamptz), CAST(:now AS timestamptz)
    FROM recorded JOIN v ON v.id = recorded.id WHERE recorded.state = 'sent'
),
counted AS (
    UPDATE lead_activity AS a
    SET num_emails = a.num_emails + c.n, last_emailed_at = CAST(:now AS timestamptz)
    FROM (SELECT lead_id, count(*) AS n FROM recorded WHERE state = 'sent' GROUP BY lead_id) AS c
    WHERE a.lead_id = c.lead_id
)
SELECT count(*) FROM recorded
"""
)


async def record_outcomes(session: AsyncSession, rows: list[OutcomeRow], source: ActivitySource, now: datetime) -> None:
    """sending | unknown → the outcome each row carries (sent, failed, deferred, unknown), with an
    email activity and the lead counters for each one sent.

    Only a recipient this send claimed (sending) or one a redelivery gave up on (unknown) takes an
    outcome: never a row another worker already finished. Activities and counters follow only
    the rows whose update happened, so a late or repeated write can never count a send twice.
    """
    if not rows:
        return
    if session.get_bind().dialect.name == "postgresql":
        await _write_postgresql(session, rows, source, now)
    else:
        await _write_generic(session, rows, source, now)


async def _write_postgresql(
    session: AsyncSession, rows: list[OutcomeRow], source: ActivitySource, now: datetime
) -> None:
    await session.execute(
        _PG_WRITE,
        {
            "ids": [r.recipient_id for r in rows],
            "states": [r.state.value for r in rows],
            "next_at": [r.next_attempt_at for r in rows],
            "replies": [r.smtp_reply for r in rows],
            "message_ids": [r.message_id for r in rows],
            "sent_at": [r.sent_at for r in rows],
            "attempts": [r.attempts for r in rows],
            "copy_states": [None if r.sent_copy_state is None else str(r.sent_copy_state) for r in rows],
            "subjects": [r.subject for r in rows],
            "bodies_text": [r.body_text for r in rows],
            "bodies_html": [r.body_html for r in rows],
            "organization_id": source.organization_id,
            "user_id": source.user_id,
            "sender": source.sender,
            "template_id": source.template_id,
            "bulk_email_id": source.bulk_email_id,
            "now": now,
        },
    )


async def _write_generic(session: AsyncSession, rows: list[OutcomeRow], source: ActivitySource, now: datetime) -> None:
    table = _recipients
    record = (
        update(table)
        .where(table.c.id == bindparam("rid"), or_(table.c.state == R.sending, table.c.state == R.unknown))
        .values(
            state=bindparam("state"),
            next_attempt_at=bindparam("next_at"),
            smtp_reply=bindparam("reply"),
            message_id=bindparam("mid"),
            sent_at=bindparam("sent_at"),
            attempts=bindparam("attempts"),
            sent_copy_state=bindparam("copy"),
            updated_at=bindparam("now"),
        )
        .returning(table.c.id)
    )
    recorded: set[int] = set()
    # Row by row, to learn which updates happened (executemany cannot say); cheap in-process.
    for r in rows:
        params = {
            "rid": r.recipient_id,
            "state": r.state,
            "next_at": r.next_attempt_at,
            "reply": r.smtp_reply,
            "mid": r.message_id,
            "sent_at": r.sent_at,
            "attempts": r.attempts,
            "copy": r.sent_copy_state,
            "now": now,
        }
        if (await session.execute(record, params)).first() is not None:
            recorded.add(r.recipient_id)
    sent = [r for r in rows if r.state == R.sent and r.recipient_id in recorded]
    if not sent:
        return
    activities: list[dict[str, Any]] = [
        {
            "organization_id": source.organization_id,
            "lead_id": r.lead_id,
            "contact_id": r.contact_id,
            "template_id": source.template_id,
            "bulk_email_id": source.bulk_email_id,
            "user_id": source.user_id,
            "status": "sent",
            "direction": "outgoing",
            "subject": r.subject,
            "to_address": r.email,
            "sender": source.sender,
            "body_text": r.body_text,
            "body_html": r.body_html,
            "message_id": r.message_id,
            "date_sent": now,
            "created_at": now,
        }
        for r in sent
    ]
    await session.execute(table_of(EmailActivity).insert(), activities)
    activity = table_of(LeadActivity)
    await session.execute(
        update(activity)
        .where(activity.c.lead_id == bindparam("lid"))
        .values(num_emails=activity.c.num_emails + bindparam("n"), last_emailed_at=bindparam("now")),
        [{"lid": lead_id, "n": n, "now": now} for lead_id, n in Counter(r.lead_id for r in sent).items()],
    )


def _now() -> datetime:
    return datetime.now(UTC)
