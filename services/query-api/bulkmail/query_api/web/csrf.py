"""Cross-site request forgery: every state-changing web request proves it comes from our pages.

Two checks, both required:
- the request's ``Origin`` (or, when a browser sends none, its ``Referer``) is this app's origin;
- it carries the CSRF token of its session, as the form field ``csrf_token`` or the header
  ``X-CSRF-Token``. The token is an HMAC of the session's cookie token, so it needs no storage,
  cannot be computed without the cookie, and changes with every sign-in.

Before sign-in, the sign-in form's token comes from a random pre-session cookie instead, so a
foreign site cannot sign a victim in to the attacker's account (login CSRF).
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

from fastapi import Request

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class CSRFRefused(Exception):
    """A state-changing web request that did not prove it came from our own pages."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def token_for(seed: str) -> str:
    """The CSRF token belonging to a session (or pre-session) cookie token."""
    return hmac.new(seed.encode(), b"bulkmail csrf", hashlib.sha256).hexdigest()


def _origin_of(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def allowed_origins(request: Request) -> set[str]:
    """This app's origin as the request reached it, and as ``PUBLIC_URL`` names it (behind a proxy)."""
    origins = {str(request.base_url).rstrip("/").lower()}
    public = _origin_of(request.app.state.settings.public_url or "")
    if public:
        origins.add(public)
    return origins


def request_origin(request: Request) -> str | None:
    origin = request.headers.get("origin")
    if origin is not None:
        return None if origin == "null" else origin.lower()
    referer = request.headers.get("referer")
    return _origin_of(referer) if referer else None


async def check_csrf(request: Request, seed: str | None) -> None:
    """Raise ``CSRFRefused`` unless this state-changing request is same-origin and carries its token."""
    origin = request_origin(request)
    if origin is None:
        raise CSRFRefused("The request did not say which site it came from (no Origin or Referer).")
    if origin not in allowed_origins(request):
        raise CSRFRefused(f"The request came from another site ({origin}).")
    submitted = request.headers.get(CSRF_HEADER)
    if submitted is None and request.headers.get("content-type", "").startswith(FORM_TYPES):
        value = (await request.form()).get(CSRF_FIELD)
        submitted = value if isinstance(value, str) else None
    if seed is None:
        raise CSRFRefused("This page has expired; reload it and try again.")
    if not submitted or not hmac.compare_digest(submitted, token_for(seed)):
        raise CSRFRefused("The form's security token is missing or out of date; reload the page and try again.")
