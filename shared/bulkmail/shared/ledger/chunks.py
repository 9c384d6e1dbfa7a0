"""Which recipients a chunk carries, as SQL conditions every transition on a chunk shares.

A chunk of never-tried recipients is an id range of its bulk email's ledger: the pump queues
it without writing a recipient row, and its recipients keep ``chunk_id`` NULL from start to
finish. Ranges never overlap (the pump's cursor only moves forward), so "never tried, in the
range" names one chunk's recipients. A chunk of retries has no range; the pump writes its id on
each of its recipients (``chunk_id``). docs/ledger.md, "Chunks".
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, FromClause, and_

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

    def members(self, table: FromClause) -> ColumnElement[bool]:
        """The rows the chunk carries, whatever their state."""
        c = table.c
        if self.is_range:
            return and_(
                c.bulk_email_id == self.bulk_email_id,
                c.id >= self.first_id,
                c.id <= self.last_id,
                c.chunk_id.is_(None),
            )
        return and_(c.chunk_id == self.chunk_id)

    def takeable(self, table: FromClause) -> ColumnElement[bool]:
        """The rows the chunk may still claim: never tried (a range), or retries queued in it."""
        c = table.c
        if self.is_range:
            return and_(self.members(table), c.state == R.pending)
        return and_(self.members(table), c.state.in_((R.pending, R.deferred)), c.next_attempt_at.is_(None))

    def in_flight(self, table: FromClause) -> ColumnElement[bool]:
        """The rows this chunk claimed whose outcome is not recorded."""
        return and_(self.members(table), table.c.state == R.sending)
