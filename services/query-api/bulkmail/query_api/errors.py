"""API errors: each class carries its HTTP status and renders as ``{"error", "detail"}``.

One handler turns them into responses; anything unexpected is a 500 with no traceback or
internals in the body. Payload validation answers as Close does (docs/close-compatibility.md):
400 with ``"errors"`` and ``"field-errors"``, which Close's own client turns into
``ValidationError.field_errors``, plus our ``detail`` and ``field_errors``. Each field is named
by its path into the body (``contacts[0].emails[1].email``).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from bulkmail.query_api.search.errors import QueryError
from bulkmail.query_api.search.structured import StructuredQueryError
from bulkmail.shared.logging import get_logger

log = get_logger(__name__)


class APIError(Exception):
    status_code = 400
    error = "Bad request"

    def __init__(self, detail: str = "", **extra: Any) -> None:
        super().__init__(detail or self.error)
        self.detail = detail or self.error
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "detail": self.detail, **self.extra}


class BadRequest(APIError):
    pass


class Unauthorized(APIError):
    status_code = 401
    error = "Unauthorized"


class NotFound(APIError):
    """Also what another organisation's row looks like: its existence is never revealed."""

    status_code = 404
    error = "Not found"


class Conflict(APIError):
    status_code = 409
    error = "Conflict"


class PayloadTooLarge(APIError):
    status_code = 413
    error = "Payload too large"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_request: Request, exc: APIError) -> JSONResponse:
        headers = {"WWW-Authenticate": 'Basic realm="bulkmail"'} if exc.status_code == 401 else None
        return JSONResponse(exc.body(), status_code=exc.status_code, headers=headers)

    @app.exception_handler(QueryError)
    async def _query_error(_request: Request, exc: QueryError) -> JSONResponse:
        return JSONResponse(exc.to_dict(), status_code=400)

    @app.exception_handler(StructuredQueryError)
    async def _structured_query_error(_request: Request, exc: StructuredQueryError) -> JSONResponse:
        detail = f"s_query cannot be used: {exc}"
        body = {"error": "Invalid request", "detail": detail, "errors": [], "field-errors": {exc.path: exc.detail}}
        return JSONResponse(body, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            where = field_path(err.get("loc", ()))
            problems.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg")))
        field_errors = _field_errors(exc)
        return JSONResponse(
            {
                "error": "Invalid request",
                "detail": "; ".join(problems),
                "errors": [],
                "field-errors": field_errors,
                "field_errors": field_errors,
            },
            status_code=400,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": _reason(exc.status_code), "detail": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", path=request.url.path)
        return JSONResponse(
            {"error": "Internal server error", "detail": "The error was logged; nothing was changed."},
            status_code=500,
        )


def field_path(loc: Any) -> str:
    """A validation error's location as a path into the payload: ``contacts[0].emails[1].email``
    (query and path parameters keep their names)."""
    out = ""
    for i, part in enumerate(loc):
        if i == 0 and part in ("body", "query", "path", "header", "cookie"):
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _field_errors(exc: RequestValidationError) -> dict[str, str]:
    """``{"contacts.0.emails.0.email": "..."}``: keyed by the field's path as the client sent it."""
    out: dict[str, str] = {}
    for err in exc.errors():
        out[field_path(err.get("loc", ())) or "body"] = str(err.get("msg", "invalid"))
    return out


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
