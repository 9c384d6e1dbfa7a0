"""503 with ``Retry-After`` while the database cannot be reached, instead of a 500.

A request that failed because PostgreSQL is restarting, failing over or cut off by the network
did nothing wrong and changed nothing (its transaction never committed): the client should try
again shortly, and load balancers and clients know what a 503 with ``Retry-After`` means. Any
other database error keeps the ordinary 500 path.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DBAPIError

from bulkmail.shared import metrics
from bulkmail.shared.db import is_database_unavailable
from bulkmail.shared.logging import get_logger

log = get_logger(__name__)

RETRY_AFTER_S = 5


def unavailable_response() -> JSONResponse:
    return JSONResponse(
        {
            "error": "Service unavailable",
            "detail": "The database cannot be reached right now; nothing was changed. Try again in a few seconds.",
        },
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def _from_the_broker(exc: BaseException) -> bool:
    # AMQP connection errors are OSErrors too; they are not about the database (and come after
    # the commit, so "nothing was changed" would not hold).
    return type(exc).__module__.split(".")[0] in ("aiormq", "aio_pika")


def install_unavailable_handler(app: FastAPI) -> None:
    """Answer database outages with 503; install after the app's other error handlers."""

    async def _database_error(request: Request, exc: Exception) -> Response:
        if is_database_unavailable(exc) and not _from_the_broker(exc):
            log.warning("database unreachable", path=request.url.path, error=repr(exc))
            metrics.record_dependency("database", False)
            return unavailable_response()
        fallback = request.app.exception_handlers.get(Exception)
        if fallback is None:
            raise exc
        response: Response = await fallback(request, exc)
        return response

    # asyncpg's own errors and socket errors can reach the endpoint unwrapped (a connection
    # refused while the pool opens one), SQLAlchemy's wrapped as DBAPIError.
    import asyncpg

    for exc_class in (DBAPIError, OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        app.add_exception_handler(exc_class, _database_error)
