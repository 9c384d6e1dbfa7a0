"""The inbox sync: follows each email account's INBOX for what comes back about our mail.

Per account with IMAP, one worker at a time holds a lease (``inbox_syncs``), so the account has
one IMAP login, kept open and reused. The worker follows INBOX by UID: the UIDVALIDITY and the
last UID it handled are stored with each message's effects in one transaction, so a restart
neither misses nor repeats a message and nothing is ever rescanned. When UIDVALIDITY changes
(the mailbox was rebuilt; old UIDs mean nothing) it looks again at the messages since its last
sync; each report's own Message-ID keeps it from being applied twice.

It reads only what it needs: a few header fields of every new message (``BODY.PEEK``, so the
user's ``\\Seen`` flags never change), and the whole message only for what the headers say is a
bounce or a complaint. Bounces it has handled get the keyword ``$BulkmailHandled``; nothing else
is touched. Where the server offers IDLE it waits in IDLE, else it polls. Why this runs in the
mailer, and the rules it applies, are in docs/feedback.md.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aioimaplib
from sqlalchemy import or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.mailer.incoming import (
    HEADER_FIELDS,
    Triage,
    dedup_key,
    parse_headers,
    read_bounce,
    read_complaint,
    reply_feedback,
    triage,
)
from bulkmail.mailer.sent_copy import ImapConnectionLost, ImapRefused, ImapSession, ImapSettings
from bulkmail.shared import feedback
from bulkmail.shared.contracts import EmailFeedbackEvent
from bulkmail.shared.db import Database
from bulkmail.shared.logging import get_logger
from bulkmail.shared.models import EmailAccount, FeedbackKind, InboxSync
from bulkmail.shared.secrets import SecretBox
from bulkmail.shared.settings import Settings

log = get_logger(__name__)

KEYWORD = "$BulkmailHandled"
FETCH_ITEMS = f"(UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS ({' '.join(HEADER_FIELDS)})])"
# New messages fetched per command.
FETCH_BATCH = 100
# A report bigger than this is not read (a bounce quoting a huge attachment): its headers said enough
# to know it is not worth a login's bandwidth.
MAX_REPORT_BYTES = 2_000_000
# Waits after a failure, growing; a refused login waits longest (Gmail locks out repeated logins).
RETRY_AFTER = (5.0, 30.0, 120.0, 600.0)
REFUSED_WAIT = 900.0

_FETCH_START = re.compile(rb"^\d+ FETCH \(")
_UID = re.compile(rb"UID (\d+)")
_FLAGS = re.compile(rb"FLAGS \(([^)]*)\)")
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")
_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
_UIDNEXT = re.compile(rb"\[UIDNEXT (\d+)\]")
_SEARCH_LINE = re.compile(rb"[\d ]*")

EventSink = Callable[[EmailFeedbackEvent], Awaitable[None]]
Renew = Callable[[], Awaitable[bool]]


class LeaseLost(Exception):
    """Another worker holds the account now: stop at once (one login per account)."""


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def imap_date(when: datetime) -> str:
    """RFC 3501 date (``1-Dec-2026``), English month names whatever the process's locale."""
    return f"{when.day}-{_MONTHS[when.month - 1]}-{when.year}"


@dataclass
class Fetched:
    uid: int
    flags: set[str]
    size: int
    data: bytes


def parse_fetch(lines: list[bytes | bytearray]) -> list[Fetched]:
    """aioimaplib's FETCH answer: a ``n FETCH (...{len}`` line, the literal, then ``)``."""
    out: list[Fetched] = []
    current: Fetched | None = None
    for line in lines:
        if isinstance(line, bytearray):
            if current is not None:
                current.data = bytes(line)
            continue
        if _FETCH_START.match(line):
            uid, flags, size = _UID.search(line), _FLAGS.search(line), _SIZE.search(line)
            if uid is None:
                current = None
                continue
            current = Fetched(
                uid=int(uid[1]),
                flags=set(flags[1].decode().split()) if flags else set(),
                size=int(size[1]) if size else 0,
                data=b"",
            )
            out.append(current)
    return out


@dataclass
class SyncReport:
    seen: int = 0  # new messages looked at
    applied: dict[str, int] = field(default_factory=dict)  # feedback kind → how many applied
    flagged: int = 0


