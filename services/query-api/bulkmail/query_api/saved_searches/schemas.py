"""Smart View payloads: a query in the classic language, or Close's structured ``s_query``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, StringConstraints, model_validator

from bulkmail.shared.models import SavedSearch

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
QueryText = Annotated[str, StringConstraints(min_length=1, max_length=10_000)]


class SavedSearchIn(BaseModel):
    """The query in the classic language, or Close's structured ``s_query`` (saved translated)."""

    model_config = ConfigDict(extra="forbid")
    name: Name
    query: QueryText | None = None
    s_query: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_query(self) -> SavedSearchIn:
        if (self.query is None) == (self.s_query is None):
            raise ValueError("give exactly one of 'query' or 's_query'")
        return self


class SavedSearchUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name | None = None
    query: QueryText | None = None
    s_query: dict[str, Any] | None = None


class SavedSearchOut(BaseModel):
    id: int
    name: str
    query: str
    s_query: dict[str, Any] | None
    date_created: datetime
    date_updated: datetime


def to_out(s: SavedSearch) -> SavedSearchOut:
    return SavedSearchOut(
        id=s.id, name=s.name, query=s.query, s_query=s.s_query, date_created=s.created_at, date_updated=s.updated_at
    )
