"""Copying a sent message into the user's IMAP Sent folder, after SMTP and never in its way.

A Sent copy has its own state and retries (docs/ledger.md), so IMAP never delays sending: this module never
raises for a server that is down, slow or refusing; it returns an :class:`AppendOutcome` within
``ImapSettings.total_timeout`` and the caller retries with backoff.

Idempotence: when an APPEND's outcome is unknown (the connection dropped or timed out after the
message went out), the server may have stored it. The caller records ``unknown`` and calls
again with ``check_existing=True``, which searches the Sent folder for the Message-ID before
appending, so the mailbox never holds two copies.
"""

from __future__ import annotations

import asyncio
import enum
import re
import ssl
from collections.abc import Awaitable, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

import aioimaplib
from aioimaplib.aioimaplib import Command, Response

from bulkmail.mailer.sent_folder import Mailbox, discover_sent_folder, wire_name

T = TypeVar("T")

_APPENDUID = re.compile(rb"\[APPENDUID (\d+) (\d+)\]", re.I)
_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]", re.I)
_TRYCREATE = re.compile(rb"\[TRYCREATE\]", re.I)
_BARE_LF = re.compile(rb"(?<!\r)\n")


class CopyState(enum.StrEnum):
    appended = "appended"  # stored (uid known when the server has UIDPLUS)
    failed = "failed"  # nothing stored; retry later
    unknown = "unknown"  # may be stored; retry with check_existing=True


@dataclass(frozen=True)
class ImapSettings:
    """How to reach one account's mailbox. Built from ``EmailAccount`` by :meth:`from_account`."""

    host: str
    port: int
    username: str
    password: str = field(default="", repr=False)
    security: str = "tls"  # "tls" (implicit, 993) | "starttls" (143) | "none"
    oauth_token: str = field(default="", repr=False)  # SASL XOAUTH2 instead of LOGIN when set
    sent_folder: str = ""  # the user's override: wins over discovery
    sent_folder_discovered: str = ""  # what an earlier discovery stored on the account
    command_timeout: float = 15.0
    total_timeout: float = 60.0
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)

    @property
    def cache_key(self) -> str:
        return f"{self.host.lower()}:{self.port}:{self.username}"

    @classmethod
    def from_account(cls, account: Any, password: str, **overrides: Any) -> ImapSettings:
        """From a ``models.EmailAccount`` and its decrypted IMAP password."""
        values: dict[str, Any] = {
            "host": account.imap_host,
            "port": account.imap_port,
            "username": account.imap_username or account.email,
            "password": password,
            "security": str(account.imap_security),
            "sent_folder": account.sent_folder or "",
            "sent_folder_discovered": account.sent_folder_discovered or "",
        }
        values.update(overrides)
        return cls(**values)


@dataclass(frozen=True)
class AppendOutcome:
    state: CopyState
    folder: str | None  # store in EmailAccount.sent_folder_discovered
    uidvalidity: int | None = None
    uid: int | None = None
    detail: str = ""
    found_existing: bool = False  # the Message-ID search found an earlier copy; nothing appended
    capabilities: frozenset[str] = frozenset()  # post-login CAPABILITY (X-GM-EXT-1 tells Gmail)

    @property
    def sent_copy_uid(self) -> str:
        """The value for ``Recipient.sent_copy_uid``: "uidvalidity:uid", empty when unknown."""
        return f"{self.uidvalidity}:{self.uid}" if self.uidvalidity and self.uid else ""


class FolderCache(Protocol):
    def get(self, key: str, /) -> str | None: ...
    def __setitem__(self, key: str, value: str, /) -> None: ...
    def pop(self, key: str, default: str | None = None, /) -> str | None: ...


class ImapConnectionLost(Exception):
    pass


class ImapRefused(Exception):
    """The server answered, and said no (login refused, TLS required...)."""


# ---------------------------------------------------------------------------------------------
# A connection with bounded waits


