"""Every move the ledger allows happens, and every other is refused, on PostgreSQL and SQLite.

Each test writes one recipient per starting point (a state, queued or not, due or not), applies
one transition, and checks which rows moved and where to. The moves are those of docs/ledger.md.
A chunk is either an id range of never-tried recipients (here: the whole test ledger) or a chunk
of retries, named on its rows (``chunk_id``).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text

from bulkmail.shared import ledger
from bulkmail.shared.db import Database
from bulkmail.shared.models import (
    BulkEmail,
    BulkEmailChunk,
    BulkEmailStatus,
    Contact,
    ContactEmail,
    Lead,
    Recipient,
    RecipientState,
    SentCopyState,
    SkipReason,
    Suppression,
)
from bulkmail.shared.settings import Settings
from tests.data import add_sender

R = RecipientState
C = SentCopyState
NOW = datetime.now(UTC).replace(microsecond=0)
PAST, FUTURE = NOW - timedelta(minutes=5), NOW + timedelta(hours=1)


@dataclass
class Ledger:
    organization_id: int
    bulk_email_id: int
    chunk_id: int  # the test's chunk of retries
    other_chunk_id: int
    ids: dict[str, int]

    @property
    def retries(self) -> ledger.ChunkScope:
        """The test's chunk of retries: the rows that name it."""
        return ledger.ChunkScope(self.chunk_id, self.bulk_email_id)

    @property
    def fresh(self) -> ledger.ChunkScope:
        """A chunk of never-tried recipients over the whole test ledger (its id range)."""
        ids = self.ids.values()
        return ledger.ChunkScope(self.other_chunk_id + 1, self.bulk_email_id, min(ids), max(ids))


# Every starting point a recipient can be in. "queued" rows are in the test's chunk of retries
# (a pending one there is a chunk queued row by row before the upgrade to id ranges); rows in no
# chunk are in the id range of ``Ledger.fresh``.
ROWS: dict[str, dict[str, Any]] = {
    "pending": dict(state=R.pending),
    "pending-queued": dict(state=R.pending, chunk="mine"),
    "pending-queued-elsewhere": dict(state=R.pending, chunk="other"),
    "deferred-due": dict(state=R.deferred, next_attempt_at=PAST),
    "deferred-later": dict(state=R.deferred, next_attempt_at=FUTURE),
    "deferred-queued": dict(state=R.deferred, chunk="mine"),
    "sending-fresh": dict(state=R.sending),
    "sending": dict(state=R.sending, chunk="mine"),
    "sending-elsewhere": dict(state=R.sending, chunk="other"),
    "sent": dict(state=R.sent, sent_copy_state=C.pending),
    "failed": dict(state=R.failed, chunk="mine"),
    "skipped": dict(state=R.skipped, skip_reason=SkipReason.no_email),
    "unknown": dict(state=R.unknown, chunk="mine"),
}


async def _ledger(database: Database, rows: dict[str, dict[str, Any]] = ROWS) -> Ledger:
    """A bulk email whose recipients start at ``rows``; each has a real contact with its address."""
    async with database.session() as session:
        oid, template, account = await add_sender(session, f"Ledger{uuid.uuid4().hex[:6]}")
        bulk = BulkEmail(
            organization_id=oid,
            template_id=template.id,
            email_account_id=account.id,
            query="*",
            status=BulkEmailStatus.processing,
        )
        session.add(bulk)
        await session.flush()
        chunks = [BulkEmailChunk(organization_id=oid, bulk_email_id=bulk.id, size=0, published_at=NOW) for _ in "ab"]
        session.add_all(chunks)
        await session.flush()
        ids: dict[str, int] = {}
        for name, spec in rows.items():
            spec = dict(spec)
            chunk = spec.pop("chunk", None)
            address = f"{name}@ledger.example"
            lead = Lead(organization_id=oid, name=name)
            session.add(lead)
            await session.flush()
            contact = Contact(organization_id=oid, lead_id=lead.id, name=name)
            session.add(contact)
            await session.flush()
            session.add(
                ContactEmail(
                    organization_id=oid,
                    contact_id=contact.id,
                    lead_id=lead.id,
                    email=address,
                    email_normalized=address,
                )
            )
            recipient = Recipient(
                organization_id=oid,
                bulk_email_id=bulk.id,
                lead_id=lead.id,
                contact_id=contact.id,
                email=address,
                email_normalized=address,
                chunk_id={"mine": chunks[0].id, "other": chunks[1].id, None: None}[chunk],
                attempts=1 if spec.get("state") not in (R.pending, None) else 0,
                **spec,
            )
            session.add(recipient)
            await session.flush()
            ids[name] = recipient.id
        return Ledger(oid, bulk.id, chunks[0].id, chunks[1].id, ids)


