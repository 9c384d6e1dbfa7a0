"""Who a bulk email goes to: the contact preference and the exclusion rules, in one place.

The dispatcher applies them to write the ledger; the pre-send audit applies the very same
rules to show the user, before sending, who will be excluded and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bulkmail.shared.models import ContactPreference, SkipReason


@dataclass(frozen=True)
class Candidate:
    lead_id: int
    contact_id: int | None
    email: str
    email_normalized: str
    is_unsubscribed: bool


def choose_candidates(rows: Sequence[Candidate], preference: ContactPreference) -> list[Candidate]:
    """One lead's addresses under the contact preference; ``rows`` come in contact, then email order."""
    if preference == ContactPreference.all:
        return list(rows)
    if preference == ContactPreference.lead:
        return list(rows[:1])
    chosen: list[Candidate] = []
    seen_contacts: set[int | None] = set()
    for row in rows:
        if row.contact_id not in seen_contacts:
            seen_contacts.add(row.contact_id)
            chosen.append(row)
    return chosen


def no_email_key(lead_id: int) -> str:
    # Not an address (no "@"), so it can never collide with a real one in the unique key.
    return f"(no email) lead {lead_id}"


def exclusion(candidate: Candidate, *, already_received: bool, suppressed_reason: str | None) -> SkipReason | None:
    """Why this address is skipped, or None when it gets the email (duplicates are handled apart)."""
    if already_received:
        return SkipReason.already_received_template
    if candidate.is_unsubscribed or suppressed_reason == "unsubscribed":
        return SkipReason.unsubscribed
    if suppressed_reason is not None:
        return SkipReason.suppressed
    return None
