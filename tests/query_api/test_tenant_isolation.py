"""A key of one organisation can neither read, change, nor learn of another's rows (404, not 403)."""

from __future__ import annotations

import pytest

RESOURCES = {
    "lead": (
        "/api/v1/lead/",
        {"name": "Secret Corp", "contacts": [{"name": "S", "emails": [{"email": "s@s.example"}]}]},
    ),
    "email_template": ("/api/v1/email_template/", {"name": "Secret template", "subject": "Hi", "body": "<p>x</p>"}),
    "saved_search": ("/api/v1/saved_search/", {"name": "Secret view", "query": "status:potential"}),
    "email_account": (
        "/api/v1/email_account/",
        {"email": "me@secret.example", "smtp_host": "smtp.secret.example", "smtp_password": "hunter2-smtp"},
    ),
    "status": ("/api/v1/status/lead/", {"label": "Secret status"}),
}

UPDATES = {
    "lead": {"name": "Hijacked"},
    "email_template": {"name": "Hijacked"},
    "saved_search": {"name": "Hijacked"},
    "email_account": {"name": "Hijacked"},
    "status": {"label": "Hijacked"},
}


@pytest.fixture
async def two_tenants(make_tenant):
    return await make_tenant("Owner"), await make_tenant("Intruder")


@pytest.mark.parametrize("resource", sorted(RESOURCES))
async def test_another_organisation_cannot_read_change_or_delete(two_tenants, resource):
    owner, intruder = two_tenants
    path, payload = RESOURCES[resource]
    created = await owner.client.post(path, json=payload)
    assert created.status_code == 201, created.text
    row_id = created.json()["id"]

    listed = (await intruder.client.get(path)).json()["data"]
    assert row_id not in [row["id"] for row in listed]
    for method, body in (("GET", None), ("PUT", UPDATES[resource]), ("DELETE", None)):
        response = await intruder.client.request(method, f"{path}{row_id}/", json=body)
        assert response.status_code == 404, (method, response.text)
        assert str(row_id) in response.json()["detail"]
    # Same answer as for an id that does not exist at all: nothing to learn.
    nonexistent = await intruder.client.get(f"{path}999999999/")
    assert nonexistent.status_code == 404

    still = await owner.client.get(f"{path}{row_id}/")
    assert still.status_code == 200 and "Hijacked" not in still.text


async def test_contacts_and_activities_of_another_organisation_are_walled(two_tenants):
    owner, intruder = two_tenants
    lead = (await owner.client.post("/api/v1/lead/", json=RESOURCES["lead"][1])).json()
    contact_id = lead["contacts"][0]["id"]
    activity = await owner.client.post("/api/v1/activity/email/", json={"lead_id": lead["id"], "subject": "hello"})
    assert activity.status_code == 201, activity.text

    assert (await intruder.client.get(f"/api/v1/contact/{contact_id}/")).status_code == 404
    assert (await intruder.client.put(f"/api/v1/contact/{contact_id}/", json={"name": "x"})).status_code == 404
    assert (await intruder.client.delete(f"/api/v1/contact/{contact_id}/")).status_code == 404
    assert (await intruder.client.get("/api/v1/contact/", params={"lead_id": lead["id"]})).json()["data"] == []
    assert (await intruder.client.get(f"/api/v1/activity/email/{activity.json()['id']}/")).status_code == 404
    assert (await intruder.client.get("/api/v1/activity/email/", params={"lead_id": lead["id"]})).json()["data"] == []
    # Nor can it attach its own rows to the owner's lead.
    attach = await intruder.client.post("/api/v1/contact/", json={"lead_id": lead["id"], "name": "Mole"})
    assert attach.status_code == 404
    log = await intruder.client.post("/api/v1/activity/email/", json={"lead_id": lead["id"]})
    assert log.status_code == 404