async def _rows(database: Database, led: Ledger) -> dict[str, Recipient]:
    async with database.session() as session:
        found = (await session.scalars(select(Recipient).where(Recipient.bulk_email_id == led.bulk_email_id))).all()
        session.expunge_all()
    by_id = {r.id: r for r in found}
    return {name: by_id[rid] for name, rid in led.ids.items()}


def _moved(before: dict[str, Recipient], after: dict[str, Recipient], *fields: str) -> set[str]:
    return {
        name
        for name in before
        if any(getattr(before[name], f) != getattr(after[name], f) for f in ("state", "chunk_id", *fields))
    }


async def test_next_range_is_the_rows_after_the_cursor_and_writes_none(database: Database) -> None:
    led = await _ledger(database)
    ids = sorted(led.ids.values())
    before = await _rows(database, led)
    async with database.session() as session:
        ahead = await ledger.next_range(session, led.bulk_email_id, ids[1], 3)
        rest = await ledger.next_range(session, led.bulk_email_id, ids[1], 100)
        none = await ledger.next_range(session, led.bulk_email_id, ids[-1], 100)
    assert ahead == ledger.IdRange(ids[2], ids[4], 3)
    assert rest == ledger.IdRange(ids[2], ids[-1], len(ids) - 2)
    assert none is None
    assert _moved(before, await _rows(database, led), "next_attempt_at", "updated_at") == set()


async def test_queue_retries_takes_due_retries_only(database: Database) -> None:
    led = await _ledger(database)
    before = await _rows(database, led)
    async with database.session() as session:
        assert await ledger.retries_due(session, led.bulk_email_id, NOW)
        chunk = BulkEmailChunk(organization_id=led.organization_id, bulk_email_id=led.bulk_email_id, published_at=NOW)
        session.add(chunk)
        await session.flush()
        assert await ledger.queue_retries(session, led.bulk_email_id, chunk.id, 100, NOW) == 1
        assert not await ledger.retries_due(session, led.bulk_email_id, NOW)
    after = await _rows(database, led)
    assert _moved(before, after, "next_attempt_at") == {"deferred-due"}
    due = after["deferred-due"]
    assert due.chunk_id == chunk.id and due.state == R.deferred and due.next_attempt_at is None


async def test_claim_takes_queued_retries_of_its_chunk_only(database: Database) -> None:
    led = await _ledger(database)
    before = await _rows(database, led)
    async with database.session() as session:
        taken = await ledger.claim(session, led.retries, 100, NOW)
    after = await _rows(database, led)
    assert {c.id for c in taken.claimed} == {led.ids["pending-queued"], led.ids["deferred-queued"]}
    assert _moved(before, after) == {"pending-queued", "deferred-queued"}
    for name in ("pending-queued", "deferred-queued"):
        assert after[name].state == R.sending and after[name].attempts == before[name].attempts + 1
        assert after[name].chunk_id == led.chunk_id
    assert not taken.skipped


async def test_claim_of_a_range_takes_its_never_tried_recipients_only(database: Database) -> None:
    led = await _ledger(database)
    before = await _rows(database, led)
    async with database.session() as session:
        taken = await ledger.claim(session, led.fresh, 100, NOW)
    after = await _rows(database, led)
    assert [c.id for c in taken.claimed] == [led.ids["pending"]]
    assert _moved(before, after) == {"pending"}
    assert after["pending"].state == R.sending and after["pending"].chunk_id is None
    assert taken.through_id == led.ids["pending"]


