"""Loading rows through the tenant wall: another organisation's row is simply not found."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from bulkmail.query_api.errors import Conflict, NotFound

M = TypeVar("M")

MAX_ID = 2**63 - 1  # ids are BIGINT


async def get_owned(
    session: AsyncSession, model: type[M], row_id: int, organization_id: int, *options: Any, what: str = ""
) -> M:
    org_col: InstrumentedAttribute[int] = model.organization_id  # type: ignore[attr-defined]
    id_col: InstrumentedAttribute[int] = model.id  # type: ignore[attr-defined]
    if not 1 <= row_id <= MAX_ID:  # no such row, and the drivers refuse integers beyond 64 bits
        raise NotFound(f"No {what or model.__name__.lower()} with id {row_id}.")
    row = await session.scalar(select(model).where(id_col == row_id, org_col == organization_id).options(*options))
    if row is None:
        raise NotFound(f"No {what or model.__name__.lower()} with id {row_id}.")
    return row


async def ensure_name_free(
    session: AsyncSession, model: type[M], organization_id: int, name: str, own_id: int | None, what: str
) -> None:
    """Names are unique per organisation (templates, Smart Views): refuse a taken one with 409."""
    name_col: InstrumentedAttribute[str] = model.name  # type: ignore[attr-defined]
    org_col: InstrumentedAttribute[int] = model.organization_id  # type: ignore[attr-defined]
    id_col: InstrumentedAttribute[int] = model.id  # type: ignore[attr-defined]
    other = await session.scalar(select(id_col).where(org_col == organization_id, name_col == name))
    if other is not None and other != own_id:
        raise Conflict(f"{what} named {name!r} already exists.")
