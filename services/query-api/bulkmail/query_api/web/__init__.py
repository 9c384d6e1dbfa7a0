"""The web app: server-rendered pages for salespeople, signed in with a session cookie.

``install_web(app)`` adds the pages (``router.web_router``), the static files and the security
headers. Every page route is guarded by ``session.web_guard``: it finds the signed-in user and
refuses state-changing requests without a valid CSRF token from this origin. Pages call the same
domain services as the API; they never accept an API key. See docs/web.md.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from bulkmail.query_api.web.errors import install_web_error_handlers
from bulkmail.query_api.web.headers import SecurityHeadersMiddleware
from bulkmail.query_api.web.router import web_router

STATIC_DIR = Path(__file__).parent / "static"


def install_web(app: FastAPI) -> None:
    install_web_error_handlers(app)
    app.include_router(web_router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(SecurityHeadersMiddleware)
