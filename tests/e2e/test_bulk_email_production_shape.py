"""End to end on the production shape: PostgreSQL, RabbitMQ, and the dispatcher and mailer as
their own processes, sending to a real SMTP server over TCP."""

from __future__ import annotations

import subprocess
import sys
import uuid

import httpx
import pytest

from bulkmail.capture import CaptureServer
from bulkmail.query_api.app import create_app
from bulkmail.shared.broker.rabbitmq import RabbitMQBroker
from bulkmail.shared.db import Database
from bulkmail.shared.organizations import create_organization
from tests.broker_cleanup import drop_namespace
from tests.conftest import free_port
from tests.e2e.flow import run_flow
from tests.e2e.processes import Service, service_env


@pytest.fixture
def rabbit_settings(settings_for, amqp_url):
    return settings_for(
        "postgres",
        amqp_url=amqp_url,
        broker_namespace=f"bulkmail-e2e-{uuid.uuid4().hex[:8]}",
        sweep_interval_s=0.5,
        public_url="https://bulkmail.example.test",
    )


async def test_flow_on_postgres_and_rabbitmq_with_separate_processes(rabbit_settings, tmp_path):
    database = Database(rabbit_settings)
    async with database.session() as session:
        tenant = await create_organization(
            session, "Rabbit Org", user_email="sally@seller.example", first_name="Sally", last_name="Seller"
        )
    broker = RabbitMQBroker(rabbit_settings.amqp_url, rabbit_settings.broker_namespace)
    await broker.connect()
    env = service_env(rabbit_settings)
    services = [Service("dispatcher", env, tmp_path).start(), Service("mailer", env, tmp_path).start()]
    try:
        with CaptureServer(port=free_port()) as capture:
            app = create_app(rabbit_settings, database=database, broker=broker)
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://testserver",
                headers={"Authorization": f"Bearer {tenant.api_key}", "X-Correlation-ID": "e2e-flow-1"},
            ) as client:
                await run_flow(client, capture.port, capture.messages, "Rabbit Org")
        # The exec probe Kubernetes runs: alive while the workers beat, not for a service never started.
        for name in ("dispatcher", "mailer"):
            assert _check(name, env) == 0
        assert _check("mailer", {**env, "BULKMAIL_DATA_DIR": str(tmp_path / "elsewhere")}) == 1
        for service in services:
            assert service.stop() == 0, service.log()  # SIGTERM: a clean, graceful exit
        # The request's correlation id travelled through AMQP into the workers' logs.
        assert "e2e-flow-1" in services[1].log()
    finally:
        for service in services:
            if service.proc and service.proc.poll() is None:
                service.proc.kill()
        await broker.close()
        await drop_namespace(rabbit_settings.amqp_url, rabbit_settings.broker_namespace)
        await database.dispose()


def _check(service: str, env: dict[str, str]) -> int:
    return subprocess.run(
        [sys.executable, "-m", "bulkmail.cli", service, "--check"], env=env, timeout=60, check=False
    ).returncode
