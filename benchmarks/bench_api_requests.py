"""One API request alone, server time: ``GET /lead/{id}/`` and a 25-lead search page with its count.

    make bench-api-requests
    .venv/bin/python benchmarks/bench_api_requests.py [--leads N] [--requests R] [--profile FILE]

Seeds ``bulkmail_bench_api`` (100,000 leads by default, with ``bulkmail.shared.seed``; kept and
reused, so the seeding happens once; ``bench_api.py`` uses the same database), then drives the
query-api's ASGI app in this process, one request at a time: the figure is the app's own time from
receiving the request to the last byte of its answer (no HTTP parsing, no network), the median of R
requests over different leads, after a warm-up. It also counts the SQL statements each request
sends, and the app's own CPU time per request (this process's CPU, a mean: unlike wall time it
hardly moves with the machine's load). Targets (docs/operations.md, "API performance"): lead GET
< 5 ms, search page < 20 ms.

``--profile FILE`` writes a cProfile of the lead GETs and search pages (``python -m pstats FILE``).
Set BULKMAIL_BENCH_PG_URL to use another server than 127.0.0.1:5432.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
from sqlalchemy import event, func, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bulkmail.query_api.app import create_app  # noqa: E402
from bulkmail.shared.broker import create_broker  # noqa: E402
from bulkmail.shared.db import Database  # noqa: E402
from bulkmail.shared.migrate import upgrade  # noqa: E402
from bulkmail.shared.models import ApiKey, Lead, User  # noqa: E402
from bulkmail.shared.organizations import add_api_key  # noqa: E402
from bulkmail.shared.seed import seed  # noqa: E402
from bulkmail.shared.settings import Settings  # noqa: E402

ADMIN_URL = os.environ.get("BULKMAIL_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
DB_NAME = "bulkmail_bench_api"
SECRET = "u3Vq0fK9xU1M2a6bq8d6u0xk7zH2r3s4t5v6w7x8y9A="
# The key the benchmarks authenticate with; stored (hashed) in the benchmark database only.
API_KEY = "bench_api_key_0123456789abcdef0123456789abcdef"

# Search pages as a salesperson's search box sends them (25 leads and the count).
SEARCHES = [
    "status:potential",
    'status:qualified has:email_addresses not emailed_template:"Intro"',
    "name:acme",
    '"custom.Lead Source":referral',
]


def pg_url(dbname: str = DB_NAME) -> str:
    return ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1) + f"/{dbname}"


def bench_settings(**overrides: Any) -> Settings:
    return Settings(database_url=pg_url(), secret_key=SECRET, **overrides)


async def _admin(sql: str) -> Any:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def _vacuum_if_never_vacuumed() -> None:
    """VACUUM ANALYZE the seeded database once (outside a transaction, as VACUUM must be).

    The seeder only ANALYZEs; a table written by COPY has no visibility map until it is vacuumed,
    and with autovacuum off (this machine's PostgreSQL) it never is. Without the map an
    index-only scan reads the heap for every row, and PostgreSQL plans around it:
    `status:qualified has:email_addresses not emailed_template:"Intro"` hashed the template's
    emails over a bitmap scan of the leads (166 ms at 100,000 leads) instead of merging two
    index-only walks (16 ms once vacuumed).
    """
    conn = await asyncpg.connect(ADMIN_URL.rsplit("/", 1)[0] + f"/{DB_NAME}")
    try:
        never = await conn.fetchval(
            "SELECT last_vacuum IS NULL AND last_autovacuum IS NULL FROM pg_stat_user_tables WHERE relname = 'leads'"
        )
        if never:
            started = time.perf_counter()
            await conn.execute("VACUUM ANALYZE")
            print(f"vacuumed {DB_NAME} in {time.perf_counter() - started:.0f} s")
    finally:
        await conn.close()


async def prepare(leads: int) -> list[int]:
    """The seeded database (made once, then reused); returns the lead ids."""
    settings = bench_settings()
    exists = await _admin(f"SELECT 1 FROM pg_database WHERE datname = '{DB_NAME}'")
    if not exists:
        await _admin(f'CREATE DATABASE "{DB_NAME}"')
    await asyncio.to_thread(upgrade, settings)
    database = Database(settings)
    try:
        async with database.session() as session:
            have = int(await session.scalar(select(func.count()).select_from(Lead)) or 0)
        if have < leads:
            if have:
                raise SystemExit(f"{DB_NAME} holds {have:,} leads, fewer than {leads:,}: drop it and run again")
            started = time.perf_counter()
            report = await seed(database, leads=leads, now=datetime(2026, 11, 1, tzinfo=UTC))
            seconds = time.perf_counter() - started
            print(f"seeded {leads:,} leads ({sum(report.rows.values()):,} rows) in {seconds:.0f} s")
        await _vacuum_if_never_vacuumed()
        async with database.session() as session:
            if await session.scalar(select(ApiKey.id).where(ApiKey.prefix == API_KEY[:8])) is None:
                user = await session.scalar(select(User).order_by(User.id).limit(1))
                assert user is not None
                await add_api_key(session, user, API_KEY)
            return list(await session.scalars(select(Lead.id).order_by(Lead.id)))
    finally:
        await database.dispose()


@dataclass
class Answer:
    status: int
    body: bytes
    seconds: float


async def call(app: Any, path: str, query: str = "") -> Answer:
    """One GET through the ASGI app, timed from the call to the end of the response body."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"bench"), (b"authorization", f"Bearer {API_KEY}".encode())],
        "client": ("127.0.0.1", 1),
        "server": ("bench", 80),
    }
    status = 0
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    started = time.perf_counter()
    await app(scope, receive, send)
    return Answer(status, b"".join(chunks), time.perf_counter() - started)


