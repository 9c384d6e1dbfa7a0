"""The lead's derived columns: counters and search text, kept current by the write path.

Every write that changes a lead's contacts, addresses or activities calls
``refresh_lead_counters`` for the leads it touched (one UPDATE per table for all of them); bulk loaders
compute the same values while generating rows. That includes the lead's primary email (the
address a send to the lead goes to) and whether it may be mailed. The search language then reads columns on
``leads`` (and on ``lead_activity``, the counters a send changes) instead of aggregating related
tables per query.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import false, func, not_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from bulkmail.shared.models import (
    Address,
    Call,
    Contact,
    ContactEmail,
    ContactPhone,
    EmailActivity,
    Lead,
    LeadActivity,
    LeadCustomValue,
    Opportunity,
    Task,
)


def normalize_email(address: str) -> str:
    return address.strip().lower()


def build_search_text(parts: Iterable[str | None]) -> str:
    """Lower-cased words of every searchable field, space separated.

    Free-text search matches a word prefix (``acme`` finds "Acme Corp"), so the text keeps word
    boundaries; e-mail addresses and URLs are kept whole and also split at punctuation, so
    ``jane`` finds ``jane.doe@acme.com``.
    """
    words: list[str] = []
    for part in parts:
        if not part:
            continue
        text = str(part).lower()
        words.append(text)
        if any(ch in text for ch in "@.-_/:+()"):
            cleaned = text
            for ch in "@.-_/:+()":
                cleaned = cleaned.replace(ch, " ")
            words.append(cleaned)
    return " ".join(" ".join(words).split())


def first_email(column: Any) -> Any:
    """``column`` of the lead's primary email: the first email of the first contact that has one.

    The order is the dispatcher's for contact preference "lead" (contact position, then email
    position, ids breaking ties), so ``leads.primary_email`` is the address such a send uses.
    """
    return (
        select(column)
        .select_from(ContactEmail)
        .join(Contact, Contact.id == ContactEmail.contact_id)
        .where(ContactEmail.lead_id == Lead.id)
        .order_by(Contact.position, Contact.id, ContactEmail.position, ContactEmail.id)
        .limit(1)
        .scalar_subquery()
    )


async def refresh_primary_email(session: AsyncSession, lead_ids: Sequence[int]) -> None:
    """Only the primary email columns: for writes that change no counter (an unsubscribe)."""
    if not lead_ids:
        return
    await session.execute(
        update(Lead)
        .where(Lead.id.in_(list(lead_ids)))
        .values(
            primary_email=first_email(ContactEmail.email_normalized),
            has_sendable_email=func.coalesce(first_email(not_(ContactEmail.is_unsubscribed)), false()),
        )
        .execution_options(synchronize_session=False)
    )


async def refresh_lead_counters(session: AsyncSession, lead_ids: Sequence[int]) -> None:
    """Recompute counters and search text for the given leads from their related rows."""
    if not lead_ids:
        return
    ids = list(lead_ids)

    def count(lead_id: InstrumentedAttribute[Any]) -> object:
        """The rows of ``lead_id``'s table on each lead."""
        return select(func.count()).select_from(lead_id.class_).where(lead_id == Lead.id).scalar_subquery()

    await session.execute(
        update(Lead)
        .where(Lead.id.in_(ids))
        .values(
            num_contacts=count(Contact.lead_id),
            num_addresses=count(Address.lead_id),
            num_email_addresses=count(ContactEmail.lead_id),
            num_phone_numbers=count(ContactPhone.lead_id),
            num_opportunities=count(Opportunity.lead_id),
            num_tasks=count(Task.lead_id),
            last_email_opened_at=select(func.max(EmailActivity.date_opened))
            .where(EmailActivity.lead_id == Lead.id)
            .scalar_subquery(),
            last_called_at=select(func.max(Call.date)).where(Call.lead_id == Lead.id).scalar_subquery(),
            primary_email=first_email(ContactEmail.email_normalized),
            has_sendable_email=func.coalesce(first_email(not_(ContactEmail.is_unsubscribed)), false()),
        )
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        update(LeadActivity)
        .where(LeadActivity.lead_id.in_(ids))
        .values(
            num_emails=select(func.count()).where(EmailActivity.lead_id == LeadActivity.lead_id).scalar_subquery(),
            num_calls=select(func.count()).where(Call.lead_id == LeadActivity.lead_id).scalar_subquery(),
            last_emailed_at=select(func.max(EmailActivity.date_sent))
            .where(EmailActivity.lead_id == LeadActivity.lead_id, EmailActivity.direction == "outgoing")
            .scalar_subquery(),
        )
        .execution_options(synchronize_session=False)
    )
    await _refresh_search_text(session, ids)


async def _refresh_search_text(session: AsyncSession, lead_ids: list[int]) -> None:
    parts: dict[int, list[str | None]] = {}
    for lead_id, name, description, url in await session.execute(
        select(Lead.id, Lead.name, Lead.description, Lead.url).where(Lead.id.in_(lead_ids))
    ):
        parts[lead_id] = [name, description, url]
    for lead_id, name, title in await session.execute(
        select(Contact.lead_id, Contact.name, Contact.title).where(Contact.lead_id.in_(lead_ids))
    ):
        parts[lead_id] += [name, title]
    for lead_id, email in await session.execute(
        select(ContactEmail.lead_id, ContactEmail.email).where(ContactEmail.lead_id.in_(lead_ids))
    ):
        parts[lead_id].append(email)
    for lead_id, phone in await session.execute(
        select(ContactPhone.lead_id, ContactPhone.phone).where(ContactPhone.lead_id.in_(lead_ids))
    ):
        parts[lead_id].append(phone)
    for lead_id, *address in await session.execute(
        select(Address.lead_id, Address.address_1, Address.city, Address.state, Address.country, Address.zipcode).where(
            Address.lead_id.in_(lead_ids)
        )
    ):
        parts[lead_id] += address
    for lead_id, value in await session.execute(
        select(LeadCustomValue.lead_id, LeadCustomValue.value_text).where(LeadCustomValue.lead_id.in_(lead_ids))
    ):
        parts[lead_id].append(value)
    for lead_id, lead_parts in parts.items():
        await session.execute(
            update(Lead)
            .where(Lead.id == lead_id)
            .values(search_text=build_search_text(lead_parts))
            .execution_options(synchronize_session=False)
        )
