"""What a query is compiled against: the tenant, the requesting user and the organisation's catalogue.

Custom field types, Smart View queries, statuses and templates are loaded before compiling (one
small per-organisation read), so a query naming an unknown field or comparing a field with a value of the wrong type is
refused before the search itself reaches the database.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

from sqlalchemy import Executable, Text, bindparam, cast, literal, null, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.query_api.auth import Principal
from bulkmail.query_api.recent import Kept, Recent
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


# What a ``_catalogue`` row is: a custom field, a Smart View, a lead status, an email template.
_FIELD, _SMART_VIEW, _STATUS, _TEMPLATE = "f", "v", "s", "t"


@cache
def _catalogue() -> Executable:
    """The organisation's custom fields, Smart Views, statuses and templates as one UNION ALL of
    (kind, id, name, detail): one round trip a search instead of four. Built once."""
    parts: list[tuple[str, Any, Any, Any, Any]] = [
        (_FIELD, CustomField.id, CustomField.name, CustomField.type, CustomField.organization_id),
        (_SMART_VIEW, SavedSearch.id, SavedSearch.name, SavedSearch.query, SavedSearch.organization_id),
        (_STATUS, LeadStatus.id, LeadStatus.label, null(), LeadStatus.organization_id),
        (_TEMPLATE, EmailTemplate.id, EmailTemplate.name, null(), EmailTemplate.organization_id),
    ]
    return union_all(
        *(
            select(
                literal(kind, Text).label("kind"),
                id_.label("id"),
                cast(name, Text).label("name"),
                cast(detail, Text).label("detail"),
            ).where(org == bindparam("organization_id"))
            for kind, id_, name, detail, org in parts
        )
    )


@dataclass(frozen=True, slots=True)
class Catalogue:
    """An organisation's custom fields, Smart Views, statuses and templates, read for compiling."""

    custom_fields: Mapping[str, CustomFieldRef]
    saved_searches: SavedSearchResolver
    statuses: Mapping[str, int]
    templates: Mapping[str, int]


async def load_catalogue(session: AsyncSession, organization_id: int) -> Catalogue:
    custom_fields: dict[str, CustomFieldRef] = {}
    saved: dict[str, str] = {}
    statuses: dict[str, int] = {}
    templates: dict[str, int] = {}
    connection = await session.connection()  # a Core statement needs none of the ORM's result handling
    for kind, id_, name, detail in await connection.execute(_catalogue(), {"organization_id": organization_id}):
        if kind == _FIELD:
            custom_fields[name.lower()] = CustomFieldRef(id_, name, CustomFieldType(detail))
        elif kind == _SMART_VIEW:
            saved[name] = detail
        elif kind == _STATUS:
            statuses[" ".join(name.replace("_", " ").lower().split())] = id_
        else:
            templates[" ".join(name.lower().split())] = id_
    return Catalogue(custom_fields, resolver_from(saved), statuses, templates)


async def load_search_context(
    session: AsyncSession,
    *,
    organization_id: int,
    user_id: int | None,
    now: datetime | None = None,
    timezone: str | None = None,
    kept: Recent[None, Catalogue] | None = None,
) -> SearchContext:
    """The context for a request: the user's time zone, the org's custom fields and Smart Views.

    ``timezone``: the user's, when the caller knows it already (the API's principal carries it).
    ``kept``: catalogues recent requests read (``query_api.recent``), read and kept.
    """
    if timezone is None:
        timezone = "UTC"
        if user_id is not None:
            found = await session.scalar(
                select(User.timezone).where(User.id == user_id, User.organization_id == organization_id)
            )
            timezone = found or "UTC"
    catalogue = kept.get(organization_id, None) if kept is not None else None
    if catalogue is None:
        catalogue = await load_catalogue(session, organization_id)
        if kept is not None:
            kept.put(organization_id, None, catalogue)
    bind = session.get_bind()
    return SearchContext(
        organization_id=organization_id,
        user_id=user_id,
        timezone=timezone,
        now=now or datetime.now(UTC),
        dialect=bind.dialect.name,
        custom_fields=catalogue.custom_fields,
        saved_searches=catalogue.saved_searches,
        statuses=catalogue.statuses,
        templates=catalogue.templates,
    )


async def context_for(session: AsyncSession, principal: Principal, kept: Kept | None = None) -> SearchContext:
    """The context of a request by ``principal`` (an API key's or a signed-in user's: either
    carries the user's time zone), with the catalogue recent requests kept (``kept``)."""
    return await load_search_context(
        session,
        organization_id=principal.organization_id,
        user_id=principal.user_id,
        timezone=principal.timezone,
        kept=kept.catalogues if kept is not None else None,
    )
