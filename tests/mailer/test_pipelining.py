"""Pipelined SMTP transactions: the wire format, reply parsing, and a server lost or mute midway."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import aiosmtplib
import pytest

from bulkmail.mailer.pipelining import ServerFailure, _Replies, wire_body
from bulkmail.mailer.replies import Kind
from bulkmail.mailer.smtp_transaction import send_one

if TYPE_CHECKING:
    from tests.mail_servers import CuttingProxy, SmtpSink

pytest_plugins = ["tests.mail_servers"]

HOST = "127.0.0.1"
MESSAGE = b"From: rep@example.test\r\nTo: lead@example.test\r\nSubject: hi\r\n\r\nHello\r\n"


@pytest.mark.parametrize(
    ("message", "wire"),
    [
        (b"A: b\r\n\r\nbody\r\n", b"A: b\r\n\r\nbody\r\n.\r\n"),  # ours: already right, left alone
        (b"A: b\n\nbody", b"A: b\r\n\r\nbody\r\n.\r\n"),  # bare LF, no final line end
        (b"A: b\r\n\r\none\rtwo\r\n", b"A: b\r\n\r\none\r\ntwo\r\n.\r\n"),  # a lone CR
        (b".first\r\n\r\n.\r\n..x\r\n", b"..first\r\n\r\n..\r\n...x\r\n.\r\n"),  # leading dots doubled
    ],
)
def test_wire_body(message: bytes, wire: bytes) -> None:
    assert wire_body(message) == wire


async def test_replies_split_anywhere_and_multiline_are_queued_in_order() -> None:
    replies = _Replies(asyncio.Protocol())
    stream = b"250-first line\r\n250 second line\r\n250 2.1.5 ok\r\n354 go ahead\r\n"
    for i in range(len(stream)):  # one byte at a time: a reply is only ever taken whole
        replies.data_received(stream[i : i + 1])
    got = [await replies.next() for _ in range(3)]
    assert [(r.code, r.message) for r in got] == [
        (250, "first line\nsecond line"),
        (250, "2.1.5 ok"),
        (354, "go ahead"),
    ]


async def test_a_garbled_reply_is_a_server_failure() -> None:
    replies = _Replies(asyncio.Protocol())
    replies.data_received(b"hello there\r\n")
    with pytest.raises(ServerFailure, match="Malformed"):
        await replies.next()


async def _send_through(proxy: CuttingProxy, timeout: float = 5) -> tuple[Any, aiosmtplib.SMTP]:
    smtp = aiosmtplib.SMTP(hostname=HOST, port=proxy.port, start_tls=False, timeout=timeout)
    await smtp.connect()
    verdict = await send_one(smtp, "rep@example.test", "lead@example.test", MESSAGE)
    return verdict, smtp


@pytest.mark.parametrize(
    ("marker", "before_server", "kind"),
    [
        (b"MAIL FROM", True, Kind.retry),  # the server saw nothing
        (b"DATA\r\n", False, Kind.retry),  # lost before the 354 reached us: the body never left
        (b"\r\n.\r\n", False, Kind.unknown),  # the server took the message; we never heard
    ],
)
async def test_a_connection_lost_midway(
    smtp_sink: Any, cutting_proxy: Any, marker: bytes, before_server: bool, kind: Kind
) -> None:
    sink: SmtpSink = smtp_sink()
    proxy: CuttingProxy = await cutting_proxy(sink.port)
    proxy.cut_when_client_sends(marker, before_server=before_server)
    verdict, smtp = await _send_through(proxy)
    assert verdict.kind is kind, verdict
    assert not smtp.is_connected  # the pool will not hand out a dead connection


@pytest.mark.parametrize(("marker", "kind"), [(b"DATA\r\n", Kind.retry), (b"\r\n.\r\n", Kind.unknown)])
async def test_a_mute_server_times_out_and_the_connection_is_dropped(
    smtp_sink: Any, cutting_proxy: Any, marker: bytes, kind: Kind
) -> None:
    sink: SmtpSink = smtp_sink()
    proxy: CuttingProxy = await cutting_proxy(sink.port)
    proxy.stall_when_client_sends(marker)
    verdict, smtp = await _send_through(proxy, timeout=0.5)
    assert verdict.kind is kind, verdict
    assert "Timed out" in verdict.reason
    # Replies may still arrive late; on this connection they could be taken for the next message's.
    assert not smtp.is_connected


async def test_a_transaction_cancelled_midway_drops_the_connection(smtp_sink: Any, cutting_proxy: Any) -> None:
    sink: SmtpSink = smtp_sink()
    proxy: CuttingProxy = await cutting_proxy(sink.port)
    proxy.stall_when_client_sends(b"DATA\r\n")
    smtp = aiosmtplib.SMTP(hostname=HOST, port=proxy.port, start_tls=False, timeout=30)
    await smtp.connect()
    task = asyncio.create_task(send_one(smtp, "rep@example.test", "lead@example.test", MESSAGE))
    await asyncio.sleep(0.5)  # waiting for the replies the stalled server never sends
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # A late reply must not be read as the next message's: the connection is not reused.
    assert not smtp.is_connected
