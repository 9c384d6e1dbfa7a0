"""FastAPI dependencies: the request's session (committed at the boundary) and its principal."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, Request
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.query_api.auth import Principal, api_key_from_header, authenticate, note_key_used
from bulkmail.query_api.errors import Unauthorized
from bulkmail.shared.broker import Broker
from bulkmail.shared.db import Database
from bulkmail.shared.settings import Settings

# Dependencies are ``async def`` even when they only read app state: FastAPI runs a plain ``def``
# dependency in its thread pool, a thread hand-off (~0.2-0.5 ms) per dependency per request.


async def get_database(request: Request) -> Database:
    return request.app.state.database  # type: ignore[no-any-return]


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def get_broker(request: Request) -> Broker:
    return request.app.state.broker  # type: ignore[no-any-return]


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed when the endpoint returns, rolled back if it raises.

    Messages an endpoint wants published are queued on ``request.state.outbox`` and sent only
    after the commit (see ``Outbox``), so no message ever points at a rolled-back row.
    """
    database: Database = request.app.state.database
    request.state.outbox = []
    async with database.sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise
    broker: Broker = request.app.state.broker
    for queue, message in request.state.outbox:
        if queue is None:
            await broker.emit(message.type, message)
        else:
            await broker.send(queue, message)


class Outbox:
    """Messages to publish once the request's transaction has committed."""

    def __init__(self, request: Request) -> None:
        self._request = request

    def add(self, queue: str, message: BaseModel) -> None:
        self._request.state.outbox.append((queue, message))

    def add_event(self, event: BaseModel) -> None:
        """An event for the topic exchange; its routing key is its ``type``."""
        self._request.state.outbox.append((None, event))


# scope="function": commit before the response is sent, so a client never sees a success
# for a transaction that then fails to commit.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def get_outbox(request: Request) -> Outbox:
    return Outbox(request)


OutboxDep = Annotated[Outbox, Depends(get_outbox)]
DatabaseDep = Annotated[Database, Depends(get_database)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
BrokerDep = Annotated[Broker, Depends(get_broker)]


async def get_principal(
    session: SessionDep, database: DatabaseDep, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    key = api_key_from_header(authorization)
    if key is None:
        raise Unauthorized("Send your API key as the HTTP Basic user name or as a Bearer token.")
    found = await authenticate(session, key)
    if found is None:
        raise Unauthorized("The API key is not valid.")
    principal, stale_key_id = found
    if stale_key_id is not None:
        await note_key_used(database, stale_key_id)
    return principal


AuthDep = Annotated[Principal, Depends(get_principal)]
