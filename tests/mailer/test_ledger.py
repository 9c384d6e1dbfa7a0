"""A batch's outcomes land in the ledger with their activities and lead counters, on both backends."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text

from bulkmail.shared.db import Database
from bulkmail.shared.ledger import ActivitySource, OutcomeRow, record_outcomes
from bulkmail.shared.models import (
    BulkEmail,
    EmailAccount,
    EmailActivity,
    EmailTemplate,
    Lead,
    LeadActivity,
    Recipient,
    RecipientState,
)
from bulkmail.shared.organizations import create_organization

R = RecipientState


async def _batch(database: Database) -> tuple[ActivitySource, list[Recipient], list[int]]:
    """An organisation with a bulk email and three claimed recipients (two on the same lead)."""
    async with database.session() as session:
        org = await create_organization(session, f"Ledger {uuid.uuid4().hex[:6]}", user_email="o@ledger.example")
        oid = org.organization_id
        leads = [Lead(organization_id=oid, name=f"L{i}") for i in range(2)]
        template = EmailTemplate(organization_id=oid, name="t", subject="s", body="b")
        account = EmailAccount(organization_id=oid, email="me@ledger.example", smtp_host="127.0.0.1")
        session.add_all([*leads, template, account])
        await session.flush()
        bulk = BulkEmail(organization_id=oid, template_id=template.id, email_account_id=account.id, query="*")
        session.add(bulk)
        await session.flush()
        recipients = [
            Recipient(
                organization_id=oid,
                bulk_email_id=bulk.id,
                lead_id=leads[i // 2].id,
                email=f"r{i}@ledger.example",
                email_normalized=f"r{i}@ledger.example",
                state=R.sending,
                attempts=1,
            )
            for i in range(3)
        ]
        session.add_all(recipients)
        await session.flush()
        return ActivitySource(oid, template.id, bulk.id), recipients, [lead.id for lead in leads]


def _row(r: Recipient, state: RecipientState, now: datetime) -> OutcomeRow:
    sent = state == R.sent
    return OutcomeRow(
        recipient_id=r.id,
        lead_id=r.lead_id,
        contact_id=None,
        email=r.email,
        state=state,
        next_attempt_at=None if state != R.deferred else now + timedelta(minutes=1),
        smtp_reply="250 ok" if sent else "451 later",
        message_id=f"<{r.id}@ledger.example>",
        sent_at=now if sent else None,
        attempts=r.attempts,
        sent_copy_state="skipped" if sent else None,
    )


async def test_outcomes_activities_and_counters(database: Database) -> None:
    source, (a, b, c), (lead0, lead1) = await _batch(database)
    now = datetime.now(UTC).replace(microsecond=0)
    async with database.session() as session:
        await record_outcomes(
            session, [_row(a, R.sent, now), _row(b, R.sent, now), _row(c, R.deferred, now)], source, now
        )

    async with database.session() as session:
        states = dict(
            (
                await session.execute(select(Recipient.id, Recipient.state).where(Recipient.id.in_([a.id, b.id, c.id])))
            ).all()
        )
        assert states == {a.id: R.sent, b.id: R.sent, c.id: R.deferred}
        row = await session.get(Recipient, a.id)
        assert row is not None and row.message_id == f"<{a.id}@ledger.example>" and row.sent_at == now
        assert row.sent_copy_state == "skipped" and row.smtp_reply == "250 ok"
        deferred = await session.get(Recipient, c.id)
        assert deferred is not None and deferred.next_attempt_at == now + timedelta(minutes=1)
        activities = (
            await session.execute(
                select(EmailActivity.lead_id, EmailActivity.to_address, EmailActivity.template_id).where(
                    EmailActivity.bulk_email_id == source.bulk_email_id
                )
            )
        ).all()
        assert sorted(activities) == [(lead0, a.email, source.template_id), (lead0, b.email, source.template_id)]
        counters = dict(
            (
                await session.execute(
                    select(LeadActivity.lead_id, LeadActivity.num_emails).where(
                        LeadActivity.lead_id.in_([lead0, lead1])
                    )
                )
            ).all()
        )
        assert counters == {lead0: 2, lead1: 0}
        emailed = await session.get(LeadActivity, lead0)
        assert emailed is not None and emailed.last_emailed_at == now


async def test_a_finished_row_is_not_recorded_again(database: Database) -> None:
    """A write for a recipient that is no longer in flight changes nothing and counts nothing."""
    source, (a, _, _), (lead0, _) = await _batch(database)
    now = datetime.now(UTC).replace(microsecond=0)
    async with database.session() as session:
        await record_outcomes(session, [_row(a, R.failed, now)], source, now)
    async with database.session() as session:
        await record_outcomes(session, [_row(a, R.sent, now)], source, now)
    async with database.session() as session:
        assert await session.scalar(select(Recipient.state).where(Recipient.id == a.id)) == R.failed
        n = await session.scalar(select(func.count()).select_from(EmailActivity).where(EmailActivity.lead_id == lead0))
        assert n == 0
        assert await session.scalar(select(LeadActivity.num_emails).where(LeadActivity.lead_id == lead0)) == 0


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_send_counts_on_lead_activity_and_writes_no_lead_row(database: Database) -> None:
    """The counters a send changes live on the narrow ``lead_activity`` row (migration 0018): the
    outcome write leaves ``leads`` alone, whatever indexes ``leads`` has (one on a send-updated
    column made every lead update non-HOT: docs/search.md). Counted from PostgreSQL's statistics
    before and after the write, so a statement that updates ``leads`` again fails here."""
    # PostgreSQL only: it counts each transaction's row updates per table.
    source, (a, b, c), (lead0, _) = await _batch(database)
    now = datetime.now(UTC).replace(microsecond=0)
    # (PostgreSQL 15 may include earlier transactions of the connection not yet reported: a difference.)
    updates = text(
        "SELECT relname, n_tup_upd FROM pg_stat_xact_user_tables WHERE relname IN ('leads', 'lead_activity')"
    )
    async with database.session() as session:
        before = dict((await session.execute(updates)).all())
        await record_outcomes(
            session, [_row(a, R.sent, now), _row(b, R.sent, now), _row(c, R.deferred, now)], source, now
        )
        after = dict((await session.execute(updates)).all())
    # lead0, for its two emails in one update; not one lead row.
    assert {t: after.get(t, 0) - before.get(t, 0) for t in ("leads", "lead_activity")} == {
        "leads": 0,
        "lead_activity": 1,
    }
    async with database.session() as session:
        assert await session.scalar(select(LeadActivity.num_emails).where(LeadActivity.lead_id == lead0)) == 2
