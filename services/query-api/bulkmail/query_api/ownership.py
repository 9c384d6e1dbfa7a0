"""Loading rows through the tenant wall: another organisation's row is simply not found."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from bulkmail.query_api.errors import NotFound

M = TypeVar("M")


async def get_owned(
    session: AsyncSession, model: type[M], row_id: int, organization_id: int, *options: Any, what: str = ""
) -> M:
    org_col: InstrumentedAttribute[int] = model.organization_id  # type: ignore[attr-defined]
    id_col: InstrumentedAttribute[int] = model.id  # type: ignore[attr-defined]
    row = await session.scalar(select(model).where(id_col == row_id, org_col == organization_id).options(*options))
    if row is None:
        raise NotFound(f"No {what or model.__name__.lower()} with id {row_id}.")
    return row