class StatementCounter:
    def __init__(self, database: Database) -> None:
        self.n = 0
        event.listen(database.engine.sync_engine, "before_cursor_execute", self._count)

    def _count(self, *_args: Any) -> None:
        self.n += 1


async def measure(
    app: Any, counter: StatementCounter, label: str, requests: list[tuple[str, str]], profiler: cProfile.Profile | None
) -> str:
    for path, query in requests[:20]:  # warm-up: connections, prepared statements, caches
        answer = await call(app, path, query)
        if answer.status != 200:
            raise SystemExit(f"{path}?{query}: {answer.status} {answer.body[:300]!r}")
    times: list[float] = []
    cpu: list[float] = []
    statements: list[int] = []
    for path, query in requests:
        before = counter.n
        if profiler:
            profiler.enable()
        cpu_before = time.process_time()
        answer = await call(app, path, query)
        cpu.append((time.process_time() - cpu_before) * 1000)
        if profiler:
            profiler.disable()
        if answer.status != 200:
            raise SystemExit(f"{path}?{query}: {answer.status} {answer.body[:300]!r}")
        times.append(answer.seconds * 1000)
        statements.append(counter.n - before)
    times.sort()
    p90 = times[int(len(times) * 0.9)]
    return (
        f"{label:<62} median {statistics.median(times):6.2f} ms  p90 {p90:6.2f} ms  "
        f"min {times[0]:5.2f} ms  app CPU {statistics.mean(cpu):5.2f} ms  "
        f"SQL statements {min(statements)}-{max(statements)}  (n={len(times)})"
    )


async def run(args: argparse.Namespace) -> list[str]:
    lead_ids = await prepare(args.leads)
    settings = bench_settings()
    database = Database(settings)
    broker = create_broker(settings)
    await broker.connect()
    app = create_app(settings, database=database, broker=broker)
    counter = StatementCounter(database)
    profiler = cProfile.Profile() if args.profile else None
    rng = random.Random(7)
    lines = [
        f"{len(lead_ids):,} leads in {DB_NAME}; {os.cpu_count()} cores; load average before "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    ]
    try:
        gets = [(f"/api/v1/lead/{rng.choice(lead_ids)}/", "") for _ in range(args.requests)]
        lines.append(await measure(app, counter, "GET /api/v1/lead/{id}/", gets, profiler))
        for q in SEARCHES:
            pages = [("/api/v1/lead/", urlencode({"query": q, "_limit": 25}))] * max(args.requests // 4, 30)
            lines.append(await measure(app, counter, f"search page, 25 leads + total_results: {q}", pages, profiler))
    finally:
        await broker.close()
        await database.dispose()
    lines.append(f"load average after {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if profiler and args.profile:
        profiler.dump_stats(args.profile)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=400, help="lead GETs (a quarter as many per search)")
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile of the timed requests")
    args = parser.parse_args()
    for line in asyncio.run(run(args)):
        print(line)


if __name__ == "__main__":
    main()
