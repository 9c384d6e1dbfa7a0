"""Bounds on the raw request, checked before FastAPI parses anything.

- A body over ``BULKMAIL_MAX_REQUEST_BYTES`` (the lead import: ``BULKMAIL_MAX_IMPORT_BYTES``) is
  answered 413 from its Content-Length, or as soon as that many bytes have arrived, never read whole.
- A JSON body must be JSON: a syntax error is a 400 with its line and column (FastAPI's own error
  names the character offset as if it were a field); nesting deeper than
  ``BULKMAIL_MAX_JSON_DEPTH`` is refused before the parser recurses into it; integers outside
  64 bits and non-finite numbers (``NaN``, ``1e999``) are refused, as no column could hold them.
- A body without a Content-Type is refused saying so, instead of being guessed at.
- A string holding NUL (``\\u0000``) is refused: PostgreSQL cannot store it, SQLite would.

The import streams NDJSON or CSV itself: only its size is counted here, and its lines are held to
the same JSON rules by ``load_json`` (``bulkmail.query_api.imports.parsing``).
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bulkmail.query_api.errors import PayloadTooLarge

MAX_BIGINT = 2**63 - 1
_WITH_BODY = {"POST", "PUT", "PATCH", "DELETE"}
# Strings (with their escapes) or a bracket: brackets inside strings are not structure.
_STRUCTURE = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.S)


class JSONProblem(ValueError):
    """A body or line that is not JSON within our bounds; the message says what and where."""


def _int(text: str) -> int:
    value = int(text)
    if not -MAX_BIGINT - 1 <= value <= MAX_BIGINT:
        shown = text if len(text) <= 30 else f"{text[:12]}…({len(text)} digits)"
        raise JSONProblem(f"the number {shown} is outside the 64-bit integer range")
    return value


def _float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise JSONProblem(f"the number {text[:30]} is too large")
    return value


def _constant(text: str) -> Any:
    raise JSONProblem(f"{text} is not a JSON number")


def _position(text: str, offset: int) -> str:
    line = text.count("\n", 0, offset) + 1
    return f"line {line}, column {offset - text.rfind(chr(10), 0, offset)}"


def load_json(text: str, max_depth: int) -> Any:
    """``text`` parsed, or ``JSONProblem`` naming what is wrong and where."""
    if text.count("[") + text.count("{") > max_depth:  # cheap test first: most bodies are shallow
        depth = 0
        for m in _STRUCTURE.finditer(text):
            token = m.group()
            if token in "[{":
                depth += 1
                if depth > max_depth:
                    raise JSONProblem(f"JSON nested deeper than {max_depth} levels at {_position(text, m.start())}")
            elif token in "]}":
                depth -= 1
    try:
        value = json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except json.JSONDecodeError as exc:
        raise JSONProblem(f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    # JSON can carry NUL only escaped; PostgreSQL's text cannot hold it at all.
    if "\\u0000" in text and _has_nul(value):
        at = text.find("\\u0000")
        raise JSONProblem(f"a string holds a NUL character (\\u0000) near {_position(text, at)}; no text field can")
    return value


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _refusal(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status)


class RequestLimitsMiddleware:
    """Pure ASGI, so a refused body is never buffered by anything above it."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        max_streamed_bytes: int,
        max_json_depth: int,
        streamed_paths: frozenset[str],
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_streamed_bytes = max_streamed_bytes
        self.max_json_depth = max_json_depth
        self.streamed_paths = streamed_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if b"%00" in scope.get("query_string", b""):
            refusal = _refusal(400, "Bad request", "The query string holds a NUL character (%00); no field can.")
            await refusal(scope, receive, send)
            return
        if scope["method"] not in _WITH_BODY:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        streamed = scope["path"].rstrip("/") in self.streamed_paths
        limit = self.max_streamed_bytes if streamed else self.max_body_bytes
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await _too_large(limit)(scope, receive, send)
            return
        if streamed:
            await self.app(scope, _counting(receive, limit), send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client went away: nothing to answer
            body += message.get("body", b"")
            if len(body) > limit:
                await _too_large(limit)(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        if body and scope["path"].startswith("/api/"):
            problem = self._check(headers.get("content-type"), bytes(body))
            if problem is not None:
                await problem(scope, receive, send)
                return
        await self.app(scope, _replay(bytes(body), receive), send)

    def _check(self, content_type: str | None, body: bytes) -> JSONResponse | None:
        if not content_type:
            return _refusal(
                415,
                "Unsupported media type",
                "The request has a body but no Content-Type header; send Content-Type: application/json.",
            )
        media = content_type.split(";", 1)[0].strip().lower()
        if not (media == "application/json" or media.endswith("+json")):
            return None  # FastAPI answers what it does not take
        try:
            text = body.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            return _refusal(400, "Invalid JSON", f"the body is not UTF-8 text (byte {exc.start})")
        try:
            load_json(text, self.max_json_depth)
        except JSONProblem as exc:
            return _refusal(400, "Invalid JSON", str(exc))
        return None


def _too_large(limit: int) -> JSONResponse:
    error = PayloadTooLarge(f"The request body is larger than {limit:,} bytes.", limit=limit)
    return JSONResponse(error.body(), status_code=error.status_code)


def _counting(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise PayloadTooLarge(f"The request body is larger than {limit:,} bytes.", limit=limit)
        return message

    return counted


def _replay(body: bytes, receive: Receive) -> Receive:
    done = False

    async def replayed() -> Message:
        nonlocal done
        if not done:
            done = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
