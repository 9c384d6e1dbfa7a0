"""Which Smart Views depend on a Smart View or a template, so deleting one can name them (409).

A Smart View refers to others by name (``saved_search:"Hot leads"``) and to templates by name
(``not emailed_template:"Intro"``). Rather than searching query text, each view is compiled by
the search language itself, once as things are and once without the thing being deleted: a view
that compiles now and would not then depends on it. (A view already broken is not blamed.)
"""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.query_api.search import compile_search, load_search_context
from bulkmail.query_api.search.context import SearchContext
from bulkmail.query_api.search.errors import QueryError


def _compiles(query: str, ctx: SearchContext) -> bool:
    try:
        compile_search(query, ctx)
    except QueryError:
        return False
    return True


async def views_using(
    session: AsyncSession,
    organization_id: int,
    user_id: int | None,
    views: dict[str, str],
    *,
    view: str | None = None,
    template: str | None = None,
) -> list[str]:
    """Names of the Smart Views (``views``: name → query) that use the view or template named."""
    ctx = await load_search_context(session, organization_id=organization_id, user_id=user_id)
    key = view.strip().lower() if view is not None else None
    stored = ctx.saved_searches

    def without_view(name: str) -> str | None:
        return None if name.strip().lower() == key else stored(name)

    without = ctx
    if view is not None:
        without = replace(without, saved_searches=without_view)
    if template is not None and ctx.templates is not None:
        gone = " ".join(template.lower().split())
        without = replace(without, templates={k: v for k, v in ctx.templates.items() if k != gone})
    return sorted(
        name
        for name, query in views.items()
        if name.strip().lower() != key and _compiles(query, ctx) and not _compiles(query, without)
    )
