"""The query-api FastAPI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from bulkmail.query_api.activities.endpoints import router as activities_router
from bulkmail.query_api.auth import KeyUse
from bulkmail.query_api.bulk_emails.endpoints import router as bulk_emails_router
from bulkmail.query_api.contacts.endpoints import router as contacts_router
from bulkmail.query_api.correlation import CorrelationIdMiddleware
from bulkmail.query_api.email_accounts.endpoints import router as email_accounts_router
from bulkmail.query_api.email_templates.endpoints import router as email_templates_router
from bulkmail.query_api.errors import install_error_handlers
from bulkmail.query_api.feedback_webhooks.endpoints import public_router as webhooks_public_router
from bulkmail.query_api.feedback_webhooks.endpoints import router as webhooks_router
from bulkmail.query_api.imports.endpoints import router as imports_router
from bulkmail.query_api.leads.endpoints import router as leads_router
from bulkmail.query_api.recent import ForgetOnWrite, Kept
from bulkmail.query_api.request_limits import RequestLimitsMiddleware
from bulkmail.query_api.response_fields import ResponseFieldsMiddleware
from bulkmail.query_api.saved_searches.endpoints import router as saved_searches_router
from bulkmail.query_api.statuses.endpoints import router as statuses_router
from bulkmail.query_api.tracking import router as tracking_router
from bulkmail.query_api.trailing_slash import EitherSlashMiddleware
from bulkmail.query_api.unavailable import RETRY_AFTER_S, install_unavailable_handler
from bulkmail.query_api.unsubscribe import router as unsubscribe_router
from bulkmail.query_api.web import install_web
from bulkmail.shared import metrics as metrics_module
from bulkmail.shared.broker import Broker, create_broker
from bulkmail.shared.db import Database
from bulkmail.shared.logging import get_logger
from bulkmail.shared.secrets import SecretBox
from bulkmail.shared.settings import Settings

log = get_logger(__name__)

API_PREFIX = "/api/v1"
API_ROUTERS: list[APIRouter] = [
    imports_router,
    leads_router,
    contacts_router,
    statuses_router,
    email_templates_router,
    saved_searches_router,
    email_accounts_router,
    webhooks_router,
    activities_router,
    bulk_emails_router,
]


# Bodies read as a stream by their endpoint (NDJSON or CSV), bounded by their own size limit.
STREAMED_PATHS = frozenset({"/api/v1/lead/import"})


def create_app(settings: Settings, database: Database | None = None, broker: Broker | None = None) -> FastAPI:
    """The app; pass ``database``/``broker`` to share them (embedded mode, tests), else it owns its own."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owns_db, owns_broker = database is None, broker is None
        app.state.database = database or Database(settings)
        app.state.broker = broker or create_broker(settings)
        if owns_broker:
            await app.state.broker.connect()
        log.info("query-api started", database=app.state.database.dialect)
        try:
            yield
        finally:
            await app.state.key_use.drain()
            if owns_broker:
                await app.state.broker.close()
            if owns_db:
                await app.state.database.dispose()

    app = FastAPI(
        title="bulkmail",
        version="0.1.0",
        description="Search leads, preview a template, and send it to every match through your own SMTP server.",
        lifespan=lifespan,
        # Swagger UI and ReDoc come from a CDN: nothing this app serves may load from another origin
        # (air-gapped installs, the strict CSP). The schema is at /openapi.json for any viewer.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.secret_box = SecretBox.from_settings(settings)
    # Publishes a request handed to the background while RabbitMQ was away (deps.py).
    app.state.pending_publishes = set()
    # Refreshes of API keys' last_used_at, written in the background (auth.py).
    app.state.key_use = KeyUse()
    # What recent requests read (catalogues, searches' totals), kept a few seconds (recent.py).
    app.state.kept = Kept()
    # Available before startup too, so an app driven without its lifespan (tests) still works.
    if database is not None:
        app.state.database = database
    if broker is not None:
        app.state.broker = broker
    app.add_middleware(
        RequestLimitsMiddleware,
        max_body_bytes=settings.max_request_bytes,
        max_streamed_bytes=settings.max_import_bytes,
        max_json_depth=settings.max_json_depth,
        streamed_paths=STREAMED_PATHS,
    )
    app.add_middleware(ResponseFieldsMiddleware)
    app.add_middleware(
        EitherSlashMiddleware,
        routes=[
            (f"{API_PREFIX}{route.path}", route.methods or set())
            for router in API_ROUTERS
            for route in router.routes
            if isinstance(route, APIRoute)
        ],
    )
    app.add_middleware(CorrelationIdMiddleware)
    app.add_middleware(ForgetOnWrite, kept=app.state.kept)
    install_error_handlers(app)
    install_unavailable_handler(app)
    api = APIRouter(prefix=API_PREFIX)
    for router in API_ROUTERS:
        api.include_router(router)
    app.include_router(api)
    app.include_router(unsubscribe_router)
    app.include_router(webhooks_public_router)
    app.include_router(tracking_router)
    install_web(app)
    _add_health(app)
    return app


def _add_health(app: FastAPI) -> None:
    # No /metrics here: the API port is public. Metrics are served on BULKMAIL_METRICS_PORT
    # (``bulkmail query-api`` starts that server, as the workers do).
    @app.get("/healthz", include_in_schema=False)
    async def liveness() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readiness(request: Request) -> Response:
        # Each ping is bounded (Database.ping's timeout; the broker's is a flag), so a probe
        # answers quickly even while a server swallows packets.
        problems: dict[str, str] = {}
        try:
            await request.app.state.database.ping()
        except Exception as exc:
            problems["database"] = type(exc).__name__
        try:
            await request.app.state.broker.ping()
        except Exception as exc:
            problems["broker"] = type(exc).__name__
        metrics_module.record_dependency("database", "database" not in problems)
        if problems:
            return JSONResponse(
                {"status": "unavailable", **problems}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)}
            )
        return JSONResponse({"status": "ready"})
