"""The leads page's search: one page of results, the count, and a refused query's position.

The same compiled search as ``GET /api/v1/lead/?query=``, read the same way (``search_page``: a
short page is its own total, else ``count_matches``, exact when that is quick, else the
planner's estimate marked approximate, as Close shows it), with the same kept catalogue and
totals (``query_api.recent``: the search box asks again on every keystroke and page, and a
write through this process forgets them); the rows are the API's lead documents. What is added
here is only what a page needs: a sort picked from a menu and pages of 50.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.query_api.auth import Principal
from bulkmail.query_api.leads.documents import load_lead_documents
from bulkmail.query_api.leads.service import find_leads
from bulkmail.query_api.recent import Kept
from bulkmail.query_api.search import QueryError
from bulkmail.shared.models import EmailTemplate, LeadStatus, SavedSearch

PAGE_SIZE = 50

# (value of the menu, label): the value is a `sort:` key of the language.
SORT_CHOICES: tuple[tuple[str, str], ...] = (
    ("", "Newest first"),
    ("name", "Name, A to Z"),
    ("-name", "Name, Z to A"),
    ("-updated", "Recently updated"),
    ("-last_emailed", "Recently emailed"),
    ("last_emailed", "Longest since emailed"),
)
_SORTS = {value for value, _ in SORT_CHOICES}
_HAS_SORT = re.compile(r"(^|[\s(])sort\s*:", re.IGNORECASE)


@dataclass
class LeadRow:
    id: int
    name: str
    status: str
    contact: str
    email: str
    city: str


@dataclass
class SearchResult:
    query: str
    sort: str
    page: int
    rows: list[LeadRow] = field(default_factory=list)
    count: int = 0
    exact: bool = True
    has_more: bool = False
    error: dict[str, Any] | None = None
    sort_in_query: bool = False

    @property
    def count_text(self) -> str:
        if self.error is not None:
            return ""
        noun = "lead" if self.count == 1 else "leads"
        return f"{self.count:,} {noun}" if self.exact else f"~{self.count:,} {noun}"


def effective_query(query: str, sort: str) -> tuple[str, bool]:
    """The query with the menu's sort added, unless the query has its own `sort:` (which wins)."""
    if _HAS_SORT.search(query):
        return query, True
    if sort in _SORTS and sort:
        return f"{query.strip()} sort:{sort}".strip(), False
    return query, False


async def search_leads(
    session: AsyncSession, principal: Principal, query: str, sort: str, page: int, kept: Kept | None = None
) -> SearchResult:
    page = max(1, page)
    result = SearchResult(query=query, sort=sort if sort in _SORTS else "", page=page)
    text, result.sort_in_query = effective_query(query, result.sort)
    try:
        found = await find_leads(session, principal, text, (page - 1) * PAGE_SIZE, PAGE_SIZE, kept)
    except QueryError as exc:
        result.error = exc.to_dict() | {"offset": exc.offset, "line_text": exc.snippet.split("\n")[0]}
        return result
    result.has_more = found.has_more
    documents = await load_lead_documents(session, principal.organization_id, found.ids)
    result.rows = [_row(document) for document in documents]
    result.count, result.exact = found.total.value, not found.total.approximate
    return result


def _row(lead: dict[str, Any]) -> LeadRow:
    """A result row from the lead's API document (``leads.documents``)."""
    contacts = lead["contacts"]
    email = next((e["email"] for c in contacts for e in c["emails"]), "")
    city = next((a["city"] for a in lead["addresses"] if a["city"]), "")
    return LeadRow(
        id=lead["id"],
        name=lead["display_name"],
        status=lead["status_label"] or "",
        contact=contacts[0]["name"] if contacts else "",
        email=email,
        city=city,
    )


async def catalog_names(session: AsyncSession, organization_id: int) -> tuple[list[str], list[str], list[str]]:
    """(status labels, template names, Smart View names) of the organisation, for suggestions."""
    statuses = await session.scalars(
        select(LeadStatus.label).where(LeadStatus.organization_id == organization_id).order_by(LeadStatus.label)
    )
    templates = await session.scalars(
        select(EmailTemplate.name).where(EmailTemplate.organization_id == organization_id).order_by(EmailTemplate.name)
    )
    views = await session.scalars(
        select(SavedSearch.name).where(SavedSearch.organization_id == organization_id).order_by(SavedSearch.name)
    )
    return list(statuses), list(templates), list(views)


async def smart_views(session: AsyncSession, organization_id: int) -> list[SavedSearch]:
    return list(
        await session.scalars(
            select(SavedSearch).where(SavedSearch.organization_id == organization_id).order_by(SavedSearch.name)
        )
    )
