"""Lead status payloads."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints

from bulkmail.shared.models import LeadStatus

Label = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class LeadStatusIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: Label


class LeadStatusOut(BaseModel):
    id: int
    label: str


def to_out(row: LeadStatus) -> LeadStatusOut:
    return LeadStatusOut(id=row.id, label=row.label)
