"""Account limits hold across mailer processes and restarts (docs/architecture.md, promise 4).

Three mailer processes send one bulk email from an account limited to N per "minute"; the
windows are shortened (BULKMAIL_RATE_WINDOW_SCALE) so a minute lasts 3 s. The SMTP server's
own receive timestamps must never show more than N in any window, including across a
kill -9 and restart of one mailer in the middle.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from bisect import bisect_left

import httpx
import pytest
from sqlalchemy import select

from bulkmail.capture import CaptureServer
from bulkmail.query_api.app import create_app
from bulkmail.shared.broker.rabbitmq import RabbitMQBroker
from bulkmail.shared.db import Database
from bulkmail.shared.models import BulkEmail, Recipient
from bulkmail.shared.rate_limit import CONNECTION_LEASE_TTL
from tests.broker_cleanup import drop_namespace
from tests.conftest import free_port
from tests.data import add_audience
from tests.e2e.processes import Service, service_env

pytestmark = pytest.mark.slow

PER_MINUTE = 5
SCALE = 0.05  # a "minute" of 3 s
WINDOW_S = 60 * SCALE
RECIPIENTS = 30


def busiest_window(timestamps: list[float], window: float) -> int:
    """The most messages received within any window of that length."""
    ts = sorted(timestamps)
    return max((bisect_left(ts, t + window) - i for i, t in enumerate(ts)), default=0)


def test_busiest_window_counts_a_sliding_window():
    assert busiest_window([0.0, 1.0, 2.9, 3.0, 3.1], 3.0) == 4  # [1.0, 4.0)
    assert busiest_window([0.0, 3.0, 6.0], 3.0) == 1
    assert busiest_window([], 3.0) == 0


async def _unfinished(database: Database, bulk_id: int) -> list[tuple[object, ...]]:
    """What holds a bulk email back, for the failure message."""
    async with database.session() as session:
        rows = await session.execute(
            select(Recipient.state, Recipient.attempts, Recipient.next_attempt_at, Recipient.smtp_reply)
            .where(Recipient.bulk_email_id == bulk_id, Recipient.state.not_in(["sent", "unknown", "skipped"]))
            .limit(10)
        )
        return [tuple(row) for row in rows]


@pytest.fixture
def limits_settings(settings_for, amqp_url):
    return settings_for(
        "postgres",
        amqp_url=amqp_url,
        broker_namespace=f"bulkmail-limits-{uuid.uuid4().hex[:8]}",
        sweep_interval_s=0.2,
        public_url="https://bulkmail.example.test",
    )


async def test_three_mailers_never_exceed_the_per_minute_limit_even_across_a_restart(limits_settings, tmp_path):
    settings = limits_settings
    database = Database(settings)
    broker = RabbitMQBroker(settings.amqp_url, settings.broker_namespace)
    await broker.connect()
    env = service_env(settings, BULKMAIL_RATE_WINDOW_SCALE=str(SCALE))
    services = [Service("dispatcher", env, tmp_path)] + [Service("mailer", env, tmp_path) for _ in range(3)]
    for i, s in enumerate(services[1:]):
        s.log_path = tmp_path / f"mailer-{i}.log"
    capture = CaptureServer(port=free_port()).start()
    try:
        _, api_key = await add_audience(database, RECIPIENTS, domain="limits.example")
        for s in services:
            s.start()
        app = create_app(settings, database=database, broker=broker)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t", headers={"Authorization": f"Bearer {api_key}"}
        ) as client:
            template = (
                await client.post("/api/v1/email_template/", json={"name": "L", "subject": "s", "body": "b"})
            ).json()
            account = (
                await client.post(
                    "/api/v1/email_account/",
                    json={
                        "email": "owner@limits.example",
                        "smtp_host": "127.0.0.1",
                        "smtp_port": capture.port,
                        "smtp_security": "none",
                        "limit_per_minute": PER_MINUTE,
                    },
                )
            ).json()
            created = await client.post(
                "/api/v1/bulk_action/email/",
                json={
                    "query": "*",
                    "template_id": template["id"],
                    "email_account_id": account["id"],
                    "send_done_email": False,
                },
            )
            bulk_id = created.json()["id"]
            # Mid-send, a mailer dies and comes back: the limit lives in the database, not in it.
            deadline = time.monotonic() + 60
            while len(capture.messages) < 8 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            services[1].kill9()
            services[1] = Service("mailer", env, tmp_path)
            services[1].log_path = tmp_path / "mailer-0-restarted.log"
            services[1].start()
            status = ""
            # The killed mailer's SMTP connection slots stay taken until their leases expire: if
            # it held all of them, sending resumes only then (by design: the limit is never exceeded).
            deadline = time.monotonic() + 120 + CONNECTION_LEASE_TTL.total_seconds()
            while time.monotonic() < deadline:
                async with database.session() as session:
                    status = await session.scalar(select(BulkEmail.status).where(BulkEmail.id == bulk_id))
                if status == "done":
                    break
                await asyncio.sleep(0.2)
            assert status == "done", f"{status}; unfinished: {await _unfinished(database, bulk_id)}"
            body = (await client.get(f"/api/v1/bulk_action/email/{bulk_id}/")).json()
        received = [m.received_at for m in capture.messages]
        counts = body["counts"]
        assert counts["sent"] + counts["unknown"] == RECIPIENTS
        assert len(received) >= counts["sent"]
        assert busiest_window(received, WINDOW_S) <= PER_MINUTE, sorted(round(t - received[0], 2) for t in received)
        # And it did not just crawl: the limit was used, about N per window.
        span = max(received) - min(received)
        assert span >= (len(received) / PER_MINUTE - 1) * WINDOW_S * 0.9
    finally:
        for s in services:
            if s.proc and s.proc.poll() is None:
                s.proc.kill()
                s.proc.wait()
        capture.stop()
        await broker.close()
        await drop_namespace(settings.amqp_url, settings.broker_namespace)
        await database.dispose()
