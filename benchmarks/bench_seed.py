"""Seed N synthetic leads (default 1,000,000) into a fresh PostgreSQL database and report.

    .venv/bin/python benchmarks/bench_seed.py [--leads N] [--keep]

Creates ``bulkmail_bench_seed`` (dropped first if left over, and at the end unless --keep),
migrates it, seeds it, and prints rows per table, generation vs load seconds and the database
size. Set BULKMAIL_BENCH_PG_URL to use another server than 127.0.0.1:5432.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from datetime import UTC, datetime

import asyncpg

from bulkmail.shared.db import Database
from bulkmail.shared.migrate import upgrade
from bulkmail.shared.seed import seed
from bulkmail.shared.settings import Settings

ADMIN_URL = os.environ.get("BULKMAIL_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
DB_NAME = "bulkmail_bench_seed"


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _run(leads: int, settings: Settings) -> None:
    database = Database(settings)
    try:
        report = await seed(database, leads=leads, now=datetime(2026, 11, 1, tzinfo=UTC))
        async with database.engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            assert raw is not None
            size = await raw.fetchval("SELECT pg_size_pretty(pg_database_size(current_database()))")
    finally:
        await database.dispose()
    total_rows = sum(report.rows.values())
    print(f"leads seeded: {leads:,}")
    for table, count in report.rows.items():
        print(f"  {table:<20} {count:>12,}")
    print(f"  {'total':<20} {total_rows:>12,}")
    print(f"generate (Python) : {report.generate_seconds:8.1f} s")
    print(f"load (COPY+index) : {report.load_seconds:8.1f} s  (index rebuild {report.index_seconds:.1f} s)")
    print(f"elapsed           : {report.elapsed_seconds:8.1f} s  ({total_rows / report.elapsed_seconds:,.0f} rows/s)")
    print(f"database size     : {size}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()

    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)'))
    asyncio.run(_admin(f'CREATE DATABASE "{DB_NAME}"'))
    url = ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1) + f"/{DB_NAME}"
    settings = Settings(database_url=url, secret_key="u3Vq0fK9xU1M2a6bq8d6u0xk7zH2r3s4t5v6w7x8y9A=")
    try:
        started = time.perf_counter()
        upgrade(settings)
        print(f"migrated in {time.perf_counter() - started:.1f} s")
        asyncio.run(_run(args.leads, settings))
    finally:
        if not args.keep:
            asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
