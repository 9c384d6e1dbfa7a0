"""What an SMTP reply (or failure) means for a recipient and for the sending account.

Five outcomes: the message was sent; retry it later; the address bounced for good
(suppress it); the message itself was refused (content, policy: fail it, keep the address); or
the whole account must pause (throttling, login limits, bad credentials, daily quota). A sixth,
``unknown``, is for a connection lost after the message body went out: the server may have
accepted it, so resending could deliver it twice (docs/ledger.md, "The crash bound").

Enhanced status codes and known reply texts are matched before the three-digit class, because
the class can lie: Gmail's daily quota is ``550 5.4.5``, a 5xx that must pause, not bounce.
"""

from __future__ import annotations

import enum
import random
import re
import ssl
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import aiosmtplib

from bulkmail.mailer.pipelining import EnvelopeRefused, ServerFailure, pipelined_transaction, wire_body


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


async def send_one(
    smtp: aiosmtplib.SMTP,
    sender: str,
    recipient: str,
    message: bytes,
    *,
    mail_options: list[str] | None = None,
    pipelining: bool | None = None,
) -> ReplyVerdict:
    """Send one message to one recipient on a connected client, and classify the result.

    Servers that offer PIPELINING get MAIL, RCPT and DATA in one go (``pipelining``: None means
    "if offered"); others get aiosmtplib's command-by-command exchange. Either way we know
    whether the body had gone out, which tells a connection lost before it (nothing delivered:
    retry) from one lost after it (unknown outcome).
    """
    if smtp.is_ehlo_or_helo_needed:  # before anything else: EHLO says whether PIPELINING is on offer
        try:
            await _greet(smtp)
        except Exception as exc:
            return classify_exception(exc, body_sent=False)
    if pipelining is None:
        pipelining = smtp.supports_extension("pipelining")
    if pipelining and _plain_envelope(sender, recipient, mail_options):
        return await _send_pipelined(smtp, sender, recipient, message)
    body_sent = False
    try:
        await _envelope(smtp, sender, recipient, mail_options)
        body_sent = True
        response = await smtp.data(message)
    except Exception as exc:
        verdict = classify_exception(exc, body_sent=body_sent)
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            await _reset(smtp)
        return verdict
    return classify(response.code, response.message, stage=Stage.data)


async def _send_pipelined(smtp: aiosmtplib.SMTP, sender: str, recipient: str, message: bytes) -> ReplyVerdict:
    envelope = b"MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n" % (sender.encode("ascii"), recipient.encode("ascii"))
    try:
        reply = await pipelined_transaction(smtp, envelope, wire_body(message), smtp.timeout)
    except EnvelopeRefused as refused:
        await _reset(smtp)
        return classify(refused.reply.code, refused.reply.message, stage=Stage(refused.stage))
    except ServerFailure as failure:
        return classify_exception(failure.cause, body_sent=failure.body_sent)
    return classify(reply.code, reply.message, stage=Stage.data)


async def _greet(smtp: aiosmtplib.SMTP) -> None:
    try:
        await smtp.ehlo()
    except aiosmtplib.SMTPHeloError:  # an old server without ESMTP
        await smtp.helo()


async def _reset(smtp: aiosmtplib.SMTP) -> None:
    """RSET after a refusal, to keep the long-lived connection usable for the next message."""
    if smtp.is_connected:
        try:
            await smtp.rset()
        except aiosmtplib.SMTPException:
            pass


# An address that needs no quoting or parsing on the way into MAIL FROM / RCPT TO.
_PLAIN_ADDRESS = re.compile(r'[^\s<>()\[\],;:"\\@]+@[^\s<>()\[\],;:"\\@]+')


async def _envelope(smtp: aiosmtplib.SMTP, sender: str, recipient: str, mail_options: list[str] | None) -> None:
    """MAIL FROM and RCPT TO, refused replies raised as aiosmtplib's own exceptions.

    For the common case (plain ASCII addresses, no options) the commands are written
    directly: ``smtp.mail``/``smtp.rcpt`` parse and re-quote both addresses on every message,
    which was a tenth of the mailer's SMTP time.
    """
    if not _plain_envelope(sender, recipient, mail_options):
        await smtp.mail(sender, options=mail_options)
        await smtp.rcpt(recipient)
        return
    reply = await smtp.execute_command(b"MAIL", b"FROM:<" + sender.encode("ascii") + b">")
    if reply.code != 250:
        raise aiosmtplib.SMTPSenderRefused(reply.code, reply.message, sender)
    reply = await smtp.execute_command(b"RCPT", b"TO:<" + recipient.encode("ascii") + b">")
    if reply.code not in (250, 251):
        raise aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, recipient)


def _plain_envelope(sender: str, recipient: str, mail_options: list[str] | None) -> bool:
    """Plain ASCII addresses and no MAIL options: the commands can be written as they are."""
    return not mail_options and _is_plain(sender) and _is_plain(recipient)


def _is_plain(address: str) -> bool:
    return address.isascii() and _PLAIN_ADDRESS.fullmatch(address) is not None


# ---------------------------------------------------------------------------------------------
# Waiting: message retries and account pauses

RETRY_BASE = timedelta(minutes=1)
RETRY_CAP = timedelta(hours=6)
# Like an MTA: stop retrying a message after a few days.
MAX_ATTEMPTS = 20


def next_attempt_delay(attempts: int, *, rng: random.Random | None = None) -> timedelta:
    """Exponential backoff (1 min, 2 min, 4 min ... capped at 6 h) with jitter.

    "Equal jitter": half the delay is fixed, half random, so retries of many recipients that
    failed together spread out instead of hitting the server again at the same second.
    """
    exp = RETRY_BASE * (1 << max(0, min(attempts - 1, 20)))
    delay = min(exp, RETRY_CAP)
    r: float = (rng or random).random()
    return delay / 2 + delay / 2 * r


_PAUSE_STEPS: dict[PauseKind, list[timedelta]] = {
    PauseKind.throttle: [timedelta(minutes=15), timedelta(hours=1), timedelta(hours=4)],
    PauseKind.login_limit: [timedelta(minutes=30), timedelta(hours=1), timedelta(hours=2), timedelta(hours=4)],
    PauseKind.auth: [timedelta(hours=1), timedelta(hours=4), timedelta(hours=12), timedelta(hours=24)],
    PauseKind.sender_mailbox_full: [timedelta(hours=1), timedelta(hours=4), timedelta(hours=12)],
    PauseKind.daily_quota: [timedelta(hours=24)],
    PauseKind.unreachable: [timedelta(minutes=15), timedelta(hours=1), timedelta(hours=4), timedelta(hours=12)],
}
# Attempts in a row that cannot reach or use the account's server before the account is paused.
UNREACHABLE_BEFORE_PAUSE = 3
_MIN_QUOTA_PAUSE = timedelta(minutes=15)


def pause_until(
    verdict: ReplyVerdict,
    *,
    previous_pauses: int,
    now: datetime,
    day_window_frees_at: datetime | None = None,
) -> datetime:
    """When a paused account may send again.

    The interval grows with each pause in a row (``previous_pauses``, 0 for the first). A daily
    quota lasts until the rolling 24 h window frees up, i.e. the oldest send in it turns 24 h
    old (``rate_limit.day_window_frees_at``); without that knowledge, a full day.
    """
    kind = verdict.pause or PauseKind.throttle
    if kind is PauseKind.daily_quota and day_window_frees_at is not None:
        return max(day_window_frees_at, now + _MIN_QUOTA_PAUSE)
    steps = _PAUSE_STEPS[kind]
    return now + steps[min(previous_pauses, len(steps) - 1)]
