"""The lead resource: nested create, read back, update, delete, and clear errors."""

from __future__ import annotations

import base64

LEAD = {
    "name": "Acme Corp",
    "description": "Makes anvils",
    "url": "https://acme.example",
    "status": "potential",
    "custom": {"Lead Source": "Web", "Employees": 120, "Renewal Date": "2027-01-15"},
    "contacts": [
        {
            "name": "Wile E. Coyote",
            "title": "CEO",
            "emails": [{"email": "Wile@Acme.example", "type": "office"}],
            "phones": [{"phone": "+1 415 555 0100", "type": "mobile"}],
        },
        {"name": "Road Runner", "title": "CTO", "emails": [], "phones": []},
    ],
    "addresses": [{"city": "New York", "state": "NY", "country": "US", "zipcode": "10001"}],
}


async def test_a_lead_with_nested_objects_round_trips(tenant):
    created = await tenant.client.post("/api/v1/lead/", json=LEAD)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["status"] == "Potential"
    assert body["display_name"] == "Acme Corp"
    assert body["custom"] == {"Employees": 120, "Lead Source": "Web", "Renewal Date": "2027-01-15"}
    assert [c["name"] for c in body["contacts"]] == ["Wile E. Coyote", "Road Runner"]
    assert body["contacts"][0]["emails"][0]["email"] == "Wile@Acme.example"
    assert body["addresses"][0]["city"] == "New York"
    assert body["created_by"] == tenant.user_id

    fetched = await tenant.client.get(f"/api/v1/lead/{body['id']}/")
    assert fetched.json() == body


async def test_lead_counters_and_search_text_follow_writes(tenant, database):
    from bulkmail.shared.models import Lead

    lead_id = (await tenant.client.post("/api/v1/lead/", json=LEAD)).json()["id"]
    async with database.session() as session:
        lead = await session.get(Lead, lead_id)
        assert (lead.num_contacts, lead.num_email_addresses, lead.num_addresses) == (2, 1, 1)
        assert "wile" in lead.search_text.split() and "acme" in lead.search_text.split()

    contact = await tenant.client.post(
        "/api/v1/contact/", json={"lead_id": lead_id, "name": "Marvin", "emails": [{"email": "m@mars.example"}]}
    )
    assert contact.status_code == 201, contact.text
    async with database.session() as session:
        lead = await session.get(Lead, lead_id)
        assert (lead.num_contacts, lead.num_email_addresses) == (3, 2)
        assert "marvin" in lead.search_text


async def test_update_replaces_contacts_and_changes_fields(tenant):
    lead_id = (await tenant.client.post("/api/v1/lead/", json=LEAD)).json()["id"]
    updated = await tenant.client.put(
        f"/api/v1/lead/{lead_id}/",
        json={"status": "Customer", "contacts": [{"name": "Solo", "emails": [{"email": "solo@x.example"}]}]},
    )
    assert updated.status_code == 200, updated.text
    body = updated.json()
    assert body["status"] == "Customer" and body["name"] == "Acme Corp"
    assert [c["name"] for c in body["contacts"]] == ["Solo"]


async def test_delete_removes_the_lead(tenant):
    lead_id = (await tenant.client.post("/api/v1/lead/", json=LEAD)).json()["id"]
    assert (await tenant.client.delete(f"/api/v1/lead/{lead_id}/")).status_code == 200
    missing = await tenant.client.get(f"/api/v1/lead/{lead_id}/")
    assert missing.status_code == 404
    assert missing.json()["error"] == "Not found"