async def test_claim_takes_at_most_its_limit_in_id_order_after_its_cursor(database: Database) -> None:
    led = await _ledger(database, {f"q{i}": dict(state=R.pending) for i in range(5)})
    ids = sorted(led.ids.values())
    async with database.session() as session:
        first = await ledger.claim(session, led.fresh, 2, NOW)
        second = await ledger.claim(session, led.fresh, 2, NOW, after_id=first.through_id)
        # A claim that starts past a row still pending does not see it: the cursor is the sender's.
        last = await ledger.claim(session, led.fresh, 2, NOW, after_id=ids[4])
    assert [c.id for c in first.claimed] == ids[:2] and first.through_id == ids[1]
    assert [c.id for c in second.claimed] == ids[2:4] and second.through_id == ids[3]
    assert last.claimed == [] and last.through_id == ids[4]


async def test_record_outcomes_only_for_recipients_in_flight(database: Database) -> None:
    led = await _ledger(database)
    before = await _rows(database, led)
    source = ledger.ActivitySource(led.organization_id, None, led.bulk_email_id)
    rows = [
        ledger.OutcomeRow(
            recipient_id=r.id,
            lead_id=r.lead_id,
            contact_id=r.contact_id,
            email=r.email,
            state=R.sent,
            next_attempt_at=None,
            smtp_reply="250 ok",
            message_id=f"<{r.id}@ledger.example>",
            sent_at=NOW,
            attempts=r.attempts,
            sent_copy_state=C.skipped,
        )
        for r in before.values()
    ]
    async with database.session() as session:
        await ledger.record_outcomes(session, rows, source, NOW)
    after = await _rows(database, led)
    assert _moved(before, after) == {"sending", "sending-fresh", "sending-elsewhere", "unknown"}
    assert after["sending"].state == R.sent and after["sending"].sent_copy_state == C.skipped
    assert after["sent"].sent_copy_state == C.pending  # a finished row keeps its own outcome


async def test_defer_waits_the_queued_rest_of_a_chunk_of_retries(database: Database) -> None:
    led = await _ledger(database)
    before = await _rows(database, led)
    async with database.session() as session:
        assert await ledger.defer(session, led.retries, FUTURE, "email account paused") == 2
    after = await _rows(database, led)
    assert _moved(before, after, "next_attempt_at") == {"pending-queued", "deferred-queued"}
    for name in ("pending-queued", "deferred-queued"):
        assert after[name].state == R.deferred and after[name].next_attempt_at == FUTURE
        assert after[name].smtp_reply == "email account paused"


async def test_defer_waits_the_untried_rest_of_a_range(database: Database) -> None:
    led = await _ledger(database)
    before = await _rows(database, led)
    async with database.session() as session:
        assert await ledger.defer(session, led.fresh, FUTURE, "waiting for the account's sending limit") == 1
    after = await _rows(database, led)
    assert _moved(before, after, "next_attempt_at") == {"pending"}
    assert after["pending"].state == R.deferred and after["pending"].next_attempt_at == FUTURE


@pytest.mark.parametrize("chunk", ["retries", "fresh"])
async def test_mark_unknown_takes_only_recipients_its_chunk_left_sending(database: Database, chunk: str) -> None:
    led = await _ledger(database)
    before = await _rows(database, led)
    async with database.session() as session:
        assert await ledger.mark_unknown(session, getattr(led, chunk)) == 1
    after = await _rows(database, led)
    lost = "sending" if chunk == "retries" else "sending-fresh"
    assert _moved(before, after) == {lost}
    assert after[lost].state == R.unknown


async def test_cancel_unsent_skips_pending_and_deferred_only(database: Database) -> None:
    led = await _ledger(database)
    before = await _rows(database, led)
    async with database.session() as session:
        await ledger.cancel_unsent(session, led.bulk_email_id)
    after = await _rows(database, led)
    unsent = {name for name, spec in ROWS.items() if spec["state"] in (R.pending, R.deferred)}
    assert _moved(before, after) == unsent
    for name in unsent:
        assert after[name].state == R.skipped and after[name].skip_reason == SkipReason.cancelled


