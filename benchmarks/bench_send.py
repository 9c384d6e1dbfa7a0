"""bench-send: 100,000 recipients from create to done on PostgreSQL + RabbitMQ into Postfix's
smtp-sink, beside a baseline measured in the same run: a plain aiosmtplib client sending
pre-built messages to the same sink over the same number of connections.

    make bench-send                    # 100,000 recipients, 2 mailer processes
    .venv/bin/python benchmarks/bench_send.py --recipients 20000 --mailers 1

Prints the times, the rates, the ratio to the baseline and the mailers' peak memory (RSS).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Protocol

import aiosmtplib
import asyncpg
import httpx
from sqlalchemy import func, select, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bulkmail.mailer.message import MessageSkeleton  # noqa: E402
from bulkmail.query_api.app import create_app  # noqa: E402
from bulkmail.shared.broker.rabbitmq import RabbitMQBroker  # noqa: E402
from bulkmail.shared.db import Database  # noqa: E402
from bulkmail.shared.migrate import upgrade_async  # noqa: E402
from bulkmail.shared.models import BulkEmail, BulkEmailChunk, EmailActivity, Recipient, RecipientState  # noqa: E402
from bulkmail.shared.settings import Settings  # noqa: E402
from tests.broker_cleanup import drop_namespace  # noqa: E402
from tests.data import add_audience  # noqa: E402
from tests.e2e.processes import Service, service_env  # noqa: E402
from tests.mail_servers import start_smtp_sink  # noqa: E402

PG_ADMIN = os.environ.get("BULKMAIL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_URL = os.environ.get("BULKMAIL_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
KEY = "u3Vq0fK9xU1M2a6bq8d6u0xk7zH2r3s4t5v6w7x8y9A="
BODY = (
    "<p>Hi {{ contact.first_name }},</p>" + "<p>We help teams like {{ lead.display_name }} send better email.</p>" * 30
)


async def baseline(port: int, connections: int, n: int) -> float:
    """msg/s of a plain aiosmtplib client sending pre-built ~3 KB messages."""
    skeleton = MessageSkeleton(sender_address="bench@bench.example", sender_name="Bench")
    messages = [
        skeleton.build(
            to_address=f"p{i}@bench.example",
            subject="Hello",
            message_id=f"<b{i}@bench.example>",
            text="x" * 1500,
            html="<p>" + "x" * 1500 + "</p>",
        )
        for i in range(n)
    ]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)

    async def worker() -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await client.connect()
        while not queue.empty():
            i = queue.get_nowait()
            await client.sendmail("bench@bench.example", [f"p{i}@bench.example"], messages[i])
        await client.quit()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return n / (time.perf_counter() - started)


class ProfiledService(Service):
    """A service run under cProfile (``--profile DIR``): the profile is written as it stops."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path, profile_dir: Path) -> None:
        super().__init__(name, env, log_dir)
        self.profile_dir = profile_dir

    def start(self) -> Service:
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        out = self.profile_dir / f"{self.log_path.stem}.prof"
        command = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "bulkmail.cli", self.name]
        self.proc = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        return self


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


async def row_writes(database: Database) -> dict[str, float]:
    """The recipients table's writes in this run's database (each service flushes its counts as it
    exits): rows inserted, updated, and updated HOT (without touching an index); and the updates
    of the lead counters."""
    async with database.session() as session:
        inserted, updated, hot = (
            await session.execute(
                text("SELECT n_tup_ins, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'recipients'")
            )
        ).one()
        # The lead counters of each email sent: on lead_activity since migration 0018, none on leads.
        counters = dict(
            (
                await session.execute(
                    text(
                        "SELECT relname, n_tup_upd FROM pg_stat_user_tables WHERE relname IN ('leads', 'lead_activity')"
                    )
                )
            ).all()
        )
    return {
        "inserted": float(inserted),
        "updated": float(updated),
        "hot": float(hot),
        "leads_updated": float(counters.get("leads", 0)),
        "activity_updated": float(counters.get("lead_activity", 0)),
    }


