"""``render()``: a page from ``web/templates/`` with the context every page needs.

Templates autoescape. Static files are linked with a content hash (``static_url``) so a new
release is never served a stale stylesheet from the browser's cache.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from bulkmail.query_api.web.session import PRESESSION_COOKIE, csrf_token

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"

# The top navigation; the first path segment picks the current entry.
NAV = (
    ("leads", "Leads", "/leads"),
    ("bulk-emails", "Bulk emails", "/bulk-emails"),
    ("templates", "Templates", "/templates"),
    ("email-accounts", "Email accounts", "/email-accounts"),
    ("settings", "Settings", "/settings"),
)
_NAV_ALIASES = {"smart-views": "leads"}


@cache
def static_url(name: str) -> str:
    digest = hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:12]
    return f"/static/{name}?v={digest}"


def browser_name(user_agent: str) -> str:
    """ "Chrome on Linux" from a User-Agent header: enough to tell one's browsers apart."""
    browser = next(
        (name for token, name in _BROWSERS if token in user_agent), "A browser" if user_agent else "Unknown browser"
    )
    system = next((name for token, name in _SYSTEMS if token in user_agent), "")
    return f"{browser} on {system}" if system else browser


# Order matters: Edge and Chrome also say "Safari", Chrome-based browsers say "Chrome".
_BROWSERS = (("Edg/", "Edge"), ("Firefox/", "Firefox"), ("Chrome/", "Chrome"), ("Safari/", "Safari"))
_SYSTEMS = (
    ("Android", "Android"),
    ("iPhone", "iPhone"),
    ("iPad", "iPad"),
    ("Windows", "Windows"),
    ("Mac OS X", "macOS"),
    ("Linux", "Linux"),
)


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(["html", "svg"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["static_url"] = static_url
    env.globals["nav_items"] = NAV
    env.filters["browser_name"] = browser_name
    return env


templates = _environment()


def current_nav(request: Request) -> str:
    section = request.url.path.strip("/").split("/", 1)[0]
    return _NAV_ALIASES.get(section, section)


def render(
    request: Request, template: str, context: dict[str, Any] | None = None, status_code: int = 200
) -> HTMLResponse:
    """Render ``template`` with ``request``, ``user`` (signed-in ``CurrentUser`` or None),
    ``csrf_token`` and ``current_nav`` added to ``context``."""
    page: dict[str, Any] = {
        "request": request,
        "user": getattr(request.state, "web_user", None),
        "csrf_token": csrf_token(request),
        "current_nav": current_nav(request),
    }
    page.update(context or {})
    html = templates.get_template(template).render(page)
    # Pages show one organisation's data: never kept by a shared cache or the back-forward cache.
    response = HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})
    new_presession = getattr(request.state, "new_presession", None)
    if new_presession is not None:
        settings = request.app.state.settings
        response.set_cookie(
            PRESESSION_COOKIE,
            new_presession,
            httponly=True,
            samesite="lax",
            secure=settings.base_url.startswith("https://"),
        )
    return response
