"""Close-style list pages: ``_limit``/``_skip`` in, ``{"data": [...], "has_more": bool}`` out."""

from __future__ import annotations

from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel
from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")

MAX_LIMIT = 1000


class Page(BaseModel):
    limit: int
    skip: int


async def page_params(  # async: a plain def would run in FastAPI's thread pool
    limit: Annotated[int, Query(alias="_limit", ge=1, le=MAX_LIMIT)] = 100,
    skip: Annotated[int, Query(alias="_skip", ge=0, le=2**63 - 1)] = 0,
) -> Page:
    return Page(limit=limit, skip=skip)


PageDep = Annotated[Page, Depends(page_params)]
# An id in a query string (a filter): within BIGINT, so a huge one is a 400, not a driver error.
IdFilter = Annotated[int | None, Query(ge=1, le=2**63 - 1)]


class ListResponse(BaseModel, Generic[T]):
    data: list[T]
    has_more: bool


async def fetch_page(session: AsyncSession, stmt: Select[Any], page: Page) -> tuple[list[Any], bool]:
    """Rows of one page, and whether more follow (one extra row is read to know)."""
    rows = list((await session.scalars(stmt.offset(page.skip).limit(page.limit + 1))).all())
    return rows[: page.limit], len(rows) > page.limit