class LoadDuringSend(Protocol):
    """Work to run beside the send (bench_api.py's API load): started just before create, stopped at done."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def system_run(
    args: argparse.Namespace, sink_port: int, workdir: Path, load: LoadDuringSend | None = None
) -> dict[str, float]:
    dbname = f"bulkmail_bench_send_{uuid.uuid4().hex[:6]}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{dbname}"')
    url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + f"/{dbname}"
    settings = Settings(
        database_url=url,
        amqp_url=AMQP_URL,
        broker_namespace=f"bench-{uuid.uuid4().hex[:6]}",
        secret_key=KEY,
        data_dir=workdir,
        public_url="https://bulkmail.example.test",
        sweep_interval_s=0.5,
    )
    await upgrade_async(settings)
    database = Database(settings)
    broker = RabbitMQBroker(AMQP_URL, settings.broker_namespace)
    services: list[Service] = []
    try:
        _, api_key = await add_audience(database, args.recipients, domain="bench.example")
        await broker.connect()
        env = service_env(settings)

        def service(name: str) -> Service:
            if args.profile is None:
                return Service(name, env, workdir)
            return ProfiledService(name, env, workdir, args.profile)

        services = [service("dispatcher").start()]
        services += [service("mailer") for _ in range(args.mailers)]
        for i, s in enumerate(services[1:]):
            s.log_path = workdir / f"mailer-{i}.log"
            s.start()
        # The clock starts at "create" on a running system: wait until every process is up and
        # consuming (Python start-up and imports take seconds here under load).
        deadline = time.monotonic() + 60
        while not all('"worker started"' in s.log() for s in services):
            if time.monotonic() > deadline:
                raise SystemExit("services did not start within 60 s:\n" + "\n".join(s.log()[-2000:] for s in services))
            await asyncio.sleep(0.1)
        app = create_app(settings, database=database, broker=broker)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://b", headers={"Authorization": f"Bearer {api_key}"}
        ) as client:
            template = (
                await client.post(
                    "/api/v1/email_template/",
                    json={"name": "Bench", "subject": "Hello {{ lead.display_name }}", "body": BODY},
                )
            ).json()
            account = (
                await client.post(
                    "/api/v1/email_account/",
                    json={
                        "email": "bench@bench.example",
                        "smtp_host": "127.0.0.1",
                        "smtp_port": sink_port,
                        "smtp_security": "none",
                        "max_connections": args.connections,
                    },
                )
            ).json()
            if load is not None:
                await load.start()  # running before the clock starts, so its start-up is not counted
            started = time.perf_counter()
            wall_started = time.time()
            created = await client.post(
                "/api/v1/bulk_action/email/",
                json={
                    "query": "*",
                    "template_id": template["id"],
                    "email_account_id": account["id"],
                    "send_done_email": False,
                },
            )
            assert created.status_code == 201, created.text
            bulk_id = created.json()["id"]
        created_s = time.perf_counter() - started
        peak = 0.0
        deadline = time.monotonic() + args.timeout
        status = ""
        first_sent = 0.0
        while time.monotonic() < deadline:
            peak = max(peak, *(rss_mb(s.proc.pid) for s in services[1:] if s.proc))
            async with database.session() as session:
                status = await session.scalar(select(BulkEmail.status).where(BulkEmail.id == bulk_id))
                if not first_sent and await session.scalar(
                    select(Recipient.id)
                    .where(Recipient.bulk_email_id == bulk_id, Recipient.state == RecipientState.sent)
                    .limit(1)
                ):
                    first_sent = time.perf_counter() - started
            if status in ("done", "error", "cancelled"):
                break
            await asyncio.sleep(0.1)
        elapsed = time.perf_counter() - started
        if load is not None:
            await load.stop()
        async with database.session() as session:
            sent = await session.scalar(
                select(func.count())
                .select_from(Recipient)
                .where(Recipient.bulk_email_id == bulk_id, Recipient.state == RecipientState.sent)
            )
            # Where the first message's time goes, from the services' own clocks (same machine):
            # the first chunk queued by the pump, the first outcome recorded by a mailer.
            first_chunk = await session.scalar(
                select(func.min(BulkEmailChunk.published_at)).where(BulkEmailChunk.bulk_email_id == bulk_id)
            )
            first_recorded = await session.scalar(
                select(func.min(EmailActivity.created_at)).where(EmailActivity.bulk_email_id == bulk_id)
            )
        if status != "done":
            raise SystemExit(f"bulk email not done after {args.timeout} s: {status}, {sent} sent")
        # Stopped before counting: each service's backends flush their statistics as they exit.
        for s in services:
            if s.proc and s.proc.poll() is None:
                s.stop()
        writes = await row_writes(database)
        return {
            **writes,
            "first_chunk": (first_chunk.timestamp() - wall_started) if first_chunk else 0.0,
            "first_recorded": (first_recorded.timestamp() - wall_started) if first_recorded else 0.0,
            "elapsed": elapsed,
            "wall_started": wall_started,
            "create": created_s,
            "first_sent": first_sent,
            "sent": float(sent or 0),
            "peak_rss_mb": peak,
        }
    finally:
        for s in services:
            if s.proc and s.proc.poll() is None:
                s.stop()
            if args.show_logs:
                print(f"--- {s.log_path.name}\n" + "\n".join(s.log().splitlines()[-args.show_logs :]))
        await broker.close()
        await drop_namespace(AMQP_URL, settings.broker_namespace)
        await database.dispose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        await admin.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--mailers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=10, help="SMTP connections (per mailer, and the baseline's)")
    parser.add_argument("--baseline-messages", type=int, default=30_000)
    parser.add_argument("--baseline-runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="run the services under cProfile, profiles into DIR (slower)"
    )
    parser.add_argument(
        "--show-logs", type=int, default=0, metavar="N", help="print the last N log lines of each service"
    )
    args = parser.parse_args()
    sink = start_smtp_sink()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-send-") as tmp:
            rates = [
                await baseline(sink.port, args.connections, args.baseline_messages) for _ in range(args.baseline_runs)
            ]
            result = await system_run(args, sink.port, Path(tmp))
            rates += [
                await baseline(sink.port, args.connections, args.baseline_messages) for _ in range(args.baseline_runs)
            ]
    finally:
        sink.stop()
    base = statistics.median(rates)
    rate = result["sent"] / result["elapsed"]
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    print(
        f"baseline (aiosmtplib, {args.connections} connections, pre-built messages): "
        f"median {base:,.0f} msg/s over {len(rates)} runs (min {min(rates):,.0f}, max {max(rates):,.0f})"
    )
    print(
        f"bulkmail: {int(result['sent']):,} recipients create→done in {result['elapsed']:.1f} s "
        f"(create + snapshot {result['create']:.2f} s) = {rate:,.0f} msg/s with {args.mailers} mailer process(es)"
    )
    sending = result["elapsed"] - result["first_sent"]
    print(
        f"  first message sent after {result['first_sent']:.1f} s; from then to done {sending:.1f} s "
        f"= {result['sent'] / sending:,.0f} msg/s"
    )
    print(
        f"  first chunk queued after {result['first_chunk']:.2f} s, first outcome recorded after "
        f"{result['first_recorded']:.2f} s (the create returned after {result['create']:.2f} s)"
    )
    print(
        f"recipients rows: {result['inserted']:,.0f} inserted, {result['updated']:,.0f} updates "
        f"({result['updated'] / max(result['sent'], 1):.2f} per message sent), {result['hot']:,.0f} HOT "
        f"({result['hot'] / max(result['updated'], 1):.0%})"
    )
    print(
        f"lead counter updates: lead_activity {result['activity_updated']:,.0f}, leads {result['leads_updated']:,.0f}"
    )
    print(f"ratio to baseline: {rate / base:.0%}")
    print(f"mailer peak RSS: {result['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    asyncio.run(main())
