"""A search's total is counted once for its pages, forgotten by a write, and kept per organisation.

Counting a search's matches again for every page cost the database the same count again for a
number that had not changed (search/recent_counts.py).
"""

from __future__ import annotations

import asyncio

from sqlalchemy import insert

from bulkmail.query_api.recent import Kept, Recent
from bulkmail.query_api.search.counting import MatchCount
from bulkmail.query_api.search.paging import KnownSearch
from bulkmail.shared.models import Lead
from tests.query_api.test_request_cost import statements


async def add_leads(tenant, n: int, name: str) -> None:
    for i in range(n):
        answer = await tenant.client.post("/api/v1/lead/", json={"name": f"{name} {i}", "status": "potential"})
        assert answer.status_code == 201, answer.text


async def page(tenant, query: str, skip: int = 0) -> dict:
    answer = await tenant.client.get("/api/v1/lead/", params={"query": query, "_limit": 2, "_skip": skip})
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_the_next_page_reads_the_total_the_first_page_counted(tenant, database):
    await add_leads(tenant, 7, "Harbor")
    with statements(database) as first:
        assert (await page(tenant, "name:harbor"))["total_results"] == 7
    with statements(database) as second:
        assert (await page(tenant, "name:harbor", skip=2))["total_results"] == 7
    # The same page without the count: fewer statements, none of them a COUNT.
    assert len(second) < len(first)
    assert not [sql for sql in second if "count(" in sql.lower()], second


async def test_a_write_through_the_api_is_counted_at_once(tenant):
    await add_leads(tenant, 3, "Summit")
    assert (await page(tenant, "name:summit"))["total_results"] == 3
    await add_leads(tenant, 1, "Summit more")
    assert (await page(tenant, "name:summit"))["total_results"] == 4


async def test_a_total_is_kept_a_few_seconds_then_counted_again(tenant, database, app):
    await add_leads(tenant, 3, "Quay")
    assert (await page(tenant, "name:quay"))["total_results"] == 3
    # A lead written by another process (not through this API): the kept total answers until it
    # expires, then the count sees the new lead.
    async with database.session() as session:
        await session.execute(insert(Lead).values(organization_id=tenant.organization_id, name="Quay extra"))
    assert (await page(tenant, "name:quay"))["total_results"] == 3
    kept: Kept = app.state.kept
    ttl, kept.counts.ttl_s = kept.counts.ttl_s, 0.05
    try:
        await asyncio.sleep(0.1)
        assert (await page(tenant, "name:quay"))["total_results"] == 4
    finally:
        kept.counts.ttl_s = ttl


async def test_one_organisations_total_is_never_another_s(make_tenant):
    first = await make_tenant("Northwind")
    second = await make_tenant("Southwind")
    await add_leads(first, 5, "Delta")
    await add_leads(second, 2, "Delta")
    assert (await page(first, "name:delta"))["total_results"] == 5
    assert (await page(second, "name:delta"))["total_results"] == 2
    assert (await page(first, "name:delta"))["total_results"] == 5


def test_kept_totals_are_bounded_and_forgotten_per_organisation():
    recent: Recent[tuple[int, str, str], KnownSearch] = Recent(ttl_s=60, max_entries=3)
    known = KnownSearch(MatchCount(10, approximate=False), matches_first=False)
    key = (1, "UTC", "q")
    for org in (1, 2, 3, 4):
        recent.put(org, key, known)
    assert recent.get(1, key) is None  # the oldest went first
    assert recent.get(4, key) == known
    recent.forget(4)
    assert recent.get(4, key) is None
    assert recent.get(3, key) == known
    recent.forget(None)
    assert recent.get(3, key) is None


async def test_a_status_added_through_the_api_is_searchable_at_once(tenant):
    await add_leads(tenant, 2, "Field")
    assert (await page(tenant, "name:field"))["total_results"] == 2  # the catalogue is kept from here
    assert (await tenant.client.get("/api/v1/lead/", params={"query": "status:golden"})).status_code == 400
    answer = await tenant.client.post("/api/v1/status/lead/", json={"label": "Golden"})
    assert answer.status_code in (200, 201), answer.text
    found = await tenant.client.get("/api/v1/lead/", params={"query": "status:golden"})
    assert found.status_code == 200, found.text
    assert found.json()["total_results"] == 0
