"""Crash safety (docs/architecture.md, promises 1-3) with real processes: kill -9 the mailer, and
separately the dispatcher, in the middle of a 10,000-recipient send to a real SMTP server,
restart it, and check what the server received against the ledger."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

import httpx
import pytest
from sqlalchemy import func, select

from bulkmail.capture import CaptureServer
from bulkmail.mailer.sender import CLAIM_PER_CONNECTION
from bulkmail.query_api.app import create_app
from bulkmail.shared.broker.rabbitmq import RabbitMQBroker
from bulkmail.shared.db import Database
from bulkmail.shared.models import BulkEmail, Recipient, RecipientState
from bulkmail.shared.settings import Settings
from tests.broker_cleanup import drop_namespace
from tests.conftest import free_port
from tests.data import add_audience
from tests.e2e.processes import Service, service_env

pytestmark = pytest.mark.slow

N_LEADS = 10_000
SMTP_CONNECTIONS = 10
MAILER_PREFETCH = Settings().mailer_prefetch  # chunks a mailer works on at once
# What one mailer can have handed to SMTP without a recorded outcome: its chunks in progress,
# each claiming a few recipients per connection at a time.
IN_FLIGHT_BOUND = MAILER_PREFETCH * SMTP_CONNECTIONS * CLAIM_PER_CONNECTION


@pytest.fixture
def crash_settings(settings_for, amqp_url):
    return settings_for(
        "postgres",
        amqp_url=amqp_url,
        broker_namespace=f"bulkmail-crash-{uuid.uuid4().hex[:8]}",
        sweep_interval_s=0.5,
        chunk_timeout_s=20.0,
        public_url="https://bulkmail.example.test",
    )


async def _states(database: Database, bulk_id: int) -> Counter[str]:
    async with database.session() as session:
        rows = await session.execute(
            select(Recipient.state, func.count()).where(Recipient.bulk_email_id == bulk_id).group_by(Recipient.state)
        )
        return Counter({RecipientState(s).value: n for s, n in rows})


async def _wait(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


async def _start_send(settings, database, broker, api_key: str, smtp_port: int) -> int:  # type: ignore[no-untyped-def]
    app = create_app(settings, database=database, broker=broker)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t", headers={"Authorization": f"Bearer {api_key}"}
    ) as client:
        template = (
            await client.post(
                "/api/v1/email_template/", json={"name": "T", "subject": "Hi {{ lead.name }}", "body": "<p>x</p>"}
            )
        ).json()
        account = (
            await client.post(
                "/api/v1/email_account/",
                json={
                    "email": "owner@crash.example",
                    "smtp_host": "127.0.0.1",
                    "smtp_port": smtp_port,
                    "smtp_security": "none",
                    "max_connections": SMTP_CONNECTIONS,
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
        assert created.status_code == 201, created.text
        return int(created.json()["id"])


async def _check_ledger(database: Database, bulk_id: int, messages) -> Counter[str]:  # type: ignore[no-untyped-def]
    async with database.session() as session:
        status = await session.scalar(select(BulkEmail.status).where(BulkEmail.id == bulk_id))
        rows = (
            await session.execute(select(Recipient.email, Recipient.state).where(Recipient.bulk_email_id == bulk_id))
        ).all()
    states = Counter(RecipientState(s).value for _, s in rows)
    received = Counter(rcpt for m in messages for rcpt in m.rcpt_tos)
    by_state: dict[str, set[str]] = {}
    for email, state in rows:
        by_state.setdefault(RecipientState(state).value, set()).add(email)
    assert status == "done"
    assert len(rows) == N_LEADS
    # Every recipient ended in exactly one final state.
    assert states["pending"] == states["sending"] == states["deferred"] == 0, states
    # The server saw each address at most once.
    doubled = [address for address, n in received.items() if n > 1]
    assert doubled == [], f"{len(doubled)} addresses got two copies"
    # What we call sent arrived; what arrived is sent or (outcome lost in the crash) unknown.
    assert by_state.get("sent", set()) <= set(received)
    assert set(received) <= by_state.get("sent", set()) | by_state.get("unknown", set())
    # Unknown is bounded by what was in flight, and reported in the ledger (not resent).
    assert states["unknown"] <= IN_FLIGHT_BOUND, states
    assert states["sent"] + states["unknown"] == N_LEADS, states
    return states


@pytest.mark.parametrize("victim", ["mailer", "dispatcher"])
async def test_kill_9_mid_send_loses_nothing_and_doubles_nothing(victim, crash_settings, tmp_path):
    database = Database(crash_settings)
    broker = RabbitMQBroker(crash_settings.amqp_url, crash_settings.broker_namespace)
    await broker.connect()
    env = service_env(crash_settings)
    services = {name: Service(name, env, tmp_path) for name in ("dispatcher", "mailer")}
    capture = CaptureServer(port=free_port()).start()
    try:
        _, api_key = await add_audience(database, N_LEADS)
        for service in services.values():
            service.start()
        bulk_id = await _start_send(crash_settings, database, broker, api_key, capture.port)

        async def sent_at_least(n: int):  # type: ignore[no-untyped-def]
            return (await _states(database, bulk_id))["sent"] >= n

        if victim == "mailer":
            await _wait(lambda: sent_at_least(2_000), 120, "2,000 sent")
            services["mailer"].kill9()
            in_limbo = (await _states(database, bulk_id))["sending"]
            assert in_limbo <= IN_FLIGHT_BOUND
            services["mailer"] = Service("mailer", env, tmp_path).start()
        else:
            # Once while it builds the ledger (or right after), once while it keeps chunks flowing.
            await _wait(lambda: _recipients_exist(database, bulk_id), 60, "the ledger to start")
            services["dispatcher"].kill9()
            services["dispatcher"] = Service("dispatcher", env, tmp_path).start()
            await _wait(lambda: sent_at_least(3_000), 120, "3,000 sent")
            services["dispatcher"].kill9()
            await asyncio.sleep(1)
            services["dispatcher"] = Service("dispatcher", env, tmp_path).start()

        async def done() -> bool:
            async with database.session() as session:
                return (await session.scalar(select(BulkEmail.status).where(BulkEmail.id == bulk_id))) == "done"

        await _wait(done, 240, "the bulk email to finish")
        states = await _check_ledger(database, bulk_id, capture.messages)
        print(f"kill -9 {victim}: {dict(states)}")
    finally:
        for service in services.values():
            if service.proc and service.proc.poll() is None:
                service.proc.kill()
                service.proc.wait()
        capture.stop()
        await broker.close()
        await drop_namespace(crash_settings.amqp_url, crash_settings.broker_namespace)
        await database.dispose()


async def _recipients_exist(database: Database, bulk_id: int) -> bool:
    async with database.session() as session:
        return bool(
            await session.scalar(select(func.count()).select_from(Recipient).where(Recipient.bulk_email_id == bulk_id))
        )
