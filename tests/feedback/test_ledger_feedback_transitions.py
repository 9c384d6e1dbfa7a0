"""The states after `sent`: each move allowed from the states it names, and refused from every other."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select, update

from bulkmail.shared import ledger
from bulkmail.shared.models import Recipient, RecipientState
from tests.feedback.helpers import make_account, make_sent_bulk

R = RecipientState
MOVES = {
    ledger.mark_bounced: (R.bounced, {R.sent, R.unknown}),
    ledger.mark_complained: (R.complained, {R.sent, R.unknown, R.replied}),
    ledger.mark_replied: (R.replied, {R.sent, R.unknown}),
}


@pytest.mark.parametrize("move", list(MOVES), ids=lambda f: f.__name__)
async def test_each_move_only_from_its_states(settings, database, move) -> None:
    to, allowed = MOVES[move]
    org_id, account_id, template_id = await make_account(settings, database, 1)
    bulk = await make_sent_bulk(database, org_id, account_id, template_id, ["x@receiver.test"])
    [r] = bulk.recipients
    for start in R:
        async with database.session() as session:
            await session.execute(update(Recipient).where(Recipient.id == r.id).values(state=start))
        async with database.session() as session:
            moved = await move(session, r.id, datetime.now(UTC))
        async with database.session() as session:
            state = R(await session.scalar(select(Recipient.state).where(Recipient.id == r.id)))
        assert moved == (start in allowed), start
        assert state == (to if start in allowed else start), start
