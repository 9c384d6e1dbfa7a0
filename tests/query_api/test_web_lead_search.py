"""The leads page's live search reads what recent requests kept (a search's total, the catalogue)
and a signed-in user's write forgets it: a Smart View saved in the page is searchable at once."""

from __future__ import annotations

import uuid

import httpx

from bulkmail.query_api.users.service import create_user
from bulkmail.query_api.web.csrf import token_for
from bulkmail.query_api.web.session import SESSION_COOKIE
from bulkmail.query_api.web.session_store import start_session
from tests.query_api.test_recent_counts import add_leads
from tests.query_api.test_request_cost import statements

ORIGIN = "http://testserver"


async def signed_in_browser(app, database, settings, tenant) -> tuple[httpx.AsyncClient, str]:
    """An HTTP client with a web session of a new user of ``tenant``, and its CSRF token."""
    async with database.session() as session:
        user = await create_user(
            session,
            organization_id=tenant.organization_id,
            email=f"u{uuid.uuid4().hex[:10]}@web-search.example",
            name="Web",
            password="password-1",
        )
        token = await start_session(session, user, settings, user_agent="pytest")
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN)
    client.cookies.set(SESSION_COOKIE, token)
    return client, token_for(token)


async def live(client: httpx.AsyncClient, query: str, page: int = 1) -> dict:
    answer = await client.get("/ui/leads/search", params={"query": query, "page": page})
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_typing_the_same_search_again_counts_it_once(app, database, settings, make_tenant):
    tenant = await make_tenant("Typing")
    await add_leads(tenant, 60, "Quay")  # more than a page of 50: the first page does not tell the total
    client, _ = await signed_in_browser(app, database, settings, tenant)
    async with client:
        with statements(database) as first:
            assert (await live(client, "name:quay"))["count_text"] == "60 leads"
        with statements(database) as again:
            assert (await live(client, "name:quay"))["count_text"] == "60 leads"
        with statements(database) as second_page:
            assert (await live(client, "name:quay", page=2))["count_text"] == "60 leads"
    counts = [sql for sql in first if "count(" in sql.lower()]
    assert counts, first  # the first time it is counted ...
    for kept in (again, second_page):  # ... then read from what was kept, with fewer statements
        assert not [sql for sql in kept if "count(" in sql.lower()], kept
        assert len(kept) < len(first)


async def test_a_smart_view_saved_in_the_page_is_searchable_at_once(app, database, settings, make_tenant):
    tenant = await make_tenant("Views")
    await add_leads(tenant, 3, "Pier")
    client, csrf = await signed_in_browser(app, database, settings, tenant)
    name = f"Piers {uuid.uuid4().hex[:6]}"
    async with client:
        refused = await live(client, f'in:"{name}"')  # read (and kept) the catalogue without the view
        assert refused["error"] is not None and name in str(refused["error"])
        saved = await client.post(
            "/smart-views",
            data={"name": name, "query": "name:pier", "csrf_token": csrf},
            headers={"Origin": ORIGIN},
        )
        assert saved.status_code == 303, saved.text
        found = await live(client, f'in:"{name}"')
    assert found["error"] is None, found["error"]
    assert found["count_text"] == "3 leads"


async def test_a_web_write_forgets_only_its_own_organisation(app, database, settings, make_tenant):
    kept = app.state.kept
    ours, theirs = await make_tenant("Ours"), await make_tenant("Theirs")
    client, csrf = await signed_in_browser(app, database, settings, ours)
    async with client:
        await live(client, "*")
        kept.catalogues.put(theirs.organization_id, None, "their catalogue")
        saved = await client.post(
            "/smart-views",
            data={"name": f"All {uuid.uuid4().hex[:6]}", "query": "*", "csrf_token": csrf},
            headers={"Origin": ORIGIN},
        )
        assert saved.status_code == 303, saved.text
    assert kept.catalogues.get(ours.organization_id, None) is None
    assert kept.catalogues.get(theirs.organization_id, None) == "their catalogue"
