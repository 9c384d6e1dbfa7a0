"""Which recipients a chunk carries, as SQL conditions every transition on a chunk shares.

A chunk of never-tried recipients is an id range of its bulk email's ledger: the pump queues
it without writing a recipient row, and its recipients keep ``chunk_id`` NULL from start to
finish. Ranges never overlap (the pump's cursor only moves forward), so "never tried, in the
range" names one chunk's recipients. A chunk of retries has no range; the pump writes its id on
each of its recipients (``chunk_id``). docs/ledger.md, "Chunks".

The conditions take the chunk's values as bound parameters (``ChunkScope.params``), so a
statement built on them is the same for every chunk of a kind and can be built once.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import ColumnElement, FromClause, and_, bindparam

from bulkmail.shared.models import BulkEmailChunk, RecipientState

R = RecipientState


@dataclass(frozen=True)
class ChunkScope:
    chunk_id: int
    bulk_email_id: int
    # The id range of a chunk of never-tried recipients; both None for a chunk of retries.
    first_id: int | None = None
    last_id: int | None = None

    @classmethod
    def of(cls, chunk: BulkEmailChunk) -> ChunkScope:
        return cls(chunk.id, chunk.bulk_email_id, chunk.first_recipient_id, chunk.last_recipient_id)

    @property
    def is_range(self) -> bool:
        return self.first_id is not None and self.last_id is not None

    @property
    def params(self) -> dict[str, Any]:
        """The values of the conditions below."""
        if self.is_range:
            return {
                "chunk_bulk_email_id": self.bulk_email_id,
                "chunk_first_id": self.first_id,
                "chunk_last_id": self.last_id,
            }
        return {"chunk_of_retries": self.chunk_id}

    def members(self, table: FromClause) -> ColumnElement[bool]:
        """The rows the chunk carries, whatever their state."""
        return _members(table, self.is_range)

    def takeable(self, table: FromClause) -> ColumnElement[bool]:
        """The rows the chunk may still claim: never tried (a range), or retries queued in it."""
        return _takeable(table, self.is_range)

    def in_flight(self, table: FromClause) -> ColumnElement[bool]:
        """The rows this chunk claimed whose outcome is not recorded."""
        return and_(_members(table, self.is_range), table.c.state == R.sending)


@cache
def _members(table: FromClause, is_range: bool) -> ColumnElement[bool]:
    c = table.c
    if is_range:
        return and_(
            c.bulk_email_id == bindparam("chunk_bulk_email_id"),
            c.id >= bindparam("chunk_first_id"),
            c.id <= bindparam("chunk_last_id"),
            c.chunk_id.is_(None),
        )
    return and_(c.chunk_id == bindparam("chunk_of_retries"))


@cache
def _takeable(table: FromClause, is_range: bool) -> ColumnElement[bool]:
    c = table.c
    if is_range:
        return and_(_members(table, True), c.state == R.pending)
    return and_(_members(table, False), c.state.in_((R.pending, R.deferred)), c.next_attempt_at.is_(None))