class AccountFollower:
    """One account's INBOX on one open IMAP connection."""

    def __init__(
        self,
        settings: Settings,
        database: Database,
        account_id: int,
        organization_id: int,
        imap: ImapSettings,
        on_event: EventSink | None = None,
        renew: Renew | None = None,
    ) -> None:
        self.settings = settings
        self.database = database
        self.renew = renew
        self.account_id = account_id
        self.organization_id = organization_id
        self.imap_settings = imap
        self.on_event = on_event
        self.session: ImapSession | None = None
        self.uidvalidity = 0
        self.uidnext = 0

    async def open(self) -> None:
        self.session = ImapSession(self.imap_settings)
        await self.session.open()
        await self.select()

    async def select(self) -> None:
        assert self.session is not None
        # SELECT (not EXAMINE): the keyword on handled bounces needs a writable mailbox. Neither
        # SELECT nor BODY.PEEK changes \Seen.
        response = await self.session.call(self.session.imap.select("INBOX"))
        if response.result != "OK":
            raise ImapRefused(f"SELECT INBOX refused: {response.lines[-1:]!r}")
        validity = next((m for line in response.lines if (m := _UIDVALIDITY.search(line))), None)
        uidnext = next((m for line in response.lines if (m := _UIDNEXT.search(line))), None)
        self.uidvalidity = int(validity[1]) if validity else 0
        self.uidnext = int(uidnext[1]) if uidnext else 0

    async def close(self) -> None:
        if self.session is not None:
            await asyncio.shield(self.session.close())
            self.session = None

    @property
    def offers_idle(self) -> bool:
        return self.session is not None and "IDLE" in self.session.capabilities

    # -- catching up -------------------------------------------------------------------------

    async def catch_up(self) -> SyncReport:
        """Handle every message that arrived since the last one handled."""
        assert self.session is not None
        report = SyncReport()
        # Servers bring a session's view up to date between commands: without this NOOP, mail
        # that arrived since the last command is not yet in the SEARCH below (seen on Dovecot).
        await self.session.call(self.session.imap.noop())
        state = await self._state()
        now = datetime.now(UTC)
        if state.uidvalidity is None or state.uidvalidity != self.uidvalidity:
            # First sync: the last days' mail (bounces of recent sends may already be there).
            # UIDVALIDITY changed: old UIDs mean nothing; look again since the last sync. Either
            # way the reports' own Message-IDs keep anything from being applied twice.
            since = (
                state.synced_at - timedelta(days=1)
                if state.uidvalidity is not None and state.synced_at is not None
                else now - timedelta(days=self.settings.bounce_match_days)
            )
            if state.uidvalidity is not None:
                log.warning(
                    "UIDVALIDITY changed; looking again at recent mail",
                    account_id=self.account_id,
                    old=state.uidvalidity,
                    new=self.uidvalidity,
                )
            uids = await self._search("SINCE", imap_date(since))
            last_uid = 0
        else:
            last_uid = state.last_uid
            uids = [u for u in await self._search("UID", f"{last_uid + 1}:*") if u > last_uid]
        for start in range(0, len(uids), FETCH_BATCH):
            batch = uids[start : start + FETCH_BATCH]
            fetched = await self._fetch(",".join(map(str, batch)), FETCH_ITEMS)
            for message in sorted(fetched, key=lambda m: m.uid):
                if message.uid <= last_uid:
                    continue
                await self._handle(message, report)
                last_uid = message.uid
                report.seen += 1
            # The user's own mail changes nothing, so its position is saved once per batch (a
            # crash re-reads at most a batch of headers); a message that did something saved its own.
            await self._save_position(last_uid)
            # A first sync can take a while: keep the lease through it.
            if self.renew is not None and not await self.renew():
                raise LeaseLost(f"account {self.account_id}")
        if not uids:
            # Nothing new (or nothing since a UIDVALIDITY change): still remember where we are.
            await self._save_position(
                max(state.last_uid if state.uidvalidity == self.uidvalidity else 0, self.uidnext - 1, 0)
            )
        return report

    async def _handle(self, message: Fetched, report: SyncReport) -> None:
        headers = parse_headers(message.data)
        kind = triage(headers)
        key = dedup_key(headers, self.account_id, self.uidvalidity, message.uid)
        reports: list[feedback.Feedback] = []
        if kind in (Triage.bounce, Triage.complaint) and message.size <= MAX_REPORT_BYTES:
            whole = await self._fetch(str(message.uid), "(UID BODY.PEEK[])")
            data = whole[0].data if whole else b""
            if kind == Triage.bounce:
                reports = read_bounce(data, key)
            else:
                complaint = read_complaint(data, key)
                reports = [complaint] if complaint else []
        elif kind == Triage.reply:
            reports = [reply_feedback(headers, FeedbackKind.reply, key)]
        elif kind == Triage.auto_reply:
            reports = [reply_feedback(headers, FeedbackKind.auto_reply, key)]
        if not reports:
            return
        events: list[EmailFeedbackEvent] = []
        ours = False
        async with self.database.session() as session:
            for fb in reports:
                applied = await feedback.apply(
                    session,
                    self.organization_id,
                    self.account_id,
                    fb,
                    soft_bounce_limit=self.settings.soft_bounce_limit,
                    match_days=self.settings.bounce_match_days,
                )
                ours = ours or applied.status != "not_ours"
                if applied.status == "applied":
                    report.applied[fb.kind.value] = report.applied.get(fb.kind.value, 0) + 1
                    events += applied.events
            # The position moves in the same transaction as what the message caused.
            await self._position(session, message.uid)
        if ours and kind == Triage.bounce and KEYWORD not in message.flags:
            # STORE after the commit: a crash in between leaves the keyword off, never a
            # handled mark on something not handled. FLAGS.SILENT leaves the other flags alone.
            assert self.session is not None
            await self.session.call(self.session.imap.uid("store", str(message.uid), f"+FLAGS.SILENT ({KEYWORD})"))
            report.flagged += 1
        if self.on_event is not None:
            for event in events:
                await self.on_event(event)

    async def _search(self, *criteria: str) -> list[int]:
        assert self.session is not None
        response = await self.session.call(self.session.imap.uid_search(*criteria, charset=None))
        if response.result != "OK":
            raise ImapRefused(f"UID SEARCH refused: {response.lines[-1:]!r}")
        # Only the SEARCH line: untagged EXISTS/RECENT/EXPUNGE lines can travel in the same answer.
        lines = [line for line in response.lines[:-1] if _SEARCH_LINE.fullmatch(line)]
        return sorted({int(u) for line in lines for u in line.split()})

    async def _fetch(self, uid_set: str, items: str) -> list[Fetched]:
        assert self.session is not None
        response = await self.session.call(self.session.imap.uid("fetch", uid_set, items))
        if response.result != "OK":
            raise ImapRefused(f"UID FETCH refused: {response.lines[-1:]!r}")
        return parse_fetch(response.lines)

    # -- the stored position -----------------------------------------------------------------

    async def _state(self) -> InboxSync:
        async with self.database.session() as session:
            await ensure_rows(session, [(self.account_id, self.organization_id)])
            state = await session.get(InboxSync, self.account_id)
            assert state is not None
            return state

    async def _position(self, session: AsyncSession, uid: int) -> None:
        await session.execute(
            update(InboxSync)
            .where(InboxSync.email_account_id == self.account_id)
            .values(uidvalidity=self.uidvalidity, last_uid=uid, synced_at=datetime.now(UTC), last_error="")
            .execution_options(synchronize_session=False)
        )

    async def _save_position(self, last_uid: int) -> None:
        async with self.database.session() as session:
            await self._position(session, last_uid)

    # -- waiting for news --------------------------------------------------------------------

    async def wait_for_news(self, timeout: float) -> None:
        """IDLE until the server says something (new mail) or ``timeout``; a poll's NOOP otherwise."""
        assert self.session is not None
        imap = self.session.imap
        if not self.offers_idle:
            await asyncio.sleep(timeout)
            await self.session.call(imap.noop())
            return
        idle = await self.session.call(imap.idle_start(timeout=timeout + 30))
        try:
            await imap.wait_server_push(timeout=timeout)
        except TimeoutError:
            pass
        finally:
            imap.idle_done()
            await self.session.call(asyncio.wait_for(idle, self.imap_settings.command_timeout))