class ImapSession:
    """An aioimaplib connection where every command is bounded in time and a dropped connection
    fails the pending command at once (aioimaplib alone would wait for its timeout)."""

    def __init__(self, settings: ImapSettings) -> None:
        self.settings = settings
        self.capabilities: set[str] = set()
        loop = asyncio.get_running_loop()
        self._lost: asyncio.Future[None] = loop.create_future()
        self._timed_out = False
        ctx = None
        if settings.security == "tls":
            ctx = settings.ssl_context or ssl.create_default_context()
        # IMAP4 rather than IMAP4_SSL: only IMAP4 takes the connection-lost callback.
        self.imap = aioimaplib.IMAP4(
            host=settings.host,
            port=settings.port,
            timeout=settings.command_timeout,
            conn_lost_cb=self._on_lost,
            ssl_context=ctx,
        )

    def _on_lost(self, _exc: Exception | None) -> None:
        if not self._lost.done():
            self._lost.set_result(None)

    async def call(self, awaitable: Awaitable[T]) -> T:
        task: asyncio.Future[T] = asyncio.ensure_future(awaitable)
        waiting: set[asyncio.Future[Any]] = {task, self._lost}
        done, _ = await asyncio.wait(
            waiting, timeout=self.settings.command_timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if task in done:
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if self._lost.done():
            raise ImapConnectionLost("the IMAP server closed the connection")
        self._timed_out = True
        raise TimeoutError(f"no answer from the IMAP server within {self.settings.command_timeout}s")

    async def open(self) -> None:
        s = self.settings
        if s.security not in ("tls", "starttls", "none"):
            raise ImapRefused(f"unknown IMAP security {s.security!r}")
        await self.call(self.imap.wait_hello_from_server())
        if s.security == "starttls":
            await self._starttls()
        if s.oauth_token:
            response = await self.call(self.imap.xoauth2(s.username, s.oauth_token.encode()))
        else:
            response = await self.call(self.imap.login(_astring(s.username), s.password))
        if response.result != "OK":
            raise ImapRefused(f"login refused: {_text(response)}")
        # Post-login capabilities differ from the greeting's (Dovecot: 9 before, 38 after).
        await self.call(self.imap.protocol.capability())
        self.capabilities = {c.upper() for c in self.imap.protocol.capabilities}

    async def _starttls(self) -> None:
        """Upgrade the plaintext connection to TLS (aioimaplib has the command but no method for it)."""
        protocol = self.imap.protocol
        if not protocol.capabilities:
            await self.call(protocol.capability())
        if "STARTTLS" not in {c.upper() for c in protocol.capabilities}:
            # Never fall back to plaintext: the password would cross the network in clear.
            raise ImapRefused("the IMAP server does not offer STARTTLS")
        loop = asyncio.get_running_loop()
        response: Response = await self.call(protocol.execute(Command("STARTTLS", protocol.new_tag(), loop=loop)))
        if response.result != "OK":
            raise ImapRefused(f"STARTTLS refused: {_text(response)}")
        context = self.settings.ssl_context or ssl.create_default_context()
        protocol.transport = await self.call(
            loop.start_tls(protocol.transport, protocol, context, server_hostname=self.settings.host)
        )
        # Capabilities before TLS must not be trusted (RFC 3501 §6.2.1): ask again.
        await self.call(protocol.capability())

    async def list_lines(self, reference: str, pattern: str) -> list[bytes] | None:
        response = await self.call(self.imap.list(reference, pattern))
        return list(response.lines) if response.result == "OK" else None

    async def xlist_lines(self) -> list[bytes] | None:
        protocol = self.imap.protocol
        command = _XListCommand(protocol.new_tag(), '""', '"*"', loop=asyncio.get_running_loop())
        response: Response = await self.call(protocol.execute(command))
        return list(response.lines) if response.result == "OK" else None

    async def close(self) -> None:
        # After a timeout the abandoned command still blocks aioimaplib's queue: skip LOGOUT.
        if not self._lost.done() and not self._timed_out and self.imap.get_state() in ("AUTH", "SELECTED"):
            try:
                await asyncio.wait_for(self.call(self.imap.logout()), timeout=2)
            except (TimeoutError, ImapConnectionLost, aioimaplib.AioImapException, OSError):
                pass
        transport = self.imap.protocol.transport
        if transport is not None:
            transport.close()
        client_task = self.imap._client_task
        if not client_task.done():
            client_task.cancel()
        await asyncio.gather(client_task, return_exceptions=True)


class _XListCommand(Command):  # type: ignore[misc]
    """XLIST, which aioimaplib does not know: executed like LIST, written and answered as XLIST."""

    def __init__(self, tag: str, *args: str, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__("LIST", tag, *args, untagged_resp_name="XLIST", loop=loop)

    def __repr__(self) -> str:
        return f"{self.tag} XLIST {' '.join(self.args)}"


def _astring(value: str) -> str:
    # aioimaplib sends the login name as is: quote it when it is not a plain atom.
    return value if re.fullmatch(r"[^\s(){%*\"\\\x00-\x1f\x7f]+", value) else wire_name(value)


def _text(response: Response) -> str:
    return str(response.lines[-1].decode("utf-8", "replace") if response.lines else response.result)


# ---------------------------------------------------------------------------------------------
# The Sent copy


async def append_sent_copy(
    account: ImapSettings,
    message: bytes,
    message_id: str,
    sent_at: datetime,
    folder_cache: FolderCache | MutableMapping[str, str],
    *,
    check_existing: bool = False,
) -> AppendOutcome:
    """One copy in a session of its own (see :class:`SentCopySession` for many)."""
    async with SentCopySession(account, folder_cache) as session:
        return await session.append(message, message_id, sent_at, check_existing=check_existing)


class SentCopySession:
    """Many Sent copies of one account over one IMAP login: LOGIN, CAPABILITY and the Sent
    folder's discovery once, then one APPEND per copy (Dovecot: ~2 ms an APPEND, against tens of
    milliseconds for a login and its processes).

    :meth:`append` never raises for IMAP trouble and answers within ``total_timeout``. A copy whose
    connection broke or timed out ends the session (the next :meth:`append` logs in again); whether
    that copy may be stored is in its outcome exactly as for a copy alone: ``unknown`` only when the
    APPEND itself was on the wire, and the retry then searches for its Message-ID first.
    """

    def __init__(self, account: ImapSettings, folder_cache: FolderCache | MutableMapping[str, str]) -> None:
        self.account = account
        self.cache = folder_cache
        self.capabilities: frozenset[str] = frozenset()
        self._session: ImapSession | None = None

    async def __aenter__(self) -> SentCopySession:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        session, self._session = self._session, None
        self.capabilities = frozenset()  # an outcome carries capabilities only from a live login
        if session is not None:
            await asyncio.shield(session.close())

    async def append(
        self, message: bytes, message_id: str, sent_at: datetime, *, check_existing: bool = False
    ) -> AppendOutcome:
        """APPEND ``message`` (as sent over SMTP) to the Sent folder, ``\\Seen``, dated ``sent_at``.

        ``folder_cache`` maps ``ImapSettings.cache_key`` to a discovered folder name across
        sessions in this process; the returned ``folder`` is what to store in ``sent_folder_discovered``.
        """
        if sent_at.tzinfo is None:
            raise ValueError("sent_at must be timezone-aware")
        # IMAP wants CRLF line ends (Gmail refuses bare LF); serialisers often produce LF.
        message = _BARE_LF.sub(b"\r\n", message)
        attempt = _Attempt(self.account, message, message_id, sent_at, self.cache, check_existing, self.capabilities)
        try:
            outcome = await asyncio.wait_for(self._run(attempt), timeout=self.account.total_timeout)
        except TimeoutError:
            outcome = attempt.lost(
                f"no answer from {self.account.host}:{self.account.port} within {self.account.total_timeout}s"
            )
        if attempt.broken:
            await self.close()  # a connection in an unknown state is never used for another copy
        return outcome

    async def _run(self, attempt: _Attempt) -> AppendOutcome:
        attempt.broken = True  # until the copy's commands all came back (a timeout cancels us mid-way)
        try:
            if self._session is None:
                session = ImapSession(self.account)
                self._session = session
                await session.open()
                self.capabilities = attempt.capabilities = frozenset(session.capabilities)
            outcome = await attempt.copy(self._session)
        except ImapRefused as exc:
            return attempt.outcome(CopyState.failed, str(exc))
        except (ImapConnectionLost, TimeoutError, OSError, aioimaplib.AioImapException) as exc:
            return attempt.lost(f"{type(exc).__name__}: {exc}")
        attempt.broken = False
        return outcome


@dataclass
class _Attempt:
    """One copy within a :class:`SentCopySession`."""

    account: ImapSettings
    message: bytes
    message_id: str
    sent_at: datetime
    cache: FolderCache | MutableMapping[str, str]
    check_existing: bool
    capabilities: frozenset[str] = frozenset()
    folder: str | None = None
    append_in_flight: bool = False
    broken: bool = False

    def outcome(self, state: CopyState, detail: str, **kwargs: Any) -> AppendOutcome:
        return AppendOutcome(state, self.folder, detail=detail, capabilities=self.capabilities, **kwargs)

    def lost(self, detail: str) -> AppendOutcome:
        # A failure while the APPEND was on the wire leaves its outcome unknown; before it, nothing was stored.
        return self.outcome(CopyState.unknown if self.append_in_flight else CopyState.failed, detail)

    async def copy(self, session: ImapSession) -> AppendOutcome:
        mailbox = await self._sent_mailbox(session, refresh=False)
        if mailbox is None:
            return self.outcome(CopyState.failed, "no Sent folder found on the IMAP server")
        if self.check_existing:
            existing = await self._find_existing(session, mailbox)
            if existing is not None:
                return existing
        response = await self._append(session, mailbox)
        if response.result != "OK" and _TRYCREATE.search(b" ".join(response.lines)):
            # The folder was renamed or deleted since we cached it: discover again, once.
            mailbox = await self._sent_mailbox(session, refresh=True)
            if mailbox is None:
                return self.outcome(CopyState.failed, "no Sent folder found on the IMAP server")
            response = await self._append(session, mailbox)
        if response.result != "OK":
            return self.outcome(CopyState.failed, f"APPEND refused: {_text(response)}")
        found = _APPENDUID.search(response.lines[-1] if response.lines else b"")
        uidvalidity, uid = (int(found[1]), int(found[2])) if found else (None, None)
        return self.outcome(CopyState.appended, _text(response), uidvalidity=uidvalidity, uid=uid)

    async def _append(self, session: ImapSession, mailbox: str) -> Response:
        self.append_in_flight = True
        response = await session.call(
            session.imap.append(self.message, mailbox=wire_name(mailbox), flags="\\Seen", date=self.sent_at)
        )
        self.append_in_flight = False
        return response

    async def _sent_mailbox(self, session: ImapSession, *, refresh: bool) -> str | None:
        a = self.account
        if a.sent_folder:
            self.folder = a.sent_folder
            return self.folder
        if refresh:
            self.cache.pop(a.cache_key, None)
        else:
            self.folder = self.cache.get(a.cache_key) or a.sent_folder_discovered or None
            if self.folder:
                return self.folder
        discovery = await discover_sent_folder(session)
        mailbox: Mailbox | None = discovery.mailbox
        self.folder = mailbox.name if mailbox else None
        if self.folder:
            self.cache[a.cache_key] = self.folder
        return self.folder

    async def _find_existing(self, session: ImapSession, mailbox: str) -> AppendOutcome | None:
        """The copy an earlier attempt may have stored, found by its Message-ID."""
        # SELECT, not EXAMINE: aioimaplib only allows SEARCH after SELECT. Nothing is expunged: the
        # mailbox stays selected (APPEND is valid there) until LOGOUT, never CLOSEd.
        selected = await session.call(session.imap.select(wire_name(mailbox)))
        if selected.result != "OK":
            return None
        validity = next((_UIDVALIDITY.search(line) for line in selected.lines if _UIDVALIDITY.search(line)), None)
        needle = '"' + self.message_id.replace("\\", "\\\\").replace('"', '\\"') + '"'
        found = await session.call(session.imap.uid_search("HEADER", "Message-ID", needle, charset=None))
        if found.result != "OK":
            return None
        uids = [int(u) for line in found.lines[:-1] for u in line.split() if u.isdigit()]
        if not uids:
            return None
        return self.outcome(
            CopyState.appended,
            "an earlier attempt had stored it",
            uidvalidity=int(validity[1]) if validity else None,
            uid=min(uids),
            found_existing=True,
        )
