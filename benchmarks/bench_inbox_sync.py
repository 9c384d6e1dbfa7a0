"""Messages per second the inbox sync gets through on a real Dovecot (loopback), and what it fetched.

    .venv/bin/python benchmarks/bench_inbox_sync.py [--ordinary N] [--bounces M]

An INBOX of N ordinary messages (the user's own mail, ~2 KB each) and M bounces naming sent
recipients is read by a first sync (one follower, SQLite in a temporary directory): headers for
all, bodies only for the bounces. Then one more message and an incremental catch-up. Needs the
Debian package dovecot-imapd (the test suite's throwaway Dovecot is used).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bulkmail.mailer.inbox_sync import AccountFollower
from bulkmail.mailer.sent_copy import ImapSettings
from bulkmail.shared.db import Database
from bulkmail.shared.migrate import upgrade
from bulkmail.shared.settings import Settings
from tests.feedback import samples
from tests.feedback.helpers import Mailbox, make_account, make_sent_bulk
from tests.mail_servers import server_dir, start_dovecot

FILLER = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 30


def settings_in(data: Path) -> Settings:
    return Settings(
        database_url=f"sqlite+aiosqlite:///{data / 'b.db'}",
        data_dir=data,
        secret_key="u3Vq0fK9xU1M2a6bq8d6u0xk7zH2r3s4t5v6w7x8y9A=",
    )


async def main(settings: Settings, n_ordinary: int, n_bounces: int) -> None:
    database = Database(settings)
    directory = server_dir("bench-inbox")
    dovecot = start_dovecot(directory)
    try:
        org, account, template = await make_account(settings, database, dovecot.port)
        bulk = await make_sent_bulk(database, org, account, template, [f"r{i}@receiver.test" for i in range(n_bounces)])
        async with Mailbox(dovecot.port) as box:
            for i in range(n_ordinary):
                await box.deliver(samples.ordinary(i).replace(b"Lunch on Friday?", FILLER.encode()))
            for i, r in enumerate(bulk.recipients):
                await box.deliver(samples.postfix_dsn(r.email, r.message_id, i))
        follower = AccountFollower(
            settings,
            database,
            account,
            org,
            ImapSettings(host="127.0.0.1", port=dovecot.port, username="alice", password="alicepw", security="none"),
        )
        await follower.open()
        started = time.perf_counter()
        report = await follower.catch_up()
        first = time.perf_counter() - started
        async with Mailbox(dovecot.port) as box:
            await box.deliver(samples.ordinary(n_ordinary + 1))
        started = time.perf_counter()
        again = await follower.catch_up()
        incremental = time.perf_counter() - started
        await follower.close()
        print(
            f"first sync: {report.seen} messages ({n_bounces} bounces applied: {report.applied}) in {first:.2f} s"
            f" = {report.seen / first:.0f} messages/s"
        )
        print(f"incremental catch-up of {again.seen} new message: {incremental * 1000:.0f} ms")
    finally:
        dovecot.stop()
        shutil.rmtree(directory, ignore_errors=True)
        shutil.rmtree(settings.data_dir, ignore_errors=True)
        await database.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--ordinary", type=int, default=2000)
    parser.add_argument("--bounces", type=int, default=200)
    args = parser.parse_args()
    settings = settings_in(Path(tempfile.mkdtemp(prefix="bench-inbox-")))
    upgrade(settings)
    asyncio.run(main(settings, args.ordinary, args.bounces))
