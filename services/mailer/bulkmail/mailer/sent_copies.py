"""The Sent-copy consumer: rebuilds sent messages and APPENDs them to the user's Sent folder.

It runs on its own queue (``SENT_COPY_QUEUE``) with its own prefetch, so an IMAP server that is
down, slow or refusing never delays sending (docs/ledger.md, "States"). Its failures end in
``Recipient.sent_copy_state`` and the ``imap_copies`` metric; the dispatcher's sweep publishes
failed, unknown and lost copies again with backoff.

``sent_copy_state`` moves through ``bulkmail.shared.ledger`` (docs/ledger.md): claimed
``copying`` before the APPEND, then ``appended`` | ``skipped`` | ``failed`` | ``unknown`` (may be
stored: the retry searches for the Message-ID first).

A batch goes over one IMAP login (``SentCopySession``). Its claim is a lease this worker renews
while it copies (``ledger.COPY_LEASE``): a worker that is killed stops renewing, and the
dispatcher's sweep hands its copies on about a minute and a half later instead of ten.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.mailer.build import Addressee, MessageNotBuilt, build_message, message_id_of
from bulkmail.mailer.prepared import PreparedBulkEmail, prepare
from bulkmail.mailer.sent_copy import AppendOutcome, CopyState, ImapSettings, SentCopySession
from bulkmail.shared import ledger, metrics
from bulkmail.shared.contracts import SentCopy
from bulkmail.shared.db import Database
from bulkmail.shared.ledger import COPY_LEASE_RENEW, COPY_LEASE_START
from bulkmail.shared.logging import get_logger
from bulkmail.shared.models import BulkEmail, EmailAccount, Recipient, SentCopyState
from bulkmail.shared.providers import should_append_sent_copy
from bulkmail.shared.render_data import RecipientRef, load_render_contexts
from bulkmail.shared.secrets import SecretBox
from bulkmail.shared.settings import Settings
from bulkmail.shared.templating import RenderContext

log = get_logger(__name__)

C = SentCopyState
SKIPPED, FAILED, UNKNOWN = C.skipped, C.failed, C.unknown
RECORD_EVERY = 20  # copies' outcomes per commit


@dataclass(frozen=True)
class _Copy:
    id: int
    email: str
    email_normalized: str
    message_id: str
    sent_at: datetime
    was: SentCopyState  # the state it was claimed from: "unknown" needs the Message-ID search
    context: RenderContext


@dataclass
class _Job:
    account_id: int
    account: EmailAccount  # detached; read only
    n_leads: int
    imap: ImapSettings
    prepared: PreparedBulkEmail
    copies: list[_Copy]
    claimed_at: float = field(default_factory=time.monotonic)  # the lease's start (monotonic clock)


async def copy_to_sent(
    settings: Settings, database: Database, message: SentCopy, folder_cache: MutableMapping[str, str]
) -> None:
    """Copy the given recipients' messages to the Sent folder; never raises for IMAP trouble."""
    job = await _claim(settings, database, message)
    if job is None:
        return
    # One login for the batch; every copy stays claimed "copying" until its own outcome is recorded.
    # The lease's renewals and the outcomes' commits touch the same rows: one at a time, or the
    # two transactions can deadlock on them (seen under make chaos).
    writing = asyncio.Lock()
    records = _Records(database, job, writing)
    async with SentCopySession(job.imap, folder_cache) as imap, _Lease(database, job, writing) as lease:
        try:
            await _copy_all(settings, database, job, imap, lease, records)
        finally:
            await records.flush()


