"""Who is signed in, for every web route, and the central CSRF check.

``web_guard`` runs before every route of ``web_router`` (a router dependency): it resolves the
session cookie to a ``CurrentUser`` (``request.state.web_user``) and refuses a state-changing
request that fails the CSRF checks (403). Pages then ask for the user with ``WebUserDep``: a
signed-out browser is sent to ``/signin?next=<path>`` (303), a signed-out JSON request gets 401.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from bulkmail.query_api.auth import Principal
from bulkmail.query_api.deps import SessionDep
from bulkmail.query_api.web.csrf import SAFE_METHODS, check_csrf, token_for
from bulkmail.query_api.web.session_store import resolve_session

SESSION_COOKIE = "bulkmail_session"
# Random value that stands in for a session before sign-in (the sign-in form's CSRF token).
PRESESSION_COOKIE = "bulkmail_presession"


@dataclass(frozen=True)
class CurrentUser:
    """The signed-in user, as pages need them."""

    user_id: int
    email: str
    organization_id: int
    name: str
    timezone: str = "UTC"
    session_id: int = 0

    @property
    def principal(self) -> Principal:
        """The same caller identity the API's domain services take."""
        return Principal(organization_id=self.organization_id, user_id=self.user_id, timezone=self.timezone)


class SignInRequired(Exception):
    """A page or /ui/ call that needs a signed-in user got none."""


def wants_json(request: Request) -> bool:
    return request.url.path.startswith("/ui/") or "application/json" in request.headers.get("accept", "")


async def web_guard(request: Request, session: SessionDep) -> None:
    """Runs before every web route: the signed-in user (or None), then the CSRF check on writes."""
    settings = request.app.state.settings
    request.state.web_user = None
    request.state.csrf_seed = None
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        active = await resolve_session(session, token, settings)
        if active is not None:
            user = active.user
            request.state.web_user = CurrentUser(
                user_id=user.id,
                email=user.email,
                organization_id=user.organization_id,
                name=user.name,
                timezone=user.timezone,
                session_id=active.session_id,
            )
            request.state.csrf_seed = token
            request.state.organization_id = user.organization_id  # what a write forgets (recent.py)
    if request.state.csrf_seed is None:
        request.state.csrf_seed = request.cookies.get(PRESESSION_COOKIE)
    # Signing out without a live session changes nothing, so it needs no proof: a sign-out button
    # on a page left open past the session's end just goes to the sign-in page.
    nothing_to_forge = request.state.web_user is None and request.url.path == "/signout"
    if request.method not in SAFE_METHODS and not nothing_to_forge:
        await check_csrf(request, request.state.csrf_seed)


def csrf_token(request: Request) -> str:
    """The token to put in this page's forms; starts a pre-session for a browser that has none."""
    seed = getattr(request.state, "csrf_seed", None)
    if seed is None:
        seed = request.state.csrf_seed = secrets.token_urlsafe(32)
        request.state.new_presession = seed
    return token_for(seed)


async def require_web_user(request: Request) -> CurrentUser:
    user: CurrentUser | None = getattr(request.state, "web_user", None)
    if user is None:
        raise SignInRequired
    return user


async def optional_web_user(request: Request) -> CurrentUser | None:
    return getattr(request.state, "web_user", None)


WebUserDep = Annotated[CurrentUser, Depends(require_web_user)]
OptionalWebUserDep = Annotated[CurrentUser | None, Depends(optional_web_user)]


def safe_next(target: str | None, default: str = "/leads") -> str:
    """Only a path on this site (``/…``, not ``//host`` or ``/\\host``): never an open redirect."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return default
    # Browsers read a backslash as a slash and drop tabs and newlines: "/\\evil" or "/\t/evil" is "//evil".
    if "\\" in target or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return default
    return target
