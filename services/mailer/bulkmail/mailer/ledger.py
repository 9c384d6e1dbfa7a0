"""Writing one batch's outcomes: the ledger rows, the email activities and the lead counters.

This is the mailer's hottest database work (once per few dozen messages, on every mailer). On
PostgreSQL it is a single statement: the outcomes travel as a handful of arrays, and
data-modifying CTEs update the ledger, add the activities and bump the lead counters in one
round trip, with no per-row work in Python. Activities and counters follow only the rows whose
update happened, so a late or repeated write can never count a send twice. Elsewhere (SQLite,
the embedded default) the same effect takes a statement per row and two executemany.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, or_, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.shared.models import EmailActivity, Lead, Recipient, RecipientState

R = RecipientState


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
    sent_copy_state: str | None
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


# Only a recipient this send claimed (sending) or one a redelivery gave up on (unknown) takes an
# outcome: never a row another worker already finished.
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
    UPDATE leads AS l
    SET num_emails = l.num_emails + c.n, last_emailed_at = CAST(:now AS timestamptz)
    FROM (SELECT lead_id, count(*) AS n FROM recorded WHERE state = 'sent' GROUP BY lead_id) AS c
    WHERE l.id = c.lead_id
)
SELECT count(*) FROM recorded
"""
)


async def write_outcomes(session: AsyncSession, rows: list[OutcomeRow], source: ActivitySource, now: datetime) -> None:
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
            "copy_states": [r.sent_copy_state for r in rows],
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
    table: Table = Recipient.__table__  # type: ignore[assignment]
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
    await session.execute(EmailActivity.__table__.insert(), activities)  # type: ignore[attr-defined]
    leads: Table = Lead.__table__  # type: ignore[assignment]
    await session.execute(
        update(leads)
        .where(leads.c.id == bindparam("lid"))
        .values(num_emails=leads.c.num_emails + bindparam("n"), last_emailed_at=bindparam("now")),
        [{"lid": lead_id, "n": n, "now": now} for lead_id, n in Counter(r.lead_id for r in sent).items()],
    )