async def _copy_all(
    settings: Settings, database: Database, job: _Job, imap: SentCopySession, lease: _Lease, records: _Records
) -> None:
    decided_with_capabilities = False
    for i, copy in enumerate(job.copies):
        if not lease.held():
            # Cut off from the database: the sweep may soon hand these copies to another worker,
            # which must not find an APPEND of ours still on its way. They stay "copying".
            log.warning("Sent copies stopped: lease not renewed", account_id=job.account_id, left=len(job.copies) - i)
            return
        outcome = await _append(settings, job, copy, imap)
        await records.add(copy, SentCopyState(outcome.state.value), outcome.sent_copy_uid, outcome.folder)
        rest = job.copies[i + 1 :]
        if outcome.capabilities and not decided_with_capabilities:
            # Only a logged-in session tells a Gmail mailbox behind a custom host name (X-GM-EXT-1).
            decided_with_capabilities = True
            decision = should_append_sent_copy(job.account, job.n_leads, set(outcome.capabilities))
            if not decision.append:
                log.info("Sent copies stopped", account_id=job.account_id, reason=decision.reason)
                await records.flush()
                async with records.writing:
                    await _finish_rest(database, job, rest, lambda _c: SKIPPED)
                return
        if outcome.state is not CopyState.appended and (outcome.state is CopyState.unknown or not outcome.capabilities):
            # Unreachable, refusing the login or dying mid-command: the next message would fare no
            # better, so an outage costs one timeout per batch, not one per message. The sweep retries.
            log.warning("Sent copy failed", account_id=job.account_id, detail=outcome.detail, left=len(rest))
            await records.flush()
            async with records.writing:
                await _finish_rest(database, job, rest, lambda c: UNKNOWN if c.was == UNKNOWN else FAILED)
            return


class _Lease:
    """Renews a batch's claim while this worker copies it (``ledger.renew_copies``)."""

    def __init__(self, database: Database, job: _Job, writing: asyncio.Lock) -> None:
        self.database = database
        self.writing = writing
        self.ids = [c.id for c in job.copies]
        self.renewed_at = job.claimed_at
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> _Lease:
        self._task = asyncio.get_running_loop().create_task(self._renew_forever())
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def held(self) -> bool:
        return time.monotonic() - self.renewed_at < COPY_LEASE_START.total_seconds()

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(COPY_LEASE_RENEW.total_seconds())
            started = time.monotonic()  # before the row's timestamp is taken: never later than it
            try:
                async with self.writing, self.database.session() as session:
                    await ledger.renew_copies(session, self.ids, _now())
            except Exception as exc:  # the database is away: held() says when to stop appending
                log.warning("Sent copies' lease not renewed", error=str(exc))
                continue
            self.renewed_at = started


async def _claim(settings: Settings, database: Database, message: SentCopy) -> _Job | None:
    """Claim the copies still to do (committed before any APPEND) and gather what rebuilds them."""
    claimed_at = time.monotonic()
    now = _now()
    async with database.session() as session:
        bulk = await session.get(BulkEmail, message.bulk_email_id)
        # The tenant wall: the message's organisation must own the bulk email, its account and recipients.
        if bulk is None or bulk.organization_id != message.organization_id:
            return None
        account = await session.get(EmailAccount, bulk.email_account_id)
        if account is None or account.organization_id != bulk.organization_id:
            return None
        was = await ledger.claim_copies(session, bulk.organization_id, bulk.id, message.recipient_ids, now)
        if not was:
            return None  # a redelivery, or copies another worker already took
        decision = should_append_sent_copy(account, bulk.n_leads, None)
        if not decision.append:  # the account changed since sending (a mode, a Gmail SMTP host)
            await _set_states(session, list(was), SKIPPED, now)
            _count(account.id, SKIPPED, len(was))
            return None
        try:
            prepared = await prepare(session, settings, SecretBox.from_settings(settings), bulk)
            password = SecretBox.from_settings(settings).decrypt(account.imap_password_encrypted or "")
        except Exception as exc:  # template or account gone, undecryptable password: retried by the sweep
            log.warning("Sent copies cannot be built", bulk_email_id=bulk.id, error=str(exc))
            await _set_states(session, [r for r, s in was.items() if s != UNKNOWN], FAILED, now)
            await _set_states(session, [r for r, s in was.items() if s == UNKNOWN], UNKNOWN, now)
            _count(account.id, FAILED, len(was))
            return None
        recipients = (
            await session.execute(
                select(
                    Recipient.id,
                    Recipient.lead_id,
                    Recipient.contact_id,
                    Recipient.email,
                    Recipient.email_normalized,
                    Recipient.message_id,
                    Recipient.sent_at,
                )
                .where(Recipient.id.in_(list(was)))
                .order_by(Recipient.id)
            )
        ).all()
        contexts = await load_render_contexts(
            session,
            bulk.organization_id,
            [RecipientRef(r.lead_id, r.contact_id, r.email) for r in recipients],
            prepared.user,
            prepared.organization,
        )
        session.expunge(account)
        copies = [
            _Copy(r.id, r.email, r.email_normalized, r.message_id, r.sent_at or now, was[r.id], ctx)
            for r, ctx in zip(recipients, contexts, strict=True)
        ]
        imap = ImapSettings.from_account(account, password)
        return _Job(account.id, account, bulk.n_leads, imap, prepared, copies, claimed_at)


