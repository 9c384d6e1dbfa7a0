"""Caps on what one lead, one request and one organisation may hold (docs/operations.md, "Limits").

Every lead write (``POST``/``PUT /lead/``, ``/contact/``, the import) is held to the same caps,
so no way in stores what another refuses. Each refusal is a 400 naming the field, the cap and
the setting that raises it. String lengths are fixed in the schemas (``leads/schemas.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from bulkmail.query_api.errors import BadRequest
from bulkmail.query_api.leads.schemas import ContactIn
from bulkmail.shared.settings import Settings

# Custom number values are stored as NUMERIC(20, 6): 14 digits before the point.
MAX_CUSTOM_NUMBER = Decimal(10) ** 14


class LimitExceeded(BadRequest):
    error = "Limit exceeded"


@dataclass(frozen=True)
class LeadLimits:
    contacts_per_lead: int
    emails_per_lead: int
    phones_per_lead: int
    custom_fields_per_request: int
    custom_fields_per_organization: int

    @classmethod
    def from_settings(cls, settings: Settings) -> LeadLimits:
        return cls(
            contacts_per_lead=settings.max_contacts_per_lead,
            emails_per_lead=settings.max_emails_per_lead,
            phones_per_lead=settings.max_phones_per_lead,
            custom_fields_per_request=settings.max_custom_fields_per_request,
            custom_fields_per_organization=settings.max_custom_fields_per_organization,
        )


def lead_problem(
    limits: LeadLimits,
    contacts: Sequence[ContactIn],
    custom: Iterable[str] = (),
    *,
    other_emails: int = 0,
    other_phones: int = 0,
    other_contacts: int = 0,
) -> tuple[str, str] | None:
    """(field, problem) for the first cap the lead would exceed, or None. ``other_*`` count what the
    lead keeps besides ``contacts`` (a contact added or changed on its own)."""
    n_contacts = other_contacts + len(contacts)
    if n_contacts > limits.contacts_per_lead:
        return "contacts", _over(n_contacts, "contacts", limits.contacts_per_lead, "MAX_CONTACTS_PER_LEAD")
    n_emails = other_emails + sum(len(c.emails) for c in contacts)
    if n_emails > limits.emails_per_lead:
        return "emails", _over(n_emails, "email addresses", limits.emails_per_lead, "MAX_EMAILS_PER_LEAD")
    n_phones = other_phones + sum(len(c.phones) for c in contacts)
    if n_phones > limits.phones_per_lead:
        return "phones", _over(n_phones, "phone numbers", limits.phones_per_lead, "MAX_PHONES_PER_LEAD")
    n_custom = len(list(custom))
    if n_custom > limits.custom_fields_per_request:
        return "custom", (
            f"{n_custom} custom fields in one request; at most {limits.custom_fields_per_request} "
            f"(BULKMAIL_MAX_CUSTOM_FIELDS_PER_REQUEST)"
        )
    return None


def check_lead(limits: LeadLimits, contacts: Sequence[ContactIn], custom: Iterable[str] = (), **others: int) -> None:
    found = lead_problem(limits, contacts, custom, **others)
    if found is not None:
        field, problem = found
        raise LimitExceeded(f"{field}: {problem}", field=field)


def new_fields_problem(limits: LeadLimits, existing: int, new: int) -> str | None:
    """The organisation's cap on custom fields, for ``new`` fields created beside ``existing`` ones."""
    if new and existing + new > limits.custom_fields_per_organization:
        return (
            f"the organisation would have {existing + new} custom fields; at most "
            f"{limits.custom_fields_per_organization} (BULKMAIL_MAX_CUSTOM_FIELDS_PER_ORGANIZATION)"
        )
    return None


def number_problem(value: Decimal) -> str | None:
    if not value.is_finite() or abs(value) >= MAX_CUSTOM_NUMBER:
        return f"{value} is outside the range of custom numbers (less than 10^14 either way)"
    return None


def _over(n: int, what: str, limit: int, setting: str) -> str:
    return f"the lead would have {n} {what}; at most {limit} (BULKMAIL_{setting})"
