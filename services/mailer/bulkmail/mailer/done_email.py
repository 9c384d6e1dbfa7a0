"""The email a user gets when their bulk email is done, and the error report if anything failed.

Sent through the system SMTP account when one is configured (``BULKMAIL_SYSTEM_SMTP_URL``),
else through the user's own account. Sent once: ``done_email_sent_at`` is set in the same
transaction that records it.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime

from sqlalchemy import select, update

from bulkmail.mailer.notices import deliver_notice, notice_route
from bulkmail.shared import bulk_emails
from bulkmail.shared.db import Database
from bulkmail.shared.logging import get_logger
from bulkmail.shared.models import (
    FAILED_STATES,
    BulkEmail,
    EmailAccount,
    EmailTemplate,
    Recipient,
    User,
)
from bulkmail.shared.settings import Settings

log = get_logger(__name__)

MAX_LISTED_FAILURES = 1000


async def send_done_email(settings: Settings, database: Database, bulk_email_id: int) -> bool:
    """Send the notice (once); True if it was sent now."""
    async with database.session() as session:
        bulk = await session.get(BulkEmail, bulk_email_id)
        if bulk is None or bulk.done_email_sent_at is not None or not bulk.send_done_email:
            return False
        user = await session.get(User, bulk.user_id) if bulk.user_id else None
        account = await session.get(EmailAccount, bulk.email_account_id)
        template = await session.get(EmailTemplate, bulk.template_id)
        if user is None or account is None:
            return False
        counts = await bulk_emails.recipient_counts(session, bulk.id)
        skipped = await bulk_emails.skip_reasons(session, bulk.id)
        failures = (
            await session.execute(
                select(Recipient.email, Recipient.state, Recipient.smtp_reply)
                .where(
                    Recipient.bulk_email_id == bulk.id,
                    Recipient.state.in_(FAILED_STATES),
                )
                .order_by(Recipient.id)
                .limit(MAX_LISTED_FAILURES)
            )
        ).all()
        smtp, sender = notice_route(settings, account)
        name = template.name if template else f"template {bulk.template_id}"
    subject, text, body_html = compose(
        bulk, name, counts.model_dump(), skipped, [(str(e), str(st), str(reply)) for e, st, reply in failures]
    )
    await deliver_notice(smtp, sender, user.email, user.name, subject, text, body_html, f"bulk-{bulk.id}-done")
    async with database.session() as session:
        await session.execute(
            update(BulkEmail)
            .where(BulkEmail.id == bulk.id, BulkEmail.done_email_sent_at.is_(None))
            .values(done_email_sent_at=datetime.now(UTC))
        )
    return True


def compose(
    bulk: BulkEmail,
    template_name: str,
    counts: dict[str, int],
    skipped: dict[str, int],
    failures: list[tuple[str, str, str]],
) -> tuple[str, str, str]:
    had_errors = bool(failures)
    subject = f'Bulk email "{template_name}" is done' + (f" ({len(failures)} not delivered)" if had_errors else "")
    lines = [
        f'Your bulk email "{template_name}" (#{bulk.id}) is done.',
        "",
        f"Leads: {bulk.n_leads}",
        f"Sent: {counts.get('sent', 0)}",
        f"Failed: {counts.get('failed', 0)}",
        f"Outcome unknown: {counts.get('unknown', 0)}",
        f"Skipped: {counts.get('skipped', 0)}" + (f" ({_reasons(skipped)})" if skipped else ""),
        f"Duplicate addresses sent once: {bulk.n_duplicates}",
    ]
    if had_errors:
        lines += ["", "Not delivered:"]
        lines += [f"- {email}: {state}: {reply}" for email, state, reply in failures]
        if len(failures) >= MAX_LISTED_FAILURES:
            report = f"GET /api/v1/bulk_action/email/{bulk.id}/recipients/?state=failed"
            lines.append(f"(the first {MAX_LISTED_FAILURES}; the full report: {report})")
    text = "\n".join(lines) + "\n"
    body_html = "<pre>" + html.escape(text) + "</pre>"
    return subject, text, body_html


def _reasons(skipped: dict[str, int]) -> str:
    return ", ".join(f"{reason.replace('_', ' ')}: {n}" for reason, n in sorted(skipped.items()))
