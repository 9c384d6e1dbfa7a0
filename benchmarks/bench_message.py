"""Microseconds per personalised message: stdlib builders vs our MessageSkeleton.

    .venv/bin/python benchmarks/bench_message.py [--messages N] [--runs R]

Builds the same ~2.7 KB message (text + HTML, a non-ASCII name, List-Unsubscribe) three ways:
(a) `EmailMessage` with the default policy + `as_bytes(policy=SMTP)` (CRLF, what a mailer would
send), (b) compat32 `MIMEMultipart` + `as_bytes()`, (c) `MessageSkeleton.build`. Also the
template render that precedes it. Runs are interleaved (a, b, c, a, b, c, ...) so drift in the
machine's speed hits all three alike; the table shows each one's median.
"""

from __future__ import annotations

import argparse
import email.policy
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, formataddr

from bulkmail.mailer.message import MessageSkeleton, make_message_id
from bulkmail.shared.templating import ContactData, LeadData, RenderContext, UserData, compile_template

SENDER = ("Charles Babbage", "charles@engines.example")
UNSUBSCRIBE = "https://mail.engines.example/unsubscribe/5f1c0a9e2b7d4c3a"
BODY = (
    "<p>Hi {{ contact.first_name|default:'there' }},</p>"
    "<p>I noticed {{ lead.display_name }} has been growing quickly. We help teams like yours "
    "automate the boring parts of their sales process, so reps spend their day selling.</p>"
    + "<p>Our customers typically see a 20% lift in reply rates in the first month. Here is how: "
    "every follow-up goes out on time, every lead gets a personal note, nothing slips.</p>"
    * 4
    + '<p>Would a short call next week work? <a href="https://engines.example/book">Pick a time</a>.</p>'
    "<p>Best,<br>{{ user.first_name }} {{ user.last_name }}<br>{{ user.phone }}</p>"
)
TEMPLATE = compile_template("Quick question for {{ lead.display_name }}", BODY)
CONTEXT = RenderContext(
    contact=ContactData(name="Zoë Ødegård", email="zoe@customer.example"),
    lead=LeadData(name="Fjord Analytics AS"),
    user=UserData(first_name="Charles", last_name="Babbage", phone="+44 20 7946 0000"),
)
RENDERED = TEMPLATE.render(CONTEXT)
DATE = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)
MESSAGE_ID = make_message_id(1234, 56789, "engines.example", b"secret")
SKELETON = MessageSkeleton(sender_address=SENDER[1], sender_name=SENDER[0])


def with_email_message() -> bytes:
    msg = EmailMessage()
    msg["From"] = formataddr(SENDER)
    msg["To"] = formataddr((CONTEXT.contact.name, CONTEXT.contact.email))
    msg["Subject"] = RENDERED.subject
    msg["Date"] = format_datetime(DATE)
    msg["Message-ID"] = MESSAGE_ID
    msg["List-Unsubscribe"] = f"<{UNSUBSCRIBE}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(RENDERED.text)
    msg.add_alternative(RENDERED.html, subtype="html")
    return msg.as_bytes(policy=email.policy.SMTP)


def with_compat32() -> bytes:
    msg = MIMEMultipart("alternative")
    msg["From"] = formataddr(SENDER)
    msg["To"] = formataddr((CONTEXT.contact.name, CONTEXT.contact.email))
    msg["Subject"] = RENDERED.subject
    msg["Date"] = format_datetime(DATE)
    msg["Message-ID"] = MESSAGE_ID
    msg["List-Unsubscribe"] = f"<{UNSUBSCRIBE}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.attach(MIMEText(RENDERED.text, "plain", "utf-8"))
    msg.attach(MIMEText(RENDERED.html, "html", "utf-8"))
    return msg.as_bytes()


def with_skeleton() -> bytes:
    return SKELETON.build(
        to_address=CONTEXT.contact.email,
        to_name=CONTEXT.contact.name,
        subject=RENDERED.subject,
        message_id=MESSAGE_ID,
        text=RENDERED.text,
        html=RENDERED.html,
        date=DATE,
        unsubscribe_url=UNSUBSCRIBE,
    )


def render() -> object:
    return TEMPLATE.render(CONTEXT)


def per_call_us(fn: Callable[[], object], count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        fn()
    return (time.perf_counter() - start) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages per run and builder")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    cases: dict[str, Callable[[], object]] = {
        "(a) EmailMessage + as_bytes(SMTP)": with_email_message,
        "(b) compat32 MIMEMultipart": with_compat32,
        "(c) MessageSkeleton.build": with_skeleton,
        "template render (subject+html+text)": render,
    }
    for fn in cases.values():  # warm up caches and imports
        per_call_us(fn, 50)
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.runs):
        for name, fn in cases.items():
            samples[name].append(per_call_us(fn, args.messages))

    size = len(with_skeleton())
    ours = statistics.median(samples["(c) MessageSkeleton.build"])
    print(f"message ~{size} bytes; {args.runs} interleaved runs x {args.messages} messages; medians\n")
    print(f"| {'builder':<38} | {'µs/message':>10} | {'msg/s/core':>10} | {'× skeleton':>10} |")
    print(f"|{'-' * 40}|{'-' * 11}:|{'-' * 11}:|{'-' * 11}:|")
    for name, values in samples.items():
        median = statistics.median(values)
        print(f"| {name:<38} | {median:>10.1f} | {1e6 / median:>10,.0f} | {median / ours:>10.1f} |")


if __name__ == "__main__":
    main()
