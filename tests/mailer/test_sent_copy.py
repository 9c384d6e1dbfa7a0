"""Sent copies over IMAP, against a real throwaway Dovecot on loopback."""

from __future__ import annotations

import asyncio
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from typing import TYPE_CHECKING

from bulkmail.mailer.sent_copy import AppendOutcome, CopyState, ImapSettings, SentCopySession, append_sent_copy
from bulkmail.mailer.sent_folder import (
    Discovery,
    decode_mutf7,
    discover_sent_folder,
    encode_mutf7,
    parse_list_line,
    wire_name,
)
from bulkmail.shared.providers import should_append_sent_copy

if TYPE_CHECKING:
    from tests.mail_servers import CuttingProxy, Dovecot

# Fixtures: dovecot, dovecot_unflagged, dovecot_gmail_layout, cutting_proxy, unused_port.
# (Only registered here, not imported: importing first would stop pytest from rewriting its asserts.)
pytest_plugins = ["tests.mail_servers"]

HOST = "127.0.0.1"
ProxyFactory = Callable[[int], Awaitable["CuttingProxy"]]

SENT_AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def make_message() -> tuple[bytes, str]:
    message_id = f"<{uuid.uuid4().hex}@bulkmail.test>"
    msg = EmailMessage()
    msg["From"] = "Alice <alice@example.test>"
    msg["To"] = "lead@example.test"
    msg["Subject"] = "Quick question"
    msg["Message-ID"] = message_id
    msg["Date"] = "Fri, 02 Jan 2026 03:04:05 +0000"
    msg.set_content("Hello from the bulk email.\n")
    return msg.as_bytes(policy=SMTP), message_id


def settings_for(server: Dovecot, user: str = "alice", **overrides: object) -> ImapSettings:
    values: dict[str, object] = {
        "host": HOST,
        "port": server.port,
        "username": user,
        "password": server.users[user],
        "security": "none",
        "command_timeout": 5.0,
        "total_timeout": 10.0,
    }
    values.update(overrides)
    return ImapSettings(**values)  # type: ignore[arg-type]


def copies(server: Dovecot, box: str, message_id: str, user: str = "alice") -> int:
    return server.count_with_header(user, box, message_id.encode())


async def test_copy_lands_in_the_folder_marked_sent_as_read_and_dated_when_sent(dovecot: Dovecot) -> None:
    raw, message_id = make_message()
    cache: dict[str, str] = {}

    outcome = await append_sent_copy(settings_for(dovecot), raw, message_id, SENT_AT, cache)

    assert outcome.state is CopyState.appended, outcome.detail
    assert outcome.folder == "Sent"
    assert outcome.uid is not None and outcome.uidvalidity is not None
    assert outcome.sent_copy_uid == f"{outcome.uidvalidity}:{outcome.uid}"
    [stored] = [p for p in dovecot.message_files("alice", "Sent") if message_id.encode() in p.read_bytes()]
    assert stored.name.endswith(":2,S")  # maildir flag S = \Seen
    assert int(stored.stat().st_mtime) == int(SENT_AT.timestamp())  # Dovecot keeps INTERNALDATE as mtime
    assert cache == {settings_for(dovecot).cache_key: "Sent"}


async def test_sent_box_without_the_attribute_is_found_by_its_name(dovecot_unflagged: Dovecot) -> None:
    raw, message_id = make_message()
    outcome = await append_sent_copy(settings_for(dovecot_unflagged), raw, message_id, SENT_AT, {})
    assert outcome.state is CopyState.appended, outcome.detail
    assert outcome.folder == "Sent Items"
    assert copies(dovecot_unflagged, "Sent Items", message_id) == 1


async def test_gmail_layout_and_gmail_detected_by_capability(dovecot_gmail_layout: Dovecot) -> None:
    raw, message_id = make_message()
    outcome = await append_sent_copy(settings_for(dovecot_gmail_layout), raw, message_id, SENT_AT, {})
    assert outcome.state is CopyState.appended, outcome.detail
    assert outcome.folder == "[Gmail]/Sent Mail"
    assert copies(dovecot_gmail_layout, "[Gmail]/Sent Mail", message_id) == 1

    # The host says nothing; CAPABILITY tells Gmail, and the Gmail rule follows.
    class Account:
        email = "alice@example.test"
        smtp_host = "smtp.example.test"
        imap_host = HOST
        sent_copy_mode = "auto"

    assert "X-GM-EXT-1" in outcome.capabilities
    assert not should_append_sent_copy(Account(), 10_001, set(outcome.capabilities)).append
    assert should_append_sent_copy(Account(), 10_000, set(outcome.capabilities)).append


