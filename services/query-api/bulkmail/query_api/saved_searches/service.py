"""Smart Views: a query is saved only if it compiles (QueryError → 400 with its position)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.query_api.auth import Principal
from bulkmail.query_api.ownership import ensure_name_free
from bulkmail.query_api.search.validation import validate_saved_search
from bulkmail.shared.models import SavedSearch


async def _validate(session: AsyncSession, principal: Principal, name: str, query: str) -> None:
    await validate_saved_search(
        session, organization_id=principal.organization_id, user_id=principal.user_id, name=name, query=query
    )


async def create(session: AsyncSession, principal: Principal, name: str, query: str) -> SavedSearch:
    await ensure_name_free(session, SavedSearch, principal.organization_id, name, None, "A Smart View")
    await _validate(session, principal, name, query)
    row = SavedSearch(organization_id=principal.organization_id, name=name, query=query)
    session.add(row)
    await session.flush()
    await session.refresh(row)
    return row


async def update(
    session: AsyncSession, principal: Principal, row: SavedSearch, name: str | None, query: str | None
) -> SavedSearch:
    if name is not None:
        await ensure_name_free(session, SavedSearch, principal.organization_id, name, row.id, "A Smart View")
        row.name = name
    if query is not None or name is not None:
        await _validate(session, principal, name or row.name, query or row.query)
    if query is not None:
        row.query = query
    row.updated_at = datetime.now(UTC)
    await session.flush()
    return row