@pytest.mark.parametrize("include_unknown", [False, True])
async def test_requeue_failed_moves_failed_and_if_asked_unknown_back(database: Database, include_unknown: bool) -> None:
    rows = {**ROWS, "bounced": dict(state=R.failed, chunk="mine")}
    led = await _ledger(database, rows)
    async with database.session() as session:
        session.add(
            Suppression(
                organization_id=led.organization_id, email_normalized="bounced@ledger.example", reason="hard_bounce"
            )
        )
    before = await _rows(database, led)
    async with database.session() as session:
        n = await ledger.requeue_failed(session, led.bulk_email_id, led.organization_id, include_unknown)
    after = await _rows(database, led)
    expected = {"failed", "unknown"} if include_unknown else {"failed"}
    assert n == len(expected) and _moved(before, after) == expected
    for name in expected:
        row = after[name]
        assert row.state == R.deferred and row.chunk_id is None and row.attempts == 0
        assert row.next_attempt_at is not None


async def test_add_recipients_writes_each_address_once(database: Database) -> None:
    led = await _ledger(database, {})
    decided = """
WITH decided AS (
    SELECT CAST(:lead_id AS BIGINT) AS lead_id, CAST(NULL AS BIGINT) AS contact_id, CAST(:email AS TEXT) AS email,
           CAST(:email AS TEXT) AS email_normalized, CAST(:reason AS TEXT) AS skip_reason
)"""
    params = {"organization_id": led.organization_id, "bulk_email_id": led.bulk_email_id, "lead_id": 1}
    async with database.session() as session:
        first = await ledger.add_recipients(session, decided, {**params, "email": "a@x.example", "reason": None})
        second = await ledger.add_recipients(session, decided, {**params, "email": "a@x.example", "reason": None})
        skipped = await ledger.add_recipients(
            session, decided, {**params, "email": "b@x.example", "reason": "no_email"}
        )
    assert first == [None] and second == [] and skipped == ["no_email"]
    async with database.session() as session:
        states = dict(
            (
                await session.execute(
                    select(Recipient.email, Recipient.state).where(Recipient.bulk_email_id == led.bulk_email_id)
                )
            ).all()
        )
    assert states == {"a@x.example": R.pending, "b@x.example": R.skipped}


# -- the Sent-copy sub-state -------------------------------------------------------------------

COPIES: dict[str, dict[str, Any]] = {
    **{f"copy-{s.value}": dict(state=R.sent, sent_copy_state=s) for s in C},
    "failed-message": dict(state=R.failed, sent_copy_state=C.pending),  # never sent: never copied
}


async def test_claim_copies_takes_pending_failed_and_unknown_copies_of_sent_recipients(database: Database) -> None:
    led = await _ledger(database, COPIES)
    async with database.session() as session:
        was = await ledger.claim_copies(session, led.organization_id, led.bulk_email_id, led.ids.values(), NOW)
        elsewhere = await ledger.claim_copies(
            session, led.organization_id + 10**6, led.bulk_email_id, led.ids.values(), NOW
        )
    assert was == {
        led.ids["copy-pending"]: C.pending,
        led.ids["copy-failed"]: C.failed,
        led.ids["copy-unknown"]: C.unknown,
    }
    assert elsewhere == {}
    after = await _rows(database, led)
    assert {n for n, r in after.items() if r.sent_copy_state == C.copying} == {
        "copy-pending",
        "copy-failed",
        "copy-unknown",
        "copy-copying",
    }


async def test_a_claimed_copy_ends_once_and_only_in_a_final_state(database: Database) -> None:
    led = await _ledger(database, COPIES)
    async with database.session() as session:
        assert await ledger.record_copy(session, led.ids["copy-copying"], C.appended, "7:1")
        for name in ("copy-pending", "copy-appended", "copy-failed", "copy-copying"):
            assert not await ledger.record_copy(session, led.ids[name], C.failed)
        with pytest.raises(ValueError):
            await ledger.record_copy(session, led.ids["copy-copying"], C.pending)
        with pytest.raises(ValueError):
            await ledger.finish_copies(session, list(led.ids.values()), C.copying, NOW)
    after = await _rows(database, led)
    assert after["copy-copying"].sent_copy_state == C.appended and after["copy-copying"].sent_copy_uid == "7:1"
    assert {n: r.sent_copy_state for n, r in after.items()} == {
        **{n: spec["sent_copy_state"] for n, spec in COPIES.items()},
        "copy-copying": C.appended,
    }


