"""``/settings``: who is signed in, and the organisation's API keys (create one, shown once; revoke one).

Keys are made, listed and revoked by the same functions the CLI and the demo use
(``bulkmail.shared.organizations``); only the key's hash is stored, so a new key can be shown
on the page that created it and never again.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select

from bulkmail.query_api.deps import SessionDep
from bulkmail.query_api.web.rendering import render
from bulkmail.query_api.web.session import CurrentUser, WebUserDep
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
    return render(
        request,
        "settings.html",
        {
            "organization": organization,
            "api_keys": keys,
            "key_owners": owners,
            **extra,
        },
        status_code=status_code,
    )


@router.get("/settings")
async def settings_page(request: Request, session: SessionDep, user: WebUserDep, revoked: str = "") -> Response:
    return await _settings_page(request, session, user, {"revoked": revoked})


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
