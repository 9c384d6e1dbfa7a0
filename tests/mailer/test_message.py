"""The fast message builder: what a receiving mail client decodes is exactly what we rendered."""

from __future__ import annotations

import email
import email.policy
import re
import socket
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulkmail.mailer.message import HeaderValueError, MessageSkeleton, format_address, make_message_id

MESSAGE_ID = make_message_id(12, 345, "example.com", b"secret")


def build(skeleton: MessageSkeleton | None = None, **overrides: Any) -> bytes:
    skeleton = skeleton or MessageSkeleton(sender_address="ada@example.com", sender_name="Ada Lovelace")
    fields: dict[str, object] = {
        "to_address": "bob@example.org",
        "to_name": "Bob Builder",
        "subject": "Hello Bob",
        "message_id": MESSAGE_ID,
        "text": "Hi Bob,\nsee you.",
        "html": "<p>Hi Bob,</p><p>see you.</p>",
        "date": datetime(2026, 11, 28, 9, 30, tzinfo=UTC),
        "unsubscribe_url": "https://mail.example.com/unsubscribe/tok123",
    } | overrides
    return skeleton.build(**fields)  # type: ignore[arg-type]


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def bodies(message: EmailMessage) -> tuple[str, str]:
    plain, html = list(message.iter_parts())
    assert plain.get_content_type() == "text/plain" and html.get_content_type() == "text/html"
    return unlf(plain.get_content()), unlf(html.get_content())


def unlf(text: str) -> str:
    return re.sub(r"\r\n|\r", "\n", text)


def assert_wire_format(raw: bytes) -> None:
    assert b"\n" not in raw.replace(b"\r\n", b""), "bare LF"
    assert b"\r" not in raw.replace(b"\r\n", b""), "bare CR"
    assert raw.isascii(), "8-bit octets in a 7-bit message"
    head, _, _ = raw.partition(b"\r\n\r\n")
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert all(len(line) <= 78 for line in head.split(b"\r\n")), head


def test_headers_decode_to_the_names_and_subject_given() -> None:
    skeleton = MessageSkeleton(sender_address="ada@example.com", sender_name="Ada Lövelace, CEO")
    raw = build(skeleton, to_name='Zoë "Z" Ødegård', subject="Grüße aus Köln 🎉")
    message = parse(raw)
    assert message["From"].addresses[0].display_name == "Ada Lövelace, CEO"
    assert message["From"].addresses[0].addr_spec == "ada@example.com"
    assert message["To"].addresses[0].display_name == 'Zoë "Z" Ødegård'
    assert message["To"].addresses[0].addr_spec == "bob@example.org"
    assert message["Subject"] == "Grüße aus Köln 🎉"
    assert message["Message-ID"] == MESSAGE_ID
    assert message["Date"].datetime == datetime(2026, 11, 28, 9, 30, tzinfo=UTC)
    assert message["MIME-Version"] == "1.0"
    assert message.get_content_type() == "multipart/alternative"
    assert_wire_format(raw)


def test_one_click_unsubscribe_headers() -> None:
    message = parse(build(unsubscribe_mailto="unsubscribe@example.com"))
    assert message["List-Unsubscribe"] == (
        "<https://mail.example.com/unsubscribe/tok123>, <mailto:unsubscribe@example.com>"
    )
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_no_one_click_header_without_an_https_url() -> None:
    message = parse(build(unsubscribe_url=None, unsubscribe_mailto="u@example.com"))
    assert message["List-Unsubscribe"] == "<mailto:u@example.com>"
    assert message["List-Unsubscribe-Post"] is None
    assert parse(build(unsubscribe_url=None))["List-Unsubscribe"] is None


def test_bodies_round_trip_with_dots_from_lines_long_lines_and_non_ascii() -> None:
    text = ".\n.leading dot\nFrom the start\n" + "long " * 300 + "\ntrailing space \nПривет, мир\n\tTab"
    html = "<p>" + "x" * 2000 + "</p>\nFrom here\n.\n<p>日本語のテキスト</p>"
    raw = build(text=text, html=html)
    assert_wire_format(raw)
    assert bodies(parse(raw)) == (text, html)
    assert b"\r\nFrom " not in raw, "a 'From ' line would be mangled by mbox readers"


def test_a_long_body_on_one_line_is_broken_with_crlf() -> None:
    # A template's HTML is often one long line; its soft line breaks must be CRLF too.
    html = "<p>We help teams like Acme send better email.</p>" * 40
    raw = build(text="Hi", html=html)
    assert_wire_format(raw)
    assert bodies(parse(raw)) == ("Hi", html)


def test_mostly_non_ascii_bodies_use_base64_and_ascii_ones_quoted_printable() -> None:
    raw = build(text="plain ascii", html="<p>" + "日本語" * 200 + "</p>")
    plain, html = list(parse(raw).iter_parts())
    assert plain["Content-Transfer-Encoding"] == "quoted-printable"
    assert html["Content-Transfer-Encoding"] == "base64"
    assert unlf(html.get_content()) == "<p>" + "日本語" * 200 + "</p>"


