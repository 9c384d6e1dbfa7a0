"""How the web app answers a signed-out visitor and a refused cross-site request."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from bulkmail.query_api.web.csrf import CSRFRefused
from bulkmail.query_api.web.rendering import render
from bulkmail.query_api.web.session import SignInRequired, wants_json
from bulkmail.shared.logging import get_logger

log = get_logger(__name__)


def install_web_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SignInRequired)
    async def _sign_in_required(request: Request, _exc: SignInRequired) -> Response:
        if wants_json(request):
            return JSONResponse({"error": "Unauthorized", "detail": "Sign in first."}, status_code=401)
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/signin?next={quote(path, safe='')}", status_code=303)

    @app.exception_handler(CSRFRefused)
    async def _csrf_refused(request: Request, exc: CSRFRefused) -> Response:
        log.warning("web request refused by the CSRF check", path=request.url.path, reason=exc.reason)
        if wants_json(request) or request.headers.get("x-csrf-token") is not None:
            return JSONResponse({"error": "Forbidden", "detail": exc.reason}, status_code=403)
        return render(
            request,
            "error.html",
            {"title": "Request refused", "message": exc.reason},
            status_code=403,
        )
