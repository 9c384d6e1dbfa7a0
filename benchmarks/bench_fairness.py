"""bench-fairness: a 20-recipient bulk email's time from create to done, alone and while
another account sends 100,000 (PostgreSQL + RabbitMQ + smtp-sink, separate service processes).

    make bench-fairness
    .venv/bin/python benchmarks/bench_fairness.py --big 20000 --runs 3

Target (issue 5): beside the big send, under 2x the time alone plus one rate-limit interval.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_send import AMQP_URL, KEY, PG_ADMIN  # noqa: E402

from bulkmail.query_api.app import create_app  # noqa: E402
from bulkmail.shared.broker.rabbitmq import RabbitMQBroker  # noqa: E402
from bulkmail.shared.db import Database  # noqa: E402
from bulkmail.shared.migrate import upgrade_async  # noqa: E402
from bulkmail.shared.models import BulkEmail, Recipient, RecipientState  # noqa: E402
from bulkmail.shared.settings import Settings  # noqa: E402
from tests.broker_cleanup import drop_namespace  # noqa: E402
from tests.data import add_audience  # noqa: E402
from tests.e2e.processes import Service, service_env  # noqa: E402
from tests.mail_servers import start_smtp_sink  # noqa: E402


class Tenant:
    def __init__(self, app, api_key: str) -> None:  # type: ignore[no-untyped-def]
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://b", headers={"Authorization": f"Bearer {api_key}"}
        )
        self.ids: dict[str, int] = {}

    async def setup(self, name: str, sink_port: int) -> None:
        t = (
            await self.client.post(
                "/api/v1/email_template/",
                json={"name": name, "subject": "Hi", "body": "<p>Hello {{ contact.first_name }}</p>"},
            )
        ).json()
        a = (
            await self.client.post(
                "/api/v1/email_account/",
                json={
                    "email": f"{name}@fair.example",
                    "smtp_host": "127.0.0.1",
                    "smtp_port": sink_port,
                    "smtp_security": "none",
                    "max_connections": 10,
                },
            )
        ).json()
        self.ids = {"template_id": t["id"], "email_account_id": a["id"]}

    async def create(self, query: str) -> int:
        r = await self.client.post(
            "/api/v1/bulk_action/email/",
            json={"query": query, **self.ids, "send_done_email": False, "exclude_already_emailed": False},
        )
        assert r.status_code == 201, r.text
        return int(r.json()["id"])


async def wait_done(database: Database, bulk_id: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with database.session() as session:
            if await session.scalar(select(BulkEmail.status).where(BulkEmail.id == bulk_id)) == "done":
                return
        await asyncio.sleep(0.02)
    raise SystemExit(f"bulk email {bulk_id} not done in {timeout} s")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--mailers", type=int, default=2)
    args = parser.parse_args()
    sink = start_smtp_sink()
    dbname = f"bulkmail_bench_fair_{uuid.uuid4().hex[:6]}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{dbname}"')
    url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + f"/{dbname}"
    tmp = Path(tempfile.mkdtemp(prefix="bench-fair-"))
    settings = Settings(
        database_url=url,
        amqp_url=AMQP_URL,
        broker_namespace=f"fair-{uuid.uuid4().hex[:6]}",
        secret_key=KEY,
        data_dir=tmp,
        public_url="https://bulkmail.example.test",
        sweep_interval_s=0.5,
    )
    await upgrade_async(settings)
    database = Database(settings)
    broker = RabbitMQBroker(AMQP_URL, settings.broker_namespace)
    await broker.connect()
    services: list[Service] = []
    try:
        _, big_key = await add_audience(database, args.big, domain="big.example")
        _, small_key = await add_audience(database, args.small, domain="small.example")
        env = service_env(settings)
        services = [Service("dispatcher", env, tmp).start()]
        for i in range(args.mailers):
            s = Service("mailer", env, tmp)
            s.log_path = tmp / f"mailer-{i}.log"
            services.append(s.start())
        await asyncio.sleep(2)
        app = create_app(settings, database=database, broker=broker)
        big, small = Tenant(app, big_key), Tenant(app, small_key)
        await big.setup("big", sink.port)
        await small.setup("small", sink.port)

        async def small_send() -> float:
            started = time.perf_counter()
            bulk_id = await small.create("*")
            await wait_done(database, bulk_id, 300)
            return time.perf_counter() - started

        await small_send()  # warm-up: first template compile and SMTP connections, not counted
        alone = [await small_send() for _ in range(args.runs)]
        big_id = await big.create("*")
        # Let the big send get going, then time small sends beside it.
        while True:
            async with database.session() as session:
                sent = await session.scalar(
                    select(func.count())
                    .select_from(Recipient)
                    .where(Recipient.bulk_email_id == big_id, Recipient.state == RecipientState.sent)
                )
            if (sent or 0) >= min(5_000, args.big // 5):
                break
            await asyncio.sleep(0.2)
        beside = [await small_send() for _ in range(args.runs)]
        async with database.session() as session:
            big_status = await session.scalar(select(BulkEmail.status).where(BulkEmail.id == big_id))
        alone_m, beside_m = statistics.median(alone), statistics.median(beside)
        print(
            f"small bulk ({args.small} recipients) alone:  median {alone_m:.2f} s  runs {[round(x, 2) for x in alone]}"
        )
        runs = [round(x, 2) for x in beside]
        print(f"beside a {args.big:,}-recipient send (still {big_status}): median {beside_m:.2f} s  runs {runs}")
        print(f"ratio {beside_m / alone_m:.2f}x (target: under 2x plus one rate-limit interval; no limits set here)")
        await big.client.aclose()
        await small.client.aclose()
    finally:
        for s in services:
            if s.proc and s.proc.poll() is None:
                s.stop()
        await broker.close()
        await drop_namespace(AMQP_URL, settings.broker_namespace)
        await database.dispose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        await admin.close()
        sink.stop()


if __name__ == "__main__":
    asyncio.run(main())
