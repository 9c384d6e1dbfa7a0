"""Writing the ledger: the rows of a bulk email, each ``pending`` or ``skipped`` with its reason.

The dispatcher decides who is in the send (the contact preference, duplicates, exclusions) as a
query; the ledger turns that query's rows into recipients. A row already written (same bulk
email and normalised address) is left as it is, so a build that resumes after a crash never
writes a recipient twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache

from sqlalchemy import TextClause, bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession

# ("WHERE true" lets SQLite parse ON CONFLICT after INSERT … SELECT.)
_INSERT = """
INSERT INTO recipients (
    organization_id, bulk_email_id, lead_id, contact_id, email, email_normalized, state, skip_reason,
    message_id, smtp_reply, sent_copy_uid
)
SELECT CAST(:organization_id AS BIGINT), CAST(:bulk_email_id AS BIGINT), lead_id, contact_id, email, email_normalized,
       CASE WHEN skip_reason IS NULL THEN 'pending' ELSE 'skipped' END, skip_reason, '', '', ''
FROM decided
WHERE true
ON CONFLICT (bulk_email_id, email_normalized) DO NOTHING
RETURNING skip_reason
"""


@cache
def _statement(decided: str, expanding: tuple[str, ...]) -> TextClause:
    statement = text(decided + _INSERT)
    return statement.bindparams(*(bindparam(name, expanding=True) for name in expanding)) if expanding else statement


async def add_recipients(
    session: AsyncSession, decided: str, params: Mapping[str, object], expanding: tuple[str, ...] = ()
) -> list[str | None]:
    """Insert the rows of ``decided``: SQL that opens with ``WITH`` and ends with a CTE named
    ``decided`` giving (lead_id, contact_id, email, email_normalized, skip_reason); ``params``
    must bind ``organization_id`` and ``bulk_email_id``; the parameters named in ``expanding`` are
    lists (``x IN :name``). Returns the skip reason of each row written (None for a pending one)."""
    rows = await session.execute(_statement(decided, expanding), dict(params))
    return list(rows.scalars())
