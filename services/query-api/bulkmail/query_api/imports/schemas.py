"""Import payloads: each NDJSON line is the lead object of ``POST /api/v1/lead/`` (Close's shape)."""

from __future__ import annotations

from pydantic import BaseModel

from bulkmail.query_api.leads.schemas import LeadIn as ImportedLead

__all__ = ["CSV_COLUMNS", "ImportResult", "ImportedLead"]

# CSV: one row per lead, with at most one contact, email, phone and address; ``custom.<Field
# Name>`` columns fill custom fields. Anything richer needs NDJSON.
CSV_COLUMNS = (
    "name", "url", "description", "status", "contact_name", "contact_title", "email", "phone",
    "city", "state", "country", "zipcode",
)  # fmt: skip


class ImportResult(BaseModel):
    leads: int
    contacts: int
    contact_emails: int
    contact_phones: int
    addresses: int
    custom_fields_created: list[str]
