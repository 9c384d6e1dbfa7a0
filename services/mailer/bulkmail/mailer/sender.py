"""Sending one chunk, a batch at a time, as a pipeline:

1. **claim** the next recipients in the ledger (``ledger.claim``: consent is checked there);
2. **build** each message (``build.build_message``, the same builder the Sent copy uses);
3. **limits**: reserve a send slot; a recipient the account's limits hold back is its own
   outcome (``HeldBack``), deferred without using an attempt;
4. the **SMTP transaction** (``smtp_transaction.send_one``) on a pooled connection, its reply
   classified (``replies``);
5. **outcomes**: the state each verdict leads to (``backoff`` says how long to wait), recorded
   in the ledger (``ledger.record_outcomes``) in the transaction that claims the next batch;
   then events, account pauses, Sent copies.

The order is the invariant: a recipient is marked ``sending`` (committed) before its message
is handed to SMTP, and its outcome is committed before the chunk's delivery is acknowledged.
A recipient found still ``sending`` when its chunk comes round again was in the hands of a
worker that died: it becomes ``unknown`` (reported, never resent blindly).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.mailer.backoff import MAX_ATTEMPTS, UNREACHABLE_BEFORE_PAUSE, next_attempt_delay, pause_until
from bulkmail.mailer.build import Addressee, MessageNotBuilt, build_message, message_id_of
from bulkmail.mailer.prepared import PreparedBulkEmail, prepare
from bulkmail.mailer.replies import Kind, PauseKind, ReplyVerdict, classify_exception
from bulkmail.mailer.smtp_pool import NoConnectionSlot, SmtpPool
from bulkmail.mailer.smtp_transaction import send_one
from bulkmail.shared import bulk_emails, ledger, metrics
from bulkmail.shared.broker import Broker
from bulkmail.shared.contracts import (
    ACCOUNT_NOTICE_QUEUE,
    DISPATCH_QUEUE,
    SENT_COPY_QUEUE,
    AccountPausedNotice,
    DispatchBulkEmail,
    EmailAccountEvent,
    EmailEvent,
    EmailOutcome,
    SendChunk,
    SentCopy,
)
from bulkmail.shared.db import Database
from bulkmail.shared.ledger import ActivitySource, Claimed, OutcomeRow
from bulkmail.shared.ledger.rows import table_of
from bulkmail.shared.logging import get_logger
from bulkmail.shared.models import (
    BulkEmail,
    BulkEmailChunk,
    BulkEmailStatus,
    EmailAccount,
    Recipient,
    RecipientState,
    SentCopyState,
    Suppression,
)
from bulkmail.shared.rate_limit import day_window_frees_at, reserve_send_slot
from bulkmail.shared.render_data import RecipientRef, load_render_contexts
from bulkmail.shared.secrets import SecretBox
from bulkmail.shared.settings import Settings
from bulkmail.shared.templating import RenderContext, RenderResult

log = get_logger(__name__)
R = RecipientState

PREPARED_TTL_S = 30.0
# How long a recipient waits when every connection the account allows is busy in other mailers.
CONNECTION_WAIT = timedelta(milliseconds=500)
# Recipients claimed at once per SMTP connection: large enough that the ledger's round trips
# are shared by many messages, small enough that a crash leaves few in the "unknown" state.
CLAIM_PER_CONNECTION = 4


@dataclass
class Outcome:
    """What became of a message that was tried: built or not, handed over or not, the reply."""

    recipient: Claimed
    verdict: ReplyVerdict
    message_id: str
    duration: float | None = None
    # The message's Date header; recorded as sent_at, so a Sent copy rebuilt later is identical.
    date: datetime | None = None
    # What was sent (subject and bodies), for the email activity.
    rendered: RenderResult | None = None


@dataclass(frozen=True)
class HeldBack:
    """Not tried: the account's limits said "not yet". Deferred, without using an attempt."""

    recipient: Claimed
    message_id: str
    wait: timedelta
    why: str


