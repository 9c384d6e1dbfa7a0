"""Every lead query of the API lives here."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Executable,
    Integer,
    Row,
    Select,
    Text,
    any_,
    bindparam,
    case,
    cast,
    func,
    literal,
    null,
    select,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from bulkmail.shared.models import (
    Address,
    Contact,
    ContactEmail,
    ContactPhone,
    CustomField,
    Lead,
    LeadCustomValue,
    LeadStatus,
)
from bulkmail.shared.models import Id as IdType

LEAD_LOAD_OPTIONS: tuple[Any, ...] = (
    selectinload(Lead.status),
    selectinload(Lead.contacts).selectinload(Contact.emails),
    selectinload(Lead.contacts).selectinload(Contact.phones),
    selectinload(Lead.addresses),
    selectinload(Lead.custom_values).selectinload(LeadCustomValue.field),
)


def leads_of(organization_id: int) -> Select[Lead]:
    return select(Lead).where(Lead.organization_id == organization_id).options(*LEAD_LOAD_OPTIONS)


async def load_leads(session: AsyncSession, organization_id: int, ids: Sequence[int]) -> list[Lead]:
    """Leads by id in the given order, with everything the API shows."""
    if not ids:
        return []
    rows = {lead.id: lead for lead in await session.scalars(leads_of(organization_id).where(Lead.id.in_(ids)))}
    return [rows[i] for i in ids if i in rows]


# The read path's statements are built once per dialect: constructing the UNION ALL below took
# ~1 ms of Python a request, more than PostgreSQL took to answer it.


def _ids_in(column: Any, postgresql: bool) -> ColumnElement[bool]:
    """``column`` among the ``ids`` parameter; ``= ANY(array)`` on PostgreSQL (as ``db.among``)."""
    if postgresql:
        return column == any_(bindparam("ids", type_=ARRAY(BigInteger)))  # type: ignore[no-any-return]
    return column.in_(bindparam("ids", expanding=True))  # type: ignore[no-any-return]


@cache
def _lead_rows_statement(postgresql: bool) -> Executable:
    return (
        select(
            Lead.id,
            Lead.name,
            Lead.description,
            Lead.url,
            Lead.status_id,
            LeadStatus.label.label("status_label"),
            Lead.created_at,
            Lead.updated_at,
            Lead.created_by_id,
            Lead.updated_by_id,
        )
        .outerjoin(LeadStatus, LeadStatus.id == Lead.status_id)
        .where(Lead.organization_id == bindparam("organization_id"), _ids_in(Lead.id, postgresql))
    )


async def lead_rows(session: AsyncSession, organization_id: int, ids: Sequence[int]) -> list[Row[Any]]:
    """The leads' own columns and their status label, one statement (order not kept)."""
    stmt = _lead_rows_statement(session.get_bind().dialect.name == "postgresql")
    # Through the session's connection: a Core statement needs none of the ORM's result handling.
    connection = await session.connection()
    return list(await connection.execute(stmt, {"organization_id": organization_id, "ids": list(ids)}))


# What ``lead_children`` rows are: a contact, one of its emails or phones, an address, a custom value.
CONTACT, EMAIL, PHONE, ADDRESS, CUSTOM = "c", "e", "p", "a", "f"


def _child(
    kind: str,
    lead_id: Any,
    position: Any,
    texts: Sequence[Any],
    *,
    parent: Any = None,
    item: Any = None,
    flag: Any = None,
) -> Select[Any]:
    """One part of the UNION ALL: (kind, lead_id, parent, item, position, t1..t6, flag), typed alike."""
    padded = [*texts, *[None] * (6 - len(texts))]
    columns: list[ColumnElement[Any]] = [
        literal(kind, Text).label("kind"),
        lead_id.label("lead_id"),
        (cast(null(), IdType) if parent is None else parent).label("parent"),
        (cast(null(), IdType) if item is None else item).label("item"),
        cast(position, Integer).label("position"),
        *[(cast(null(), Text) if t is None else cast(t, Text)).label(f"t{i}") for i, t in enumerate(padded, 1)],
        (cast(null(), Integer) if flag is None else flag).label("flag"),
    ]
    return select(*columns)


@cache
def _children_statement(postgresql: bool) -> Executable:
    contacts = _child(CONTACT, Contact.lead_id, Contact.position, [Contact.name, Contact.title], item=Contact.id)
    emails = _child(
        EMAIL,
        ContactEmail.lead_id,
        ContactEmail.position,
        [ContactEmail.email, ContactEmail.type],
        parent=ContactEmail.contact_id,
        flag=case((ContactEmail.is_unsubscribed, 1), else_=0),
    )
    phones = _child(
        PHONE,
        ContactPhone.lead_id,
        ContactPhone.position,
        [ContactPhone.phone, ContactPhone.type],
        parent=ContactPhone.contact_id,
    )
    addresses = _child(
        ADDRESS,
        Address.lead_id,
        Address.position,
        [Address.label, Address.address_1, Address.city, Address.state, Address.country, Address.zipcode],
    )
    custom = _child(
        CUSTOM,
        LeadCustomValue.lead_id,
        literal(0),
        [CustomField.name, CustomField.type, LeadCustomValue.value_text, LeadCustomValue.value_number],
    ).join_from(LeadCustomValue, CustomField, CustomField.id == LeadCustomValue.field_id)
    everything = union_all(
        contacts.where(_ids_in(Contact.lead_id, postgresql)),
        emails.where(_ids_in(ContactEmail.lead_id, postgresql)),
        phones.where(_ids_in(ContactPhone.lead_id, postgresql)),
        addresses.where(_ids_in(Address.lead_id, postgresql)),
        custom.where(_ids_in(LeadCustomValue.lead_id, postgresql)),
    ).subquery()
    c = everything.c
    return select(everything).order_by(c.lead_id, c.kind, c.parent, c.position, c.item)


async def lead_children(session: AsyncSession, ids: Sequence[int]) -> list[Row[Any]]:
    """Every contact, email, phone, address and custom value of the leads, in one statement.

    Five collections loaded one by one cost five round trips and five ORM loads a request;
    as one UNION ALL of plain rows (each part through its ``lead_id`` index) they cost one.
    Rows come ordered by lead, kind, contact and position.
    """
    stmt = _children_statement(session.get_bind().dialect.name == "postgresql")
    connection = await session.connection()
    return list(await connection.execute(stmt, {"ids": list(ids)}))


async def count_leads(session: AsyncSession, organization_id: int) -> int:
    return int(await session.scalar(select(func.count()).where(Lead.organization_id == organization_id)) or 0)


async def status_by_label(session: AsyncSession, organization_id: int, label: str) -> LeadStatus | None:
    return await session.scalar(
        select(LeadStatus).where(
            LeadStatus.organization_id == organization_id,
            func.lower(LeadStatus.label) == label.strip().lower(),
        )
    )


async def status_by_id(session: AsyncSession, organization_id: int, status_id: int) -> LeadStatus | None:
    return await session.scalar(
        select(LeadStatus).where(LeadStatus.organization_id == organization_id, LeadStatus.id == status_id)
    )


async def status_labels(session: AsyncSession, organization_id: int) -> list[str]:
    return list(
        await session.scalars(
            select(LeadStatus.label).where(LeadStatus.organization_id == organization_id).order_by(LeadStatus.position)
        )
    )


async def custom_fields_by_name(session: AsyncSession, organization_id: int) -> dict[str, CustomField]:
    fields = await session.scalars(select(CustomField).where(CustomField.organization_id == organization_id))
    return {f.name: f for f in fields}
