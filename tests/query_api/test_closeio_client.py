"""Close's own Python client (``closeio`` on PyPI), unchanged, against a running bulkmail.

The app is ``bulkmail run`` itself (in-process broker, capture SMTP; on SQLite, the embedded
default, and on a fresh PostgreSQL database) in a child process on free loopback ports; the
client only has its base URL pointed at it.
Every resource a Close script touches is driven through it: leads (Close's ``custom.<Field Name>``
keys, ``status_id``, address labels, ``_fields``, paging to the end), lead statuses, templates
(``is_shared``, rendering by lead and past the end), Smart Views, email accounts, bulk emails
(by ``s_query`` and ``sender``; created, paused, resumed and finished) and email activities.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from closeio_api import APIError, Client, ValidationError

from tests.conftest import FERNET_TEST_KEY, _create_pg_database, _drop_pg_database, _pg_url_for, free_port

API_KEY = "bm_closeio_client_test_key_0123456789"
N_LEADS = 7


@dataclass
class RunningApp:
    base_url: str
    capture_port: int
    outbox: Path

    def client(self) -> Client:
        api = Client(API_KEY, max_retries=1)
        api.base_url = f"{self.base_url}/api/v1/"  # the one change a Close script needs
        return api


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An empty database of its own: ``bulkmail run`` migrates it and makes the demo organisation."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('closeio-db') / 'bulkmail.db'}"
        return
    name = asyncio.run(_create_pg_database())
    yield _pg_url_for(name)
    asyncio.run(_drop_pg_database(name))


@pytest.fixture(scope="module")
def running_app(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    data_dir = tmp_path_factory.mktemp("closeio-app")
    port, capture_port = free_port(), free_port()
    env = {
        **os.environ,
        "BULKMAIL_DATA_DIR": str(data_dir),
        "BULKMAIL_DATABASE_URL": database_url,
        "BULKMAIL_AMQP_URL": "memory://",
        "BULKMAIL_PORT": str(port),
        "BULKMAIL_CAPTURE_SMTP_PORT": str(capture_port),
        "BULKMAIL_DEMO_API_KEY": API_KEY,
        "BULKMAIL_SECRET_KEY": FERNET_TEST_KEY,
        "BULKMAIL_SWEEP_INTERVAL_S": "0.2",
        "BULKMAIL_METRICS_PORT": "0",
    }
    log_path = data_dir / "bulkmail.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bulkmail.cli", "run", "--demo-leads", "0"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"bulkmail run exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"bulkmail run did not become ready:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        yield RunningApp(base_url, capture_port, data_dir / "outbox")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def api(running_app: RunningApp) -> Client:
    return running_app.client()


@pytest.fixture(scope="module")
def leads(api: Client) -> list[dict[str, Any]]:
    statuses = {s["label"]: s["id"] for s in api.get("status/lead")["data"]}
    created = []
    for i in range(N_LEADS):
        created.append(
            api.post(
                "lead",
                {
                    "name": f"Close Lead {i}",
                    "status_id": statuses["Potential"],
                    "custom.Industry": "Software",
                    "contacts": [{"name": f"Pat {i}", "emails": [{"email": f"pat{i}@closeio.example"}]}],
                    "addresses": [{"label": "mailing", "city": "Berlin"}],
                },
            )
        )
    return created


def test_leads_keep_closes_shapes(api: Client, leads: list[dict[str, Any]]) -> None:
    first = leads[0]
    assert first["custom.Industry"] == "Software" and first["custom"] == {"Industry": "Software"}
    assert first["status_label"] == "Potential" and isinstance(first["status_id"], int)
    assert first["addresses"][0]["label"] == "mailing"

    changed = api.put(f"lead/{first['id']}", {"custom.Industry": "Hardware"})
    assert changed["custom.Industry"] == "Hardware" and changed["name"] == "Close Lead 0"
    api.put(f"lead/{first['id']}", {"custom.Industry": "Software"})

    # _fields on a single object: only what was asked for (custom brings its top-level keys).
    narrow = api.get(f"lead/{first['id']}", params={"_fields": "id,display_name,custom"})
    assert set(narrow) == {"id", "display_name", "custom", "custom.Industry"}


def test_paging_to_the_end_with_and_without_a_query(api: Client, leads: list[dict[str, Any]]) -> None:
    expected = [lead["id"] for lead in leads]
    for params in ({"query": "custom.Industry:Software"}, {}):
        seen: list[int] = []
        skip, pages = 0, 0
        while True:
            page = api.get("lead", params={**params, "_limit": 3, "_skip": skip, "_fields": "id"})
            assert page["total_results"] == N_LEADS
            assert all(set(item) == {"id"} for item in page["data"])
            seen += [item["id"] for item in page["data"]]
            skip, pages = skip + len(page["data"]), pages + 1
            if not page["has_more"]:
                break
            assert pages < 10, "paging never reached the end"
        assert sorted(seen) == sorted(expected) and pages == 3


def test_a_validation_error_arrives_as_field_errors(api: Client) -> None:
    with pytest.raises(ValidationError) as bad:
        api.post("lead", {"name": "X", "contacts": [{"emails": [{"email": "not-an-address"}]}]})
    assert bad.value.response.status_code == 400
    assert "contacts[0].emails[0].email" in bad.value.field_errors

    with pytest.raises(ValidationError) as both:
        api.post("lead", {"name": "X", "status": "Potential", "status_id": 1})
    assert "status_id" in both.value.response.json()["detail"]

    with pytest.raises(APIError) as missing:
        api.get("lead/999999999")
    assert missing.value.response.status_code == 404


def test_templates_render_by_lead_and_past_the_end(api: Client, leads: list[dict[str, Any]]) -> None:
    template = api.post(
        "email_template",
        {"name": "Close render", "subject": "Hi {{ lead.display_name }}", "body": "<p>Hi</p>", "is_shared": True},
    )
    assert template["is_shared"] is True
    assert api.put(f"email_template/{template['id']}", {"is_shared": False})["is_shared"] is False

    lead = leads[2]
    contact = lead["contacts"][0]
    by_lead = api.get(
        f"email_template/{template['id']}/render", params={"lead_id": lead["id"], "contact_id": contact["id"]}
    )
    assert by_lead["subject"] == "Hi Close Lead 2" and by_lead["email"] == "pat2@closeio.example"
    entry = api.get(f"email_template/{template['id']}/render", params={"query": 'lead_name:"Close Lead 3"', "entry": 0})
    assert entry["subject"] == "Hi Close Lead 3"
    past = api.get(f"email_template/{template['id']}/render", params={"query": "custom.Industry:Software", "entry": 99})
    assert past == {}
    api.delete(f"email_template/{template['id']}")


def test_a_bulk_email_by_s_query_is_created_paused_resumed_and_finished(
    api: Client, running_app: RunningApp, leads: list[dict[str, Any]]
) -> None:
    # A sender that waits between messages, so a pause lands before the last one goes out.
    account = api.post(
        "email_account",
        {
            "email": "closeio@sender.example",
            "name": "Close Sender",
            "smtp_host": "127.0.0.1",
            "smtp_port": running_app.capture_port,
            "smtp_security": "none",
            "min_delay_ms": 300,
        },
    )
    template = api.post(
        "email_template",
        {
            "name": "Close intro",
            "subject": "Hello {{ lead.display_name }}",
            "body": "<p>Hi {{ contact.first_name }}</p>",
        },
    )
    view = api.post("saved_search", {"name": "Close software", "query": "custom.Industry:Software"})
    status_id = leads[0]["status_id"]
    s_query = {
        "type": "and",
        "queries": [
            {"type": "object_type", "object_type": "lead"},
            {"type": "saved_search", "saved_search_id": view["id"]},
            {
                "type": "field_condition",
                "field": {"type": "regular_field", "object_type": "lead", "field_name": "status_id"},
                "condition": {"type": "term", "values": [status_id]},
            },
            {"type": "negate", "query": {"type": "text", "mode": "phrase", "value": "Close Lead 6"}},
        ],
    }
    body = {"s_query": s_query, "template_id": template["id"], "sender": "closeio@sender.example"}

    # The audit first: the client's trailing slash on bulk_action/email/preview/ is answered.
    audit = api.post("bulk_action/email/preview", {**body, "samples": 1})
    assert audit["n_leads"] == N_LEADS - 1 and audit["recipients"] == N_LEADS - 1

    bulk = api.post("bulk_action/email", {**body, "send_done_email": False})
    assert bulk["sender"] == "Close Sender <closeio@sender.example>"
    assert bulk["email_account_id"] == account["id"] and bulk["s_query"] == s_query
    assert bulk["organization_id"] and bulk["created_by"] == leads[0]["created_by"]
    assert bulk["results_limit"] is None and bulk["sort"] == []
    assert 'in:"Close software"' in bulk["query"] and bulk["n_leads"] == N_LEADS - 1
    assert {"counts", "skipped", "eta"} <= set(bulk)

    paused = api.put(f"bulk_action/email/{bulk['id']}", {"status": "paused"})
    assert paused["status"] == "paused" and paused["updated_by"] == leads[0]["created_by"]
    assert api.get(f"bulk_action/email/{bulk['id']}")["counts"]["sent"] < N_LEADS - 1
    with pytest.raises(APIError) as twice:
        api.put(f"bulk_action/email/{bulk['id']}", {"status": "paused"})
    assert twice.value.response.status_code == 409

    api.put(f"bulk_action/email/{bulk['id']}", {"status": "resuming"})
    deadline = time.monotonic() + 60
    while (done := api.get(f"bulk_action/email/{bulk['id']}"))["status"] != "done":
        assert done["status"] not in ("error", "cancelled", "paused"), done
        assert time.monotonic() < deadline, f"the bulk email did not finish: {done}"
        time.sleep(0.2)
    assert done["counts"]["sent"] == N_LEADS - 1 and done["n_objects_processed"] == N_LEADS - 1

    # Each send is an email activity in Close's shape: subject, bodies, sender, recipients, user.
    activities: list[dict[str, Any]] = []
    skip = 0
    while True:
        page = api.get("activity/email", params={"bulk_email_id": bulk["id"], "_limit": 4, "_skip": skip})
        activities += page["data"]
        skip += len(page["data"])
        if not page["has_more"]:
            break
    assert len(activities) == N_LEADS - 1
    by_address = {a["to"][0]: a for a in activities}
    one = by_address["pat1@closeio.example"]
    assert one["subject"] == "Hello Close Lead 1" and "Hi Pat" in one["body_html"] and "Hi Pat" in one["body_text"]
    assert one["sender"] == "Close Sender <closeio@sender.example>" and one["user_id"] == leads[0]["created_by"]
    assert len(list(running_app.outbox.glob("*.eml"))) >= N_LEADS - 1

    # Close's list filters.
    by_template = api.get("bulk_action/email", params={"template_id": template["id"]})["data"]
    assert [b["id"] for b in by_template] == [bulk["id"]]
    mine = api.get("activity/email", params={"lead_id": leads[1]["id"], "user_id": leads[0]["created_by"]})
    assert [a["id"] for a in mine["data"]] == [one["id"]]

    # _fields on a list: each item narrowed, the envelope kept.
    listed = api.get("bulk_action/email", params={"_fields": "id,status,sender"})
    assert listed["data"] and all(set(item) == {"id", "status", "sender"} for item in listed["data"])


def test_an_s_query_node_that_does_not_map_is_refused_by_name(api: Client, leads: list[dict[str, Any]]) -> None:
    template = api.post("email_template", {"name": "Close refused", "subject": "x", "body": "<p>x</p>"})
    related = {
        "type": "has_related",
        "this_object_type": "lead",
        "related_object_type": "opportunity",
        "related_query": {"type": "match_all"},
    }
    with pytest.raises(ValidationError) as refused:
        api.post(
            "bulk_action/email",
            {
                "s_query": {"type": "and", "queries": [{"type": "match_all"}, related]},
                "template_id": template["id"],
                "sender": "sales@demo.example.com",
            },
        )
    assert "has_related" in refused.value.field_errors["s_query.queries[1].type"]


def test_logged_email_activities_and_smart_views_round_trip(api: Client, leads: list[dict[str, Any]]) -> None:
    logged = api.post(
        "activity/email",
        {
            "lead_id": leads[4]["id"],
            "status": "sent",
            "to": ["a@closeio.example", "b@closeio.example"],
            "sender": '"Sally Seller" <sally@closeio.example>',
            "subject": "Logged by a script",
            "body_text": "Hi there",
            "body_html": "<p>Hi there</p>",
        },
    )
    again = api.get(f"activity/email/{logged['id']}")
    assert again["to"] == ["a@closeio.example", "b@closeio.example"] and again["sender"].startswith('"Sally')
    assert (again["subject"], again["body_text"], again["body_html"]) == (
        "Logged by a script",
        "Hi there",
        "<p>Hi there</p>",
    )

    # A Smart View saved in Close's structured form is searched like any other.
    industry = {"type": "custom_field", "custom_field_name": "Industry"}
    s_query = {
        "type": "field_condition",
        "field": industry,
        "condition": {"type": "text", "mode": "phrase", "value": "Software"},
    }
    structured = api.post("saved_search", {"name": "Close structured", "s_query": s_query})
    assert structured["s_query"] == s_query and structured["query"] == 'custom.Industry:"Software"'
    assert api.get("lead", params={"query": 'in:"Close structured"'})["total_results"] == N_LEADS

    view = api.post("saved_search", {"name": "Close Berlin", "query": "city:berlin"})
    assert api.put(f"saved_search/{view['id']}", {"name": "Close Berlin leads"})["name"] == "Close Berlin leads"
    assert api.delete(f"saved_search/{view['id']}") == {}
    gone = api.post("lead", {"name": "Close Lead temporary"})
    assert api.delete(f"lead/{gone['id']}") == {}


def test_routes_answer_without_the_trailing_slash_too(running_app: RunningApp, leads: list[dict[str, Any]]) -> None:
    auth = (API_KEY, "")
    plain = httpx.get(f"{running_app.base_url}/api/v1/lead", params={"_limit": 1}, auth=auth)
    assert plain.status_code == 200 and plain.json()["total_results"] == N_LEADS
    lead_id = leads[0]["id"]
    assert httpx.get(f"{running_app.base_url}/api/v1/lead/{lead_id}", auth=auth).json()["id"] == lead_id
