"""``/leads`` and ``/smart-views``: the search page, its live JSON, and saving a Smart View.

The page works as a plain GET form; ``leads.js`` makes it live by asking ``/ui/leads/search``
for the same fragments the page is made of (count, results, error), so there is one template
for each piece whether it arrives with the page or as you type.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from bulkmail.query_api.deps import KeptDep, SessionDep
from bulkmail.query_api.errors import APIError
from bulkmail.query_api.ownership import get_owned
from bulkmail.query_api.recent import Kept
from bulkmail.query_api.saved_searches import service as smart_view_service
from bulkmail.query_api.search import QueryError
from bulkmail.query_api.web.lead_search import (
    SORT_CHOICES,
    SearchResult,
    catalog_names,
    search_leads,
    smart_views,
)
from bulkmail.query_api.web.page_errors import page_not_found
from bulkmail.query_api.web.rendering import render, templates
from bulkmail.query_api.web.session import CurrentUser, WebUserDep
from bulkmail.query_api.web.suggest import Catalog, suggest
from bulkmail.shared.models import SavedSearch

router = APIRouter()

QueryText = Annotated[str, Query(max_length=10_000)]


def _email_link(result: SearchResult, view: SavedSearch | None) -> str:
    if view is not None and result.query == view.query:
        return "/bulk-emails/new?" + urlencode({"saved_search_id": view.id})
    return "/bulk-emails/new?" + urlencode({"query": result.query})


def _pages(result: SearchResult, base: str) -> dict[str, str | None]:
    def link(page: int) -> str:
        params = {"query": result.query, "sort": result.sort, "page": page}
        return base + "?" + urlencode({k: v for k, v in params.items() if v not in ("", None)})

    return {
        "previous": link(result.page - 1) if result.page > 1 else None,
        "next": link(result.page + 1) if result.has_more else None,
    }


def _fragments(result: SearchResult, view: SavedSearch | None, base: str) -> dict[str, Any]:
    context = {"result": result, "pages": _pages(result, base), "email_link": _email_link(result, view)}
    return {
        "count_text": result.count_text,
        "error": result.error,
        "error_html": templates.get_template("leads/_query_error.html").render(context),
        "results_html": templates.get_template("leads/_results.html").render(context),
        "email_link": context["email_link"],
    }


async def _leads_page(
    request: Request,
    session: SessionDep,
    user: CurrentUser,
    query: str,
    sort: str,
    page: int,
    view: SavedSearch | None = None,
    save_error: str = "",
    status_code: int = 200,
) -> Response:
    kept: Kept = request.app.state.kept
    result = await search_leads(session, user.principal, query, sort, page, kept)
    base = f"/smart-views/{view.id}" if view is not None else "/leads"
    return render(
        request,
        "leads/leads.html",
        {
            "result": result,
            "view": view,
            "views": await smart_views(session, user.organization_id),
            "sort_choices": SORT_CHOICES,
            "pages": _pages(result, base),
            "email_link": _email_link(result, view),
            "save_error": save_error,
            "base": base,
        },
        status_code=status_code,
    )


@router.get("/leads")
async def leads_page(
    request: Request, session: SessionDep, user: WebUserDep, query: QueryText = "", sort: str = "", page: int = 1
) -> Response:
    return await _leads_page(request, session, user, query, sort, page)


@router.get("/ui/leads/search")
async def live_search(
    session: SessionDep,
    user: WebUserDep,
    kept: KeptDep,
    query: QueryText = "",
    sort: str = "",
    page: int = 1,
    smart_view: int | None = None,
) -> JSONResponse:
    """What the page shows for a query: the count, the results and any error, as HTML fragments."""
    view = None
    if smart_view is not None:
        view = await session.get(SavedSearch, smart_view)
        if view is not None and view.organization_id != user.organization_id:
            view = None
    result = await search_leads(session, user.principal, query, sort, page, kept)
    base = f"/smart-views/{view.id}" if view is not None else "/leads"
    return JSONResponse(_fragments(result, view, base))


@router.get("/ui/leads/suggest")
async def live_suggestions(
    session: SessionDep, user: WebUserDep, query: QueryText = "", cursor: int = 0
) -> JSONResponse:
    statuses, template_names, view_names = await catalog_names(session, user.organization_id)
    found = suggest(query, cursor, Catalog(statuses, template_names, view_names))
    return JSONResponse(
        {
            "suggestions": [
                {"label": s.label, "kind": s.kind, "text": s.text, "start": s.start, "end": s.end} for s in found
            ]
        }
    )


@router.post("/smart-views")
async def save_smart_view(
    request: Request,
    session: SessionDep,
    user: WebUserDep,
    name: Annotated[str, Form(max_length=200)] = "",
    query: Annotated[str, Form(max_length=10_000)] = "",
) -> Response:
    """Save the current query as a Smart View (checked as the API checks it) and open it."""
    problem = ""
    if not name.strip():
        problem = "Give the Smart View a name."
    elif not query.strip():
        problem = "Type a query to save."
    else:
        try:
            view = await smart_view_service.create(session, user.principal, name.strip(), query)
        except QueryError as exc:
            problem = f"The query cannot be saved: {exc.detail} (line {exc.line}, column {exc.column})."
        except APIError as exc:
            problem = exc.detail
        else:
            return RedirectResponse(f"/smart-views/{view.id}", status_code=303)
    return await _leads_page(request, session, user, query, "", 1, save_error=problem, status_code=400)


@router.get("/smart-views/{view_id}")
async def open_smart_view(
    request: Request, session: SessionDep, user: WebUserDep, view_id: int, sort: str = "", page: int = 1
) -> Response:
    try:
        view = await get_owned(session, SavedSearch, view_id, user.organization_id, what="Smart View")
    except APIError as exc:
        return page_not_found(request, exc.detail)
    return await _leads_page(request, session, user, view.query, sort, page, view=view)
