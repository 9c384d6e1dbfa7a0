"""Checking a Smart View's query before it is saved.

The query is compiled (never run) against the organisation's catalogue, with the Smart View being
saved already holding its new query, so a view that would refer to itself, directly or through
others, is refused as a cycle at save time rather than at every later search.
"""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.query_api.search.compiler import compile_search
from bulkmail.query_api.search.context import load_search_context


async def validate_saved_search(
    session: AsyncSession, *, organization_id: int, user_id: int | None, name: str, query: str
) -> None:
    """Raise ``QueryError`` when ``query`` cannot be saved as the Smart View ``name``."""
    ctx = await load_search_context(session, organization_id=organization_id, user_id=user_id)
    stored = ctx.saved_searches

    def with_new_query(view: str) -> str | None:
        return query if view.strip().lower() == name.strip().lower() else stored(view)

    compile_search(query, replace(ctx, saved_searches=with_new_query))
