"""Security headers on every response (pages, static files, the API).

The Content-Security-Policy allows only this origin: no inline script or style, no CDN, no
framing by other sites. A response that sets its own policy keeps it (the sandboxed preview of an
email body, see ``sandboxed_document``). FastAPI's interactive docs (/docs, /redoc) are turned
off in ``create_app``: they load Swagger UI and ReDoc from a CDN, which an air-gapped install cannot
reach and this policy would block; ``/openapi.json`` stays.
"""

from __future__ import annotations

from fastapi.responses import HTMLResponse
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-src 'self'; "
    "frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}
# An email body shown in an <iframe sandbox src=...> of our own page: its inline styles render,
# nothing else loads or runs (no script, no remote images, no forms), and only our pages frame it.
SANDBOXED_DOCUMENT_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:; "
    "frame-ancestors 'self'; base-uri 'none'; form-action 'none'; sandbox"
)


def sandboxed_document(html: str) -> HTMLResponse:
    """An untrusted HTML document (a rendered email) for an iframe of our pages.

    Use ``<iframe sandbox src="...">`` pointing at a route that returns this, not ``srcdoc``: a
    srcdoc frame inherits the page's policy, which blocks every inline style an email carries.
    """
    return HTMLResponse(
        html,
        headers={
            "Content-Security-Policy": SANDBOXED_DOCUMENT_POLICY,
            "X-Frame-Options": "SAMEORIGIN",
            "Cache-Control": "no-store",
        },
    )


class SecurityHeadersMiddleware:
    """Pure ASGI (not BaseHTTPMiddleware), so streamed responses such as SSE pass through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
            await send(message)

        await self.app(scope, receive, send_with_headers)
