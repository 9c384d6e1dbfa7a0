"""Test connection, as a mailer carries it out for the web app, against real servers on loopback:
Postfix's smtp-sink for SMTP and a throwaway Dovecot for IMAP (Sent folder discovery, the Gmail
rule read from the server's CAPABILITY)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from cryptography.fernet import Fernet

from bulkmail.mailer.account_checks import test_connection as check_connection
from bulkmail.shared.models import ConnectionSecurity, EmailAccount
from bulkmail.shared.secrets import SecretBox

if TYPE_CHECKING:
    from tests.mail_servers import Dovecot, SmtpSink

pytest_plugins = ["tests.mail_servers"]

HOST = "127.0.0.1"
BOX = SecretBox([Fernet.generate_key().decode()])


def account(smtp_port: int, imap: Dovecot | None = None, imap_password: str = "", **extra: object) -> EmailAccount:
    values: dict[str, object] = {
        "email": "alice@acme.test",
        "smtp_host": HOST,
        "smtp_port": smtp_port,
        "smtp_security": ConnectionSecurity.none,
        "smtp_username": "",
        "smtp_password_encrypted": "",
        "imap_host": HOST if imap else "",
        "imap_port": imap.port if imap else 993,
        "imap_security": ConnectionSecurity.none,
        "imap_username": "alice",
        "imap_password_encrypted": BOX.encrypt(imap_password) if imap_password else "",
        "sent_folder": "",
        "sent_folder_discovered": "",
        "sent_copy_mode": "auto",
    }
    values.update(extra)
    return EmailAccount(**values)


async def test_both_logins_work_and_the_sent_folder_is_found(
    smtp_sink: Callable[..., SmtpSink], dovecot: Dovecot
) -> None:
    sink = smtp_sink()
    ok, result = await check_connection(BOX, account(sink.port, dovecot, dovecot.users["alice"]))
    assert ok
    assert result["smtp"]["ok"] and f"{HOST}:{sink.port}" in result["smtp"]["detail"]
    assert result["imap"] == {
        "configured": True,
        "ok": True,
        "detail": f"Logged in to {HOST}:{dovecot.port} (none) as alice.",
        "sent_folder": "Sent",
        "found_by": "special-use in LIST",
    }
    assert result["sent_copy"] == {
        "append": True,
        "reason": "this SMTP server does not file sent mail; copying it to Sent",
    }


async def test_a_wrong_imap_password_fails_with_the_servers_reply(
    smtp_sink: Callable[..., SmtpSink], dovecot: Dovecot
) -> None:
    sink = smtp_sink()
    ok, result = await check_connection(BOX, account(sink.port, dovecot, "not-the-password"))
    assert not ok
    assert result["smtp"]["ok"]
    assert not result["imap"]["ok"]
    assert "AUTHENTICATIONFAILED" in result["imap"]["reply"] or "failed" in result["imap"]["reply"].lower()
    assert "not-the-password" not in repr(result)


async def test_an_smtp_server_that_refuses_shows_its_reply(smtp_sink: Callable[..., SmtpSink]) -> None:
    sink = smtp_sink("-f", "EHLO", "-f", "HELO", "-B", "550 5.7.1 Client host rejected")
    ok, result = await check_connection(BOX, account(sink.port))
    assert not ok
    assert result["smtp"]["reply"].startswith("550")
    assert "Client host rejected" in result["smtp"]["reply"]
    assert result["imap"]["configured"] is False


async def test_the_gmail_rule_is_read_from_the_imap_servers_capability(
    smtp_sink: Callable[..., SmtpSink], dovecot_gmail_layout: Dovecot
) -> None:
    sink = smtp_sink()
    server = dovecot_gmail_layout
    ok, result = await check_connection(BOX, account(sink.port, server, server.users["alice"]))
    assert ok
    assert result["imap"]["sent_folder"] == "[Gmail]/Sent Mail"
    # Small sends are copied; above 10,000 leads Gmail's upload limit means no copies.
    assert result["sent_copy"]["append"] is True
    assert result["sent_copy"]["over_limit"]["append"] is False
    assert "Gmail" in result["sent_copy"]["over_limit"]["reason"]
