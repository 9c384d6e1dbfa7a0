"""What a query is compiled against: the tenant, the requesting user and the organisation's catalogue.

Custom field types and Smart View queries are loaded before compiling (two small per-organisation
reads), so a query naming an unknown field or comparing a field with a value of the wrong type is
refused before the search itself reaches the database.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.shared.models import CustomField, CustomFieldType, EmailTemplate, LeadStatus, SavedSearch, User


@dataclass(frozen=True, slots=True)
class CustomFieldRef:
    """A custom field by id and type; ``id`` None means "look it up by name in SQL" (explain)."""

    id: int | None
    name: str
    type: CustomFieldType


SavedSearchResolver = Callable[[str], str | None]


@dataclass(frozen=True)
class SearchContext:
    organization_id: int
    user_id: int | None = None
    timezone: str = "UTC"
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    dialect: str = "postgresql"  # "postgresql" | "sqlite"
    # Lower-cased name → field. None: an open catalogue (the explain command without a database),
    # where every custom field is accepted and typed by the shape of its value.
    custom_fields: Mapping[str, CustomFieldRef] | None = None
    # Smart View name → its query text, or None when there is no such Smart View.
    saved_searches: SavedSearchResolver = lambda _name: None
    # Normalised status label ("bad fit") → id, and lower-cased template name → id. Resolved
    # here, the planner sees constants (and their statistics) instead of sub-queries, and a
    # misspelt template in `not emailed_template:` is refused rather than silently matching
    # every lead. None: resolved by name in SQL (the explain command without a database).
    statuses: Mapping[str, int] | None = None
    templates: Mapping[str, int] | None = None


def resolver_from(mapping: Mapping[str, str]) -> SavedSearchResolver:
    """A case-insensitive Smart View resolver over a name → query mapping."""
    lowered = {name.lower(): query for name, query in mapping.items()}
    return lambda name: lowered.get(name.lower())


async def load_search_context(
    session: AsyncSession,
    *,
    organization_id: int,
    user_id: int | None,
    now: datetime | None = None,
) -> SearchContext:
    """The context for a request: the user's time zone, the org's custom fields and Smart Views."""
    timezone = "UTC"
    if user_id is not None:
        found = await session.scalar(
            select(User.timezone).where(User.id == user_id, User.organization_id == organization_id)
        )
        timezone = found or "UTC"
    custom_fields = {
        name.lower(): CustomFieldRef(id_, name, type_)
        for id_, name, type_ in await session.execute(
            select(CustomField.id, CustomField.name, CustomField.type).where(
                CustomField.organization_id == organization_id
            )
        )
    }
    saved = {
        name: query
        for name, query in await session.execute(
            select(SavedSearch.name, SavedSearch.query).where(SavedSearch.organization_id == organization_id)
        )
    }
    statuses = {
        " ".join(label.replace("_", " ").lower().split()): id_
        for id_, label in await session.execute(
            select(LeadStatus.id, LeadStatus.label).where(LeadStatus.organization_id == organization_id)
        )
    }
    templates = {
        " ".join(name.lower().split()): id_
        for id_, name in await session.execute(
            select(EmailTemplate.id, EmailTemplate.name).where(EmailTemplate.organization_id == organization_id)
        )
    }
    bind = session.get_bind()
    return SearchContext(
        organization_id=organization_id,
        user_id=user_id,
        timezone=timezone,
        now=now or datetime.now(UTC),
        dialect=bind.dialect.name,
        custom_fields=custom_fields,
        saved_searches=resolver_from(saved),
        statuses=statuses,
        templates=templates,
    )
