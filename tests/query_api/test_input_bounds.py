"""Every input is bounded, and the bound is an error the user can read (never a 500).

Run on PostgreSQL and SQLite (the embedded default): addresses the mailer cannot deliver to,
body size, JSON syntax and nesting, integers beyond 64 bits, Content-Type, lead caps (request,
organisation, import), deletions of things in use, Idempotency-Key reuse, partial PUT, and the
metrics kept off the API port.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import select

from bulkmail.query_api.app import create_app
from bulkmail.shared import metrics
from bulkmail.shared.broker.memory import MemoryBroker
from bulkmail.shared.db import Database
from bulkmail.shared.models import BulkEmail, BulkEmailStatus, Contact, ContactEmail
from bulkmail.shared.settings import Settings

UNDELIVERABLE = [
    "a@x.example,b@y.example",  # two recipients in one
    "<script>@x.example",  # markup in the local part
    '"quoted"@x.example',  # quotes
    "jane doe@x.example",  # a space
    "jane\r\nBcc: all@x.example",  # CRLF: a header smuggled in
    "jane@",  # no domain
    "jane@localhost",  # no dot in the domain
    "jane@@x.example",
]


def _lead(*emails: str) -> dict[str, object]:
    return {"name": "L", "contacts": [{"name": "C", "emails": [{"email": e} for e in emails]}]}


@pytest.fixture
async def limited(settings: Settings, database: Database, make_tenant) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app with small caps, so each cap is reached in a few rows."""
    small = settings.model_copy(
        update={
            "max_request_bytes": 20_000,
            "max_import_bytes": 30_000,
            "max_contacts_per_lead": 3,
            "max_emails_per_lead": 4,
            "max_phones_per_lead": 2,
            "max_custom_fields_per_request": 3,
            "max_custom_fields_per_organization": 5,
            "max_import_leads": 4,
        }
    )
    tenant = await make_tenant("Limited")
    broker = MemoryBroker(small.broker_namespace)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(small, database=database, broker=broker)),
        base_url="http://t",
        headers={"Authorization": f"Bearer {tenant.api_key}"},
    ) as client:
        yield client
    await broker.close()


# --- addresses the mailer cannot deliver to ------------------------------------------------------


@pytest.mark.parametrize("address", UNDELIVERABLE)
async def test_an_undeliverable_address_is_refused_naming_the_field(tenant, address):
    created = await tenant.client.post("/api/v1/lead/", json=_lead("ok@x.example", address))
    assert created.status_code == 400, created.text
    assert "contacts[0].emails[1].email" in created.json()["field_errors"]

    lead = (await tenant.client.post("/api/v1/lead/", json=_lead("ok@x.example"))).json()
    updated = await tenant.client.put(f"/api/v1/lead/{lead['id']}/", json={"contacts": _lead(address)["contacts"]})
    assert updated.status_code == 400 and "contacts[0].emails[0].email" in updated.json()["field_errors"]
    contact_id = lead["contacts"][0]["id"]
    changed = await tenant.client.put(f"/api/v1/contact/{contact_id}/", json={"emails": [{"email": address}]})
    assert changed.status_code == 400 and "emails[0].email" in changed.json()["field_errors"]
    added = await tenant.client.post("/api/v1/contact/", json={"lead_id": lead["id"], "emails": [{"email": address}]})
    assert added.status_code == 400 and "emails[0].email" in added.json()["field_errors"]

    imported = await tenant.client.post(
        "/api/v1/lead/import",
        content=json.dumps(_lead(address)).encode(),
        headers={"Content-Type": "application/x-ndjson"},
    )
    assert imported.status_code == 400 and imported.json()["detail"].startswith("line 1: contacts[0].emails[0].email")
    # Nothing of it was stored.
    fetched = (await tenant.client.get(f"/api/v1/contact/{contact_id}/")).json()
    assert [e["email"] for e in fetched["emails"]] == ["ok@x.example"]