def test_long_ascii_subject_is_folded_and_unfolds_to_itself() -> None:
    subject = " ".join(f"word{i}" for i in range(60))
    raw = build(subject=subject)
    assert_wire_format(raw)
    assert parse(raw)["Subject"] == subject


def test_subject_that_looks_like_an_encoded_word_stays_literal() -> None:
    subject = "=?utf-8?q?not_encoded?= really"
    assert parse(build(subject=subject))["Subject"] == subject


def test_header_injection_is_impossible() -> None:
    raw = build(subject="Hi\r\nBcc: victim@example.com", to_name="Bob\r\nBcc: x@example.com")
    message = parse(raw)
    assert message["Bcc"] is None
    header_lines = raw.split(b"\r\n\r\n")[0].split(b"\r\n")
    assert not [line for line in header_lines if line.lower().startswith(b"bcc")]


@pytest.mark.parametrize(
    "bad",
    [
        {"to_address": "no-at-sign"},
        {"to_address": "a b@example.com"},
        {"to_address": "bob@example.org>\r\nBcc: x@y.z"},
        {"message_id": "no-brackets@example.com"},
        {"message_id": "<a b@example.com>"},
        {"unsubscribe_url": "https://x.example/a b"},
        {"unsubscribe_url": "https://x.example/a>\r\nX: y"},
    ],
)
def test_unsafe_values_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(HeaderValueError):
        build(**bad)


def test_long_non_ascii_name_keeps_its_words() -> None:
    name = "Zoë Ødegård-Müllerstraßenbauerin von und zu Königsberg"
    raw = build(to_name=name)
    assert_wire_format(raw)
    assert parse(raw)["To"].addresses[0].display_name == name


def test_international_domain_is_sent_as_punycode() -> None:
    message = parse(build(to_address="bob@bücher.example"))
    assert message["To"].addresses[0].domain == "xn--bcher-kva.example"


def test_message_id_is_fixed_per_recipient_and_secret_dependent() -> None:
    first = make_message_id(12, 345, "example.com", b"secret")
    assert first == make_message_id(12, 345, "example.com", b"secret")
    assert re.fullmatch(r"<bulk-12-345\.[0-9a-f]{16}@example\.com>", first)
    assert first != make_message_id(12, 346, "example.com", b"secret")
    assert first != make_message_id(12, 345, "example.com", b"other")


def test_format_address() -> None:
    assert format_address("a@example.com", "Ada Lovelace") == "Ada Lovelace <a@example.com>"
    assert format_address("a@example.com") == "a@example.com"
    assert format_address("a@example.com", "Lovelace, Ada") == '"Lovelace, Ada" <a@example.com>'


def test_boundary_never_appears_in_the_bodies() -> None:
    skeleton = MessageSkeleton(sender_address="ada@example.com")
    hostile = f"--{skeleton.boundary}\n--{skeleton.boundary}--"
    raw = build(skeleton, text=hostile, html=hostile)
    assert bodies(parse(raw)) == (hostile, hostile)


# Subjects and names a user could type: any Unicode except surrogates and line breaks (which a
# rendered subject never contains: templating folds them into spaces).
header_text = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n\x00"), min_size=1, max_size=200
)
body_text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=3000)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(subject=header_text, name=header_text, text=body_text, html=body_text)
def test_any_unicode_round_trips(subject: str, name: str, text: str, html: str) -> None:
    raw = build(subject=subject, to_name=name, text=text, html=html)
    assert_wire_format(raw)
    message = parse(raw)
    assert message.defects == []
    assert message["Subject"] == subject
    expected_name = " ".join(name.split())
    display_name = message["To"].addresses[0].display_name
    if len(expected_name.encode()) <= 45:
        assert display_name == expected_name
    else:
        # Python's parser puts a space between adjacent encoded-words (RFC 2047 says drop it).
        assert display_name.replace(" ", "") == expected_name.replace(" ", "")
    assert message["To"].addresses[0].addr_spec == "bob@example.org"
    assert bodies(message) == (unlf(text), unlf(html))


# ---------------------------------------------------------------------------------------------
# Through a real SMTP server


class Capture:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        self.messages.append((str(envelope.mail_from), list(envelope.rcpt_tos), envelope.content))
        return "250 2.0.0 queued"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_an_smtp_server_accepts_the_message_and_receives_it_intact() -> None:
    capture = Capture()
    controller = Controller(capture, hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        text = "Hi Zoë,\n.\n..two dots\nFrom me\n" + "y" * 1200
        html = "<p>Hi Zoë</p>\n.\n" + "<b>z</b>" * 300
        raw = build(to_name="Zoë", subject="Grüße", text=text, html=html)
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=controller.port, start_tls=False) as smtp:
            errors, reply = await smtp.sendmail("ada@example.com", ["bob@example.org"], raw)
        assert errors == {} and reply.startswith("2.0.0 queued")
    finally:
        controller.stop()
    [(sender, recipients, received)] = capture.messages
    assert (sender, recipients) == ("ada@example.com", ["bob@example.org"])
    message = parse(received)
    assert message["Subject"] == "Grüße"
    assert message["Message-ID"] == MESSAGE_ID
    assert bodies(message) == (text, html)
