"""Contact payloads: the shapes of a lead's contacts (shared with the lead resource), plus the lead a
new contact joins."""

from __future__ import annotations

from pydantic import ConfigDict

from bulkmail.query_api.leads.schemas import ContactIn, ContactOut, ContactUpdate

__all__ = ["ContactCreate", "ContactIn", "ContactOut", "ContactUpdate"]


class ContactCreate(ContactIn):
    model_config = ConfigDict(extra="forbid")
    lead_id: int
