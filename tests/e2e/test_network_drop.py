"""The network to PostgreSQL or to RabbitMQ drops in the middle of a send, and comes back.

The dispatcher and the mailer run as real processes and reach both servers through a TCP proxy
in this test; cutting the proxy closes every open connection and refuses new ones, as a network
drop or a server restart does. Nobody restarts anything: the processes must reconnect by
themselves, show the outage in their metrics (and the API in ``/readyz``, with 503 and
``Retry-After`` for requests meanwhile), and finish the send with every recipient in a final
state, nothing received twice and nothing lost.

PostgreSQL and RabbitMQ are shared by every test run on the machine, so the real servers are
never restarted here; ``make chaos`` (benchmarks/chaos.py) restarts and kills a cluster and a node
of its own for real.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from sqlalchemy import func, select

from bulkmail.capture import CaptureServer
from bulkmail.mailer.sender import CLAIM_PER_CONNECTION
from bulkmail.query_api.app import create_app
from bulkmail.query_api.deps import PUBLISH_IN_REQUEST_S
from bulkmail.shared.broker.rabbitmq import RabbitMQBroker
from bulkmail.shared.db import Database
from bulkmail.shared.models import BulkEmail, Recipient, RecipientState
from bulkmail.shared.settings import Settings
from tests.broker_cleanup import drop_namespace
from tests.conftest import free_port
from tests.data import add_audience
from tests.e2e.processes import Service, service_env

pytestmark = pytest.mark.slow

HOST = "127.0.0.1"
N_LEADS = 3_000
SMTP_CONNECTIONS = 5
CUT_S = 5.0
MAILER_PREFETCH = Settings().mailer_prefetch
# What one mailer can have claimed without a recorded outcome when its connection drops; the
# test drops two connections.
IN_FLIGHT_BOUND = MAILER_PREFETCH * SMTP_CONNECTIONS * CLAIM_PER_CONNECTION
DROPS = 2


class CuttableProxy:
    """Forwards a loopback port to a server; ``cut()`` drops every connection and refuses new
    ones until ``restore()`` listens again on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, HOST, self.port, reuse_address=True)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def restore(self) -> None:
        await self.start()

    async def stop(self) -> None:
        if self._server is not None:
            await self.cut()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(HOST, self.target_port)
        except OSError:
            client_w.transport.abort()
            return
        self._writers |= {client_w, server_w}

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, other: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.transport.abort()
                other.transport.abort()
                self._writers.discard(writer)
                self._writers.discard(other)

        tasks = [
            asyncio.create_task(pipe(client_r, server_w, client_w)),
            asyncio.create_task(pipe(server_r, client_w, server_w)),
        ]
        self._pipes.update(tasks)
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self._pipes.difference_update(tasks)


def _via(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"{HOST}:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


def _metric(text: str, name: str, **labels: str) -> float | None:
    label_text = ",".join(f'{k}="{v}"' for k, v in labels.items())
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(label_text)}\}} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


