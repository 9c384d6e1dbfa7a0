"""``bulkmail run``: the query-api, dispatcher and mailer in one process, with demo data.

On a fresh machine this is SQLite under ``BULKMAIL_DATA_DIR``, the in-process broker and a
local capture SMTP server (messages land in ``<data dir>/outbox`` as .eml files). With
``BULKMAIL_DATABASE_URL`` and ``BULKMAIL_AMQP_URL`` set, the same services run on
PostgreSQL and RabbitMQ.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import uvicorn
from sqlalchemy import func, select

from bulkmail.capture import CaptureServer
from bulkmail.dispatcher.worker import DispatcherWorker
from bulkmail.mailer.worker import MailerWorker
from bulkmail.query_api.app import create_app
from bulkmail.query_api.users.service import check_password, create_user, find_sign_in_user, set_password
from bulkmail.shared.broker import create_broker
from bulkmail.shared.db import Database
from bulkmail.shared.logging import get_logger
from bulkmail.shared.metrics import start_metrics_server, use_label_key
from bulkmail.shared.migrate import upgrade_async
from bulkmail.shared.models import ApiKey, ConnectionSecurity, EmailAccount, Organization, User
from bulkmail.shared.organizations import add_api_key, create_organization, hash_api_key
from bulkmail.shared.seed import seed
from bulkmail.shared.settings import Settings

log = get_logger(__name__)

DEMO_ORG = "Demo Co"


async def run_embedded(settings: Settings, demo_leads: int = 2_000) -> None:
    await upgrade_async(settings)
    database = Database(settings)
    broker = create_broker(settings)
    capture = None
    if settings.is_sqlite or settings.amqp_url.startswith("memory://"):
        capture = CaptureServer(port=settings.capture_smtp_port, directory=settings.data_dir / "outbox").start()
    try:
        api_key = await ensure_demo(settings, database, demo_leads)
        demo_login = await ensure_demo_user(settings, database)
        await broker.connect()
        workers = [DispatcherWorker(settings, database, broker), MailerWorker(settings, database, broker)]
        for worker in workers:
            await worker.open()
        app = create_app(settings, database=database, broker=broker)
        _serve_metrics(settings)
        server = uvicorn.Server(
            uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None, timeout_graceful_shutdown=10)
        )
        _banner(settings, api_key, demo_login, capture)
        try:
            await server.serve()  # returns on SIGINT/SIGTERM
        finally:
            await broker.close()  # stop deliveries; let those in progress finish
            for worker in workers:
                await worker.close()
    finally:
        await database.dispose()
        if capture is not None:
            capture.stop()


def _serve_metrics(settings: Settings) -> None:
    """One process, one registry: every service's metrics on the metrics port, on loopback."""
    use_label_key(settings.encryption_keys()[0])
    try:
        start_metrics_server(settings.metrics_port, addr="127.0.0.1")
    except OSError as exc:  # a developer machine may run a node exporter on 9100
        log.warning("metrics not served", port=settings.metrics_port, error=str(exc))


async def ensure_demo(settings: Settings, database: Database, demo_leads: int) -> str | None:
    """The demo organisation on first start; returns the demo API key to print (None if unknown)."""
    key_file = settings.data_dir / "demo-api-key"
    wanted = settings.demo_api_key.get_secret_value()
    async with database.session() as session:
        has_orgs = await session.scalar(select(func.count()).select_from(Organization))
    if not has_orgs:
        async with database.session() as session:
            new = await create_organization(
                session,
                DEMO_ORG,
                user_email=settings.demo_user_email.lower(),
                first_name="Demo",
                last_name="User",
                api_key=wanted or None,
            )
            session.add(
                EmailAccount(
                    organization_id=new.organization_id,
                    user_id=new.user_id,
                    email="sales@demo.example.com",
                    name="Demo Sales",
                    smtp_host="127.0.0.1",
                    smtp_port=settings.capture_smtp_port,
                    smtp_security=ConnectionSecurity.none,
                )
            )
        log.info("seeding the demo organisation", leads=demo_leads)
        await seed(database, leads=demo_leads, organization_id=new.organization_id)
        if not wanted:
            _write_private(key_file, new.api_key)
        return new.api_key
    if wanted:
        async with database.session() as session:
            known = await session.scalar(select(ApiKey.id).where(ApiKey.key_hash == hash_api_key(wanted)))
            if known is None:
                user = await session.scalar(
                    select(User).where(User.email == settings.demo_user_email.lower()).order_by(User.id)
                )
                if user is None:
                    return None
                await add_api_key(session, user, wanted)
        return wanted
    return key_file.read_text().strip() if key_file.exists() else None


async def ensure_demo_user(settings: Settings, database: Database) -> tuple[str, str] | None:
    """The demo user's web sign-in (email, password), made or updated to match the settings.

    ``BULKMAIL_DEMO_PASSWORD`` wins; without it a password is generated once and kept in the data
    directory (like the demo API key). None when the demo organisation is not this database's.
    """
    email = settings.demo_user_email.lower()
    password_file = settings.data_dir / "demo-password"
    wanted = settings.demo_password.get_secret_value()
    password = wanted or (password_file.read_text().strip() if password_file.exists() else "")
    async with database.session() as session:
        user = await find_sign_in_user(session, email)
        if user is not None and password and await check_password(session, email, password) is not None:
            return email, password
        if not password:
            password = secrets.token_urlsafe(12)
            _write_private(password_file, password)
        if user is not None:
            await set_password(session, user, password)
            return email, password
        demo_org = await session.scalar(select(Organization.id).where(Organization.name == DEMO_ORG))
        if demo_org is None:
            return None
        await create_user(session, organization_id=demo_org, email=email, name="Demo User", password=password)
    return email, password


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")


def _banner(
    settings: Settings, api_key: str | None, demo_login: tuple[str, str] | None, capture: CaptureServer | None
) -> None:
    url = f"http://{settings.host}:{settings.port}"
    key = api_key or "(set BULKMAIL_DEMO_API_KEY, or use a key from `bulkmail create-org`)"
    login = (
        f"{demo_login[0]} / {demo_login[1]}"
        if demo_login
        else "(add one with `bulkmail create-user --email … --name … --password … --org …`)"
    )
    lines = [
        "",
        "bulkmail is running",
        f"  Open:     {url}/   (the web app)",
        f"  Sign in:  {login}",
        f"  API:      {url}/api/v1/   (OpenAPI: {url}/docs)",
        f"  API key:  {key}",
        f"  Try:      curl -u '{api_key or 'KEY'}:' '{url}/api/v1/lead/?_limit=3'",
        f"  Database: {settings.database_url}",
        f"  Broker:   {settings.amqp_url}",
    ]
    if capture is not None:
        lines.append(f"  Mail:     captured by 127.0.0.1:{capture.port}, saved in {settings.data_dir / 'outbox'}")
    lines.append("")
    print("\n".join(lines), flush=True)
