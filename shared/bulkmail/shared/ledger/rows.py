"""Typed access to what SQLAlchemy types loosely: a model's table, a statement's row count."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Result, Table
from sqlalchemy.engine import CursorResult

from bulkmail.shared.models import Base


def table_of(model: type[Base]) -> Table:
    """The model's Core table (``__table__`` is typed as a plain FROM clause)."""
    return Base.metadata.tables[model.__tablename__]


def changed(result: Result[Any]) -> int:
    """How many rows an UPDATE or DELETE changed (only a cursor result knows)."""
    return int(cast("CursorResult[Any]", result).rowcount or 0)
