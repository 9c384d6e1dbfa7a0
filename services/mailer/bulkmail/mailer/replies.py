"""What an SMTP reply (or failure) means for a recipient and for the sending account.

Five outcomes: the message was sent; retry it later; the address bounced for good
(suppress it); the message itself was refused (content, policy: fail it, keep the address); or
the whole account must pause (throttling, login limits, bad credentials, daily quota). A sixth,
``unknown``, is for a connection lost after the message body went out: the server may have
accepted it, so resending could deliver it twice (docs/ledger.md, "The crash bound").

Enhanced status codes and known reply texts are matched before the three-digit class, because
the class can lie: Gmail's daily quota is ``550 5.4.5``, a 5xx that must pause, not bounce.

This module only says what happened. How long to wait is ``backoff``'s; the transaction that
produces the replies is ``smtp_transaction``'s.
"""

from __future__ import annotations

import enum
import re
import ssl
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

import aiosmtplib


class Kind(enum.StrEnum):
    sent = "sent"
    retry = "retry"
    hard_bounce = "hard_bounce"
    failed = "failed"  # this message is refused (content/policy/client bug); the address is fine
    pause_account = "pause_account"
    unknown = "unknown"  # may or may not have been delivered; never resend blindly


class PauseKind(enum.StrEnum):
    throttle = "throttle"  # 421: the provider slows us down
    login_limit = "login_limit"  # 454 4.7.0 too many logins / temporary auth failure
    auth = "auth"  # credentials, app password, OAuth or TLS set-up: the user must act
    daily_quota = "daily_quota"  # rolling 24 h quota: wait until the window frees up
    sender_mailbox_full = "sender_mailbox_full"  # M365 stores Sent Items; a full mailbox stops sending
    unreachable = "unreachable"  # several attempts in a row could not connect, secure or log in


class Stage(enum.StrEnum):
    """Which command the reply answered: the same code means different things at RCPT and DATA."""

    connect = "connect"
    auth = "auth"
    mail = "mail"
    rcpt = "rcpt"
    data = "data"


@dataclass(frozen=True)
class ReplyVerdict:
    kind: Kind
    reason: str
    retry_after: timedelta | None = None  # minimum wait the reply calls for; None: use the backoff
    pause: PauseKind | None = None
    code: int | None = None
    enhanced: str | None = None
    text: str = ""  # the server's own reply text, for the ledger and the user
    # The account's server could not be reached or used (connect, TLS, no AUTH): nothing was
    # handed over. A retry for the recipient; several in a row pause the account.
    unreachable: bool = False


_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")

# Known texts, tried in order, before any code table. (pattern, kind, pause, reason, retry_after)
_KNOWN_TEXTS: list[tuple[re.Pattern[str], Kind, PauseKind | None, str, timedelta | None]] = [
    (
        re.compile(
            r"daily user sending (quota|limit) exceeded|SubmissionQuotaExceeded|daily message quota"
            r"|sending (quota|limit) exceeded|daily sending quota",
            re.I,
        ),
        Kind.pause_account,
        PauseKind.daily_quota,
        "daily sending quota reached",
        None,
    ),
    (
        re.compile(r"too many login attempts|cannot authenticate due to a temporary", re.I),
        Kind.pause_account,
        PauseKind.login_limit,
        "too many logins",
        None,
    ),
    (
        # Exchange: the sender's own mailbox is full (its Sent Items count), not the recipient's.
        re.compile(r"STOREDRV\.Submission\.Exception:QuotaExceededException", re.I),
        Kind.pause_account,
        PauseKind.sender_mailbox_full,
        "the sending mailbox is full",
        None,
    ),
    (
        re.compile(
            r"application-specific password|username and password not accepted"
            r"|basic authentication is not supported|smtp ?auth(entication)? is disabled"
            r"|authentication unsuccessful",
            re.I,
        ),
        Kind.pause_account,
        PauseKind.auth,
        "the provider refused our login",
        None,
    ),
    (
        re.compile(r"must issue a starttls", re.I),
        Kind.pause_account,
        PauseKind.auth,
        "the server requires TLS",
        None,
    ),
    (
        re.compile(r"unusual rate of unsolicited mail", re.I),
        Kind.pause_account,
        PauseKind.throttle,
        "provider throttling (unsolicited mail rate)",
        None,
    ),
    (
        re.compile(r"concurrent connections limit|sender thread limit", re.I),
        Kind.retry,
        None,
        "too many connections for this mailbox",
        timedelta(minutes=1),
    ),
    (
        re.compile(r"receiving mail (too quickly|at a rate)", re.I),
        Kind.retry,
        None,
        "recipient is receiving mail too fast",
        timedelta(hours=1),
    ),
]