async def test_implicit_tls_with_the_servers_certificate(dovecot: Dovecot) -> None:
    assert dovecot.imaps_port and dovecot.cafile
    raw, message_id = make_message()
    trusted = ssl.create_default_context(cafile=str(dovecot.cafile))
    tls = settings_for(dovecot, port=dovecot.imaps_port, security="tls", ssl_context=trusted)

    outcome = await append_sent_copy(tls, raw, message_id, SENT_AT, {})
    assert outcome.state is CopyState.appended, outcome.detail
    assert copies(dovecot, "Sent", message_id) == 1

    # An untrusted certificate is refused, quickly, with nothing stored.
    untrusted = settings_for(dovecot, port=dovecot.imaps_port, security="tls")
    failed = await append_sent_copy(untrusted, raw, message_id, SENT_AT, {})
    assert failed.state is CopyState.failed
    assert "CERTIFICATE_VERIFY_FAILED" in failed.detail
    assert copies(dovecot, "Sent", message_id) == 1


async def test_starttls_upgrade_on_the_plain_port(dovecot: Dovecot) -> None:
    assert dovecot.cafile
    raw, message_id = make_message()
    trusted = ssl.create_default_context(cafile=str(dovecot.cafile))
    outcome = await append_sent_copy(
        settings_for(dovecot, security="starttls", ssl_context=trusted), raw, message_id, SENT_AT, {}
    )
    assert outcome.state is CopyState.appended, outcome.detail
    assert copies(dovecot, "Sent", message_id) == 1


async def test_starttls_required_but_not_offered_never_falls_back_to_plaintext(dovecot_unflagged: Dovecot) -> None:
    raw, message_id = make_message()
    outcome = await append_sent_copy(settings_for(dovecot_unflagged, security="starttls"), raw, message_id, SENT_AT, {})
    assert outcome.state is CopyState.failed
    assert "does not offer STARTTLS" in outcome.detail


async def test_the_accounts_folder_override_wins(dovecot: Dovecot) -> None:
    raw, message_id = make_message()
    outcome = await append_sent_copy(settings_for(dovecot, sent_folder="Drafts"), raw, message_id, SENT_AT, {})
    assert outcome.state is CopyState.appended
    assert outcome.folder == "Drafts"
    assert copies(dovecot, "Drafts", message_id) == 1
    assert copies(dovecot, "Sent", message_id) == 0


async def test_a_stale_cached_folder_is_discovered_again(dovecot: Dovecot) -> None:
    raw, message_id = make_message()
    settings = settings_for(dovecot)
    cache = {settings.cache_key: "Deleted Long Ago"}
    outcome = await append_sent_copy(settings, raw, message_id, SENT_AT, cache)
    assert outcome.state is CopyState.appended, outcome.detail
    assert outcome.folder == "Sent"
    assert cache[settings.cache_key] == "Sent"


async def test_dropped_after_the_server_stored_it_leaves_exactly_one_copy(
    dovecot: Dovecot, cutting_proxy: ProxyFactory
) -> None:
    raw, message_id = make_message()
    proxy = await cutting_proxy(dovecot.port)
    proxy.cut_when_client_sends(message_id.encode(), before_server=False)
    settings = settings_for(dovecot, port=proxy.port)

    first = await append_sent_copy(settings, raw, message_id, SENT_AT, {})
    assert first.state is CopyState.unknown, first.detail
    assert proxy.cuts == 1
    assert copies(dovecot, "Sent", message_id) == 1  # stored, though we never heard the OK

    retry = await append_sent_copy(settings, raw, message_id, SENT_AT, {}, check_existing=True)
    assert retry.state is CopyState.appended, retry.detail
    assert retry.found_existing
    assert retry.uid is not None and retry.uidvalidity is not None
    assert copies(dovecot, "Sent", message_id) == 1


