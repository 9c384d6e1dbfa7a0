"""Consent is checked when a recipient is claimed for sending, not only when the ledger is built.

Each test builds the ledger (the dispatcher), then the recipient's consent goes away the way a
user or a contact would take it away, and only then does the mailer run. The recipient must end
``skipped`` with the reason, and the SMTP server must never see the address.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from bulkmail.shared.broker.memory import MemoryBroker
from bulkmail.shared.db import Database
from bulkmail.shared.models import Suppression
from bulkmail.shared.settings import Settings
from tests.conftest import Tenant
from tests.one_send import Send, one_send


@pytest.fixture
async def consent(settings: Settings, database: Database, broker: MemoryBroker, tenant: Tenant) -> AsyncIterator[Send]:
    async with one_send(settings, database, broker, tenant) as send:
        yield send


async def test_consent_withdrawn_while_waiting_in_a_chunk(consent: Send) -> None:
    bulk_id = await consent.create("keep", "link", "put", "suppressed", "deleted", "changed")
    client = consent.tenant.client

    await consent.unsubscribe_link("link")
    put = await client.put(
        f"/api/v1/contact/{consent.contacts['put']}/",
        json={"name": "put", "emails": [{"email": consent.address("put"), "is_unsubscribed": True}]},
    )
    assert put.status_code == 200, put.text
    async with consent.database.session() as session:  # a hard bounce in another send of the organisation
        session.add(
            Suppression(
                organization_id=consent.tenant.organization_id,
                email_normalized=consent.address("suppressed"),
                reason="hard_bounce",
            )
        )
    assert (await client.delete(f"/api/v1/contact/{consent.contacts['deleted']}/")).status_code == 200
    changed = await client.put(
        f"/api/v1/contact/{consent.contacts['changed']}/",
        json={"name": "changed", "emails": [{"email": consent.address("elsewhere")}]},
    )
    assert changed.status_code == 200, changed.text

    await consent.send(bulk_id)

    assert consent.smtp.delivered == [consent.address("keep")]
    assert await consent.recipients(bulk_id) == {
        "keep": ("sent", None),
        "link": ("skipped", "unsubscribed"),
        "put": ("skipped", "unsubscribed"),
        "suppressed": ("skipped", "suppressed"),
        "deleted": ("skipped", "contact_deleted"),
        "changed": ("skipped", "address_changed"),
    }
    body = (await client.get(f"/api/v1/bulk_action/email/{bulk_id}/")).json()
    assert body["status"] == "processing" or body["status"] == "done"
    assert body["skipped"] == {"unsubscribed": 2, "suppressed": 1, "contact_deleted": 1, "address_changed": 1}


async def test_consent_withdrawn_while_deferred_for_a_retry(consent: Send) -> None:
    bulk_id = await consent.create("keep", "later")
    await consent.send(bulk_id)
    assert consent.smtp.refused == [consent.address("later")]
    assert (await consent.recipients(bulk_id))["later"] == ("deferred", None)

    await consent.unsubscribe_link("later")
    await consent.requeue_retries(bulk_id, timedelta(hours=7))  # past any backoff
    await consent.send(bulk_id)

    assert consent.smtp.refused == [consent.address("later")]  # never offered again
    assert await consent.recipients(bulk_id) == {"keep": ("sent", None), "later": ("skipped", "unsubscribed")}


async def test_consent_withdrawn_while_held_by_the_accounts_limit(consent: Send) -> None:
    bulk_id = await consent.create("one", "two", limit_per_minute=1)
    await consent.send(bulk_id)
    # Both were claimed together: whichever reserved the minute's one slot went out.
    states = await consent.recipients(bulk_id)
    [sent] = [who for who, (state, _) in states.items() if state == "sent"]
    [held] = [who for who, (state, _) in states.items() if state == "deferred"]
    assert consent.smtp.delivered == [consent.address(sent)]

    async with consent.database.session() as session:
        session.add(
            Suppression(
                organization_id=consent.tenant.organization_id,
                email_normalized=consent.address(held),
                reason="unsubscribed",
            )
        )
    await consent.requeue_retries(bulk_id, timedelta(minutes=2))
    await consent.send(bulk_id)

    assert consent.smtp.delivered == [consent.address(sent)]
    assert await consent.recipients(bulk_id) == {sent: ("sent", None), held: ("skipped", "unsubscribed")}
