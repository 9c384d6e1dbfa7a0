"""Template limits through the API, on both backends: a 400 naming the limit, never a 500, a
gigabyte or seconds of CPU; and a template that renders for no recipient cannot be sent."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import pytest

from bulkmail.query_api.app import create_app
from bulkmail.shared.broker.memory import MemoryBroker

EXPLODES_WITH_DATA = "{{ lead.description|wordwrap(1, true, lead.description) }}"
# Exponential in the lead's name: instant with no data (so it saves), endless with "Acme".
SLOW = (
    "{% macro g(n) %}{% if n %}{{ h(n - 1) }}{{ h(n - 1) }}{% endif %}{% endmacro %}"
    "{% macro h(n) %}{{ g(n) }}{% endmacro %}{{ g(lead.name|length * 15) }}"
)


@pytest.fixture
async def api(settings, database, make_tenant) -> AsyncIterator[tuple[httpx.AsyncClient, int]]:
    """A client (small render limits) with one lead whose description is long, and an account."""
    small = settings.model_copy(update={"max_rendered_part_chars": 50_000, "max_render_ms": 50})
    tenant = await make_tenant("Templating")
    broker = MemoryBroker(small.broker_namespace)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(small, database=database, broker=broker)),
        base_url="http://t",
        headers={"Authorization": f"Bearer {tenant.api_key}"},
    ) as client:
        lead = {
            "name": "Acme",
            "status": "Potential",
            "description": "x" * 5_000,
            "contacts": [{"name": "Ada", "emails": [{"email": "ada@acme.example"}]}],
        }
        assert (await client.post("/api/v1/lead/", json=lead)).status_code == 201
        account = await client.post("/api/v1/email_account/", json={"email": "me@x.example", "smtp_host": "127.0.0.1"})
        yield client, account.json()["id"]
    await broker.close()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{% for a in lead.name %}{% for b in lead.name %}x{% endfor %}{% endfor %}", "a loop inside a loop"),
        ("{% set a = lead.name %}{% set a = a ~ a %}{{ a }}", "built from itself"),
        ("{{ lead.name|replace('', '--') }}", "replace of the empty string"),
        ("{% set a = 'x' * 9000 %}" + "{{ a }}" * 10, "BULKMAIL_MAX_RENDERED_PART_CHARS"),  # explodes on no data
    ],
)
async def test_a_template_known_to_explode_is_refused_at_save(api, body, message):
    client, _ = api
    refused = await client.post("/api/v1/email_template/", json={"name": "Boom", "subject": "s", "body": body})
    assert refused.status_code == 400 and message in refused.json()["detail"]
    assert refused.json()["part"] == "body"


@pytest.mark.parametrize(("body", "limit"), [(EXPLODES_WITH_DATA, "PART_CHARS"), (SLOW, "RENDER_MS")])
async def test_a_render_over_a_limit_is_a_400_naming_it(api, body, limit):
    client, account_id = api
    template = await client.post("/api/v1/email_template/", json={"name": "Data", "subject": "s", "body": body})
    assert template.status_code == 201, template.text
    ids = {"template_id": template.json()["id"], "email_account_id": account_id}
    started = time.perf_counter()
    rendered = await client.get(f"/api/v1/email_template/{ids['template_id']}/render/", params={"query": "*"})
    preview = await client.post("/api/v1/bulk_action/email/preview", json={"query": "*", **ids})
    created = await client.post("/api/v1/bulk_action/email/", json={"query": "*", **ids})
    assert time.perf_counter() - started < 2.0
    for response in (rendered, preview, created):
        assert response.status_code == 400, response.text
        assert response.json()["limit"] == f"BULKMAIL_MAX_{'RENDERED_' if limit == 'PART_CHARS' else ''}{limit}"
    assert "none of the first 1 recipients" in created.json()["detail"]
    assert "ada@acme.example" in created.json()["detail"]


async def test_a_template_that_renders_for_nobody_is_refused_with_the_first_error(api):
    client, account_id = api
    broken = {"name": "Broken", "subject": "Hi", "body": "{{ 10 // (lead.name|length * 0) }}"}
    template = await client.post("/api/v1/email_template/", json=broken)
    assert template.status_code == 201  # data-dependent: known only when rendered for someone
    ids = {"template_id": template.json()["id"], "email_account_id": account_id}
    created = await client.post("/api/v1/bulk_action/email/", json={"query": "*", **ids})
    assert created.status_code == 400
    assert "none of the first 1 recipients" in created.json()["detail"]
    assert "division" in created.json()["detail"]
    fine = await client.post("/api/v1/email_template/", json={"name": "Fine", "subject": "Hi", "body": "ok"})
    sent = await client.post(
        "/api/v1/bulk_action/email/",
        json={"query": "*", "template_id": fine.json()["id"], "email_account_id": account_id},
    )
    assert sent.status_code == 201
