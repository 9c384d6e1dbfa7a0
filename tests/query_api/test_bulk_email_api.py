"""Bulk email control through the API: the lead cap, pause/resume/cancel, retry, isolation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import update

from bulkmail.query_api.app import create_app
from bulkmail.shared.broker.memory import MemoryBroker
from bulkmail.shared.models import BulkEmail, Recipient, RecipientState, Suppression


@pytest.fixture
async def setup(settings, database, make_tenant):
    """A tenant whose API caps bulk emails at 3 leads, with 5 leads, a template and an account."""
    capped = settings.model_copy(update={"max_bulk_email_leads": 3})
    broker = MemoryBroker(capped.broker_namespace)
    tenant = await make_tenant("Capped")
    app = create_app(capped, database=database, broker=broker)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://t",
        headers={"Authorization": f"Bearer {tenant.api_key}"},
        follow_redirects=True,
    )
    for i in range(5):
        await client.post(
            "/api/v1/lead/",
            json={
                "name": f"L{i}",
                "status": "Potential",
                "contacts": [{"name": f"P{i}", "emails": [{"email": f"p{i}@x.example"}]}],
            },
        )
    template = (await client.post("/api/v1/email_template/", json={"name": "T", "subject": "s", "body": "b"})).json()
    account = (
        await client.post("/api/v1/email_account/", json={"email": "me@x.example", "smtp_host": "127.0.0.1"})
    ).json()
    yield client, {"template_id": template["id"], "email_account_id": account["id"]}, broker
    await client.aclose()
    await broker.close()


async def test_a_query_over_the_cap_is_refused_naming_limit(setup):
    client, ids, _ = setup
    refused = await client.post("/api/v1/bulk_action/email/", json={"query": "status:potential", **ids})
    assert refused.status_code == 400
    assert "limit:" in refused.json()["detail"] and "5" in refused.json()["detail"]
    audit = (await client.post("/api/v1/bulk_action/email/preview", json={"query": "status:potential", **ids})).json()
    assert any("limit:" in w for w in audit["warnings"])
    capped = await client.post("/api/v1/bulk_action/email/", json={"query": "status:potential limit:3", **ids})
    assert capped.status_code == 201 and capped.json()["n_leads"] == 3


async def test_bad_query_and_bad_ids_are_clear_errors(setup):
    client, ids, _ = setup
    bad = await client.post("/api/v1/bulk_action/email/", json={"query": "status:(", **ids})
    assert bad.status_code == 400 and bad.json()["line"] == 1
    neither = await client.post("/api/v1/bulk_action/email/", json=ids)
    assert neither.status_code == 400 and "query" in neither.json()["detail"]
    missing = await client.post("/api/v1/bulk_action/email/", json={"query": "*", **ids, "template_id": 999999})
    assert missing.status_code == 404


async def test_pause_resume_cancel_follow_the_rules(setup, database):
    client, ids, _ = setup
    bulk = (await client.post("/api/v1/bulk_action/email/", json={"query": "status:potential limit:2", **ids})).json()
    url = f"/api/v1/bulk_action/email/{bulk['id']}/"
    paused = await client.put(url, json={"status": "paused"})
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    assert (await client.put(url, json={"status": "paused"})).status_code == 409
    resumed = await client.put(url, json={"status": "resuming"})
    assert resumed.status_code == 200 and resumed.json()["status"] in ("created", "resuming")
    # Paused more than seven days ago: Close refuses to resume, so do we.
    await client.put(url, json={"status": "paused"})
    async with database.session() as session:
        await session.execute(
            update(BulkEmail).where(BulkEmail.id == bulk["id"]).values(paused_at=datetime.now(UTC) - timedelta(days=8))
        )
    stale = await client.put(url, json={"status": "resuming"})
    assert stale.status_code == 409 and "7 days" in stale.json()["detail"]
    cancelled = await client.put(url, json={"status": "cancelled"})
    assert cancelled.json()["status"] == "cancelled"
    assert (await client.put(url, json={"status": "cancelled"})).status_code == 409
    bad = await client.put(url, json={"status": "done"})
    assert bad.status_code == 400 and "status" in bad.json()["field-errors"]


async def test_an_account_that_sent_a_bulk_email_is_not_deleted_but_a_clear_409(setup):
    client, ids, _ = setup
    account_url = f"/api/v1/email_account/{ids['email_account_id']}/"
    bulk = (await client.post("/api/v1/bulk_action/email/", json={"query": "status:potential limit:2", **ids})).json()
    busy = await client.delete(account_url)
    assert busy.status_code == 409 and "cancel it first" in busy.json()["detail"]
    await client.put(f"/api/v1/bulk_action/email/{bulk['id']}/", json={"status": "cancelled"})
    # Finished now, but its report still names the account: refused, naming the bulk email.
    refused = await client.delete(account_url)
    assert refused.status_code == 409, refused.text
    assert f"bulk email {bulk['id']}" in refused.json()["detail"]
    assert (await client.get(account_url)).status_code == 200
    unused = (
        await client.post("/api/v1/email_account/", json={"email": "spare@x.example", "smtp_host": "127.0.0.1"})
    ).json()
    assert (await client.delete(f"/api/v1/email_account/{unused['id']}/")).status_code == 200


async def test_retry_failed_requeues_failed_but_never_hard_bounces_or_unknown(setup, database):
    client, ids, _ = setup
    bulk = (await client.post("/api/v1/bulk_action/email/", json={"query": "status:potential limit:3", **ids})).json()
    assert (await client.post(f"/api/v1/bulk_action/email/{bulk['id']}/retry_failed/")).status_code == 409
    async with database.session() as session:
        org_id = (await session.get(BulkEmail, bulk["id"])).organization_id
        for i, state in enumerate([RecipientState.failed, RecipientState.unknown, RecipientState.sent]):
            session.add(
                Recipient(
                    organization_id=org_id,
                    bulk_email_id=bulk["id"],
                    lead_id=i + 1,
                    email=f"r{i}@x.example",
                    email_normalized=f"r{i}@x.example",
                    state=state,
                )
            )
        session.add(
            Recipient(
                organization_id=org_id,
                bulk_email_id=bulk["id"],
                lead_id=9,
                email="gone@x.example",
                email_normalized="gone@x.example",
                state=RecipientState.failed,
            )
        )
        session.add(Suppression(organization_id=org_id, email_normalized="gone@x.example", reason="hard_bounce"))
        await session.execute(update(BulkEmail).where(BulkEmail.id == bulk["id"]).values(status="done"))
    retried = await client.post(f"/api/v1/bulk_action/email/{bulk['id']}/retry_failed/")
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "processing"
    counts = retried.json()["counts"]
    assert counts["deferred"] == 1 and counts["unknown"] == 1 and counts["failed"] == 1  # the hard bounce stays
    report = (
        await client.get(f"/api/v1/bulk_action/email/{bulk['id']}/recipients/", params={"state": "unknown"})
    ).json()
    assert [r["email"] for r in report["data"]] == ["r1@x.example"]


async def test_another_organisation_cannot_see_or_control_a_bulk_email(setup, make_tenant):
    client, ids, _ = setup
    bulk = (await client.post("/api/v1/bulk_action/email/", json={"query": "status:potential limit:1", **ids})).json()
    intruder = await make_tenant("Intruder")
    for method, path, body in (
        ("GET", f"/api/v1/bulk_action/email/{bulk['id']}/", None),
        ("PUT", f"/api/v1/bulk_action/email/{bulk['id']}/", {"status": "cancelled"}),
        ("GET", f"/api/v1/bulk_action/email/{bulk['id']}/recipients/", None),
        ("POST", f"/api/v1/bulk_action/email/{bulk['id']}/retry_failed/", None),
    ):
        assert (await intruder.client.request(method, path, json=body)).status_code == 404
    assert (await intruder.client.get("/api/v1/bulk_action/email/")).json()["data"] == []
    # Nor can it send with the owner's template or account.
    stolen = await intruder.client.post("/api/v1/bulk_action/email/", json={"query": "*", **ids})
    assert stolen.status_code == 404
