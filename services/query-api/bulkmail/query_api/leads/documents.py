"""Leads as the API shows them, read in two statements and written as JSON once.

``GET /lead/{id}/`` took 9 SQL statements and ~9 ms on PostgreSQL with 100,000 leads, most of it
the ORM loading each nested collection (status, contacts, their emails and phones, addresses,
custom values and their fields) and then pydantic building ``LeadOut`` only for FastAPI to check
and convert it again. Here the lead's columns are one statement and every nested row a second
one (``repository.lead_children``), whatever the number of leads or contacts; the document is a
plain dict, serialised once by orjson (benchmarks/bench_api_requests.txt has the figures).

The shape is exactly ``schemas.LeadOut`` (which stays the OpenAPI contract and is what
``schemas.to_out`` builds for the write paths); tests hold the two to the same JSON.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import orjson
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.query_api.leads import repository
from bulkmail.query_api.leads.repository import ADDRESS, CONTACT, CUSTOM, EMAIL, PHONE
from bulkmail.query_api.leads.schemas import CUSTOM_KEY, CustomValue
from bulkmail.shared.models import CustomFieldType


class JSONBytes(Response):
    """A JSON body already serialised, or serialised here with orjson (UTC datetimes end in ``Z``,
    as pydantic writes them)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        if isinstance(content, bytes):
            return content
        return orjson.dumps(content, option=orjson.OPT_UTC_Z)


async def load_lead_documents(session: AsyncSession, organization_id: int, ids: Sequence[int]) -> list[dict[str, Any]]:
    """The leads of ``ids`` (another organisation's are skipped), in the order of ``ids``."""
    if not ids:
        return []
    rows = await repository.lead_rows(session, organization_id, ids)
    if not rows:
        return []
    found = [row.id for row in rows]
    children = _group_children(await repository.lead_children(session, found))
    documents = {row.id: _document(row, children.get(row.id)) for row in rows}
    return [documents[i] for i in ids if i in documents]


class _Children:
    __slots__ = ("addresses", "contacts", "custom")

    def __init__(self) -> None:
        self.contacts: dict[int, dict[str, Any]] = {}
        self.addresses: list[dict[str, Any]] = []
        self.custom: dict[str, CustomValue] = {}


def _group_children(rows: Sequence[Any]) -> dict[int, _Children]:
    by_lead: dict[int, _Children] = {}
    # Unpacked as tuples: a Row's attributes by name cost more than the rest of this loop.
    for kind, lead_id, parent, item, _position, t1, t2, t3, t4, t5, t6, flag in rows:
        lead = by_lead.get(lead_id)
        if lead is None:
            lead = by_lead[lead_id] = _Children()
        if kind == CONTACT:
            lead.contacts[item] = {"id": item, "lead_id": lead_id, "name": t1, "title": t2, "emails": [], "phones": []}
        elif kind == EMAIL:
            # Rows are ordered by kind: a lead's contacts ("c") come before their emails ("e").
            lead.contacts[parent]["emails"].append({"email": t1, "type": t2, "is_unsubscribed": bool(flag)})
        elif kind == PHONE:
            lead.contacts[parent]["phones"].append({"phone": t1, "type": t2})
        elif kind == ADDRESS:
            lead.addresses.append({"label": t1, "address_1": t2, "city": t3, "state": t4, "country": t5, "zipcode": t6})
        elif kind == CUSTOM:
            lead.custom[t1] = custom_value(t2, t3, t4)
    return by_lead


def custom_value(field_type: str, value_text: str | None, value_number: str | None) -> CustomValue:
    """A stored custom value as the API shows it (numbers as numbers, the rest as their text)."""
    if field_type == CustomFieldType.number and value_number is not None:
        number = Decimal(value_number)
        return int(number) if number == number.to_integral_value() else float(number)
    return value_text


def _document(lead: Any, children: _Children | None) -> dict[str, Any]:
    children = children or _Children()  # a fresh one: documents never share a list
    contacts = list(children.contacts.values())
    custom: Mapping[str, CustomValue] = dict(sorted(children.custom.items()))
    display_name = lead.name or (contacts[0]["name"] if contacts else "") or f"Lead {lead.id}"
    document: dict[str, Any] = {
        "id": lead.id,
        "display_name": display_name,
        "name": lead.name,
        "description": lead.description,
        "url": lead.url,
        "status": lead.status_label,
        "status_id": lead.status_id,
        "status_label": lead.status_label,
        "custom": custom,
        "contacts": contacts,
        "addresses": children.addresses,
        "date_created": lead.created_at,
        "date_updated": lead.updated_at,
        "created_by": lead.created_by_id,
        "updated_by": lead.updated_by_id,
    }
    # Close's top-level form of the same values (it keys them by field id; we by name).
    for name, value in custom.items():
        document[f"{CUSTOM_KEY}{name}"] = value
    return document
