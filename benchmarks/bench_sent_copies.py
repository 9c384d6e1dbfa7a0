"""Sent copies per second into a real Dovecot: one IMAP session per copy vs one per batch.

    .venv/bin/python benchmarks/bench_sent_copies.py [--copies 1000] [--batch 40] [--runs 3]

Both ways go through the mailer's own code (``bulkmail.mailer.sent_copy``): ``append_sent_copy``
opens a session for one copy (LOGIN, CAPABILITY, APPEND, LOGOUT: how every copy was made before),
``SentCopySession`` keeps one login for a batch (a ``SentCopy`` message carries up to
max_connections x 4 recipients: 40 for an account of 10 connections). Copies are made one after
the other, as one consumer does; the two ways alternate run by run so the machine's drift hits
both alike. Prints copies/s per run and the medians. IMAP only: the ledger's writes are not in it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bulkmail.mailer.sent_copy import CopyState, ImapSettings, SentCopySession, append_sent_copy  # noqa: E402
from tests.mail_servers import server_dir, start_dovecot, stop_process  # noqa: E402

SENT_AT = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)


def message() -> tuple[bytes, str]:
    """About the size of make chaos's message (its template: twenty short paragraphs)."""
    message_id = f"<{uuid.uuid4().hex}@bench.example>"
    msg = EmailMessage()
    msg["From"] = "Alice <alice@chaos.example>"
    msg["To"] = "lead@chaos.example"
    msg["Subject"] = "Hello Lead Corp"
    msg["Message-ID"] = message_id
    msg.set_content("Hi Lead\n" * 20)
    msg.add_alternative("<p>Hi Lead</p>" * 20, subtype="html")
    return msg.as_bytes(policy=SMTP), message_id


async def one_session_per_copy(settings: ImapSettings, messages: list[tuple[bytes, str]], _batch: int) -> None:
    cache: dict[str, str] = {}
    for raw, message_id in messages:
        outcome = await append_sent_copy(settings, raw, message_id, SENT_AT, cache)
        assert outcome.state is CopyState.appended, outcome.detail


async def one_session_per_batch(settings: ImapSettings, messages: list[tuple[bytes, str]], batch: int) -> None:
    cache: dict[str, str] = {}
    for i in range(0, len(messages), batch):
        async with SentCopySession(settings, cache) as session:
            for raw, message_id in messages[i : i + batch]:
                outcome = await session.append(raw, message_id, SENT_AT)
                assert outcome.state is CopyState.appended, outcome.detail


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=40)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    directory = server_dir("bench-sent-copies")
    dovecot = start_dovecot(directory)
    settings = ImapSettings(host="127.0.0.1", port=dovecot.port, username="alice", password="alicepw", security="none")
    ways = {"a session per copy": one_session_per_copy, f"a session per {args.batch}": one_session_per_batch}
    rates: dict[str, list[float]] = {name: [] for name in ways}
    try:
        print(f"{args.copies} copies per run, load average {os.getloadavg()[0]:.2f} at the start")
        for run in range(args.runs):
            for name, way in ways.items():
                messages = [message() for _ in range(args.copies)]
                started = time.perf_counter()
                await way(settings, messages, args.batch)
                rate = args.copies / (time.perf_counter() - started)
                rates[name].append(rate)
                print(f"run {run + 1}: {name:<20} {rate:8.1f} copies/s  (load {os.getloadavg()[0]:.2f})")
        base, batched = (statistics.median(r) for r in rates.values())
        print(
            f"medians: {base:.1f} vs {batched:.1f} copies/s, x{batched / base:.1f}; "
            f"load average {os.getloadavg()[0]:.2f} at the end"
        )
    finally:
        stop_process(dovecot.proc)
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
