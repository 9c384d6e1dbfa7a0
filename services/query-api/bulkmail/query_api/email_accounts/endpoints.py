"""``/api/v1/email_account/``: sending accounts. Passwords are write-only and encrypted at rest."""

from __future__ import annotations

from fastapi import APIRouter, Request, status

from bulkmail.query_api.deps import AuthDep, SessionDep
from bulkmail.query_api.email_accounts import service
from bulkmail.query_api.email_accounts.schemas import EmailAccountIn, EmailAccountOut, EmailAccountUpdate, to_out
from bulkmail.query_api.ownership import get_owned
from bulkmail.query_api.pagination import ListResponse, PageDep
from bulkmail.shared.models import EmailAccount
from bulkmail.shared.secrets import SecretBox

router = APIRouter(prefix="/email_account", tags=["email_account"])


def _box(request: Request) -> SecretBox:
    box: SecretBox = request.app.state.secret_box  # app.state is untyped: say what it holds
    return box


@router.get("/", response_model=ListResponse[EmailAccountOut])
async def list_accounts(session: SessionDep, principal: AuthDep, page: PageDep) -> ListResponse[EmailAccountOut]:
    rows, has_more = await service.list_page(session, principal.organization_id, page)
    return ListResponse(data=[to_out(a) for a in rows], has_more=has_more)


@router.post("/", response_model=EmailAccountOut, status_code=status.HTTP_201_CREATED)
async def create_account(
    payload: EmailAccountIn, request: Request, session: SessionDep, principal: AuthDep
) -> EmailAccountOut:
    return to_out(await service.create(session, principal, payload, _box(request)))


@router.get("/{account_id}/", response_model=EmailAccountOut)
async def get_account(account_id: int, session: SessionDep, principal: AuthDep) -> EmailAccountOut:
    return to_out(await get_owned(session, EmailAccount, account_id, principal.organization_id, what="email account"))


@router.put("/{account_id}/", response_model=EmailAccountOut)
async def update_account(
    account_id: int, payload: EmailAccountUpdate, request: Request, session: SessionDep, principal: AuthDep
) -> EmailAccountOut:
    account = await get_owned(session, EmailAccount, account_id, principal.organization_id, what="email account")
    await service.update(session, account, payload, _box(request))
    return to_out(account)


@router.delete("/{account_id}/")
async def delete_account(account_id: int, session: SessionDep, principal: AuthDep) -> dict[str, object]:
    account = await get_owned(session, EmailAccount, account_id, principal.organization_id, what="email account")
    await service.delete_account(session, account)
    return {}