async def _append(settings: Settings, job: _Job, copy: _Copy, imap: SentCopySession) -> AppendOutcome:
    """Rebuild the message with the builder that sent it (same inputs, same bytes), then APPEND it."""
    p = job.prepared
    message_id = message_id_of(p, copy.id)
    if copy.message_id and message_id != copy.message_id:
        # The Message-ID secret changed (key rotation): this would not be the message that was sent.
        return AppendOutcome(CopyState.failed, None, detail="the rebuilt Message-ID differs from the one sent")
    try:
        data = build_message(
            settings, p, Addressee(copy.id, copy.email, copy.email_normalized, copy.context), copy.sent_at
        ).data
    except MessageNotBuilt as exc:
        return AppendOutcome(CopyState.failed, None, detail=f"message could not be rebuilt: {exc}")
    if copy.was in (FAILED, UNKNOWN):
        metrics.record_imap_copy(job.account_id, "retried")
    return await imap.append(data, message_id, copy.sent_at, check_existing=copy.was == UNKNOWN)


class _Records:
    """Outcomes committed RECORD_EVERY copies at a time (one commit each, not one per copy).

    A copy appended but not yet recorded when its worker dies stays ``copying``: when its lease
    runs out it becomes ``unknown``, and the retry finds it by its Message-ID instead of appending
    it again. So a batch's commits can be few without a copy ever being stored twice.
    """

    def __init__(self, database: Database, job: _Job, writing: asyncio.Lock) -> None:
        self.database = database
        self.job = job
        self.writing = writing
        self.rows: list[tuple[int, SentCopyState, str]] = []
        self.folder: str | None = None

    async def add(self, copy: _Copy, state: SentCopyState, uid: str, folder: str | None) -> None:
        self.rows.append((copy.id, state, uid))
        self.folder = folder or self.folder
        if len(self.rows) >= RECORD_EVERY:
            await self.flush()

    async def flush(self) -> None:
        rows, self.rows = self.rows, []
        if not rows:
            return
        account = self.job.account
        async with self.writing, self.database.session() as session:
            for recipient_id, state, uid in rows:
                await ledger.record_copy(session, recipient_id, state, uid)
            folder = self.folder
            if folder and not account.sent_folder and folder != account.sent_folder_discovered:
                # Stored so other workers (and restarts) skip the discovery; the folder cache is per process.
                await session.execute(
                    update(EmailAccount)
                    .where(EmailAccount.id == self.job.account_id)
                    .values(sent_folder_discovered=folder)
                    .execution_options(synchronize_session=False)
                )
        if folder:
            account.sent_folder_discovered = folder
        for _, state, _ in rows:
            _count(self.job.account_id, state)


async def _finish_rest(database: Database, job: _Job, rest: list[_Copy], state_of: Any) -> None:
    if not rest:
        return
    now = _now()
    async with database.session() as session:
        for state in {state_of(c) for c in rest}:
            ids = [c.id for c in rest if state_of(c) == state]
            await _set_states(session, ids, state, now)
            _count(job.account_id, state, len(ids))


async def _set_states(session: AsyncSession, ids: list[int], state: SentCopyState, now: datetime) -> None:
    await ledger.finish_copies(session, ids, state, now)


def _count(account_id: int, state: SentCopyState, n: int = 1) -> None:
    for _ in range(n):
        metrics.record_imap_copy(account_id, state.value)


def _now() -> datetime:
    return datetime.now(UTC)
