"""What one read request costs the database: a fixed number of SQL statements, however big the lead.

Loading each nested collection on its own (status, contacts, emails, phones, addresses, custom
values and fields) made ``GET /lead/{id}/`` nine statements and a search page twenty-odd; the
figures are in benchmarks/bench_api_requests.txt. These tests hold the count flat as leads grow,
and hold the JSON the read paths build to the ``LeadOut`` contract the write paths answer with.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from bulkmail.query_api.leads.repository import load_leads
from bulkmail.query_api.leads.schemas import to_out


@contextmanager
def statements(database) -> Iterator[list[str]]:
    """The SQL statements sent while the block runs."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        seen.append(sql)

    event.listen(database.engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", record)


def small_lead(name: str) -> dict[str, Any]:
    return {"name": name, "contacts": [{"name": "Solo", "emails": [{"email": "solo@small.example"}]}]}


def big_lead(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "status": "potential",
        "custom": {"Lead Source": "Web", "Employees": 120, "Renewal Date": "2027-01-15", "Score": 2.5},
        "contacts": [
            {
                "name": f"Contact {c}",
                "title": "VP",
                "emails": [{"email": f"c{c}.{e}@big.example", "is_unsubscribed": e == 1} for e in range(3)],
                "phones": [{"phone": f"+1 415 555 01{c:02d}", "type": "mobile"} for _ in range(2)],
            }
            for c in range(8)
        ],
        "addresses": [{"city": f"City {a}", "country": "US", "label": "mailing"} for a in range(3)],
    }


async def test_a_lead_get_costs_the_same_few_statements_however_many_contacts_it_has(tenant, database):
    small = (await tenant.client.post("/api/v1/lead/", json=small_lead("Small"))).json()["id"]
    big = (await tenant.client.post("/api/v1/lead/", json=big_lead("Big"))).json()["id"]
    await tenant.client.get(f"/api/v1/lead/{small}/")  # the key's last_used_at is fresh from here on

    with statements(database) as for_small:
        assert (await tenant.client.get(f"/api/v1/lead/{small}/")).status_code == 200
    with statements(database) as for_big:
        answer = await tenant.client.get(f"/api/v1/lead/{big}/")
    assert answer.status_code == 200
    assert len(answer.json()["contacts"]) == 8

    # The API key, the lead with its status, every nested row.
    assert len(for_big) == len(for_small) == 3, for_big


async def test_a_search_page_costs_the_same_statements_for_small_and_big_leads(tenant, database):
    for i in range(6):
        await tenant.client.post("/api/v1/lead/", json=small_lead(f"Smallco {i}"))
        await tenant.client.post("/api/v1/lead/", json=big_lead(f"Bigco {i}"))
    await tenant.client.get("/api/v1/lead/", params={"query": "*"})

    with statements(database) as for_small:
        small = await tenant.client.get("/api/v1/lead/", params={"query": "name:smallco", "_limit": 5})
    with statements(database) as for_big:
        big = await tenant.client.get("/api/v1/lead/", params={"query": "name:bigco", "_limit": 5})
    assert small.status_code == big.status_code == 200
    assert len(big.json()["data"]) == 5 and big.json()["has_more"] and big.json()["total_results"] == 6
    assert sum(len(lead["contacts"]) for lead in big.json()["data"]) == 40

    assert len(for_big) == len(for_small), (for_small, for_big)
    # Key, catalogue, page, count (on PostgreSQL with its estimate, savepoint and bounds), leads,
    # nested rows.
    assert len(for_big) <= 12, for_big


async def test_a_short_page_tells_its_total_without_counting(tenant, database):
    for i in range(3):
        await tenant.client.post("/api/v1/lead/", json=big_lead(f"Fewco {i}"))
    await tenant.client.get("/api/v1/lead/", params={"query": "*"})

    with statements(database) as sent:
        page = await tenant.client.get("/api/v1/lead/", params={"query": "name:fewco", "_limit": 5})
    assert page.status_code == 200
    assert (page.json()["total_results"], page.json()["total_results_approximate"]) == (3, False)
    assert not page.json()["has_more"]
    assert not any("count(" in sql.lower() or sql.startswith("EXPLAIN") for sql in sent), sent
    # Key, catalogue, page (between setting and restoring its serial plan on PostgreSQL), leads,
    # nested rows.
    assert len(sent) <= 7, sent

    later = await tenant.client.get("/api/v1/lead/", params={"query": "name:fewco", "_limit": 2, "_skip": 2})
    assert (later.json()["total_results"], len(later.json()["data"])) == (3, 1)
    past = await tenant.client.get("/api/v1/lead/", params={"query": "name:fewco", "_limit": 2, "_skip": 10})
    assert (past.json()["total_results"], past.json()["data"]) == (3, [])


async def test_the_read_paths_answer_exactly_what_the_lead_model_says(tenant, database):
    created = await tenant.client.post("/api/v1/lead/", json=big_lead("Shape Inc"))
    assert created.status_code == 201, created.text
    lead_id = created.json()["id"]

    got = (await tenant.client.get(f"/api/v1/lead/{lead_id}/")).json()
    listed = (await tenant.client.get("/api/v1/lead/", params={"query": 'name:"Shape Inc"'})).json()["data"]
    async with database.session() as session:
        (lead,) = await load_leads(session, tenant.organization_id, [lead_id])
        from_model = to_out(lead).model_dump(mode="json")

    assert got == from_model == created.json()
    assert listed == [from_model]
    assert got["custom"] == {"Employees": 120, "Lead Source": "Web", "Renewal Date": "2027-01-15", "Score": 2.5}
    assert got["custom.Score"] == 2.5
    assert [e["is_unsubscribed"] for e in got["contacts"][0]["emails"]] == [False, True, False]
    assert [c["name"] for c in got["contacts"]] == [f"Contact {c}" for c in range(8)]
    assert got["date_created"].endswith("Z")


async def test_another_organisations_lead_is_not_found(tenant, make_tenant):
    other = await make_tenant("Other")
    lead_id = (await other.client.post("/api/v1/lead/", json=small_lead("Theirs"))).json()["id"]
    answer = await tenant.client.get(f"/api/v1/lead/{lead_id}/")
    assert answer.status_code == 404
    assert answer.json()["detail"] == f"No lead with id {lead_id}."
    assert (await tenant.client.get("/api/v1/lead/0/")).status_code == 404
    assert (await tenant.client.get(f"/api/v1/lead/{2**63}/")).status_code == 404


async def test_a_preview_shows_a_template_edited_after_it_was_compiled(tenant):
    # Compiled templates are cached by their text: an edit must never preview the old version.
    lead_id = (await tenant.client.post("/api/v1/lead/", json=small_lead("Preview Co"))).json()["id"]
    template = await tenant.client.post(
        "/api/v1/email_template/", json={"name": "Cached", "subject": "Hi {{ lead.display_name }}", "body": "<p>v1</p>"}
    )
    assert template.status_code == 201, template.text
    render = f"/api/v1/email_template/{template.json()['id']}/render/"
    first = await tenant.client.get(render, params={"lead_id": lead_id})
    again = await tenant.client.get(render, params={"query": 'name:"Preview Co"', "entry": 0})
    assert first.json()["subject"] == again.json()["subject"] == "Hi Preview Co"
    assert "v1" in first.json()["body"] and "v1" in again.json()["body"]

    edited = await tenant.client.put(
        f"/api/v1/email_template/{template.json()['id']}/", json={"subject": "Hello {{ lead.display_name }}"}
    )
    assert edited.status_code == 200, edited.text
    after = await tenant.client.get(render, params={"lead_id": lead_id})
    assert after.json()["subject"] == "Hello Preview Co"
