"""Reading what arrives, without a server: the headers' triage and the reports' contents."""

from __future__ import annotations

import pytest

from bulkmail.mailer.inbox_sync import parse_fetch
from bulkmail.mailer.incoming import Triage, parse_headers, read_bounce, read_complaint, triage
from tests.feedback import samples

MID = "<bulk-5-17.0123456789abcdef@sender.test>"
RCPT = "Bob@Receiver.test"


@pytest.mark.parametrize("name", list(samples.BOUNCE_FORMATS))
def test_bounce_formats(name: str) -> None:
    build, kind = samples.BOUNCE_FORMATS[name]
    data = build(RCPT, MID, 1)
    assert triage(parse_headers(data)) == Triage.bounce
    [found] = read_bounce(data, "imap:k")
    assert (found.kind.value, found.email, found.message_ids) == (kind, "bob@receiver.test", (MID,))
    assert found.dedup_key == "imap:k:bob@receiver.test"


def test_an_arf_report_names_the_complainant_and_our_message() -> None:
    data = samples.arf_report(RCPT, MID, 1)
    assert triage(parse_headers(data)) == Triage.complaint
    found = read_complaint(data, "imap:k")
    assert found is not None
    assert (found.kind.value, found.email, found.message_ids) == ("complaint", "bob@receiver.test", (MID,))
    assert "abuse" in found.detail


def test_replies_auto_replies_and_the_users_own_mail() -> None:
    assert triage(parse_headers(samples.reply(RCPT, MID, 1))) == Triage.reply
    assert triage(parse_headers(samples.out_of_office(RCPT, MID, 1))) == Triage.auto_reply
    assert triage(parse_headers(samples.ordinary(1))) == Triage.other
    # A reply to something that is not ours (or an id someone made up in another shape) is mail.
    other = samples.reply(RCPT, "<CAF=abc@mail.gmail.com>", 1)
    assert triage(parse_headers(other)) == Triage.other
    # An out-of-office that names none of ours is the user's business too.
    assert triage(parse_headers(samples.out_of_office(RCPT, "<x@y>", 1))) == Triage.other


def test_auto_reply_signals_without_a_telling_subject() -> None:
    base = samples.reply(RCPT, MID, 1)
    for header in (b"Auto-Submitted: auto-replied", b"X-Autoreply: yes", b"Precedence: auto_reply"):
        data = base.replace(b"Content-Type:", header + b"\r\nContent-Type:", 1)
        assert triage(parse_headers(data)) == Triage.auto_reply, header
    assert triage(parse_headers(base.replace(b"Content-Type:", b"Auto-Submitted: no\r\nContent-Type:", 1))) == (
        Triage.reply
    )


def test_fetch_answers_are_parsed_with_their_literals() -> None:
    lines = [
        b"2 FETCH (UID 7 FLAGS (\\Seen $X) RFC822.SIZE 102 BODY[HEADER.FIELDS (SUBJECT)] {13}",
        bytearray(b"Subject: hi\r\n"),
        b")",
        b"3 FETCH (UID 9 FLAGS ())",
        b"Fetch completed.",
    ]
    [a, b] = parse_fetch(lines)
    assert (a.uid, a.flags, a.size, a.data) == (7, {"\\Seen", "$X"}, 102, b"Subject: hi\r\n")
    assert (b.uid, b.flags, b.data) == (9, set(), b"")