async def test_an_undeliverable_address_already_stored_is_an_audit_exclusion(tenant, database):
    await tenant.client.post("/api/v1/lead/", json={**_lead("fine@x.example"), "name": "Fine"})
    bad = (await tenant.client.post("/api/v1/lead/", json={**_lead("placeholder@x.example"), "name": "Broken"})).json()
    async with database.session() as session:  # as written before the API checked, or by hand
        row = await session.scalar(select(ContactEmail).where(ContactEmail.lead_id == bad["id"]))
        assert row is not None
        row.email = row.email_normalized = "a@x.example,b@y.example"
    template = (await tenant.client.post("/api/v1/email_template/", json={"name": "T", "subject": "Hi"})).json()
    account = (
        await tenant.client.post("/api/v1/email_account/", json={"email": "me@x.example", "smtp_host": "127.0.0.1"})
    ).json()
    audit = await tenant.client.post(
        "/api/v1/bulk_action/email/preview",
        json={
            "query": "*",
            "template_id": template["id"],
            "email_account_id": account["id"],
        },
    )
    assert audit.status_code == 200, audit.text
    assert audit.json()["recipients"] == 1 and audit.json()["excluded"]["invalid_address"] == 1


# --- the raw request -------------------------------------------------------------------------------


async def test_a_body_over_the_limit_is_413_before_it_is_read(limited):
    big = {"name": "x" * 30_000}
    declared = await limited.post("/api/v1/lead/", json=big)
    assert declared.status_code == 413 and "20,000 bytes" in declared.json()["detail"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(30):
            yield b" " * 1_000

    streamed = await limited.post("/api/v1/lead/", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413

    import_body = b"\n".join(json.dumps({"name": f"L{i}"}).encode() for i in range(3_000))
    too_big = await limited.post(
        "/api/v1/lead/import", content=import_body, headers={"Content-Type": "application/x-ndjson"}
    )
    assert too_big.status_code == 413 and "30,000 bytes" in too_big.json()["detail"]


async def test_malformed_json_is_located_by_line_and_column(tenant):
    response = await tenant.client.post(
        "/api/v1/lead/", content=b'{\n  "name": "A",\n  "url": }', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["detail"].startswith("malformed JSON at line 3, column 10")


@pytest.mark.parametrize("path", ["/api/v1/lead/", "/api/v1/email_template/", "/api/v1/bulk_action/email/preview"])
async def test_deeply_nested_json_is_refused_on_every_endpoint(tenant, path):
    deep = b'{"name": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = await tenant.client.post(path, content=deep, headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and "nested deeper than 32 levels" in response.json()["detail"]


async def test_deeply_nested_json_is_refused_in_an_import_line(tenant):
    line = b'{"name": "A", "custom": {"x": ' + b"[" * 5_000 + b"]" * 5_000 + b"}}"
    response = await tenant.client.post(
        "/api/v1/lead/import", content=b'{"name": "ok"}\n' + line, headers={"Content-Type": "application/x-ndjson"}
    )
    assert response.status_code == 400 and response.json()["detail"].startswith("line 2: JSON nested deeper than 32")


async def test_integers_beyond_64_bits_are_400_or_404(tenant):
    huge = 2**64
    assert (await tenant.client.get(f"/api/v1/lead/{huge}/")).status_code == 404
    assert (await tenant.client.delete(f"/api/v1/email_template/{huge}/")).status_code == 404
    assert (await tenant.client.get("/api/v1/lead/", params={"_skip": huge})).status_code == 400
    assert (await tenant.client.get("/api/v1/contact/", params={"lead_id": huge})).status_code == 400
    body = await tenant.client.post("/api/v1/contact/", json={"lead_id": huge})
    assert body.status_code == 400 and "64-bit" in body.json()["detail"]
    custom = await tenant.client.post("/api/v1/lead/", json={"name": "N", "custom": {"Big": 10**15}})
    assert custom.status_code == 400 and "10^14" in custom.json()["detail"]
    for constant in (b"NaN", b"Infinity", b"1e999"):
        response = await tenant.client.post(
            "/api/v1/lead/",
            content=b'{"custom": {"n": ' + constant + b"}}",
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 400, constant


async def test_nul_characters_are_refused_before_the_database_sees_them(tenant):
    body = await tenant.client.post("/api/v1/lead/", json={"name": "a\x00b"})
    assert body.status_code == 400 and "NUL" in body.json()["detail"]
    query = await tenant.client.get("/api/v1/lead/", params={"query": "name:a\x00"})
    assert query.status_code == 400 and "NUL" in query.json()["detail"]
    csv = await tenant.client.post(
        "/api/v1/lead/import", content=b"name\nA\x00B\n", headers={"Content-Type": "text/csv"}
    )
    assert csv.status_code == 400 and csv.json()["detail"].startswith("line 2: a NUL byte")


async def test_a_body_without_content_type_is_refused_saying_so(tenant):
    response = await tenant.client.post("/api/v1/lead/", content=b'{"name": "A"}')  # httpx adds none for bytes
    assert response.status_code == 415 and "no Content-Type" in response.json()["detail"]


# --- leads: caps per lead, per request, per organisation, and in imports -------------------------------


async def test_lead_caps_are_400_naming_the_setting(limited):
    contacts = [{"name": f"C{i}"} for i in range(4)]
    too_many = await limited.post("/api/v1/lead/", json={"name": "L", "contacts": contacts})
    assert too_many.status_code == 400 and "BULKMAIL_MAX_CONTACTS_PER_LEAD" in too_many.json()["detail"]
    emails = [{"email": f"e{i}@x.example"} for i in range(5)]
    too_many = await limited.post("/api/v1/lead/", json={"name": "L", "contacts": [{"emails": emails}]})
    assert too_many.status_code == 400 and "BULKMAIL_MAX_EMAILS_PER_LEAD" in too_many.json()["detail"]
    custom = {f"F{i}": "v" for i in range(4)}
    too_many = await limited.post("/api/v1/lead/", json={"name": "L", "custom": custom})
    assert too_many.status_code == 400 and "BULKMAIL_MAX_CUSTOM_FIELDS_PER_REQUEST" in too_many.json()["detail"]

    # Contacts added one by one count against the lead's cap too.
    lead = (await limited.post("/api/v1/lead/", json={"name": "L", "contacts": contacts[:3]})).json()
    added = await limited.post("/api/v1/contact/", json={"lead_id": lead["id"], "name": "Fourth"})
    assert added.status_code == 400 and "BULKMAIL_MAX_CONTACTS_PER_LEAD" in added.json()["detail"]
    phones = [{"phone": f"+1555000{i}"} for i in range(3)]
    changed = await limited.put(f"/api/v1/contact/{lead['contacts'][0]['id']}/", json={"phones": phones})
    assert changed.status_code == 400 and "BULKMAIL_MAX_PHONES_PER_LEAD" in changed.json()["detail"]

    # The organisation's custom fields: 3 + 2 fit, a sixth does not, whether by API or import.
    assert (await limited.post("/api/v1/lead/", json={"custom": {"A": 1, "B": 2, "C": 3}})).status_code == 201
    assert (await limited.post("/api/v1/lead/", json={"custom": {"D": 1, "E": 2}})).status_code == 201
    sixth = await limited.post("/api/v1/lead/", json={"custom": {"F": 1}})
    assert sixth.status_code == 400 and "BULKMAIL_MAX_CUSTOM_FIELDS_PER_ORGANIZATION" in sixth.json()["detail"]
    ndjson = {"Content-Type": "application/x-ndjson"}
    imported = await limited.post("/api/v1/lead/import", content=b'{"custom": {"F": 1}}', headers=ndjson)
    assert imported.status_code == 400 and "CUSTOM_FIELDS_PER_ORGANIZATION" in imported.json()["detail"]
    lines = b"\n".join(json.dumps({"contacts": contacts[: 4 - i % 2]}).encode() for i in range(2))
    imported = await limited.post("/api/v1/lead/import", content=lines, headers=ndjson)
    assert imported.status_code == 400 and imported.json()["detail"].startswith("line 1: contacts: ")
    five = b"\n".join(b'{"name": "x"}' for _ in range(5))
    imported = await limited.post("/api/v1/lead/import", content=five, headers=ndjson)
    assert imported.status_code == 400 and "BULKMAIL_MAX_IMPORT_LEADS" in imported.json()["detail"]


# --- deletions of things in use, idempotency, partial PUT --------------------------------------------


async def _sender(tenant) -> tuple[int, int]:
    template = (await tenant.client.post("/api/v1/email_template/", json={"name": "Intro", "subject": "s"})).json()
    account = (
        await tenant.client.post("/api/v1/email_account/", json={"email": "me@x.example", "smtp_host": "127.0.0.1"})
    ).json()
    return template["id"], account["id"]


async def test_deleting_a_template_a_finished_bulk_email_used_is_a_409_naming_it(tenant, database):
    template_id, account_id = await _sender(tenant)
    async with database.session() as session:
        bulk = BulkEmail(
            organization_id=tenant.organization_id,
            template_id=template_id,
            email_account_id=account_id,
            query="*",
            status=BulkEmailStatus.done,
        )
        session.add(bulk)
        await session.flush()
        bulk_id = bulk.id
    refused = await tenant.client.delete(f"/api/v1/email_template/{template_id}/")
    assert refused.status_code == 409, refused.text
    assert f"bulk email {bulk_id}" in refused.json()["detail"] and refused.json()["used_by"]["bulk_emails"] == [bulk_id]
    assert (await tenant.client.get(f"/api/v1/email_template/{template_id}/")).status_code == 200


async def test_deleting_a_template_or_smart_view_another_view_names_is_a_409(tenant):
    template_id, _ = await _sender(tenant)
    hot = (await tenant.client.post("/api/v1/saved_search/", json={"name": "Hot", "query": "status:potential"})).json()
    uses = {"name": "Hot, not yet introduced", "query": 'in:"Hot" not emailed_template:"Intro"'}
    assert (await tenant.client.post("/api/v1/saved_search/", json=uses)).status_code == 201
    view = await tenant.client.delete(f"/api/v1/saved_search/{hot['id']}/")
    assert view.status_code == 409 and "'Hot, not yet introduced'" in view.json()["detail"]
    template = await tenant.client.delete(f"/api/v1/email_template/{template_id}/")
    assert template.status_code == 409 and template.json()["used_by"]["smart_views"] == ["Hot, not yet introduced"]
    # Unused ones go.
    unused = (await tenant.client.post("/api/v1/saved_search/", json={"name": "Cold", "query": "*"})).json()
    assert (await tenant.client.delete(f"/api/v1/saved_search/{unused['id']}/")).status_code == 200


async def test_an_idempotency_key_reused_with_another_body_is_a_422(tenant):
    template_id, account_id = await _sender(tenant)
    await tenant.client.post("/api/v1/lead/", json={**_lead("p@x.example"), "status": "Potential"})
    body = {"query": "status:potential", "template_id": template_id, "email_account_id": account_id}
    key = {"Idempotency-Key": "retry-me"}
    first = await tenant.client.post("/api/v1/bulk_action/email/", json=body, headers=key)
    assert first.status_code == 201, first.text
    again = await tenant.client.post("/api/v1/bulk_action/email/", json=dict(reversed(body.items())), headers=key)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    other = await tenant.client.post("/api/v1/bulk_action/email/", json={**body, "query": "*"}, headers=key)
    assert other.status_code == 422 and "different request" in other.json()["detail"]


async def test_put_contact_with_one_field_keeps_the_others(tenant, database):
    lead = (
        await tenant.client.post(
            "/api/v1/lead/",
            json={
                "name": "L",
                "contacts": [{"name": "Ada", "title": "CTO", "emails": [{"email": "ada@x.example"}], "phones": []}],
            },
        )
    ).json()
    contact_id = lead["contacts"][0]["id"]
    changed = await tenant.client.put(f"/api/v1/contact/{contact_id}/", json={"title": "CEO"})
    assert changed.status_code == 200
    assert (changed.json()["name"], changed.json()["title"]) == ("Ada", "CEO")
    assert [e["email"] for e in changed.json()["emails"]] == ["ada@x.example"]
    async with database.session() as session:
        contact = await session.get(Contact, contact_id)
        assert contact is not None and contact.name == "Ada"


# --- metrics -----------------------------------------------------------------------------------------


async def test_metrics_are_not_served_on_the_api_port_and_carry_no_account_ids(tenant):
    assert (await tenant.client.get("/metrics")).status_code == 404
    metrics.record_sent(4242)
    exposition = metrics.render_metrics()[0].decode()
    assert 'account_id="4242"' not in exposition
    assert f'account_id="{metrics.account_label(4242)}"' in exposition
    # Every process with the installation's key agrees on an account's label; another key does not.
    metrics.use_label_key("key one")
    one = metrics.account_label(4242)
    metrics.use_label_key("key two")
    assert metrics.account_label(4242) != one
    metrics.use_label_key("key one")
    assert metrics.account_label(4242) == one
