"""One SMTP transaction in two round trips, for servers that offer PIPELINING (RFC 2920).

aiosmtplib sends a command and waits for its reply before the next: MAIL, RCPT, DATA and the
body make four socket writes and four wake-ups per message, which was a quarter of a mailer's
time. With PIPELINING the client may send MAIL, RCPT and DATA together and read the three
replies, then send the body. aiosmtplib has no pipelining, and its protocol object holds one
reply at a time (a second reply arriving in the same packet would sit unread), so for the
length of one transaction the connection's transport is lent to :class:`_Replies`, which
queues every reply, and then handed back. Connecting, TLS, login and EHLO stay aiosmtplib's.

The outcome is what ``smtp_transaction.send_one`` reports, with one gain: a connection lost before the
354 reply is known to have carried no body, so it is a retry, never ``unknown``.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from typing import cast

import aiosmtplib
from aiosmtplib.response import SMTPResponse

# Larger than any real reply, and a bound on what a broken server can make us buffer.
MAX_REPLY_BYTES = 32 * 1024
_LINE_END = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"(?m)^\.")


class ServerFailure(Exception):
    """The connection was lost, a reply did not come in time, or it made no sense.

    ``body_sent`` tells whether the message body had gone out when it happened.
    """

    def __init__(self, cause: BaseException, *, body_sent: bool = False) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.body_sent = body_sent


class EnvelopeRefused(Exception):
    """MAIL, RCPT or DATA got a reply other than the one that lets the transaction go on."""

    def __init__(self, stage: str, reply: SMTPResponse) -> None:
        super().__init__(f"{stage}: {reply.code} {reply.message}")
        self.stage = stage
        self.reply = reply


def wire_body(message: bytes) -> bytes:
    """The message as DATA carries it: CRLF line ends, leading dots doubled, and the end mark.

    Our own messages are built with CRLF and never need the regular expressions (counting is
    cheaper than aiosmtplib's rewrite of every message); anything else is normalised.
    """
    n_lf = message.count(b"\n")
    if n_lf != message.count(b"\r\n") or n_lf != message.count(b"\r"):
        message = _LINE_END.sub(b"\r\n", message)
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    if message.startswith(b".") or b"\n." in message:
        message = _LEADING_DOT.sub(b"..", message)
    return message + b".\r\n"


async def pipelined_transaction(
    smtp: aiosmtplib.SMTP, envelope: bytes, body: bytes, timeout: float | None
) -> SMTPResponse:
    """Send ``envelope`` (the MAIL, RCPT and DATA lines), then ``body`` if every reply allows it.

    Returns the reply to the body. Raises :class:`EnvelopeRefused` with the first refusing
    reply (nothing was sent), and :class:`ServerFailure` when the server is lost, mute or
    garbled; the connection is then closed, as its replies can no longer be paired with commands.
    """
    protocol = smtp.protocol
    if protocol is None or smtp.transport is None or smtp.transport.is_closing():
        raise ServerFailure(aiosmtplib.SMTPServerDisconnected("Server not connected"))
    transport = cast(asyncio.WriteTransport, smtp.transport)
    replies = _Replies(protocol)
    transport.set_protocol(replies)
    body_sent = False
    in_step = False  # every reply paired with its command: the connection can carry on
    try:
        transport.write(envelope)
        try:
            async with asyncio.timeout(timeout):
                await _envelope_replies(replies, transport)
        except EnvelopeRefused:
            in_step = True
            raise
        transport.write(body)
        body_sent = True
        async with asyncio.timeout(timeout):
            reply = await replies.next()
        in_step = True
        return reply
    except TimeoutError as exc:
        timed_out = aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response")
        raise ServerFailure(timed_out, body_sent=body_sent) from exc
    except ServerFailure as failure:
        failure.body_sent = body_sent
        raise
    finally:
        if not transport.is_closing():
            transport.set_protocol(protocol)
        if not in_step:
            # Lost, mute, garbled or cancelled midway: a late reply could be taken for the next
            # message's, so this connection goes.
            smtp.close()


async def _envelope_replies(replies: _Replies, transport: asyncio.WriteTransport) -> None:
    """Read the replies to MAIL, RCPT and DATA; raise the first refusal among them."""
    refused: EnvelopeRefused | None = None
    try:
        for stage, expected in (("mail", (250,)), ("rcpt", (250, 251)), ("data", (354,))):
            reply = await replies.next()
            if refused is None and reply.code not in expected:
                refused = EnvelopeRefused(stage, reply)
            if stage == "data" and refused is not None and reply.code == 354:
                # DATA was accepted although MAIL or RCPT was not (RFC 2920 §3.1): end it empty.
                transport.write(b".\r\n")
                await replies.next()
    except ServerFailure:
        if refused is not None:  # a refusal before the server went away explains it best
            raise refused from None
        raise
    if refused is not None:
        raise refused


class _Replies(asyncio.Protocol):
    """Queues every reply the server sends; stands in for aiosmtplib's protocol for one transaction."""

    def __init__(self, smtp_protocol: asyncio.BaseProtocol) -> None:
        self._smtp_protocol = smtp_protocol
        self._buffer = bytearray()
        self._replies: deque[SMTPResponse] = deque()
        self._failure: ServerFailure | None = None
        self._waiter: asyncio.Future[None] | None = None

    async def next(self) -> SMTPResponse:
        while not self._replies:
            if self._failure is not None:
                raise self._failure
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._replies.popleft()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            while (reply := _take_reply(self._buffer)) is not None:
                self._replies.append(reply)
        except aiosmtplib.SMTPResponseException as exc:
            self._fail(exc)
            return
        if len(self._buffer) > MAX_REPLY_BYTES:
            self._fail(aiosmtplib.SMTPResponseException(-1, "Response too long"))
            return
        self._wake()

    def eof_received(self) -> bool:
        self._fail(aiosmtplib.SMTPServerDisconnected("Unexpected EOF received"))
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        lost = aiosmtplib.SMTPServerDisconnected("Connection lost")
        lost.__cause__ = exc
        self._fail(lost)
        # aiosmtplib's own protocol must learn it too: the pool asks it whether the client is connected.
        self._smtp_protocol.connection_lost(exc)

    # Flow control belongs to the connection, not to this stand-in.
    def pause_writing(self) -> None:
        self._smtp_protocol.pause_writing()

    def resume_writing(self) -> None:
        self._smtp_protocol.resume_writing()

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = ServerFailure(exc)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


def _take_reply(buffer: bytearray) -> SMTPResponse | None:
    """Remove and return the first complete (possibly multi-line) reply in ``buffer``, if any."""
    offset = 0
    lines: list[bytes] = []
    while (end := buffer.find(b"\n", offset)) != -1:
        line = bytes(buffer[offset : end + 1])
        offset = end + 1
        lines.append(line[4:].strip(b" \t\r\n"))
        if line[3:4] != b"-":
            try:
                code = int(line[:3])
            except ValueError:
                text = line.decode("utf-8", errors="replace").strip()
                raise aiosmtplib.SMTPResponseException(-1, f"Malformed SMTP response line: {text}") from None
            del buffer[:offset]
            return SMTPResponse(code, b"\n".join(lines).decode("utf-8", "surrogateescape"))
    return None