async def test_the_sweep_turns_lost_copies_unknown_and_touches_published_ones(database: Database) -> None:
    led = await _ledger(database, COPIES)
    before = await _rows(database, led)
    later = NOW + timedelta(minutes=1)
    async with database.session() as session:
        assert await ledger.copies_lost(session, list(led.ids.values()), later) == 1
        touched = await ledger.copies_published(session, list(led.ids.values()), later)
    after = await _rows(database, led)
    assert after["copy-copying"].sent_copy_state == C.unknown
    assert {n for n in after if n != "copy-copying" and after[n].sent_copy_state != before[n].sent_copy_state} == set()
    # pending, failed, unknown (the lost one too, now unknown) and the never-sent row's pending copy.
    assert touched == 5
    assert after["copy-appended"].updated_at == before["copy-appended"].updated_at


# -- the row writes of a send ------------------------------------------------------------------


async def test_a_fresh_recipient_is_written_twice_on_its_way_out_and_no_index_sees_it(
    pg_settings: Settings,
) -> None:
    """Queueing a chunk of never-tried recipients writes none of them; the claim and the outcome
    are the only writes, and neither changes a column that any index of ``recipients`` names (as
    a key or in its condition), which is what lets PostgreSQL make both HOT when the page has
    room. The indexes are read from the catalogue, so a new one that names ``state`` fails here.
    (How many updates were HOT in a real send: ``make bench-send`` prints it.)"""
    database = Database(pg_settings)
    try:
        led = await _ledger(database, {f"f{i}": dict(state=R.pending) for i in range(20)})
        async with database.session() as session:
            indexes = (
                await session.execute(
                    text(
                        "SELECT array(SELECT a.attname FROM pg_attribute AS a"
                        "             WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)),"
                        "       coalesce(pg_get_expr(i.indpred, i.indrelid), '')"
                        " FROM pg_index AS i WHERE i.indrelid = 'recipients'::regclass"
                    )
                )
            ).all()
        columns = set(Recipient.__table__.columns.keys())
        indexed = {name for keys, _ in indexes for name in keys}
        indexed |= {name for _, where in indexes for name in columns if re.search(rf"\b{name}\b", where)}
        assert {"id", "bulk_email_id", "email_normalized"} <= indexed
        assert not indexed & {"state", "attempts", "updated_at", "smtp_reply", "message_id", "sent_at"}

        def indexed_values(rows: dict[str, Recipient]) -> dict[str, tuple[Any, ...]]:
            return {name: tuple(getattr(r, column) for column in sorted(indexed)) for name, r in rows.items()}

        queued = await _rows(database, led)
        async with database.session() as session:
            ahead = await ledger.next_range(session, led.bulk_email_id, min(led.ids.values()) - 1, 100)
            assert ahead is not None and ahead.size == 20
            taken = await ledger.claim(session, led.fresh, 100, NOW)
        claimed = await _rows(database, led)
        rows = [
            ledger.OutcomeRow(
                recipient_id=c.id,
                lead_id=c.lead_id,
                contact_id=c.contact_id,
                email=c.email,
                state=R.sent,
                next_attempt_at=None,
                smtp_reply="250 2.0.0 Ok: queued",
                message_id=f"<{c.id}@ledger.example>",
                sent_at=NOW,
                attempts=c.attempts,
                sent_copy_state=C.skipped,
            )
            for c in taken.claimed
        ]
        async with database.session() as session:
            source = ledger.ActivitySource(led.organization_id, None, led.bulk_email_id)
            await ledger.record_outcomes(session, rows, source, NOW)
        sent = await _rows(database, led)
        assert len(taken.claimed) == 20 and {r.state for r in sent.values()} == {R.sent}
        assert {r.state for r in claimed.values()} == {R.sending}
        assert indexed_values(queued) == indexed_values(claimed) == indexed_values(sent)
    finally:
        await database.dispose()
