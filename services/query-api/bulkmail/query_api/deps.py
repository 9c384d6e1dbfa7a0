"""FastAPI dependencies: the request's session (committed at the boundary) and its principal."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.query_api.auth import KeyUse, Principal, api_key_from_header, authenticate
from bulkmail.query_api.errors import Unauthorized
from bulkmail.query_api.recent import Kept
from bulkmail.shared.broker import Broker
from bulkmail.shared.db import Database
from bulkmail.shared.logging import get_logger
from bulkmail.shared.settings import Settings

log = get_logger(__name__)

# How long a request waits for its post-commit messages to reach RabbitMQ. Its rows are committed
# by then, so while the broker is away the request answers anyway and the publish goes on in the
# background (the broker waits for its connection to come back); the dispatcher's sweep picks up
# any bulk email whose message never arrived (docs/operations.md, "Outages").
PUBLISH_IN_REQUEST_S = 2.0

# Dependencies are ``async def`` even when they only read app state: FastAPI runs a plain ``def``
# dependency in its thread pool, a thread hand-off (~0.2-0.5 ms) per dependency per request.


async def get_database(request: Request) -> Database:
    database: Database = request.app.state.database  # app.state is untyped: say what it holds
    return database


async def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_kept(request: Request) -> Kept:
    kept: Kept = request.app.state.kept
    return kept


async def get_broker(request: Request) -> Broker:
    broker: Broker = request.app.state.broker
    return broker


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
    if request.state.outbox:
        await _publish_after_commit(request, list(request.state.outbox))


async def _publish(broker: Broker, outbox: list[tuple[str | None, Any]]) -> None:
    for queue, message in outbox:
        if queue is None:
            await broker.emit(message.type, message)
        else:
            await broker.send(queue, message)


async def _publish_after_commit(request: Request, outbox: list[tuple[str | None, Any]]) -> None:
    """Publish the committed request's messages; never fail the request for the broker's sake."""
    publishing = asyncio.ensure_future(_publish(request.app.state.broker, outbox))
    try:
        # shield: a request that stops waiting must not cancel a publish half-way.
        await asyncio.wait_for(asyncio.shield(publishing), PUBLISH_IN_REQUEST_S)
    except TimeoutError:
        log.warning("RabbitMQ is unavailable: the request's messages go out when it is back", messages=len(outbox))
        pending: set[asyncio.Future[None]] = request.app.state.pending_publishes
        pending.add(publishing)
        publishing.add_done_callback(lambda done: _published_late(pending, done))
    except Exception as exc:
        log.error("could not publish a committed request's messages", error=repr(exc), messages=len(outbox))


def _published_late(pending: set[asyncio.Future[None]], done: asyncio.Future[None]) -> None:
    pending.discard(done)
    if done.cancelled():
        log.error("a delayed publish was cancelled at shutdown")
    elif (exc := done.exception()) is not None:
        log.error("a delayed publish failed", error=repr(exc))
    else:
        log.info("a delayed publish went out")


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
KeptDep = Annotated[Kept, Depends(get_kept)]


async def get_principal(
    request: Request,
    session: SessionDep,
    database: DatabaseDep,
    authorization: Annotated[str | None, Header()] = None,
) -> Principal:
    key = api_key_from_header(authorization)
    if key is None:
        raise Unauthorized("Send your API key as the HTTP Basic user name or as a Bearer token.")
    found = await authenticate(session, key)
    if found is None:
        raise Unauthorized("The API key is not valid.")
    principal, stale_key_id = found
    request.state.organization_id = principal.organization_id  # what a write forgets (recent.py)
    if stale_key_id is not None:
        key_use: KeyUse = request.app.state.key_use
        key_use.note(database, stale_key_id)
    return principal


AuthDep = Annotated[Principal, Depends(get_principal)]