class ChunkSender:
    def __init__(self, settings: Settings, database: Database, broker: Broker) -> None:
        self.settings = settings
        self.database = database
        self.broker = broker
        self.box = SecretBox.from_settings(settings)
        self._prepared: dict[int, tuple[float, PreparedBulkEmail]] = {}
        self._pools: dict[int, tuple[tuple[Any, ...], SmtpPool]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._pause_notices: list[AccountPausedNotice] = []
        # Accounts that may have a pause reason or failures in a row to clear once a message goes out.
        self._troubled: set[int] = set()

    async def close_idle_connections(self) -> None:
        for _, pool in list(self._pools.values()):
            await pool.close_idle()
            await pool.rebalance()

    async def close(self) -> None:
        for _, pool in self._pools.values():
            await pool.close()
        self._pools.clear()

    # -- one chunk ---------------------------------------------------------------------------

    async def handle(self, message: SendChunk) -> None:
        chunk_id = message.chunk_id
        async with self.database.session() as session:
            bulk = await session.get(BulkEmail, message.bulk_email_id)
            chunk = await session.get(BulkEmailChunk, chunk_id)
            if bulk is None or chunk is None or chunk.done_at is not None:
                return  # already finished (a redelivery), or deleted
            scope = ledger.ChunkScope.of(chunk)
            lost = await ledger.mark_unknown(session, scope)
            if lost:
                log.warning("recipients left in flight by a stopped worker", chunk_id=chunk_id, n=lost)
                for _ in range(lost):
                    metrics.record_unknown(bulk.email_account_id)
            sending = bulk.status in bulk_emails.SENDING_STATUSES
            # Paused: the chunk is parked whole and published again on resume (its recipients
            # are not written). Cancelled or finished: the pump skips what is left.
            park = bulk.status == BulkEmailStatus.paused
            account = await session.get(EmailAccount, bulk.email_account_id)
            paused_until, pause_reason = None, ""
            if account is not None:
                paused_until, pause_reason = account.paused_until, account.pause_reason
                if account.pause_reason or account.pauses_in_a_row or account.failures_in_a_row:
                    self._troubled.add(account.id)  # the next message sent clears it
            prepared = await self._prepare(session, bulk) if sending else None
        if prepared is not None:
            if paused_until is not None and paused_until > _now():
                await self._defer_rest(scope, paused_until, _paused_text(pause_reason))
            else:
                await self._send_chunk(prepared, scope)
        if park:
            await self._park_chunk(chunk_id)
            log.info("chunk parked", bulk_email_id=message.bulk_email_id, chunk_id=chunk_id)
        else:
            await self._finish_chunk(chunk_id)
            log.info("chunk finished", bulk_email_id=message.bulk_email_id, chunk_id=chunk_id)
        await self.broker.send(
            DISPATCH_QUEUE,
            DispatchBulkEmail(bulk_email_id=message.bulk_email_id, organization_id=message.organization_id),
        )

    async def _send_chunk(self, prepared: PreparedBulkEmail, chunk: ledger.ChunkScope) -> None:
        pool = self._pool(prepared)
        batch_size = prepared.max_connections * CLAIM_PER_CONNECTION
        contexts = await self._chunk_contexts(prepared, chunk)
        # A pool with no connection open yet opens them one at a time: the first batch is then
        # one connection's worth, so the first messages are recorded (and the progress moves)
        # without waiting for every connection of the account to open.
        first_batch = CLAIM_PER_CONNECTION if pool.open_connections == 0 else batch_size
        async with self.database.session() as session:
            claimed, after = await self._claim(session, chunk, first_batch, 0)
        while claimed:
            missing = [c for c in claimed if c.id not in contexts]
            if missing:  # not pending when the chunk started (a retry became due meanwhile)
                contexts.update(await self._contexts(prepared, missing))
            outcomes, held = await self._send_batch(prepared, pool, claimed, contexts)
            # The next batch is claimed in the same transaction as this one's outcomes (one
            # commit for both), unless the account's limits say this chunk stops here.
            stopping = bool(held) or any(o.verdict.kind == Kind.pause_account for o in outcomes)
            next_batch = None if stopping else (chunk, batch_size, after)
            paused, claimed, after = await self._record(prepared, outcomes, held, next_batch)
            await self._emit(prepared, outcomes)
            reasons = await self._announce_pauses()
            await self._queue_sent_copies(prepared, outcomes)
            if paused is not None:
                await self._defer_rest(chunk, paused, _paused_text(reasons[0] if reasons else ""))
                return
            if held:
                # The account is at its limit: the rest of the chunk waits too, and the
                # dispatcher queues it again when the wait is over.
                wait = min(h.wait for h in held)
                await self._defer_rest(chunk, _now() + wait, "waiting for the account's sending limit")
                return

    @staticmethod
    async def _claim(
        session: AsyncSession, chunk: ledger.ChunkScope, limit: int, after: int
    ) -> tuple[list[Claimed], int]:
        """The next batch of the chunk past id ``after``; and the id the claim after it starts from."""
        taken = await ledger.claim(session, chunk, limit, _now(), after_id=after)
        for reason, n in taken.skipped.items():
            metrics.record_skipped(reason, n)
        return taken.claimed, taken.through_id

    async def _chunk_contexts(self, prepared: PreparedBulkEmail, chunk: ledger.ChunkScope) -> dict[int, RenderContext]:
        """What the templates see, for every recipient the chunk will send: a few queries per chunk."""
        recipients = table_of(Recipient)
        async with self.database.session() as session:
            rows = await session.execute(
                select(recipients.c.id, recipients.c.lead_id, recipients.c.contact_id, recipients.c.email).where(
                    chunk.takeable(recipients)
                ),
                chunk.params,
            )
            refs = {rid: RecipientRef(lead_id, contact_id, email) for rid, lead_id, contact_id, email in rows}
            return await self._render_contexts(session, prepared, refs)

    async def _contexts(self, prepared: PreparedBulkEmail, claimed: list[Claimed]) -> dict[int, RenderContext]:
        refs = {c.id: RecipientRef(c.lead_id, c.contact_id, c.email) for c in claimed}
        async with self.database.session() as session:
            return await self._render_contexts(session, prepared, refs)

    @staticmethod
    async def _render_contexts(
        session: AsyncSession, prepared: PreparedBulkEmail, refs: dict[int, RecipientRef]
    ) -> dict[int, RenderContext]:
        contexts = await load_render_contexts(
            session, prepared.organization_id, list(refs.values()), prepared.user, prepared.organization
        )
        return dict(zip(refs, contexts, strict=True))

    async def _send_batch(
        self, prepared: PreparedBulkEmail, pool: SmtpPool, claimed: list[Claimed], contexts: dict[int, RenderContext]
    ) -> tuple[list[Outcome], list[HeldBack]]:
        results = await asyncio.gather(*(self._send_one(prepared, pool, c, contexts[c.id]) for c in claimed))
        return [r for r in results if isinstance(r, Outcome)], [r for r in results if isinstance(r, HeldBack)]

    async def _send_one(
        self, prepared: PreparedBulkEmail, pool: SmtpPool, r: Claimed, ctx: RenderContext
    ) -> Outcome | HeldBack:
        # build
        date = _now().replace(microsecond=0)
        message_id = message_id_of(prepared, r.id)
        try:
            built = build_message(self.settings, prepared, Addressee(r.id, r.email, r.email_normalized, ctx), date)
        except MessageNotBuilt as exc:
            return Outcome(r, ReplyVerdict(Kind.failed, f"message could not be built: {exc}"), message_id)
        data = built.data
        if len(data) > self.settings.max_message_bytes:
            why = (
                f"message too large: {len(data):,} bytes, over the limit of "
                f"{self.settings.max_message_bytes:,} (BULKMAIL_MAX_MESSAGE_BYTES)"
            )
            return Outcome(r, ReplyVerdict(Kind.failed, why), message_id)
        started = time.perf_counter()
        try:
            async with pool.connection() as smtp:
                # limits: the slot is reserved with a connection in hand, just before the
                # transaction, so the server receives messages when the limiter counted them (a
                # slot reserved while waiting for a connection could be spent seconds later, and
                # windows then overlapped), and a server that cannot be reached uses no quota.
                wait = await self._reserve(prepared)
                if wait is not None:
                    return HeldBack(r, message_id, wait, "waiting for the account's sending limit")
                # the SMTP transaction
                verdict = await send_one(smtp, prepared.account_email, r.email, data)
        except NoConnectionSlot:
            metrics.record_rate_limit_wait(prepared.account_id, "connections", CONNECTION_WAIT.total_seconds())
            return HeldBack(r, message_id, CONNECTION_WAIT, "waiting for a free connection of the account")
        except Exception as exc:  # connecting or logging in failed: nothing was handed over
            verdict = classify_exception(exc, body_sent=False)
        return Outcome(r, verdict, message_id, time.perf_counter() - started, date=date, rendered=built.rendered)

    async def _reserve(self, prepared: PreparedBulkEmail) -> timedelta | None:
        """A send slot within the account's limits; or how long to wait for one."""
        if prepared.limits.unlimited:
            return None
        reservation = await reserve_send_slot(self.database.sessionmaker, prepared.account_id, prepared.limits)
        if reservation.ok:
            return None
        metrics.record_rate_limit_wait(prepared.account_id, _limit_name(prepared), reservation.wait.total_seconds())
        return reservation.wait

    # -- the ledger --------------------------------------------------------------------------

    async def _record(
        self,
        prepared: PreparedBulkEmail,
        outcomes: list[Outcome],
        held: list[HeldBack],
        claim_next: tuple[ledger.ChunkScope, int, int] | None,
    ) -> tuple[datetime | None, list[Claimed], int]:
        """Commit every outcome of a batch, and claim the next batch of ``claim_next`` (chunk, how
        many, after which id) unless the account must pause. Returns until when it is paused, the
        claim, and the id the claim after it starts from."""
        now = _now()
        rows: list[OutcomeRow] = []
        pause: datetime | None = None
        bounced: list[Outcome] = []
        async with self.database.session() as session:
            sent_any = any(o.verdict.kind == Kind.sent for o in outcomes)
            unreachable = [o.verdict for o in outcomes if o.verdict.unreachable]
            if sent_any and prepared.account_id in self._troubled:
                await self._account_recovered(session, prepared.account_id)
            elif unreachable and not sent_any:
                pause = await self._count_unreachable(session, prepared.account_id, unreachable[0], now)
            for o in outcomes:
                v = o.verdict
                state, next_at = R.failed, None
                if v.kind == Kind.sent:
                    state = R.sent
                elif v.kind == Kind.unknown:
                    state = R.unknown
                elif v.kind == Kind.hard_bounce:
                    bounced.append(o)
                elif v.kind == Kind.pause_account or (v.unreachable and pause is not None):
                    if pause is None:
                        pause = await self._pause_account(session, prepared.account_id, v, now)
                    state, next_at = R.deferred, pause
                elif v.kind == Kind.retry and o.recipient.attempts < MAX_ATTEMPTS:
                    state = R.deferred
                    wait = next_attempt_delay(o.recipient.attempts)
                    next_at = now + max(wait, v.retry_after) if v.retry_after else now + wait
                _count(prepared.account_id, o, state)
                r = o.recipient
                sent = state == R.sent
                rows.append(
                    OutcomeRow(
                        recipient_id=r.id,
                        lead_id=r.lead_id,
                        contact_id=r.contact_id,
                        email=r.email,
                        state=state,
                        next_attempt_at=next_at,
                        smtp_reply=_reply_text(v),
                        message_id=o.message_id,
                        sent_at=(o.date or now) if sent else None,
                        attempts=r.attempts,
                        sent_copy_state=_copy_state(prepared) if sent else None,
                        subject=o.rendered.subject if sent and o.rendered else "",
                        body_text=o.rendered.text if sent and o.rendered else "",
                        body_html=o.rendered.html if sent and o.rendered else "",
                    )
                )
            rows += [_held_row(h, now) for h in held]
            # The ledger rows, an email activity per sent message (so ``emailed_template:`` and
            # ``last_emailed`` see it) and the lead counters; one round trip on PostgreSQL.
            source = ActivitySource(
                prepared.organization_id,
                prepared.template_id,
                prepared.bulk_email_id,
                user_id=prepared.user_id,
                sender=prepared.sender,
            )
            await ledger.record_outcomes(session, rows, source, now)
            if bounced:
                await self._suppress(session, prepared.organization_id, bounced)
            # Progress is counted from the ledger when asked for, so no batch writes the bulk
            # email's row: every mailer would otherwise queue on that one row lock.
            claimed: list[Claimed] = []
            after = 0
            if claim_next is not None and pause is None:
                claimed, after = await self._claim(session, *claim_next)
        return pause, claimed, after

    async def _suppress(self, session: AsyncSession, organization_id: int, bounced: list[Outcome]) -> None:
        """A hard bounce puts the address on the organisation's suppression list: later sends skip it."""
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        await session.execute(
            insert(Suppression).on_conflict_do_nothing(index_elements=["organization_id", "email_normalized"]),
            [
                {
                    "organization_id": organization_id,
                    "email_normalized": o.recipient.email_normalized,
                    "reason": "hard_bounce",
                    "detail": _reply_text(o.verdict),
                }
                for o in bounced
            ],
        )

    async def _pause_account(
        self, session: AsyncSession, account_id: int, verdict: ReplyVerdict, now: datetime
    ) -> datetime:
        account = await session.get(EmailAccount, account_id, with_for_update=True)
        if account is None:
            return now
        if account.paused_until is not None and account.paused_until > now:
            return account.paused_until
        frees_at = None
        if verdict.pause is PauseKind.daily_quota:
            frees_at = await day_window_frees_at(self.database.sessionmaker, account_id, now)
        until = pause_until(verdict, previous_pauses=account.pauses_in_a_row, now=now, day_window_frees_at=frees_at)
        account.paused_until = until
        account.pause_reason = _reply_text(verdict)
        account.pauses_in_a_row += 1
        self._troubled.add(account_id)
        # Told after the commit: the owner by email, other services by event (_announce_pauses).
        self._pause_notices.append(
            AccountPausedNotice(
                organization_id=account.organization_id,
                email_account_id=account.id,
                paused_until=until,
                reason=account.pause_reason,
            )
        )
        log.warning("email account paused", account_id=account_id, until=until.isoformat(), reason=verdict.reason)
        return until

    async def _count_unreachable(
        self, session: AsyncSession, account_id: int, verdict: ReplyVerdict, now: datetime
    ) -> datetime | None:
        """One more attempt in a row that could not reach or use the account's server (a batch
        counts once: its sends failed together). After a few, the account is paused with the
        server's own words, and its owner told, instead of each recipient retrying for hours.
        Returns until when it is paused, if it is."""
        self._troubled.add(account_id)
        failures = await session.scalar(
            update(EmailAccount)
            .where(EmailAccount.id == account_id)
            .values(failures_in_a_row=EmailAccount.failures_in_a_row + 1)
            .returning(EmailAccount.failures_in_a_row)
        )
        if failures is None or failures < UNREACHABLE_BEFORE_PAUSE:
            return None
        paused = ReplyVerdict(
            Kind.pause_account, verdict.reason, pause=PauseKind.unreachable, code=verdict.code, text=verdict.text
        )
        return await self._pause_account(session, account_id, paused, now)

    async def _account_recovered(self, session: AsyncSession, account_id: int) -> None:
        """A message went out: the next pause starts again from the shortest step."""
        self._troubled.discard(account_id)
        await session.execute(
            update(EmailAccount)
            .where(EmailAccount.id == account_id)
            .values(pauses_in_a_row=0, failures_in_a_row=0, pause_reason="")
            .execution_options(synchronize_session=False)
        )

    async def _defer_rest(self, chunk: ledger.ChunkScope, until: datetime, reason: str) -> None:
        async with self.database.session() as session:
            await ledger.defer(session, chunk, until, reason)

    async def _park_chunk(self, chunk_id: int) -> None:
        """The bulk email is paused: the chunk stays open, unpublished, and the pump publishes it
        again when the bulk email resumes. Its recipients are not touched."""
        async with self.database.session() as session:
            await session.execute(
                update(BulkEmailChunk)
                .where(BulkEmailChunk.id == chunk_id, BulkEmailChunk.done_at.is_(None))
                .values(published_at=None)
                .execution_options(synchronize_session=False)
            )

    async def _finish_chunk(self, chunk_id: int) -> None:
        async with self.database.session() as session:
            await session.execute(
                update(BulkEmailChunk)
                .where(BulkEmailChunk.id == chunk_id, BulkEmailChunk.done_at.is_(None))
                .values(done_at=_now())
                .execution_options(synchronize_session=False)
            )

    async def _emit(self, prepared: PreparedBulkEmail, outcomes: list[Outcome]) -> None:
        """One event per outcome type per batch: a broker message per recipient cost more than its SMTP."""
        by_type: dict[Literal["email.sent", "email.failed"], list[EmailOutcome]] = {}
        for o in outcomes:
            kind = o.verdict.kind
            if kind not in (Kind.sent, Kind.failed, Kind.hard_bounce):
                continue
            sent = kind == Kind.sent
            by_type.setdefault("email.sent" if sent else "email.failed", []).append(
                EmailOutcome(
                    recipient_id=o.recipient.id,
                    lead_id=o.recipient.lead_id,
                    message_id=o.message_id,
                    reason="" if sent else _reply_text(o.verdict),
                )
            )
        now = _now()
        for event_type, emails in by_type.items():
            event = EmailEvent(
                type=event_type,
                organization_id=prepared.organization_id,
                bulk_email_id=prepared.bulk_email_id,
                emails=emails,
                occurred_at=now,
            )
            await self.broker.emit(event.type, event)

    # -- caches ------------------------------------------------------------------------------

    async def _prepare(self, session: AsyncSession, bulk: BulkEmail) -> PreparedBulkEmail:
        cached = self._prepared.get(bulk.id)
        if cached is not None and time.monotonic() - cached[0] < PREPARED_TTL_S:
            return cached[1]
        prepared = await prepare(session, self.settings, self.box, bulk)
        self._prepared[bulk.id] = (time.monotonic(), prepared)
        return prepared

    async def _announce_pauses(self) -> list[str]:
        """Tell the owner (by email) and other services (by event); returns the reasons."""
        notices, self._pause_notices = self._pause_notices, []
        for notice in notices:
            await self.broker.send(ACCOUNT_NOTICE_QUEUE, notice)
            event = EmailAccountEvent(
                type="email_account.paused",
                organization_id=notice.organization_id,
                email_account_id=notice.email_account_id,
                paused_until=notice.paused_until,
                reason=notice.reason,
                occurred_at=_now(),
            )
            await self.broker.emit(event.type, event)
        return [notice.reason for notice in notices]

    async def _queue_sent_copies(self, prepared: PreparedBulkEmail, outcomes: list[Outcome]) -> None:
        """Sent copies go on their own queue: IMAP never slows or blocks sending."""
        if not prepared.sent_copy.append:
            return
        ids = [o.recipient.id for o in outcomes if o.verdict.kind == Kind.sent]
        if ids:
            await self.broker.send(
                SENT_COPY_QUEUE,
                SentCopy(
                    organization_id=prepared.organization_id, bulk_email_id=prepared.bulk_email_id, recipient_ids=ids
                ),
            )

    def _pool(self, prepared: PreparedBulkEmail) -> SmtpPool:
        key = (prepared.smtp, prepared.max_connections)
        entry = self._pools.get(prepared.account_id)
        if entry is None or entry[0] != key:
            if entry is not None:
                self._closing.add(asyncio.get_running_loop().create_task(entry[1].close()))
            pool = SmtpPool(
                prepared.smtp,
                prepared.max_connections,
                account_id=prepared.account_id,
                session_factory=self.database.sessionmaker,
            )
            entry = (key, pool)
            self._pools[prepared.account_id] = entry
        return entry[1]


def _held_row(h: HeldBack, now: datetime) -> OutcomeRow:
    """Deferred until the limit frees up; the claim's attempt is given back."""
    r = h.recipient
    return OutcomeRow(
        recipient_id=r.id,
        lead_id=r.lead_id,
        contact_id=r.contact_id,
        email=r.email,
        state=R.deferred,
        next_attempt_at=now + h.wait,
        smtp_reply=h.why,
        message_id=h.message_id,
        sent_at=None,
        attempts=r.attempts - 1,
        sent_copy_state=None,
    )


def _limit_name(prepared: PreparedBulkEmail) -> str:
    limits = prepared.limits
    if limits.min_delay > timedelta(0) and limits.per_minute is None:
        return "min_delay"
    return "per_minute" if limits.per_minute else "per_hour" if limits.per_hour else "per_day"


def _copy_state(prepared: PreparedBulkEmail) -> SentCopyState:
    return SentCopyState.pending if prepared.sent_copy.append else SentCopyState.skipped


def _count(account_id: int, o: Outcome, state: RecipientState) -> None:
    kind = o.verdict.kind
    if state == R.sent:
        metrics.record_sent(account_id, o.duration)
    elif state == R.unknown:
        metrics.record_unknown(account_id)
    elif state == R.deferred:
        reason = "provider_throttled" if kind == Kind.pause_account else "smtp_temporary"
        metrics.record_deferred(account_id, reason, o.duration)
    else:
        reasons = {Kind.hard_bounce: "recipient_refused", Kind.retry: "max_attempts"}
        reason = reasons.get(kind, "render_failed" if o.duration is None else "message_refused")
        metrics.record_failed(account_id, reason, o.duration)


def _paused_text(reason: str) -> str:
    return f"email account paused: {reason}" if reason else "email account paused"


def _reply_text(verdict: ReplyVerdict) -> str:
    code = f"{verdict.code} " if verdict.code else ""
    enhanced = f"{verdict.enhanced} " if verdict.enhanced else ""
    return f"{code}{enhanced}{verdict.reason}".strip()[:2000]


def _now() -> datetime:
    return datetime.now(UTC)
