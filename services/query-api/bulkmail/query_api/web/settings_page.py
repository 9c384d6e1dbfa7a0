"""``/settings``: the signed-in user (password, signed-in browsers) and the organisation's API keys
(create one, shown once; revoke one).

Keys are made, listed and revoked by the same functions the CLI and the demo use
(``bulkmail.shared.organizations``); only the key's hash is stored, so a new key can be shown
on the page that created it and never again.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select

from bulkmail.query_api.deps import DatabaseDep, SessionDep
from bulkmail.query_api.users.service import UserError, set_password, verify_password
from bulkmail.query_api.web import throttle
from bulkmail.query_api.web.rendering import render
from bulkmail.query_api.web.session import CurrentUser, WebUserDep
from bulkmail.query_api.web.session_store import list_user_sessions, now_utc, revoke_other_sessions
from bulkmail.shared.models import Organization, User
from bulkmail.shared.organizations import add_api_key, list_api_keys, revoke_api_key

router = APIRouter()


async def _settings_page(
    request: Request, session: SessionDep, user: CurrentUser, extra: dict[str, object], status_code: int = 200
) -> Response:
    organization = await session.get(Organization, user.organization_id)
    keys = await list_api_keys(session, user.organization_id)
    owners = {
        row.id: row.name or row.email
        for row in await session.scalars(select(User).where(User.id.in_({k.user_id for k in keys})))
    }
    sessions = await list_user_sessions(session, user.user_id, request.app.state.settings)
    return render(
        request,
        "settings.html",
        {
            "organization": organization,
            "api_keys": keys,
            "key_owners": owners,
            "sessions": sessions,
            **extra,
        },
        status_code=status_code,
    )


@router.get("/settings")
async def settings_page(
    request: Request, session: SessionDep, user: WebUserDep, revoked: str = "", signed_out: int = 0, password: str = ""
) -> Response:
    extra = {"revoked": revoked, "signed_out": signed_out, "password_changed": password == "changed"}
    return await _settings_page(request, session, user, extra)


@router.post("/settings/password")
async def change_password(
    request: Request,
    session: SessionDep,
    database: DatabaseDep,
    user: WebUserDep,
    current_password: Annotated[str, Form()] = "",
    new_password: Annotated[str, Form()] = "",
    new_password_again: Annotated[str, Form()] = "",
) -> Response:
    """A new password ends every other session. A wrong current password counts as a failed
    sign-in, so a borrowed session cannot be used to guess it."""
    settings = request.app.state.settings
    address = request.client.host if request.client else "unknown"

    async def refused(message: str, status_code: int) -> Response:
        return await _settings_page(request, session, user, {"password_error": message}, status_code)

    if new_password != new_password_again:
        return await refused("The new password and its repetition differ.", 400)
    now = now_utc()
    async with database.session() as tx:
        verdict = await throttle.judge(tx, settings, user.email, address, now)
        if not verdict.refused:
            attempt_id = await throttle.record_attempt(tx, user.email, address, now)
    if verdict.refused:
        return await refused("Too many wrong passwords. Try again later.", 429)
    me = await session.get(User, user.user_id)
    assert me is not None  # the session was found through this user
    valid, _rehash = await verify_password(me.password_hash, current_password)
    if not valid:
        return await refused("The current password is not right.", 400)
    async with database.session() as tx:
        await throttle.forget_attempt(tx, attempt_id, user.email)
    try:
        await set_password(session, me, new_password)
    except UserError as exc:
        return await refused(str(exc), 400)
    ended = await revoke_other_sessions(session, user.user_id, user.session_id)
    return RedirectResponse(f"/settings?signed_out={ended}&password=changed", status_code=303)


@router.post("/settings/sessions/sign-out-others")
async def sign_out_other_sessions(session: SessionDep, user: WebUserDep) -> RedirectResponse:
    ended = await revoke_other_sessions(session, user.user_id, user.session_id)
    return RedirectResponse(f"/settings?signed_out={ended}", status_code=303)


@router.post("/settings/api-keys")
async def create_key(request: Request, session: SessionDep, user: WebUserDep) -> Response:
    me = await session.get(User, user.user_id)
    assert me is not None  # the session was found through this user
    key = await add_api_key(session, me)
    # Rendered here rather than redirected: the key exists only in this response.
    return await _settings_page(request, session, user, {"new_key": key}, status_code=201)


@router.post("/settings/api-keys/{key_id}/revoke")
async def revoke_key(request: Request, session: SessionDep, user: WebUserDep, key_id: int) -> Response:
    key = await revoke_api_key(session, user.organization_id, key_id)
    if key is None:
        return await _settings_page(request, session, user, {"error": "There is no such API key."}, status_code=404)
    return RedirectResponse(f"/settings?revoked={key.prefix}", status_code=303)
