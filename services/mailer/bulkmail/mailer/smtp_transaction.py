"""One SMTP transaction on a connected client: MAIL, RCPT, DATA, and what the reply means.

Servers that offer PIPELINING get the envelope in one write (``pipelining``); others get the
commands one by one. Either way the transaction knows whether the body had gone out, which tells
a connection lost before it (nothing delivered: retry) from one lost after it (unknown).
"""

from __future__ import annotations

import re

import aiosmtplib

from bulkmail.mailer.pipelining import EnvelopeRefused, ServerFailure, pipelined_transaction, wire_body
from bulkmail.mailer.replies import ReplyVerdict, Stage, classify, classify_exception


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