_HARD_BOUNCE_ADDRESS_DETAILS = {"0", "1", "2", "3", "4", "6", "10"}  # X.1.y about the recipient
_AUTH_DETAILS = {"0", "3", "8", "9", "30", "139"}  # 5.7.y auth refusals seen at AUTH or 530/535


def classify(code: int, message: str, *, stage: Stage | None = None) -> ReplyVerdict:
    """Classify one SMTP reply. ``stage`` (which command it answered) sharpens generic 5xx replies."""
    text = message or ""
    found = _ENHANCED.match(text)
    enhanced = ".".join(found.groups()) if found else None

    def verdict(
        kind: Kind, reason: str, *, after: timedelta | None = None, pause: PauseKind | None = None
    ) -> ReplyVerdict:
        return ReplyVerdict(kind, reason, after, pause, code, enhanced, text=text)

    if 200 <= code < 400:
        return verdict(Kind.sent, "accepted")
    for pattern, kind, pause, reason, after in _KNOWN_TEXTS:
        if pattern.search(text):
            return verdict(kind, reason, after=after, pause=pause)
    by_enhanced = _classify_enhanced(code, found.groups() if found else None, stage, verdict)
    if by_enhanced is not None:
        return by_enhanced
    return _classify_basic(code, stage, verdict)


def _classify_enhanced(
    code: int,
    parts: tuple[str, ...] | None,
    stage: Stage | None,
    verdict: _VerdictFactory,
) -> ReplyVerdict | None:
    if parts is None:
        return None
    klass, subject, detail = parts
    if code == 421 or (klass == "4" and subject == "7" and code != 454 and stage is Stage.connect):
        return verdict(Kind.pause_account, "provider throttling", pause=PauseKind.throttle)
    if subject == "4" and detail == "5":
        # "Mail system congestion", persistent-transient by RFC 3463: Gmail uses 550 5.4.5 for its quota.
        return verdict(Kind.pause_account, "daily sending quota reached", pause=PauseKind.daily_quota)
    if code == 454 or (code in (530, 534, 535) and subject == "7"):
        pause = PauseKind.login_limit if klass == "4" else PauseKind.auth
        return verdict(Kind.pause_account, "the provider refused our login", pause=pause)
    if subject == "2" and detail == "2":
        # Recipient's mailbox full: a few retries over a day, then the caller records a soft bounce.
        return verdict(Kind.retry, "recipient mailbox full", after=timedelta(hours=6))
    if klass == "4":
        if subject == "3" and detail == "2":
            return verdict(Kind.retry, "too many connections for this mailbox", after=timedelta(minutes=1))
        return verdict(Kind.retry, f"temporary failure {klass}.{subject}.{detail}")
    # Permanent from here.
    if subject == "1" and detail in _HARD_BOUNCE_ADDRESS_DETAILS and stage in (Stage.rcpt, None):
        return verdict(Kind.hard_bounce, "recipient address does not exist")
    if subject == "2" and detail in ("1", "0") and stage in (Stage.rcpt, None):
        return verdict(Kind.hard_bounce, "recipient mailbox disabled or unavailable")
    if subject == "7" and (stage is Stage.auth or code in (530, 534, 535)) and detail in _AUTH_DETAILS:
        return verdict(Kind.pause_account, "the provider refused our login", pause=PauseKind.auth)
    if subject == "7":
        return verdict(Kind.failed, "refused by policy (authentication, DMARC or content)")
    if subject in ("3", "6"):
        return verdict(Kind.failed, "message refused (size or content)")
    if subject == "5":
        return verdict(Kind.failed, "protocol error (client bug)")
    return None


class _VerdictFactory(Protocol):
    """The shape of ``classify``'s local ``verdict`` helper."""

    def __call__(
        self, kind: Kind, reason: str, *, after: timedelta | None = None, pause: PauseKind | None = None
    ) -> ReplyVerdict: ...