async def test_dropped_before_the_server_got_it_is_appended_on_retry(
    dovecot: Dovecot, cutting_proxy: ProxyFactory
) -> None:
    raw, message_id = make_message()
    proxy = await cutting_proxy(dovecot.port)
    proxy.cut_when_client_sends(b"APPEND", before_server=True)
    settings = settings_for(dovecot, port=proxy.port)

    first = await append_sent_copy(settings, raw, message_id, SENT_AT, {})
    assert first.state is CopyState.unknown
    assert copies(dovecot, "Sent", message_id) == 0

    retry = await append_sent_copy(settings, raw, message_id, SENT_AT, {}, check_existing=True)
    assert retry.state is CopyState.appended, retry.detail
    assert not retry.found_existing
    assert copies(dovecot, "Sent", message_id) == 1


async def test_one_login_for_many_copies(dovecot: Dovecot, cutting_proxy: ProxyFactory) -> None:
    proxy = await cutting_proxy(dovecot.port)
    settings = settings_for(dovecot, port=proxy.port)
    messages = [make_message() for _ in range(20)]
    async with SentCopySession(settings, {}) as session:
        outcomes = [await session.append(raw, message_id, SENT_AT) for raw, message_id in messages]
    assert [o.state for o in outcomes] == [CopyState.appended] * 20, [o.detail for o in outcomes]
    assert len({o.uid for o in outcomes}) == 20
    assert all("IMAP4REV1" in o.capabilities for o in outcomes)
    assert proxy.connections == 1
    assert all(copies(dovecot, "Sent", message_id) == 1 for _, message_id in messages)


async def test_a_copy_cut_mid_append_ends_the_session_and_the_next_copy_logs_in_again(
    dovecot: Dovecot, cutting_proxy: ProxyFactory
) -> None:
    (raw_a, id_a), (raw_b, id_b), (raw_c, id_c) = make_message(), make_message(), make_message()
    proxy = await cutting_proxy(dovecot.port)
    proxy.cut_when_client_sends(id_b.encode(), before_server=False)  # B stored, its OK never heard
    settings = settings_for(dovecot, port=proxy.port)
    async with SentCopySession(settings, {}) as session:
        a = await session.append(raw_a, id_a, SENT_AT)
        b = await session.append(raw_b, id_b, SENT_AT)
        c = await session.append(raw_c, id_c, SENT_AT)
        b_again = await session.append(raw_b, id_b, SENT_AT, check_existing=True)
    assert (a.state, b.state, c.state) == (CopyState.appended, CopyState.unknown, CopyState.appended), b.detail
    assert proxy.connections == 2
    assert b_again.state is CopyState.appended and b_again.found_existing
    assert [copies(dovecot, "Sent", m) for m in (id_a, id_b, id_c)] == [1, 1, 1]


def test_settings_from_an_email_account() -> None:
    from bulkmail.shared.models import ConnectionSecurity, EmailAccount

    account = EmailAccount(
        email="rep@acme.test",
        smtp_host="smtp.acme.test",
        imap_host="imap.acme.test",
        imap_port=143,
        imap_security=ConnectionSecurity.starttls,
        imap_username="",
        sent_folder="",
        sent_folder_discovered="Sent Items",
    )
    settings = ImapSettings.from_account(account, "secret")
    assert (settings.host, settings.port, settings.security) == ("imap.acme.test", 143, "starttls")
    assert settings.username == "rep@acme.test"  # no IMAP user name: the address
    assert settings.sent_folder_discovered == "Sent Items"
    assert "secret" not in repr(settings)


async def test_server_hanging_mid_append_is_unknown_within_the_budget(
    dovecot: Dovecot, cutting_proxy: ProxyFactory
) -> None:
    raw, message_id = make_message()
    proxy = await cutting_proxy(dovecot.port)
    proxy.stall_when_client_sends(message_id.encode())
    settings = settings_for(dovecot, port=proxy.port, command_timeout=0.5, total_timeout=5.0)
    started = time.monotonic()
    outcome = await append_sent_copy(settings, raw, message_id, SENT_AT, {})
    assert outcome.state is CopyState.unknown  # the server may well have stored it
    assert time.monotonic() - started < 1.5  # one command timeout, no lingering LOGOUT
    retry = await append_sent_copy(settings_for(dovecot), raw, message_id, SENT_AT, {}, check_existing=True)
    assert retry.state is CopyState.appended and retry.found_existing
    assert copies(dovecot, "Sent", message_id) == 1


async def test_server_down_fails_fast(unused_port: int) -> None:
    raw, message_id = make_message()
    down = ImapSettings(host=HOST, port=unused_port, username="a", password="b", security="none")
    started = time.monotonic()
    outcome = await append_sent_copy(down, raw, message_id, SENT_AT, {})
    assert outcome.state is CopyState.failed
    assert time.monotonic() - started < 2


