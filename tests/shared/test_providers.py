"""Provider recognition, presets, and the Gmail rule for Sent copies (docs/mail.md §1)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest

from bulkmail.shared.providers import (
    GMAIL_IMAP_UPLOAD_MAX_LEADS,
    Provider,
    imap_provider,
    limits_for_account,
    should_append_sent_copy,
    smtp_provider,
)


@dataclass
class Account:
    email: str = "rep@acme.test"
    smtp_host: str = "mail.acme.test"
    imap_host: str = "mail.acme.test"
    sent_copy_mode: str = "auto"
    limit_per_minute: int | None = None
    limit_per_hour: int | None = None
    limit_per_day: int | None = None
    min_delay_ms: int = 0
    max_connections: int = 0


# --- the Gmail rule, one test per rule, first match wins --------------------------------------


def test_gmail_smtp_files_sent_mail_itself_so_no_append() -> None:
    account = Account(email="rep@gmail.com", smtp_host="smtp.gmail.com", imap_host="imap.gmail.com")
    decision = should_append_sent_copy(account, 5, {"IMAP4REV1", "X-GM-EXT-1"})
    assert not decision.append and "Gmail" in decision.reason
    # Workspace on the relay host, and whatever the IMAP side is.
    relay = Account(smtp_host="smtp-relay.gmail.com", imap_host="mail.acme.test")
    assert not should_append_sent_copy(relay, 5, None).append


def test_microsoft_365_smtp_stores_sent_items_itself_so_no_append() -> None:
    account = Account(smtp_host="smtp.office365.com", imap_host="outlook.office365.com")
    decision = should_append_sent_copy(account, 5, None)
    assert not decision.append and "Microsoft 365" in decision.reason


def test_gmail_mailbox_behind_another_smtp_appends_up_to_10000_leads() -> None:
    account = Account(smtp_host="smtp.sendgrid.net", imap_host="imap.gmail.com")
    assert should_append_sent_copy(account, GMAIL_IMAP_UPLOAD_MAX_LEADS, None).append
    over = should_append_sent_copy(account, GMAIL_IMAP_UPLOAD_MAX_LEADS + 1, None)
    assert not over.append and "10,000" in over.reason


def test_gmail_mailbox_recognised_by_capability_not_host() -> None:
    # A custom host name in front of Gmail: only CAPABILITY says what it is.
    account = Account(imap_host="imap.acme.test")
    assert should_append_sent_copy(account, 20_000, {"IMAP4REV1"}).append
    assert not should_append_sent_copy(account, 20_000, {"IMAP4REV1", "X-GM-EXT-1"}).append


def test_other_servers_get_a_sent_copy() -> None:
    decision = should_append_sent_copy(Account(), 50_000, {"IMAP4REV1", "SPECIAL-USE"})
    assert decision.append


def test_account_setting_overrides_the_rules() -> None:
    gmail = Account(email="rep@gmail.com", smtp_host="smtp.gmail.com", imap_host="imap.gmail.com")
    assert should_append_sent_copy(Account(**{**gmail.__dict__, "sent_copy_mode": "always"}), 5, None).append
    assert not should_append_sent_copy(Account(sent_copy_mode="never"), 5, None).append


def test_no_imap_server_means_no_copy_whatever_the_setting() -> None:
    assert not should_append_sent_copy(Account(imap_host="", sent_copy_mode="always"), 5, None).append


def test_the_users_word_is_not_enough() -> None:
    # An @gmail.com address sending through the company's own relay still needs a Sent copy.
    account = Account(email="rep@gmail.com", smtp_host="relay.acme.test", imap_host="mail.acme.test")
    assert should_append_sent_copy(account, 5, None).append


# --- recognition and presets -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "email", "provider"),
    [
        ("smtp.gmail.com", "a@gmail.com", Provider.gmail),
        ("SMTP.Gmail.com.", "a@acme.test", Provider.google_workspace),
        ("smtp.office365.com", "a@acme.test", Provider.microsoft_365),
        ("acme-test.mail.protection.outlook.com", "a@acme.test", Provider.other),  # direct send: no Sent copy
        ("email-smtp.eu-west-1.amazonaws.com", "a@acme.test", Provider.sending_service),
        ("ec2-1-2-3-4.compute-1.amazonaws.com", "a@acme.test", Provider.other),
        ("smtp.sendgrid.net", "a@acme.test", Provider.sending_service),
        ("mail.acme.test", "a@acme.test", Provider.other),
        ("", "a@acme.test", Provider.other),
    ],
)
def test_smtp_provider_by_host(host: str, email: str, provider: Provider) -> None:
    assert smtp_provider(host, email) is provider


def test_imap_provider_by_host_or_capability() -> None:
    assert imap_provider("imap.gmail.com", "a@gmail.com") is Provider.gmail
    assert imap_provider("imap.acme.test", "a@acme.test", {"x-gm-ext-1"}) is Provider.google_workspace
    assert imap_provider("outlook.office365.com") is Provider.microsoft_365
    assert imap_provider("imap.acme.test", capabilities={"IMAP4REV1"}) is Provider.other


def test_presets_by_provider_with_account_overrides() -> None:
    gmail = limits_for_account(Account(email="a@gmail.com", smtp_host="smtp.gmail.com"))
    assert gmail.per_day == 500
    workspace = limits_for_account(Account(smtp_host="smtp.gmail.com"))
    assert workspace.per_day == 2_000
    m365 = limits_for_account(Account(smtp_host="smtp.office365.com"))
    assert (m365.per_minute, m365.per_day, m365.max_connections) == (30, 10_000, 3)
    assert limits_for_account(Account(smtp_host="smtp.sendgrid.net")).unlimited

    custom = limits_for_account(
        Account(smtp_host="smtp.office365.com", limit_per_minute=10, min_delay_ms=1500, max_connections=1)
    )
    assert (custom.per_minute, custom.per_day, custom.max_connections) == (10, 10_000, 1)
    assert custom.min_delay == timedelta(milliseconds=1500)