def _classify_basic(code: int, stage: Stage | None, verdict: _VerdictFactory) -> ReplyVerdict:
    if code == 421:
        return verdict(Kind.pause_account, "provider throttling", pause=PauseKind.throttle)
    if code == 432:
        return verdict(Kind.retry, "too many connections for this mailbox", after=timedelta(minutes=1))
    if code == 454:
        return verdict(Kind.pause_account, "the provider refused our login", pause=PauseKind.login_limit)
    if 400 <= code < 500:
        return verdict(Kind.retry, f"temporary failure {code}")
    if code in (530, 534, 535) or stage is Stage.auth:
        return verdict(Kind.pause_account, "the provider refused our login", pause=PauseKind.auth)
    if code == 552:
        return verdict(Kind.retry, "recipient mailbox full", after=timedelta(hours=6))
    if 500 <= code <= 504 or code == 555:
        return verdict(Kind.failed, "protocol error (client bug)")
    if code in (550, 551, 553) and stage in (Stage.rcpt, None):
        return verdict(Kind.hard_bounce, "recipient refused")
    if stage is Stage.rcpt:
        return verdict(Kind.hard_bounce, "recipient refused")
    if 500 <= code < 600:
        return verdict(Kind.failed, f"message refused ({code})")
    return verdict(Kind.retry, f"unexpected reply {code}")


# ---------------------------------------------------------------------------------------------
# Exceptions from aiosmtplib and the network


def classify_exception(exc: BaseException, *, body_sent: bool | None = None) -> ReplyVerdict:
    """Classify a failed send.

    ``body_sent``: whether the failure came after the message body may have reached the server
    (inside DATA). A lost connection or timeout there is ``unknown``; before it, ``retry``.
    When the caller cannot tell (None) we assume the worst and say ``unknown``.
    """
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        verdicts = classify_refused_recipients(exc).values()
        return max(verdicts, key=_severity) if verdicts else ReplyVerdict(Kind.retry, "no recipients")
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused):
        return classify(exc.code, exc.message, stage=Stage.rcpt)
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        return classify(exc.code, exc.message, stage=Stage.mail)
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return classify(exc.code, exc.message, stage=Stage.auth)
    if isinstance(exc, aiosmtplib.SMTPDataError):
        return classify(exc.code, exc.message, stage=Stage.data)
    if isinstance(exc, aiosmtplib.SMTPConnectResponseError):
        return classify(exc.code, exc.message, stage=Stage.connect)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return classify(exc.code, exc.message)
    if isinstance(exc, aiosmtplib.SMTPConnectError | ConnectionRefusedError | aiosmtplib.SMTPConnectTimeoutError):
        return ReplyVerdict(Kind.retry, f"cannot connect to the SMTP server: {exc}", unreachable=True)
    if isinstance(exc, ssl.SSLError):
        return ReplyVerdict(Kind.retry, f"TLS failure: {exc}", unreachable=True)
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return ReplyVerdict(Kind.pause_account, f"server lacks a required feature: {exc}", pause=PauseKind.auth)
    if type(exc) is aiosmtplib.SMTPException and "AUTH" in str(exc):
        # aiosmtplib's own refusal to log in: the server offers no AUTH (often: TLS is needed first).
        return ReplyVerdict(Kind.retry, f"the SMTP server does not offer login: {exc}", unreachable=True)
    # ConnectionError, ssl.SSLEOFError and socket errors are all OSError; asyncio's timeouts are TimeoutError.
    lost = isinstance(exc, aiosmtplib.SMTPServerDisconnected | aiosmtplib.SMTPTimeoutError | OSError)
    if lost:
        if body_sent is False:
            return ReplyVerdict(Kind.retry, f"connection lost before the message was sent: {exc}")
        return ReplyVerdict(Kind.unknown, f"connection lost after the message was handed over: {exc}")
    return ReplyVerdict(Kind.retry, f"unexpected error: {type(exc).__name__}: {exc}")


def classify_refused_recipients(exc: aiosmtplib.SMTPRecipientsRefused) -> dict[str, ReplyVerdict]:
    """One verdict per refused recipient (all were refused, each for its own reason)."""
    return {r.recipient: classify(r.code, r.message, stage=Stage.rcpt) for r in exc.recipients}


_SEVERITY = {
    Kind.sent: 0,
    Kind.retry: 1,
    Kind.failed: 2,
    Kind.hard_bounce: 3,
    Kind.unknown: 4,
    Kind.pause_account: 5,
}


def _severity(v: ReplyVerdict) -> int:
    return _SEVERITY[v.kind]