async def test_bad_input_gets_a_clear_error_naming_the_field(tenant):
    bad_email = await tenant.client.post(
        "/api/v1/lead/", json={"name": "X", "contacts": [{"name": "Y", "emails": [{"email": "not-an-address"}]}]}
    )
    # Close's shape and status: 400 with "field-errors", which its client reads; our "detail" stays.
    assert bad_email.status_code == 400
    assert "contacts[0].emails[0].email" in bad_email.json()["detail"]
    assert "contacts[0].emails[0].email" in bad_email.json()["field-errors"]

    unknown_status = await tenant.client.post("/api/v1/lead/", json={"name": "X", "status": "Nope"})
    assert unknown_status.status_code == 400
    assert "Nope" in unknown_status.json()["detail"] and "Potential" in unknown_status.json()["detail"]

    # A custom field used for the first time takes the value's type; later values must match it.
    await tenant.client.post("/api/v1/lead/", json={"name": "Y", "custom": {"Headcount": 5}})
    wrong_type = await tenant.client.post("/api/v1/lead/", json={"name": "X", "custom": {"Headcount": "many"}})
    assert wrong_type.status_code == 400
    assert "Headcount" in wrong_type.json()["detail"]

    unknown_field = await tenant.client.post("/api/v1/lead/", json={"name": "X", "colour": "red"})
    assert unknown_field.status_code == 400 and "colour" in unknown_field.json()["detail"]

    not_json = await tenant.client.post("/api/v1/lead/", content=b"{nope", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 400 and not_json.json()["error"] == "Invalid JSON"
    assert "line 1, column 2" in not_json.json()["detail"]


async def test_list_pages_with_limit_and_skip(make_tenant):
    t = await make_tenant("Pager")
    for i in range(5):
        await t.client.post("/api/v1/lead/", json={"name": f"Lead {i}"})
    first = (await t.client.get("/api/v1/lead/", params={"_limit": 2})).json()
    assert [lead["name"] for lead in first["data"]] == ["Lead 0", "Lead 1"] and first["has_more"] is True
    last = (await t.client.get("/api/v1/lead/", params={"_limit": 2, "_skip": 4})).json()
    assert [lead["name"] for lead in last["data"]] == ["Lead 4"] and last["has_more"] is False


async def test_api_key_works_as_basic_user_name_and_bad_keys_are_refused(tenant, app):
    import httpx

    basic = base64.b64encode(f"{tenant.api_key}:".encode()).decode()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as anon:
        ok = await anon.get("/api/v1/lead/", headers={"Authorization": f"Basic {basic}"})
        assert ok.status_code == 200
        for header in ({}, {"Authorization": "Bearer bm_wrong"}, {"Authorization": "Basic !!!"}):
            refused = await anon.get("/api/v1/lead/", headers=header)
            assert refused.status_code == 401
            assert set(refused.json()) == {"error", "detail"}


async def test_openapi_document_lists_the_resources(tenant):
    paths = (await tenant.client.get("/openapi.json")).json()["paths"]
    for path in (
        "/api/v1/lead/",
        "/api/v1/contact/",
        "/api/v1/email_template/",
        "/api/v1/saved_search/",
        "/api/v1/email_account/",
        "/api/v1/activity/email/",
        "/api/v1/status/lead/",
    ):
        assert path in paths


async def test_templates_and_smart_views_are_checked_on_save(tenant):
    bad_template = await tenant.client.post(
        "/api/v1/email_template/", json={"name": "Broken", "subject": "Hi", "body": "<p>\n{{ contact.name </p>"}
    )
    assert bad_template.status_code == 400
    body = bad_template.json()
    assert body["part"] == "body" and body["line"] == 2 and "line 2" in body["detail"]
    sandboxed = await tenant.client.post(
        "/api/v1/email_template/", json={"name": "Escape", "subject": "{{ ''.__class__.__mro__ }}", "body": "x"}
    )
    assert sandboxed.status_code == 400 and sandboxed.json()["part"] == "subject"

    bad_view = await tenant.client.post(
        "/api/v1/saved_search/", json={"name": "Bad", "query": "status:potential AND ("}
    )
    assert bad_view.status_code == 400
    assert {"line", "column", "expected"} <= set(bad_view.json())
    loop_a = await tenant.client.post("/api/v1/saved_search/", json={"name": "A", "query": "status:potential"})
    assert loop_a.status_code == 201
    loop_b = await tenant.client.post("/api/v1/saved_search/", json={"name": "B", "query": 'in:"A"'})
    assert loop_b.status_code == 201
    cycle = await tenant.client.put(f"/api/v1/saved_search/{loop_a.json()['id']}/", json={"query": 'in:"B"'})
    assert cycle.status_code == 400 and "B" in cycle.json()["detail"]