async def test_silent_server_times_out_within_the_budget() -> None:
    # Accepts the connection, never greets: a hung server must not hold the caller.
    async def mute(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)
        w.close()

    server = await asyncio.start_server(mute, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    raw, message_id = make_message()
    settings = ImapSettings(
        host=HOST,
        port=port,
        username="a",
        password="b",
        security="none",
        command_timeout=0.5,
        total_timeout=1.0,
    )
    started = time.monotonic()
    try:
        outcome: AppendOutcome = await append_sent_copy(settings, raw, message_id, SENT_AT, {})
    finally:
        server.close()
    assert outcome.state is CopyState.failed
    assert time.monotonic() - started < 3


async def test_refused_login_fails_without_storing(dovecot: Dovecot) -> None:
    raw, message_id = make_message()
    outcome = await append_sent_copy(settings_for(dovecot, password="wrong"), raw, message_id, SENT_AT, {})
    assert outcome.state is CopyState.failed
    assert "login refused" in outcome.detail


# ---------------------------------------------------------------------------------------------
# Discovery steps a Dovecot cannot show: a fake session answering like other servers


class FakeSession:
    def __init__(self, caps: set[str], plain: list[bytes], extended: list[bytes] | None, xlist: list[bytes]):
        self.capabilities = caps
        self._plain, self._extended, self._xlist = plain, extended, xlist
        self.commands: list[str] = []

    async def list_lines(self, reference: str, pattern: str) -> list[bytes] | None:
        self.commands.append(f"LIST {reference} {pattern}")
        return self._extended if "RETURN" in pattern else self._plain

    async def xlist_lines(self) -> list[bytes] | None:
        self.commands.append("XLIST")
        return self._xlist


async def test_plain_list_attributes_are_enough_without_special_use_capability() -> None:
    # Gmail: \Sent in a plain LIST, no SPECIAL-USE advertised.
    s = FakeSession({"IMAP4REV1", "X-GM-EXT-1"}, [b'(\\HasNoChildren \\Sent) "/" "[Gmail]/Sent Mail"'], None, [])
    found: Discovery = await discover_sent_folder(s)
    assert found.mailbox is not None and found.mailbox.name == "[Gmail]/Sent Mail"
    assert s.commands == ['LIST "" "*"']


async def test_list_return_special_use_only_when_offered() -> None:
    plain = [b'(\\HasNoChildren) "." INBOX.Outbox', b'(\\HasNoChildren) "." INBOX']
    s = FakeSession({"LIST-EXTENDED"}, plain, [b'(\\Sent) "." INBOX.Outbox'], [])
    found = await discover_sent_folder(s)
    assert found.how == "LIST RETURN (SPECIAL-USE)" and found.mailbox and found.mailbox.name == "INBOX.Outbox"
    legacy = FakeSession(set(), plain, None, [])
    assert (await discover_sent_folder(legacy)).mailbox is None
    assert legacy.commands == ['LIST "" "*"']  # never the RETURN form: a BAD on servers without it


async def test_xlist_then_names_with_any_delimiter() -> None:
    plain = [b'(\\HasNoChildren) "." "INBOX.Sent Messages"', b'() "." INBOX']
    s = FakeSession({"XLIST"}, plain, None, [b'(\\HasNoChildren \\Sent) "/" "Gesendet"'])
    assert (await discover_sent_folder(s)).how == "XLIST"
    by_name = await discover_sent_folder(FakeSession(set(), plain, None, []))
    assert by_name.how == "name" and by_name.mailbox and by_name.mailbox.name == "INBOX.Sent Messages"


def test_localized_names_round_trip_in_modified_utf7() -> None:
    greek = "[Gmail]/Απεσταλμένα"
    assert decode_mutf7(encode_mutf7(greek)) == greek
    assert encode_mutf7("R&D") == "R&-D"
    line = ('(\\HasNoChildren \\Sent) "/" "' + encode_mutf7(greek) + '"').encode()
    parsed = parse_list_line(line)
    assert parsed is not None and parsed.name == greek
    assert wire_name("Sent") == "Sent"
    assert wire_name("[Gmail]/Sent Mail") == '"[Gmail]/Sent Mail"'
    assert parse_list_line(b'(\\Noselect) "/" "[Gmail]"') is not None
