"""Errors on the salesperson's pages: shown as a page, never as the API's JSON."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import HTMLResponse

from bulkmail.query_api.web.rendering import render


def page_not_found(request: Request, message: str) -> HTMLResponse:
    """Another organisation's row looks exactly like a missing one."""
    return render(request, "error.html", {"title": "Not found", "message": message}, status_code=404)
