"""Asking a mailer to test an email account or send a test message, and reading the answer.

The query-api image has no IMAP client and does not log in to users' mail servers itself: it
writes an ``AccountCheck`` row, queues ``CheckEmailAccount`` after the commit, and the page reads
the row until a mailer has recorded the outcome (the mailer's ``account_checks`` module).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.query_api.auth import Principal
from bulkmail.query_api.deps import Outbox
from bulkmail.query_api.errors import BadRequest
from bulkmail.query_api.ownership import get_owned
from bulkmail.shared.contracts import ACCOUNT_CHECK_QUEUE, CheckEmailAccount
from bulkmail.shared.models import (
    AccountCheck,
    AccountCheckKind,
    AccountCheckStatus,
    Contact,
    EmailAccount,
    EmailTemplate,
    Lead,
    User,
)


@dataclass(frozen=True)
class CheckOutcome:
    id: int
    kind: str
    status: str  # pending | ok | failed
    result: dict[str, Any]

    @property
    def done(self) -> bool:
        return self.status != AccountCheckStatus.pending


async def request_connection_test(
    session: AsyncSession, principal: Principal, account_id: int, outbox: Outbox
) -> AccountCheck:
    account = await get_owned(session, EmailAccount, account_id, principal.organization_id, what="email account")
    return await _queue(session, principal, outbox, AccountCheck(email_account_id=account.id, kind="connection"))


async def request_test_message(
    session: AsyncSession,
    principal: Principal,
    outbox: Outbox,
    *,
    account_id: int,
    template_id: int,
    lead_id: int,
    contact_id: int | None,
    rendered_for: str,
) -> AccountCheck:
    """The template rendered for one recipient of the audience, sent to the signed-in user."""
    org = principal.organization_id
    account = await get_owned(session, EmailAccount, account_id, org, what="email account")
    template = await get_owned(session, EmailTemplate, template_id, org, what="email template")
    lead = await get_owned(session, Lead, lead_id, org, what="lead")
    if contact_id is not None:
        contact = await get_owned(session, Contact, contact_id, org, what="contact")
        if contact.lead_id != lead.id:
            raise BadRequest(f"Contact {contact_id} is not a contact of lead {lead_id}.")
    user = await session.get(User, principal.user_id)
    if user is None or not user.email:
        raise BadRequest("Your user has no email address to send a test to.")
    check = AccountCheck(
        email_account_id=account.id,
        kind="test_message",
        template_id=template.id,
        lead_id=lead.id,
        contact_id=contact_id,
        rendered_for=rendered_for[:320],
        send_to=user.email,
    )
    return await _queue(session, principal, outbox, check)


async def _queue(session: AsyncSession, principal: Principal, outbox: Outbox, check: AccountCheck) -> AccountCheck:
    check.organization_id = principal.organization_id
    check.user_id = principal.user_id
    check.kind = AccountCheckKind(check.kind)
    check.status = AccountCheckStatus.pending
    session.add(check)
    await session.flush()
    outbox.add(
        ACCOUNT_CHECK_QUEUE, CheckEmailAccount(organization_id=principal.organization_id, account_check_id=check.id)
    )
    return check


async def get_check(session: AsyncSession, principal: Principal, check_id: int) -> CheckOutcome:
    check = await get_owned(session, AccountCheck, check_id, principal.organization_id, what="account check")
    result = json.loads(check.result) if check.result else {}
    return CheckOutcome(check.id, check.kind.value, check.status.value, result)
