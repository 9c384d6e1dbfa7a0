"""What the dispatcher does for a bulk email carries that bulk email's correlation id, and only it."""

from __future__ import annotations

from bulkmail.dispatcher.service import Dispatcher
from bulkmail.shared.broker.memory import MemoryBroker
from bulkmail.shared.db import Database
from bulkmail.shared.logging import correlation_id
from bulkmail.shared.models import BulkEmail, BulkEmailStatus
from bulkmail.shared.settings import Settings
from tests.data import add_sender


async def test_a_bulk_email_without_an_id_does_not_inherit_the_previous_ones(
    database: Database, settings: Settings, broker: MemoryBroker
) -> None:
    async with database.session() as session:
        oid, template, account = await add_sender(session, "Correlation")
        tagged, untagged = (
            BulkEmail(
                organization_id=oid,
                template_id=template.id,
                email_account_id=account.id,
                query="*",
                status=BulkEmailStatus.done,  # nothing to advance: only the tagging is looked at
                correlation_id=cid,
            )
            for cid in ("req-tagged", "")
        )
        session.add_all([tagged, untagged])
        await session.flush()
        ids = tagged.id, untagged.id

    seen: list[str] = []
    dispatcher = Dispatcher(settings, database, broker)

    async def advance(bulk_email_id: int) -> None:
        await Dispatcher._advance(dispatcher, bulk_email_id)
        seen.append(correlation_id.get())

    dispatcher._advance = advance  # type: ignore[method-assign]
    for bulk_email_id in ids:  # one after the other in one task, as the sweep does
        await dispatcher.handle(bulk_email_id)
    assert seen == ["req-tagged", ""]
    assert correlation_id.get() == ""
