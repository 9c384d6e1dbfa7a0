"""The columns the search reads are kept by every write: the lead API, contacts, imports, emails.

``leads.primary_email`` is the address a send with contact preference "lead" goes to (the first
email of the first contact that has one) and ``has_sendable_email`` says it is not marked
unsubscribed; ``last_emailed`` is answered from the emails sent. Each write below changes them,
and the search (or the stored row) must show it at once, on both backends.
"""

from __future__ import annotations

import json

import httpx
from sqlalchemy import select

from bulkmail.shared.db import Database
from bulkmail.shared.models import Lead
from bulkmail.shared.settings import Settings
from bulkmail.shared.unsubscribe import make_token


async def _primary(database: Database, lead_id: int) -> tuple[str | None, bool]:
    async with database.session() as session:
        row = (
            await session.execute(select(Lead.primary_email, Lead.has_sendable_email).where(Lead.id == lead_id))
        ).one()
    return row[0], bool(row[1])


async def _names(tenant, query: str) -> list[str]:
    found = await tenant.client.get("/api/v1/lead/", params={"query": query})
    assert found.status_code == 200, found.text
    return sorted(lead["name"] for lead in found.json()["data"])


async def test_lead_create_and_update_keep_the_primary_email(make_tenant, database):
    tenant = await make_tenant("Primary")
    body = {
        "name": "Acme",
        "contacts": [
            {"name": "No Email"},
            {
                "name": "Jane",
                "emails": [{"email": " Jane@Acme.example ", "is_unsubscribed": True}, {"email": "j2@x.io"}],
            },
        ],
    }
    created = await tenant.client.post("/api/v1/lead/", json=body)
    assert created.status_code == 201, created.text
    lead_id = created.json()["id"]
    # The first contact has no email: the second contact's first address, unsubscribed.
    assert await _primary(database, lead_id) == ("jane@acme.example", False)

    contacts = [{"name": "Bob", "emails": [{"email": "bob@acme.example"}]}, body["contacts"][1]]
    updated = await tenant.client.put(f"/api/v1/lead/{lead_id}/", json={"contacts": contacts})
    assert updated.status_code == 200, updated.text
    assert await _primary(database, lead_id) == ("bob@acme.example", True)

    assert (await tenant.client.put(f"/api/v1/lead/{lead_id}/", json={"contacts": []})).status_code == 200
    assert await _primary(database, lead_id) == (None, False)


async def test_contact_changes_keep_the_primary_email(make_tenant, database):
    tenant = await make_tenant("Contacts")
    lead_id = (await tenant.client.post("/api/v1/lead/", json={"name": "Globex"})).json()["id"]
    assert await _primary(database, lead_id) == (None, False)

    added = await tenant.client.post(
        "/api/v1/contact/", json={"lead_id": lead_id, "name": "Ann", "emails": [{"email": "ann@globex.example"}]}
    )
    assert added.status_code == 201, added.text
    assert await _primary(database, lead_id) == ("ann@globex.example", True)

    contact_id = added.json()["id"]
    replaced = await tenant.client.put(
        f"/api/v1/contact/{contact_id}/",
        json={"name": "Ann", "emails": [{"email": "ann@new.example", "is_unsubscribed": True}]},
    )
    assert replaced.status_code == 200, replaced.text
    assert await _primary(database, lead_id) == ("ann@new.example", False)

    assert (await tenant.client.delete(f"/api/v1/contact/{contact_id}/")).status_code == 200
    assert await _primary(database, lead_id) == (None, False)


async def test_an_import_fills_the_primary_email(make_tenant, database):
    tenant = await make_tenant("Importer")
    lines = [
        {"name": "One", "contacts": [{"emails": [{"email": "A@One.example"}, {"email": "b@one.example"}]}]},
        {"name": "Two", "contacts": [{"name": "x"}, {"emails": [{"email": "c@two.example", "is_unsubscribed": True}]}]},
        {"name": "Three"},
    ]
    response = await tenant.client.post(
        "/api/v1/lead/import",
        content="\n".join(json.dumps(line) for line in lines),
        headers={"Content-Type": "application/x-ndjson"},
    )
    assert response.status_code == 200, response.text
    async with database.session() as session:
        rows = (
            await session.execute(
                select(Lead.name, Lead.primary_email, Lead.has_sendable_email)
                .where(Lead.organization_id == tenant.organization_id)
                .order_by(Lead.id)
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("One", "a@one.example", True),
        ("Two", "c@two.example", False),
        ("Three", None, False),
    ]


async def test_an_unsubscribe_clears_has_sendable_email(make_tenant, database, settings: Settings, app):
    tenant = await make_tenant("Unsubscribers")
    body = {"name": "Initech", "contacts": [{"emails": [{"email": "peter@initech.example"}]}]}
    lead_id = (await tenant.client.post("/api/v1/lead/", json=body)).json()["id"]
    assert await _primary(database, lead_id) == ("peter@initech.example", True)
    token = make_token(settings, tenant.organization_id, "peter@initech.example")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
        assert (await client.post(f"/unsubscribe/{token}")).status_code == 200
    assert await _primary(database, lead_id) == ("peter@initech.example", False)


async def test_a_logged_email_is_found_by_last_emailed_at_once(make_tenant):
    tenant = await make_tenant("Emailers")
    ids = {}
    for name in ("Mailed", "Quiet"):
        ids[name] = (await tenant.client.post("/api/v1/lead/", json={"name": name})).json()["id"]
    assert await _names(tenant, "last_emailed < 1 day ago") == []
    logged = await tenant.client.post(
        "/api/v1/activity/email/", json={"lead_id": ids["Mailed"], "subject": "Hi", "status": "sent"}
    )
    assert logged.status_code == 201, logged.text
    assert await _names(tenant, "last_emailed < 1 day ago") == ["Mailed"]
    assert await _names(tenant, "last_emailed:*") == ["Mailed"]
    assert await _names(tenant, "not last_emailed < 1 day ago") == ["Quiet"]
    assert await _names(tenant, "last_emailed > 1 day ago") == []
