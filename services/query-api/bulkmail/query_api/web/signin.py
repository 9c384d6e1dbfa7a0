"""Signing in and out: ``/signin``, ``/signout``, and ``/`` (to the leads)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from bulkmail.query_api.deps import DatabaseDep, SessionDep
from bulkmail.query_api.users.service import find_sign_in_user, normalize_email, verify_password
from bulkmail.query_api.web import throttle
from bulkmail.query_api.web.rendering import render
from bulkmail.query_api.web.session import (
    PRESESSION_COOKIE,
    SESSION_COOKIE,
    OptionalWebUserDep,
    WebUserDep,
    safe_next,
)
from bulkmail.query_api.web.session_store import now_utc, revoke_session, start_session
from bulkmail.shared.logging import get_logger
from bulkmail.shared.models import User

log = get_logger(__name__)
router = APIRouter()

MAX_EMAIL_LENGTH = 320  # RFC 5321's limit, and the column's


@router.get("/")
async def home() -> RedirectResponse:
    return RedirectResponse("/leads", status_code=303)


@router.get("/signin")
async def sign_in_page(request: Request, user: OptionalWebUserDep, next: str = "") -> Response:
    if user is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return render(request, "signin.html", {"next": safe_next(next), "email": ""})


@router.post("/signin")
async def sign_in(
    request: Request,
    session: SessionDep,
    database: DatabaseDep,
    email: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "",
) -> Response:
    settings = request.app.state.settings
    address = request.client.host if request.client else "unknown"
    account = normalize_email(email)
    page = {"next": safe_next(next), "email": email}
    if not account or not password:
        return render(request, "signin.html", {**page, "error": "Enter your email address and password."}, 400)
    if len(account) > MAX_EMAIL_LENGTH:
        page["email"] = ""
        return render(request, "signin.html", {**page, "error": "That is not an email address."}, 400)
    now = now_utc()
    # In a transaction of its own, committed before the password is checked: parallel guesses
    # see each other (see throttle), and no database connection is held while argon2 works.
    async with database.session() as tx:
        verdict = await throttle.judge(tx, settings, account, address, now)
        if not verdict.refused:
            attempt_id = await throttle.record_attempt(tx, account, address, now)
            await throttle.prune(tx, settings, account, address, now)
            found = await find_sign_in_user(tx, account)
            user_id, stored_hash = (found.id, found.password_hash) if found is not None else (None, None)
    if verdict.refused:
        log.warning("sign-in refused: too many failures", client=address)
        minutes = max(1, round(verdict.retry_after_s / 60))
        refusal = render(
            request,
            "signin.html",
            {**page, "error": f"Too many failed sign-ins. Try again in {minutes} minute{'s' if minutes > 1 else ''}."},
            status_code=429,
        )
        refusal.headers["Retry-After"] = str(verdict.retry_after_s)
        return refusal
    if verdict.delay_s:
        await asyncio.sleep(verdict.delay_s)
    valid, new_hash = await verify_password(stored_hash, password)
    user = await session.get(User, user_id) if valid and user_id is not None else None
    if user is None:
        log.info("sign-in failed", client=address)
        return render(request, "signin.html", {**page, "error": "That email address and password do not match."}, 401)
    if new_hash is not None:  # the hashing parameters were raised since this hash was made
        user.password_hash = new_hash
    async with database.session() as tx:
        await throttle.forget_attempt(tx, attempt_id, account)
    old_token = request.cookies.get(SESSION_COOKIE)
    if old_token:
        await revoke_session(session, old_token)
    token = await start_session(session, user, settings, user_agent=request.headers.get("user-agent", ""))
    log.info("signed in", user_id=user.id)
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(settings.session_lifetime_s),
        httponly=True,
        samesite="lax",
        secure=settings.base_url.startswith("https://"),
    )
    response.delete_cookie(
        PRESESSION_COOKIE, httponly=True, samesite="lax", secure=settings.base_url.startswith("https://")
    )
    return response


@router.get("/signout")
async def sign_out_page(request: Request, _user: WebUserDep) -> Response:
    return render(request, "signout.html")


@router.post("/signout")
async def sign_out(request: Request, session: SessionDep) -> RedirectResponse:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await revoke_session(session, token)
    response = RedirectResponse("/signin", status_code=303)
    secure = request.app.state.settings.base_url.startswith("https://")
    response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="lax", secure=secure)
    return response
