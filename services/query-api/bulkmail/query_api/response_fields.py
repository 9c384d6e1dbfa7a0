"""``_fields``: answer only the fields asked for, on single objects and on each item of a list.

Close accepts ``?_fields=id,display_name`` on most endpoints; scripts written for it use it to keep
responses small. It applies to successful JSON answers only (an error keeps its whole shape), and
``custom`` also selects the lead's top-level ``custom.<Field Name>`` keys. Names the resource does
not have are ignored, as Close does. One middleware does it for every route.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

ALL = "_all"
CUSTOM = "custom"


def wanted_fields(query_string: bytes) -> frozenset[str] | None:
    """The field names of ``_fields`` (comma-separated, possibly repeated), or None for all."""
    if b"_fields" not in query_string:
        return None
    names: set[str] = set()
    for key, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=False):
        if key == "_fields":
            names.update(n.strip() for n in value.split(",") if n.strip())
    return frozenset(names) if names and ALL not in names else None


def select_fields(body: Any, wanted: frozenset[str]) -> Any:
    """A list page keeps its envelope (``has_more``, ``total_results``) and narrows each item."""
    if isinstance(body, dict) and isinstance(body.get("data"), list) and "has_more" in body:
        return {**body, "data": [_pick(item, wanted) for item in body["data"]]}
    return _pick(body, wanted)


def _pick(item: Any, wanted: frozenset[str]) -> Any:
    if not isinstance(item, dict):
        return item
    every_custom = CUSTOM in wanted
    return {k: v for k, v in item.items() if k in wanted or (every_custom and k.startswith("custom."))}


class ResponseFieldsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        wanted = wanted_fields(scope.get("query_string", b"")) if scope["type"] == "http" else None
        if wanted is None:
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def narrowing_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers", []))
                is_json = headers.get(b"content-type", b"").startswith(b"application/json")
                if 200 <= message["status"] < 300 and is_json:
                    start = message  # held until the whole body is here
                    return
                await send(message)
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = json.dumps(
                select_fields(json.loads(b"".join(chunks)), wanted), ensure_ascii=False, separators=(",", ":")
            ).encode()
            kept = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            kept.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": kept})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, narrowing_send)
