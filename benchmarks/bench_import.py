"""How long a lead import holds the database's write lock, and how long it runs.

SQLite (the embedded default) has one write lock for the whole database: while an import
holds it, the mailer cannot record a send and no other request can write. The import writes
``BULKMAIL_IMPORT_BATCH_LEADS`` leads per transaction; this measures, from another process
that writes a row every 20 ms, how long those writes waited, and the import's total time. On
PostgreSQL only the total time is measured (its writers do not block each other).

    .venv/bin/python benchmarks/bench_import.py --leads 20000 [--postgres postgresql://...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import sqlite3
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import httpx

from bulkmail.query_api.app import create_app
from bulkmail.shared.broker.memory import MemoryBroker
from bulkmail.shared.db import Database
from bulkmail.shared.migrate import upgrade
from bulkmail.shared.organizations import create_organization
from bulkmail.shared.settings import Settings

KEY = "u3Vq0fK9xU1M2a6bq8d6u0xk7zH2r3s4t5v6w7x8y9A="


def _ndjson(n: int) -> bytes:
    return b"\n".join(
        json.dumps(
            {
                "name": f"Lead {i}",
                "custom": {"Industry": "Retail", "Employees": i % 500},
                "contacts": [{"name": f"Person {i}", "emails": [{"email": f"p{i}@bench.example"}]}],
                "addresses": [{"city": "Berlin"}],
            }
        ).encode()
        for i in range(n)
    )


def _writer(path: str, stop: multiprocessing.synchronize.Event, waits: multiprocessing.queues.Queue) -> None:  # type: ignore[name-defined]
    """Another writer: one small write every 20 ms, timing how long each waited for the lock."""
    conn = sqlite3.connect(path, timeout=60, isolation_level=None)
    conn.execute("CREATE TABLE IF NOT EXISTS bench_writer (t REAL)")
    out = []
    while not stop.is_set():
        started = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO bench_writer VALUES (?)", (started,))
        conn.execute("COMMIT")
        out.append(time.perf_counter() - started)
        time.sleep(0.02)
    waits.put(out)


async def _import(settings: Settings, body: bytes) -> float:
    database = Database(settings)
    async with database.session() as session:
        org = await create_organization(session, f"Bench {uuid.uuid4().hex[:6]}", user_email="b@bench.example")
    app = create_app(settings, database=database, broker=MemoryBroker("bench"))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://bench",
        headers={"Authorization": f"Bearer {org.api_key}"},
        timeout=3600,
    ) as client:
        started = time.perf_counter()
        response = await client.post(
            "/api/v1/lead/import", content=body, headers={"Content-Type": "application/x-ndjson"}
        )
        elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    await database.dispose()
    return elapsed


def bench_sqlite(n: int) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "bench.db")
        settings = Settings(
            database_url=f"sqlite+aiosqlite:///{path}",
            secret_key=KEY,
            max_import_leads=max(n, 100_000),
            max_import_bytes=10**9,
        )
        upgrade(settings)
        stop, waits = multiprocessing.Event(), multiprocessing.Queue()
        writer = multiprocessing.Process(target=_writer, args=(path, stop, waits))
        writer.start()
        time.sleep(0.5)
        elapsed = asyncio.run(_import(settings, _ndjson(n)))
        stop.set()
        samples = waits.get()
        writer.join()
    worst = max(samples)
    p99 = statistics.quantiles(samples, n=100)[98]
    return (
        f"sqlite: {n:,} leads imported in {elapsed:.1f} s ({n / elapsed:,.0f} leads/s), batches of "
        f"{settings.import_batch_leads}; another writer's wait for the lock over {len(samples)} writes: "
        f"median {statistics.median(samples) * 1000:.1f} ms, p99 {p99 * 1000:.0f} ms, max {worst * 1000:.0f} ms"
    )


def bench_postgres(n: int, admin_url: str) -> str:
    name = f"bench_import_{uuid.uuid4().hex[:8]}"

    async def create() -> None:
        conn = await asyncpg.connect(admin_url)
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(admin_url)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()

    asyncio.run(create())
    try:
        url = admin_url.rsplit("/", 1)[0] + f"/{name}"
        settings = Settings(database_url=url, secret_key=KEY, max_import_leads=max(n, 100_000), max_import_bytes=10**9)
        upgrade(settings)
        elapsed = asyncio.run(_import(settings, _ndjson(n)))
    finally:
        asyncio.run(drop())
    return f"postgresql: {n:,} leads imported in {elapsed:.1f} s ({n / elapsed:,.0f} leads/s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=20_000)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    print(bench_sqlite(args.leads))
    print(bench_postgres(args.leads, args.postgres))


if __name__ == "__main__":
    main()
