"""Snapshot → recipients: the ledger rows of a bulk email, with the reason for every skipped one.

Leads are read in id order in batches; each batch's rows are committed together, so after a
crash the build resumes after the highest lead id already in the ledger and never writes a
recipient twice (the unique key is bulk email + normalised address).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.shared import metrics
from bulkmail.shared.audience import decide, load_batch, no_email_key
from bulkmail.shared.db import Database
from bulkmail.shared.logging import get_logger
from bulkmail.shared.models import (
    BulkEmail,
    BulkEmailLead,
    Recipient,
    RecipientState,
    SkipReason,
)

log = get_logger(__name__)

LEADS_PER_BATCH = 2_000


@dataclass
class BuildReport:
    leads: int = 0
    recipients: int = 0
    duplicates: int = 0
    skipped: dict[str, int] = field(default_factory=dict)


async def build_recipients(database: Database, bulk: BulkEmail) -> BuildReport:
    """Write the ledger for ``bulk`` (idempotent, resumable)."""
    report = BuildReport()
    async with database.session() as session:
        resume_after = await session.scalar(
            select(func.coalesce(func.max(Recipient.lead_id), 0)).where(Recipient.bulk_email_id == bulk.id)
        )
        seen = set(await session.scalars(select(Recipient.email_normalized).where(Recipient.bulk_email_id == bulk.id)))
    last_lead = int(resume_after or 0)
    while True:
        async with database.session() as session:
            # Hold the bulk email's row while writing a batch and check nobody else moved the
            # build on meanwhile (another dispatcher replica); if so, pick up from where it is.
            await session.execute(select(BulkEmail.id).where(BulkEmail.id == bulk.id).with_for_update(key_share=True))
            progress = await session.scalar(
                select(func.coalesce(func.max(Recipient.lead_id), 0)).where(Recipient.bulk_email_id == bulk.id)
            )
            if int(progress or 0) != last_lead:
                last_lead = int(progress or 0)
                seen = set(
                    await session.scalars(select(Recipient.email_normalized).where(Recipient.bulk_email_id == bulk.id))
                )
            lead_ids = list(
                await session.scalars(
                    select(BulkEmailLead.lead_id)
                    .where(BulkEmailLead.bulk_email_id == bulk.id, BulkEmailLead.lead_id > last_lead)
                    .order_by(BulkEmailLead.lead_id)
                    .limit(LEADS_PER_BATCH)
                )
            )
            if not lead_ids:
                break
            rows = await _batch_rows(session, bulk, lead_ids, seen, report)
            await _insert_ignoring_conflicts(session, rows)
            await session.execute(
                update(BulkEmail)
                .where(BulkEmail.id == bulk.id)
                .values(
                    n_leads_processed=BulkEmail.n_leads_processed + len(lead_ids),
                    n_duplicates=BulkEmail.n_duplicates + report.duplicates,
                )
            )
            report.duplicates = 0
            last_lead = lead_ids[-1]
            report.leads += len(lead_ids)
    return report


async def _batch_rows(
    session: AsyncSession, bulk: BulkEmail, lead_ids: list[int], seen: set[str], report: BuildReport
) -> list[dict[str, Any]]:
    template = bulk.template_id if bulk.exclude_already_emailed else None
    batch = await load_batch(session, bulk.organization_id, lead_ids, template)
    rows: list[dict[str, Any]] = []
    for d in decide(batch, lead_ids, bulk.contact_preference, seen):
        if d.duplicate:
            report.duplicates += 1
            metrics.record_skipped("duplicate_address")
        elif d.candidate is None:
            rows.append(_row(bulk, d.lead_id, None, "", no_email_key(d.lead_id), SkipReason.no_email, report))
        else:
            c = d.candidate
            rows.append(_row(bulk, d.lead_id, c.contact_id, c.email, c.email_normalized, d.reason, report))
    return rows


def _row(
    bulk: BulkEmail,
    lead_id: int,
    contact_id: int | None,
    email: str,
    normalized: str,
    reason: SkipReason | None,
    report: BuildReport,
) -> dict[str, Any]:
    if reason is None:
        report.recipients += 1
    else:
        report.skipped[reason.value] = report.skipped.get(reason.value, 0) + 1
        metrics.record_skipped(reason.value)
    return {
        "organization_id": bulk.organization_id,
        "bulk_email_id": bulk.id,
        "lead_id": lead_id,
        "contact_id": contact_id,
        "email": email,
        "email_normalized": normalized,
        "state": RecipientState.skipped if reason else RecipientState.pending,
        "skip_reason": reason.value if reason else None,
        "message_id": "",
        "smtp_reply": "",
        "sent_copy_uid": "",
    }


# PostgreSQL: a batch's rows travel as arrays in one INSERT … SELECT. As an executemany it was
# one statement per recipient and most of the time of writing a 100,000-recipient ledger.
_PG_INSERT = text(
    """
INSERT INTO recipients (
    organization_id, bulk_email_id, lead_id, contact_id, email, email_normalized, state, skip_reason,
    message_id, smtp_reply, sent_copy_uid
)
SELECT CAST(:organization_id AS bigint), CAST(:bulk_email_id AS bigint), v.lead_id, v.contact_id, v.email,
       v.email_normalized, v.state, v.skip_reason, '', '', ''
FROM unnest(
    CAST(:lead_ids AS bigint[]), CAST(:contact_ids AS bigint[]), CAST(:emails AS varchar[]),
    CAST(:normalized AS varchar[]), CAST(:states AS varchar[]), CAST(:skip_reasons AS varchar[])
) AS v(lead_id, contact_id, email, email_normalized, state, skip_reason)
ON CONFLICT (bulk_email_id, email_normalized) DO NOTHING
"""
)


async def _insert_ignoring_conflicts(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(
            _PG_INSERT,
            {
                "organization_id": rows[0]["organization_id"],
                "bulk_email_id": rows[0]["bulk_email_id"],
                "lead_ids": [r["lead_id"] for r in rows],
                "contact_ids": [r["contact_id"] for r in rows],
                "emails": [r["email"] for r in rows],
                "normalized": [r["email_normalized"] for r in rows],
                "states": [r["state"].value for r in rows],
                "skip_reasons": [r["skip_reason"] for r in rows],
            },
        )
        return
    stmt = sqlite_insert(Recipient).on_conflict_do_nothing(index_elements=["bulk_email_id", "email_normalized"])
    await session.execute(stmt, rows)