async def _wait(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
async def proxies(pg_database_url: str, amqp_url: str) -> AsyncIterator[dict[str, CuttableProxy]]:
    made = {
        "database": CuttableProxy(urlsplit(pg_database_url).port or 5432),
        "broker": CuttableProxy(urlsplit(amqp_url).port or 5672),
    }
    for proxy in made.values():
        await proxy.start()
    yield made
    for proxy in made.values():
        await proxy.stop()


async def test_network_drops_to_the_broker_and_the_database_mid_send_lose_nothing_and_double_nothing(
    proxies: dict[str, CuttableProxy], settings_for, amqp_url, tmp_path
) -> None:
    namespace = f"bulkmail-drop-{uuid.uuid4().hex[:8]}"
    direct = settings_for("postgres", amqp_url=amqp_url, broker_namespace=namespace)
    proxied = direct.model_copy(
        update={
            "database_url": _via(direct.database_url, proxies["database"].port),
            "amqp_url": _via(amqp_url, proxies["broker"].port),
            "sweep_interval_s": 0.5,
            "chunk_timeout_s": 20.0,
            "public_url": "https://bulkmail.example.test",
        }
    )
    database = Database(direct)  # the test's own view of the ledger, never cut
    api_database = Database(proxied)
    api_broker = RabbitMQBroker(proxied.amqp_url, namespace)
    metrics_port = free_port()
    services = {
        "dispatcher": Service("dispatcher", service_env(proxied), tmp_path),
        "mailer": Service("mailer", service_env(proxied, BULKMAIL_METRICS_PORT=str(metrics_port)), tmp_path),
    }
    capture = CaptureServer(port=free_port()).start()
    app = create_app(proxied, database=api_database, broker=api_broker)
    try:
        _, api_key = await add_audience(database, N_LEADS, domain="drop.example")
        await api_broker.connect()
        for service in services.values():
            service.start()
        await _wait(
            lambda: _true(all('"worker started"' in s.log() for s in services.values())), 60, "workers to start"
        )
        async with (
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://t",
                headers={"Authorization": f"Bearer {api_key}"},
            ) as api,
            httpx.AsyncClient(base_url=f"http://{HOST}:{metrics_port}") as mailer_metrics,
        ):
            bulk_id = await _start_send(api, capture.port)

            async def sent_at_least(n: int) -> bool:
                return (await _states(database, bulk_id))["sent"] >= n

            async def mailer_sees(dependency: str, up: int) -> bool:
                text = (await mailer_metrics.get("/metrics")).text
                return _metric(text, "bulkmail_dependency_up", dependency=dependency) == up

            for dependency, progress in (("broker", 0.2), ("database", 0.5)):
                await _wait(lambda p=progress: sent_at_least(int(N_LEADS * p)), 60, f"{progress:.0%} sent")
                await proxies[dependency].cut()
                cut_at = time.monotonic()
                # While cut off: the mailer says so in its metrics, the API in /readyz, and a
                # request that needs the database gets 503 with Retry-After (not a 500).
                await _wait(
                    lambda d=dependency: mailer_sees(d, 0), CUT_S, f"the mailer to report the {dependency} down"
                )
                ready = await api.get("/readyz")
                assert ready.status_code == 503 and dependency in ready.json(), ready.text
                if dependency == "database":
                    leads = await api.get("/api/v1/lead/", params={"_limit": 1})
                    assert leads.status_code == 503, leads.text
                    assert int(leads.headers["Retry-After"]) > 0
                else:
                    # Users keep working: a committed change answers without waiting for the
                    # broker (its messages go out when the broker is back).
                    for status in ("paused", "resuming"):
                        asked = time.monotonic()
                        changed = await api.put(f"/api/v1/bulk_action/email/{bulk_id}/", json={"status": status})
                        assert changed.status_code == 200, changed.text
                        assert time.monotonic() - asked < PUBLISH_IN_REQUEST_S + 2, "the request waited for the broker"
                await asyncio.sleep(max(0.0, CUT_S - (time.monotonic() - cut_at)))
                await proxies[dependency].restore()
                await _wait(lambda d=dependency: mailer_sees(d, 1), 30, f"the mailer to reconnect to the {dependency}")
                reconnects = _metric(
                    (await mailer_metrics.get("/metrics")).text, "bulkmail_reconnects_total", dependency=dependency
                )
                assert reconnects is not None and reconnects >= 1

            async def done() -> bool:
                async with database.session() as session:
                    status = await session.scalar(select(BulkEmail.status).where(BulkEmail.id == bulk_id))
                return status == "done"

            await _wait(done, 120, "the bulk email to finish")
            assert (await api.get("/readyz")).status_code == 200
        states = await _check_ledger(database, bulk_id, capture.messages)
        print(f"broker and database each cut for {CUT_S:.0f} s: {dict(states)}")
    finally:
        await _stop(services.values())
        capture.stop()
        await api_broker.close()
        await drop_namespace(amqp_url, namespace)
        await api_database.dispose()
        await database.dispose()


async def _stop(services) -> None:  # type: ignore[no-untyped-def]
    """SIGTERM and wait without blocking this event loop: the proxies that carry the services'
    goodbyes to PostgreSQL and RabbitMQ run in it."""
    running = [s for s in services if s.proc and s.proc.poll() is None]
    for service in running:
        service.proc.terminate()
    deadline = time.monotonic() + 30
    while any(s.proc.poll() is None for s in running) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    for service in running:
        if service.proc.poll() is None:
            service.proc.kill()
            service.proc.wait(timeout=10)
            raise AssertionError(f"{service.name} did not stop within 30 s of SIGTERM:\n{service.log()[-3000:]}")


async def _true(value: bool) -> bool:
    return value


async def _start_send(api: httpx.AsyncClient, smtp_port: int) -> int:
    template = (
        await api.post("/api/v1/email_template/", json={"name": "T", "subject": "Hi {{ lead.name }}", "body": "x"})
    ).json()
    account = (
        await api.post(
            "/api/v1/email_account/",
            json={
                "email": "owner@drop.example",
                "smtp_host": HOST,
                "smtp_port": smtp_port,
                "smtp_security": "none",
                "max_connections": SMTP_CONNECTIONS,
            },
        )
    ).json()
    created = await api.post(
        "/api/v1/bulk_action/email/",
        json={"query": "*", "template_id": template["id"], "email_account_id": account["id"], "send_done_email": False},
    )
    assert created.status_code == 201, created.text
    return int(created.json()["id"])


async def _states(database: Database, bulk_id: int) -> Counter[str]:
    async with database.session() as session:
        rows = await session.execute(
            select(Recipient.state, func.count()).where(Recipient.bulk_email_id == bulk_id).group_by(Recipient.state)
        )
        return Counter({RecipientState(s).value: n for s, n in rows})


async def _check_ledger(database: Database, bulk_id: int, messages) -> Counter[str]:  # type: ignore[no-untyped-def]
    async with database.session() as session:
        rows = (
            await session.execute(select(Recipient.email, Recipient.state).where(Recipient.bulk_email_id == bulk_id))
        ).all()
    states = Counter(RecipientState(s).value for _, s in rows)
    received = Counter(rcpt for m in messages for rcpt in m.rcpt_tos)
    sent = {email for email, state in rows if RecipientState(state) == RecipientState.sent}
    unknown = {email for email, state in rows if RecipientState(state) == RecipientState.unknown}
    assert len(rows) == N_LEADS
    assert states["sent"] + states["unknown"] == N_LEADS, states  # every recipient final, none failed
    assert [a for a, n in received.items() if n > 1] == [], "an address got two copies"
    assert sent <= set(received), "a recipient recorded as sent never arrived"
    assert set(received) <= sent | unknown
    assert states["unknown"] <= DROPS * IN_FLIGHT_BOUND, states
    return states
