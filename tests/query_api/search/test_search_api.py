"""The lead list endpoint with `query=`: results with total_results, or 400 with the position."""

from __future__ import annotations


async def test_lead_list_searches_with_the_query_language(make_tenant):
    tenant = await make_tenant("Searchers")
    other = await make_tenant("Lookalikes")
    acme = {
        "name": "Acme Corp",
        "contacts": [{"name": "John Smith", "title": "CEO", "emails": [{"email": "j@acme.com"}]}],
    }
    for body in (acme, {"name": "Globex"}, {"name": "Acme Rockets"}):
        assert (await tenant.client.post("/api/v1/lead/", json=body)).status_code == 201
    assert (await other.client.post("/api/v1/lead/", json=acme)).status_code == 201

    found = await tenant.client.get("/api/v1/lead/", params={"query": "acme sort:name", "_limit": 1})
    assert found.status_code == 200
    body = found.json()
    assert [lead["name"] for lead in body["data"]] == ["Acme Corp"]
    assert body["has_more"] is True and body["total_results"] == 2

    second = await tenant.client.get("/api/v1/lead/", params={"query": "acme sort:name", "_limit": 1, "_skip": 1})
    assert [lead["name"] for lead in second.json()["data"]] == ["Acme Rockets"]

    nested = await tenant.client.get("/api/v1/lead/", params={"query": "contact(title:ceo email:*)"})
    assert [lead["name"] for lead in nested.json()["data"]] == ["Acme Corp"]


async def test_a_bad_query_is_a_400_with_line_column_and_expected(make_tenant):
    tenant = await make_tenant("Typos")
    bad = await tenant.client.get("/api/v1/lead/", params={"query": "status:potential and (calls > "})
    assert bad.status_code == 400
    body = bad.json()
    assert {"error", "detail", "line", "column", "expected"} <= set(body)
    assert (body["line"], body["column"]) == (1, 31)
    assert "a word" in body["expected"]

    unmodelled = await tenant.client.get("/api/v1/lead/", params={"query": "calls:0 sms(direction:outbound)"})
    assert unmodelled.status_code == 400
    assert (unmodelled.json()["error"], unmodelled.json()["column"]) == ("unsupported_object", 9)