async def ensure_rows(session: AsyncSession, accounts: list[tuple[int, int]]) -> None:
    """An ``inbox_syncs`` row for each (account id, organisation id) that has none."""
    if not accounts:
        return
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    await session.execute(
        insert(InboxSync)
        .values([{"email_account_id": a, "organization_id": o, "last_uid": 0} for a, o in accounts])
        .on_conflict_do_nothing(index_elements=["email_account_id"])
    )


# ---------------------------------------------------------------------------------------------
# The loop every mailer runs: take the accounts nobody follows, follow them


class InboxSyncRunner:
    """Holds leases on accounts and follows each one's INBOX until stopped or the lease is lost."""

    def __init__(
        self,
        settings: Settings,
        database: Database,
        on_event: EventSink | None = None,
        *,
        worker_id: str | None = None,
        ssl_context: object | None = None,
    ) -> None:
        self.settings = settings
        self.database = database
        self.on_event = on_event
        self.worker_id = worker_id or f"mailer-{uuid.uuid4().hex[:12]}"
        self.box = SecretBox.from_settings(settings)
        self.ssl_context = ssl_context
        self._followers: dict[int, asyncio.Task[None]] = {}
        self._stopping = asyncio.Event()

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.settings.inbox_lease_s)

    async def run(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    await self.take_accounts()
                except Exception:
                    log.exception("inbox sync: taking accounts failed")
                await self._sleep(min(self.settings.inbox_lease_s / 3, 10.0))
        finally:
            await self.stop()

    async def stop(self) -> None:
        self._stopping.set()
        tasks = list(self._followers.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._followers.clear()
        await self._release()

    async def take_accounts(self) -> list[int]:
        """Lease every IMAP account no live worker follows; start following the new ones."""
        now = datetime.now(UTC)
        taken: list[int] = []
        async with self.database.session() as session:
            accounts = (
                await session.execute(
                    select(EmailAccount.id, EmailAccount.organization_id).where(
                        EmailAccount.imap_host != "", EmailAccount.imap_password_encrypted != ""
                    )
                )
            ).all()
            await ensure_rows(session, [(a, o) for a, o in accounts])
            for account_id, _ in accounts:
                if account_id in self._followers and not self._followers[account_id].done():
                    continue
                if await self._lease(session, account_id, now):
                    taken.append(account_id)
        for account_id in taken:
            self._followers[account_id] = asyncio.create_task(self._follow(account_id), name=f"inbox-{account_id}")
        return taken

    async def _lease(self, session: AsyncSession, account_id: int, now: datetime) -> bool:
        result = await session.execute(
            update(InboxSync)
            .where(
                InboxSync.email_account_id == account_id,
                or_(
                    InboxSync.lease_until.is_(None),
                    InboxSync.lease_until < now,
                    InboxSync.leased_by == self.worker_id,
                ),
            )
            .values(leased_by=self.worker_id, lease_until=now + self.lease)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]  # SQLAlchemy types execute() as Result, not CursorResult

    async def _renew(self, account_id: int) -> bool:
        async with self.database.session() as session:
            return await self._lease(session, account_id, datetime.now(UTC))

    async def _release(self) -> None:
        try:
            async with self.database.session() as session:
                await session.execute(
                    update(InboxSync)
                    .where(InboxSync.leased_by == self.worker_id)
                    .values(leased_by="", lease_until=None)
                    .execution_options(synchronize_session=False)
                )
        except Exception:
            log.warning("inbox sync: could not release leases", worker_id=self.worker_id)

    async def follower_for(self, account_id: int) -> AccountFollower | None:
        async with self.database.session() as session:
            account = await session.get(EmailAccount, account_id)
            if account is None or not account.imap_host:
                return None
            password = self.box.decrypt(account.imap_password_encrypted) if account.imap_password_encrypted else ""
            overrides = {"ssl_context": self.ssl_context} if self.ssl_context is not None else {}
            imap = ImapSettings.from_account(account, password, **overrides)
            return AccountFollower(
                self.settings,
                self.database,
                account.id,
                account.organization_id,
                imap,
                self.on_event,
                renew=lambda: self._renew(account_id),
            )

    async def _follow(self, account_id: int) -> None:
        failures = 0
        while not self._stopping.is_set():
            follower = await self.follower_for(account_id)
            if follower is None:
                return
            wait = 0.0
            try:
                await follower.open()
                failures = 0
                while not self._stopping.is_set():
                    await follower.catch_up()
                    if not await self._renew(account_id):
                        return  # another worker took it over (we were too slow to renew)
                    # Waits end well inside the lease, so it is renewed in time.
                    await follower.wait_for_news(
                        min(self.settings.inbox_poll_interval_s, self.settings.inbox_lease_s / 3)
                    )
                return
            except LeaseLost:
                return
            except ImapRefused as exc:
                await self._note_error(account_id, str(exc))
                wait = REFUSED_WAIT
            except (ImapConnectionLost, TimeoutError, OSError, aioimaplib.AioImapException) as exc:
                await self._note_error(account_id, f"{type(exc).__name__}: {exc}")
                wait = RETRY_AFTER[min(failures, len(RETRY_AFTER) - 1)]
                failures += 1
            except Exception as exc:
                log.exception("inbox sync failed", account_id=account_id)
                await self._note_error(account_id, f"{type(exc).__name__}: {exc}")
                wait = RETRY_AFTER[-1]
            finally:
                await follower.close()
            # Keep the lease while waiting: another worker would only log in and fail the same way.
            if not await self._wait_holding(account_id, wait):
                return

    async def _wait_holding(self, account_id: int, seconds: float) -> bool:
        """Wait, renewing the lease; False when it was lost or the runner stops."""
        deadline = asyncio.get_running_loop().time() + seconds
        while not self._stopping.is_set():
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return True
            await self._sleep(min(left, self.settings.inbox_lease_s / 3))
            if not await self._renew(account_id):
                return False
        return False

    async def _note_error(self, account_id: int, error: str) -> None:
        log.warning("inbox sync error", account_id=account_id, error=error)
        async with self.database.session() as session:
            await session.execute(
                update(InboxSync)
                .where(InboxSync.email_account_id == account_id)
                .values(last_error=error[:2000])
                .execution_options(synchronize_session=False)
            )

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except TimeoutError:
            pass
