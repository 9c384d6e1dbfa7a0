"""Mail providers: recognising them, their sending limits, and the Gmail rule for Sent copies.

A provider is recognised from what the servers are (host names, IMAP CAPABILITY), never from a
label the user picked: a user who says "Gmail" but sends through their own relay must still get
a Sent copy. Every number and rule, with where it comes from: docs/mail.md §1 and §2.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Protocol

# Close's rule: above this many leads, a Gmail mailbox fed through a non-Gmail SMTP server gets no
# Sent copies, because 10,000 uploads of ~50 KB reach Gmail's 500 MB/day IMAP upload cap, and
# hitting the cap suspends IMAP uploads for the whole account (docs/mail.md §1).
GMAIL_IMAP_UPLOAD_MAX_LEADS = 10_000

GMAIL_CAPABILITY = "X-GM-EXT-1"


class Provider(enum.StrEnum):
    gmail = "gmail"  # consumer @gmail.com / @googlemail.com
    google_workspace = "google_workspace"  # Google's servers, the user's own domain
    microsoft_365 = "microsoft_365"  # SMTP AUTH submission to Exchange Online
    sending_service = "sending_service"  # SES, SendGrid, Mailgun...: built for volume
    other = "other"


class SentCopyMode(enum.StrEnum):
    auto = "auto"  # follow the rules below
    always = "always"
    never = "never"


_GOOGLE_SUFFIXES = (".gmail.com", ".googlemail.com", ".google.com")
_GOOGLE_CONSUMER_DOMAINS = frozenset({"gmail.com", "googlemail.com"})
# Only SMTP AUTH submission files into Sent Items; Exchange's inbound "direct send" endpoints
# (*.mail.protection.outlook.com) do not, so they are not listed here.
_MICROSOFT_SUBMISSION_HOSTS = frozenset({"smtp.office365.com", "smtp-legacy.office365.com", "smtp-mail.outlook.com"})
_MICROSOFT_IMAP_HOSTS = frozenset({"outlook.office365.com", "imap-mail.outlook.com"})
_SES_HOST = re.compile(r"^email-smtp(-fips)?\.[a-z0-9-]+\.amazonaws\.com$")
_SENDING_SERVICE_HOSTS = frozenset(
    {
        "smtp.sendgrid.net",
        "smtp.mailgun.org",
        "smtp.eu.mailgun.org",
        "smtp.postmarkapp.com",
        "smtp.sparkpostmail.com",
        "smtp-relay.brevo.com",
        "smtp-relay.sendinblue.com",
        "in-v3.mailjet.com",
        "smtp.mandrillapp.com",
        "smtp.resend.com",
    }
)


def _host(value: str) -> str:
    return value.strip().rstrip(".").lower()


def _is_google_host(host: str) -> bool:
    h = _host(host)
    return h in {"gmail.com", "googlemail.com"} or h.endswith(_GOOGLE_SUFFIXES)


def _email_domain(email: str) -> str:
    return email.rsplit("@", 1)[-1].strip().lower() if "@" in email else ""


def _google(email: str) -> Provider:
    # Same servers for both; the address tells the consumer account (500/day) from Workspace (2,000/day).
    return Provider.gmail if _email_domain(email) in _GOOGLE_CONSUMER_DOMAINS else Provider.google_workspace


def smtp_provider(smtp_host: str, email: str = "") -> Provider:
    """The provider behind an SMTP submission host."""
    h = _host(smtp_host)
    if not h:
        return Provider.other
    if _is_google_host(h):
        return _google(email)
    if h in _MICROSOFT_SUBMISSION_HOSTS:
        return Provider.microsoft_365
    if h in _SENDING_SERVICE_HOSTS or _SES_HOST.match(h):
        return Provider.sending_service
    return Provider.other


def imap_provider(imap_host: str, email: str = "", capabilities: Iterable[str] | None = None) -> Provider:
    """The provider behind an IMAP server; Gmail also by its CAPABILITY, which survives custom host names."""
    caps = {c.upper() for c in capabilities or ()}
    if GMAIL_CAPABILITY in caps or _is_google_host(imap_host):
        return _google(email)
    if _host(imap_host) in _MICROSOFT_IMAP_HOSTS:
        return Provider.microsoft_365
    return Provider.other


def is_gmail(provider: Provider) -> bool:
    return provider in (Provider.gmail, Provider.google_workspace)


# ---------------------------------------------------------------------------------------------
# The Gmail rule: should the mailer APPEND a copy to the Sent folder?


class AccountLike(Protocol):
    """What the Gmail rule reads from an email account (``models.EmailAccount`` fits)."""

    @property
    def email(self) -> str: ...
    @property
    def smtp_host(self) -> str: ...
    @property
    def imap_host(self) -> str: ...
    @property
    def sent_copy_mode(self) -> str: ...


@dataclass(frozen=True)
class Decision:
    append: bool
    reason: str


def should_append_sent_copy(account: AccountLike, n_leads: int, imap_capabilities: set[str] | None) -> Decision:
    """Whether to APPEND a copy of each sent message to the account's IMAP Sent folder.

    First match wins; ``sent_copy_mode`` "always"/"never" overrides the automatic rules.
    ``imap_capabilities`` is the post-login CAPABILITY set when known (None before first connect).
    """
    if not _host(account.imap_host):
        return Decision(False, "no IMAP server configured")
    mode = (account.sent_copy_mode or SentCopyMode.auto).lower()
    if mode == SentCopyMode.never:
        return Decision(False, "account setting: never save Sent copies")
    if mode == SentCopyMode.always:
        return Decision(True, "account setting: always save Sent copies")
    smtp = smtp_provider(account.smtp_host, account.email)
    if is_gmail(smtp):
        return Decision(False, "Gmail's SMTP server files sent mail in Sent Mail itself")
    if smtp is Provider.microsoft_365:
        return Decision(False, "Microsoft 365 SMTP AUTH stores sent mail in Sent Items itself")
    imap = imap_provider(account.imap_host, account.email, imap_capabilities)
    if is_gmail(imap) and n_leads > GMAIL_IMAP_UPLOAD_MAX_LEADS:
        return Decision(
            False,
            f"Gmail mailbox and more than {GMAIL_IMAP_UPLOAD_MAX_LEADS:,} leads: "
            "uploads would exceed Gmail's daily IMAP upload limit",
        )
    return Decision(True, "this SMTP server does not file sent mail; copying it to Sent")


# ---------------------------------------------------------------------------------------------
# Sending limits per provider


@dataclass(frozen=True)
class AccountLimits:
    """How fast one email account may send; None means no limit of that kind.

    The window lengths are the real ones in production; tests shorten them so that a
    "per minute" limit can be proved in seconds.
    """

    per_minute: int | None = None
    per_hour: int | None = None
    per_day: int | None = None  # rolling 24 h, as Google and Microsoft count
    min_delay: timedelta = timedelta(0)
    max_connections: int | None = None
    minute: timedelta = timedelta(minutes=1)
    hour: timedelta = timedelta(hours=1)
    day: timedelta = timedelta(hours=24)

    @property
    def unlimited(self) -> bool:
        """No rate limit at all: the limiter need not touch the database."""
        return (
            self.per_minute is None
            and self.per_hour is None
            and self.per_day is None
            and self.min_delay <= timedelta(0)
        )

    def windows(self) -> list[tuple[int, timedelta]]:
        """(limit, window length) for each limit that is set."""
        pairs = ((self.per_minute, self.minute), (self.per_hour, self.hour), (self.per_day, self.day))
        return [(n, length) for n, length in pairs if n is not None]


PRESETS: dict[Provider, AccountLimits] = {
    # Consumer Gmail: 500 messages per rolling day (docs/mail.md §2).
    Provider.gmail: AccountLimits(per_day=500, max_connections=3),
    Provider.google_workspace: AccountLimits(per_day=2_000, max_connections=3),
    # Exchange Online: 30 messages/min, 10,000 recipients/day, 3 concurrent connections (docs/mail.md §2).
    # One recipient per message here, so recipients and messages count the same.
    Provider.microsoft_365: AccountLimits(per_minute=30, per_day=10_000, max_connections=3),
    Provider.sending_service: AccountLimits(max_connections=10),
    Provider.other: AccountLimits(max_connections=3),
}


class LimitedAccount(AccountLike, Protocol):
    @property
    def limit_per_minute(self) -> int | None: ...
    @property
    def limit_per_hour(self) -> int | None: ...
    @property
    def limit_per_day(self) -> int | None: ...
    @property
    def min_delay_ms(self) -> int: ...
    @property
    def max_connections(self) -> int: ...


def limits_for_account(account: LimitedAccount) -> AccountLimits:
    """The provider's preset, with every limit the account sets explicitly taking precedence."""
    preset = PRESETS[smtp_provider(account.smtp_host, account.email)]
    return replace(
        preset,
        per_minute=account.limit_per_minute if account.limit_per_minute is not None else preset.per_minute,
        per_hour=account.limit_per_hour if account.limit_per_hour is not None else preset.per_hour,
        per_day=account.limit_per_day if account.limit_per_day is not None else preset.per_day,
        # The model stores 0 for "not set"; a positive value is the user's choice.
        min_delay=timedelta(milliseconds=account.min_delay_ms) if account.min_delay_ms else preset.min_delay,
        max_connections=account.max_connections or preset.max_connections,
    )
