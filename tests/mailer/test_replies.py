"""SMTP replies and failures classified as docs/mail.md §4 says, from a table and from real servers:
Postfix smtp-sink fault modes and an aiosmtpd server with per-recipient replies."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import aiosmtplib
import pytest
from aiosmtpd.controller import Controller

from bulkmail.mailer import smtp_transaction
from bulkmail.mailer.backoff import next_attempt_delay, pause_until
from bulkmail.mailer.replies import (
    Kind,
    PauseKind,
    ReplyVerdict,
    Stage,
    classify,
    classify_exception,
)
from bulkmail.mailer.smtp_transaction import send_one

if TYPE_CHECKING:
    from tests.mail_servers import SmtpSink

pytest_plugins = ["tests.mail_servers"]

HOST = "127.0.0.1"
MESSAGE = b"From: rep@example.test\r\nTo: lead@example.test\r\nSubject: hi\r\nMessage-ID: <1@x>\r\n\r\nHello\r\n"

TABLE: list[tuple[int, str, Stage | None, Kind, PauseKind | None]] = [
    (250, "2.0.0 OK 1700000000 - gsmtp", Stage.data, Kind.sent, None),
    # Pause the account: throttling, logins, credentials, quotas.
    (421, "4.7.0 Try again later, closing connection. - gsmtp", Stage.mail, Kind.pause_account, PauseKind.throttle),
    (421, "4.4.5 Server busy, try again later. - gsmtp", None, Kind.pause_account, PauseKind.throttle),
    (421, "Service not available", None, Kind.pause_account, PauseKind.throttle),
    (
        421,
        "4.7.0 Our system has detected an unusual rate of unsolicited mail",
        Stage.rcpt,
        Kind.pause_account,
        PauseKind.throttle,
    ),
    (
        454,
        "4.7.0 Too many login attempts, please try again later. - gsmtp",
        Stage.auth,
        Kind.pause_account,
        PauseKind.login_limit,
    ),
    (
        454,
        "4.7.0 Cannot authenticate due to a temporary system problem",
        Stage.auth,
        Kind.pause_account,
        PauseKind.login_limit,
    ),
    (535, "5.7.8 Username and Password not accepted. - gsmtp", Stage.auth, Kind.pause_account, PauseKind.auth),
    (534, "5.7.9 Application-specific password required. - gsmtp", Stage.auth, Kind.pause_account, PauseKind.auth),
    (530, "5.7.0 Must issue a STARTTLS command first. - gsmtp", Stage.mail, Kind.pause_account, PauseKind.auth),
    (
        550,
        "5.7.30 Basic authentication is not supported for Client Submission",
        Stage.auth,
        Kind.pause_account,
        PauseKind.auth,
    ),
    # Gmail's daily quota is a 550 that must pause for the rolling day, not bounce the lead.
    (550, "5.4.5 Daily user sending quota exceeded. - gsmtp", Stage.data, Kind.pause_account, PauseKind.daily_quota),
    (
        550,
        "5.4.5 Daily user sending limit exceeded. For more information...\n5.4.5 https://support.google.com - gsmtp",
        Stage.mail,
        Kind.pause_account,
        PauseKind.daily_quota,
    ),
    (
        554,
        "5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException",
        Stage.data,
        Kind.pause_account,
        PauseKind.daily_quota,
    ),
    (454, "Throttling failure: Daily message quota exceeded.", Stage.mail, Kind.pause_account, PauseKind.daily_quota),
    (
        554,
        "5.2.2 mailbox full; STOREDRV.Submission.Exception:QuotaExceededException",
        Stage.data,
        Kind.pause_account,
        PauseKind.sender_mailbox_full,
    ),
    # Retry later.
    (450, "4.2.1 The user you are trying to contact is receiving mail too quickly", Stage.rcpt, Kind.retry, None),
    (451, "4.3.0 Mail server temporarily rejected message. - gsmtp", Stage.rcpt, Kind.retry, None),
    (451, "4.7.1 Greylisted, please try again", Stage.rcpt, Kind.retry, None),
    (452, "4.5.3 Your message has too many recipients. - gsmtp", Stage.rcpt, Kind.retry, None),
    (452, "4.2.2 The email account that you tried to reach is over quota", Stage.rcpt, Kind.retry, None),
    (552, "5.2.2 The email account that you tried to reach is over quota", Stage.rcpt, Kind.retry, None),
    (432, "4.3.2 Concurrent connections limit exceeded", Stage.mail, Kind.retry, None),
    (499, "something unusual", None, Kind.retry, None),
    # The recipient is gone for good: suppress it.
    (
        550,
        "5.1.1 The email account that you tried to reach does not exist. - gsmtp",
        Stage.rcpt,
        Kind.hard_bounce,
        None,
    ),
    (550, "5.1.10 RESOLVER.ADR.RecipientNotFound", Stage.rcpt, Kind.hard_bounce, None),
    (553, "5.1.3 Invalid address", Stage.rcpt, Kind.hard_bounce, None),
    (551, "User not local", Stage.rcpt, Kind.hard_bounce, None),
    (550, "Mailbox unavailable", Stage.rcpt, Kind.hard_bounce, None),
    (550, "5.2.1 The email account that you tried to reach is disabled", Stage.rcpt, Kind.hard_bounce, None),
    # This message is refused; the address is fine.
    (550, "5.7.26 Unauthenticated email is not accepted from this domain", Stage.data, Kind.failed, None),
    (550, "5.7.1 Message rejected by policy", Stage.rcpt, Kind.failed, None),
    (552, "5.3.4 Message size exceeds fixed limit", Stage.data, Kind.failed, None),
    (554, "5.6.0 Message content rejected", Stage.data, Kind.failed, None),
    (500, "5.5.2 Syntax error", Stage.mail, Kind.failed, None),
    (554, "Transaction failed", Stage.data, Kind.failed, None),
]


@pytest.mark.parametrize(("code", "message", "stage", "kind", "pause"), TABLE)
def test_reply_table(code: int, message: str, stage: Stage | None, kind: Kind, pause: PauseKind | None) -> None:
    verdict = classify(code, message, stage=stage)
    assert (verdict.kind, verdict.pause) == (kind, pause), verdict.reason


def test_enhanced_code_is_kept_and_retry_hints_given() -> None:
    fast = classify(450, "4.2.1 The user you are trying to contact is receiving mail too quickly")
    assert fast.enhanced == "4.2.1" and fast.retry_after == timedelta(hours=1)
    too_many = classify(432, "4.3.2 Concurrent connections limit exceeded")
    assert too_many.kind == Kind.retry and too_many.retry_after == timedelta(minutes=1)


def test_exceptions_are_classified() -> None:
    e = aiosmtplib
    assert classify_exception(e.SMTPConnectError("Error connecting: [Errno 111]")).kind is Kind.retry
    assert classify_exception(ConnectionRefusedError(111, "refused")).kind is Kind.retry
    assert classify_exception(e.SMTPConnectTimeoutError("timed out")).kind is Kind.retry
    auth = classify_exception(e.SMTPAuthenticationError(535, "5.7.8 Username and Password not accepted"))
    assert (auth.kind, auth.pause) == (Kind.pause_account, PauseKind.auth)
    assert classify_exception(e.SMTPSenderRefused(421, "4.0.0 closing", "a@x")).pause is PauseKind.throttle
    assert classify_exception(e.SMTPDataError(550, "5.4.5 Daily user sending limit exceeded")).pause is (
        PauseKind.daily_quota
    )
    assert classify_exception(e.SMTPRecipientRefused(550, "5.1.1 no such user", "b@x")).kind is Kind.hard_bounce
    refused = e.SMTPRecipientsRefused(
        [e.SMTPRecipientRefused(451, "4.3.0 later", "a@x"), e.SMTPRecipientRefused(550, "5.1.1 gone", "b@x")]
    )
    assert classify_exception(refused).kind is Kind.hard_bounce
    # A dropped connection: before the body went out nothing was delivered; after it, nobody knows.
    dropped = e.SMTPServerDisconnected("Unexpected EOF received")
    assert classify_exception(dropped, body_sent=False).kind is Kind.retry
    assert classify_exception(dropped, body_sent=True).kind is Kind.unknown
    assert classify_exception(dropped).kind is Kind.unknown
    assert classify_exception(e.SMTPReadTimeoutError("Timed out"), body_sent=True).kind is Kind.unknown


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    rng = random.Random(7)
    delays = [next_attempt_delay(n, rng=rng) for n in range(1, 16)]
    assert timedelta(seconds=30) <= delays[0] <= timedelta(minutes=1)
    assert delays[4] > delays[0]
    assert all(d <= timedelta(hours=6) for d in delays)
    assert len({next_attempt_delay(5, rng=rng) for _ in range(10)}) > 1  # jitter spreads retries


def test_pauses_grow_and_a_daily_quota_waits_for_the_rolling_day() -> None:
    now = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    throttle = classify(421, "4.7.0 Try again later, closing connection.")
    steps = [pause_until(throttle, previous_pauses=n, now=now) - now for n in range(4)]
    assert steps == [timedelta(minutes=15), timedelta(hours=1), timedelta(hours=4), timedelta(hours=4)]
    unreachable = ReplyVerdict(Kind.pause_account, "connection refused", pause=PauseKind.unreachable)
    steps = [pause_until(unreachable, previous_pauses=n, now=now) - now for n in range(3)]
    assert steps == [timedelta(minutes=2), timedelta(minutes=15), timedelta(hours=1)]
    quota = classify(550, "5.4.5 Daily user sending quota exceeded.")
    frees = now + timedelta(hours=7, minutes=12)
    assert pause_until(quota, previous_pauses=0, now=now, day_window_frees_at=frees) == frees
    assert pause_until(quota, previous_pauses=0, now=now) == now + timedelta(hours=24)


# ---------------------------------------------------------------------------------------------
# Real servers: Postfix smtp-sink fault modes


SINK_CASES: list[tuple[list[str], Kind, PauseKind | None]] = [
    (["-r", "RCPT"], Kind.retry, None),  # 450 4.3.0
    (["-B", "550 5.1.1 User unknown", "-f", "RCPT"], Kind.hard_bounce, None),
    (["-f", "."], Kind.failed, None),  # 500 5.3.0 after the body
    (
        ["-B", "550 5.4.5 Daily user sending limit exceeded. - gsmtp", "-f", "."],
        Kind.pause_account,
        PauseKind.daily_quota,
    ),
    (["-b", "452 4.5.3 Too many recipients", "-r", "RCPT"], Kind.retry, None),
    (
        ["-b", "454 4.7.0 Too many login attempts, please try again later.", "-r", "MAIL"],
        Kind.pause_account,
        PauseKind.login_limit,
    ),
    (["-Q", "MAIL"], Kind.pause_account, PauseKind.throttle),  # 421 and disconnect
    (["-q", "MAIL"], Kind.retry, None),  # silent disconnect before anything was sent
    (["-q", "RCPT"], Kind.retry, None),
    (["-q", "."], Kind.unknown, None),  # silent disconnect after the body: maybe delivered
    (["-q", "DATA"], None, None),  # see below
    ([], Kind.sent, None),
]


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one command at a time"])
@pytest.mark.parametrize(
    ("options", "kind", "pause"), SINK_CASES, ids=lambda v: " ".join(v) if isinstance(v, list) else None
)
async def test_smtp_sink_fault_modes(
    options: list[str], kind: Kind | None, pause: PauseKind | None, pipelining: bool, smtp_sink: Any
) -> None:
    # smtp-sink stops offering PIPELINING when told to reject a command (-r/-f), but reads
    # pipelined commands in order all the same, so the pipelined path is forced on here.
    sink: SmtpSink = smtp_sink(*options)
    if kind is None:  # lost at DATA: pipelined, the body provably never left (no 354 yet): a retry;
        # command by command, aiosmtplib's DATA cannot tell before the body from after it: unknown.
        kind = Kind.retry if pipelining else Kind.unknown
    async with aiosmtplib.SMTP(hostname=HOST, port=sink.port, start_tls=False, timeout=5) as smtp:
        verdict = await send_one(smtp, "rep@example.test", "lead@example.test", MESSAGE, pipelining=pipelining)
    assert (verdict.kind, verdict.pause) == (kind, pause), verdict


async def test_pipelining_is_used_when_the_server_offers_it(smtp_sink: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    real = smtp_transaction.pipelined_transaction

    async def spy(smtp: aiosmtplib.SMTP, envelope: bytes, body: bytes, timeout: float | None) -> Any:
        calls.append(envelope)
        return await real(smtp, envelope, body, timeout)

    monkeypatch.setattr(smtp_transaction, "pipelined_transaction", spy)
    for options, offered in ([], True), (["-p"], False):
        sink: SmtpSink = smtp_sink(*options)
        async with aiosmtplib.SMTP(hostname=HOST, port=sink.port, start_tls=False, timeout=5) as smtp:
            calls.clear()
            for _ in range(3):  # and the connection stays in step from one message to the next
                assert (await send_one(smtp, "rep@example.test", "lead@example.test", MESSAGE)).kind is Kind.sent
            assert smtp.supports_extension("pipelining") is offered
        assert calls == (
            [b"MAIL FROM:<rep@example.test>\r\nRCPT TO:<lead@example.test>\r\nDATA\r\n"] * 3 if offered else []
        )


async def test_nothing_listening_is_a_retry(unused_port: int) -> None:
    with pytest.raises(aiosmtplib.SMTPConnectError) as raised:
        await aiosmtplib.SMTP(hostname=HOST, port=unused_port, start_tls=False, timeout=5).connect()
    assert classify_exception(raised.value).kind is Kind.retry


# ---------------------------------------------------------------------------------------------
# Real servers: aiosmtpd with per-recipient replies, one long-lived connection


RCPT_REPLIES = {
    "gone@example.test": "550 5.1.1 The email account that you tried to reach does not exist. - gsmtp",
    "full@example.test": "452 4.2.2 The email account that you tried to reach is over quota. - gsmtp",
    "grey@example.test": "451 4.7.1 Greylisted, please try again later",
    "fast@example.test": "450 4.2.1 The user you are trying to contact is receiving mail too quickly",
}
DATA_REPLIES = {
    "quota@example.test": "550 5.4.5 Daily user sending quota exceeded. - gsmtp",
    "dmarc@example.test": "550 5.7.26 Unauthenticated email from example.test is not accepted - gsmtp",
}


class ScriptedHandler:
    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address in RCPT_REPLIES:
            return RCPT_REPLIES[address]
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        for rcpt in envelope.rcpt_tos:
            if rcpt in DATA_REPLIES:
                return DATA_REPLIES[rcpt]
        return "250 2.0.0 OK queued"


@pytest.fixture(scope="module")
def scripted_smtp() -> Iterator[int]:
    from tests.mail_servers import free_port

    controller = Controller(ScriptedHandler(), hostname=HOST, port=free_port())
    controller.start()
    try:
        yield controller.port
    finally:
        controller.stop()


@pytest.mark.parametrize("pipelining", [True, None], ids=["pipelined", "as offered (not)"])
@pytest.mark.parametrize(
    ("recipient", "kind", "pause"),
    [
        ("ok@example.test", Kind.sent, None),
        ("gone@example.test", Kind.hard_bounce, None),
        ("full@example.test", Kind.retry, None),
        ("grey@example.test", Kind.retry, None),
        ("fast@example.test", Kind.retry, None),
        ("quota@example.test", Kind.pause_account, PauseKind.daily_quota),
        ("dmarc@example.test", Kind.failed, None),
    ],
)
async def test_per_recipient_replies_from_aiosmtpd(
    scripted_smtp: int, recipient: str, kind: Kind, pause: PauseKind | None, pipelining: bool | None
) -> None:
    # aiosmtpd does not offer PIPELINING, but reads commands in order: forced on, it shows the
    # pipelined path's handling of every reply on a server that answers per recipient.
    async with aiosmtplib.SMTP(hostname=HOST, port=scripted_smtp, start_tls=False, timeout=5) as smtp:
        verdict: ReplyVerdict = await send_one(smtp, "rep@example.test", recipient, MESSAGE, pipelining=pipelining)
        assert (verdict.kind, verdict.pause) == (kind, pause), verdict
        # The connection stays usable after a refusal: the next message on it goes through.
        again = await send_one(smtp, "rep@example.test", "ok@example.test", MESSAGE, pipelining=pipelining)
        assert again.kind is Kind.sent
