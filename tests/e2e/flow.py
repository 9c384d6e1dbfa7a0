"""The user's whole flow, driven through the HTTP API against running workers.

Used by the embedded test (SQLite or PostgreSQL, in-process broker) and the production-shape
test (PostgreSQL + RabbitMQ); both must see the same results. In-process workers are run to idle
(``settle``); workers in other processes can only be watched, so without ``settle`` the flow polls.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from email.message import EmailMessage

import httpx

LEADS = [
    {
        "name": "Acme Anvils",
        "status": "Potential",
        "custom": {"Industry": "Manufacturing"},
        "contacts": [
            {"name": "Ada Lovelace", "title": "CEO", "emails": [{"email": "ada@acme.example"}]},
            {"name": "Bob Builder", "title": "CTO", "emails": [{"email": "bob@acme.example"}]},
        ],
    },
    {
        "name": "Globex",
        "status": "Potential",
        "contacts": [{"name": "", "title": "Buyer", "emails": [{"email": "buyer@globex.example"}]}],
    },
    {  # shares its address with Acme's CEO: one email per address per send
        "name": "Acme Holding",
        "status": "Potential",
        "contacts": [{"name": "Ada L.", "emails": [{"email": "ADA@acme.example"}]}],
    },
    {
        "name": "Initech",
        "status": "Potential",
        "contacts": [
            {"name": "Peter Gibbons", "emails": [{"email": "peter@initech.example", "is_unsubscribed": True}]}
        ],
    },
    {"name": "No Mail Inc", "status": "Potential", "contacts": [{"name": "Silent Sam"}]},
    {
        "name": "Customer Co",
        "status": "Customer",
        "contacts": [{"name": "Carol Customer", "emails": [{"email": "carol@customer.example"}]}],
    },
]

TEMPLATE = {
    "name": "Intro",
    "subject": "Hello {{ lead.display_name }}",
    "body": '<p>Hi {{ contact.first_name|default:"there" }},</p><p>{{ lead.display_name }} in '
    "{{ lead.custom.Industry }}? Regards, {{ user.first_name }} from {{ organization.name }}</p>",
}

QUERY = 'status:potential not emailed_template:"Intro"'


async def wait_until_done(client: httpx.AsyncClient, bulk_id: int, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = (await client.get(f"/api/v1/bulk_action/email/{bulk_id}/")).json()
        if body["status"] in ("done", "error", "cancelled"):
            return body
        await asyncio.sleep(0.2)
    raise AssertionError(f"bulk email {bulk_id} not done in {timeout_s} s: {body}")


async def run_flow(
    client: httpx.AsyncClient,
    smtp_port: int,
    messages: list,
    org_name: str,
    settle: Callable[[], Awaitable[None]] | None = None,
) -> dict:
    for lead in LEADS:
        r = await client.post("/api/v1/lead/", json=lead)
        assert r.status_code == 201, r.text
    template = (await client.post("/api/v1/email_template/", json=TEMPLATE)).json()
    account = (
        await client.post(
            "/api/v1/email_account/",
            json={
                "email": "sally@seller.example",
                "name": "Sally Seller",
                "smtp_host": "127.0.0.1",
                "smtp_port": smtp_port,
                "smtp_security": "none",
            },
        )
    ).json()
    body = {
        "query": QUERY,
        "template_id": template["id"],
        "email_account_id": account["id"],
        "contact_preference": "contact",
    }

    audit = await client.post("/api/v1/bulk_action/email/preview", json={**body, "samples": 5})
    assert audit.status_code == 200, audit.text
    audit = audit.json()
    assert audit["n_leads"] == 5
    assert audit["recipients"] == 3  # ada, bob, buyer
    assert audit["excluded"]["no_email"] == 1
    assert audit["excluded"]["unsubscribed"] == 1
    assert audit["excluded"]["duplicate_address"] == 1
    globex = next(s for s in audit["samples"] if s["email"] == "buyer@globex.example")
    assert globex["subject"] == "Hello Globex"
    assert "Hi there," in globex["body"]
    # A tag its default filled is not reported; one that came out empty is.
    assert globex["empty_tags"] == ["lead.custom.Industry"], globex

    # Close's one-template preview, entry by entry.
    first = await client.get(
        f"/api/v1/email_template/{template['id']}/render/", params={"query": 'name:"Acme Anvils"', "entry": 0}
    )
    assert first.status_code == 200, first.text
    assert first.json()["subject"] == "Hello Acme Anvils" and first.json()["email"] == "ada@acme.example", first.json()
    second_contact = await client.get(
        f"/api/v1/email_template/{template['id']}/render/",
        params={"query": 'name:"Acme Anvils"', "entry": 1, "mode": "contact"},
    )
    assert second_contact.json()["email"] == "bob@acme.example"
    beyond = await client.get(
        f"/api/v1/email_template/{template['id']}/render/", params={"query": "status:potential", "entry": 99}
    )
    # Past the last entry Close answers an empty object, and so do we.
    assert beyond.status_code == 200 and beyond.json() == {}

    created = await client.post("/api/v1/bulk_action/email/", json=body, headers={"Idempotency-Key": "flow-1"})
    assert created.status_code == 201, created.text
    again = await client.post("/api/v1/bulk_action/email/", json=body, headers={"Idempotency-Key": "flow-1"})
    assert again.status_code == 200 and again.json()["id"] == created.json()["id"]
    bulk = created.json()
    assert bulk["n_leads"] == 5 and bulk["status"] == "created"

    if settle is not None:
        await settle()  # the send, the done signal and the done email: all queued work
        done = (await client.get(f"/api/v1/bulk_action/email/{bulk['id']}/")).json()
    else:
        done = await wait_until_done(client, bulk["id"])
    assert done["status"] == "done", done
    assert done["counts"]["sent"] == 3 and done["counts"]["failed"] == 0 and done["counts"]["unknown"] == 0
    assert done["skipped"] == {"no_email": 1, "unsubscribed": 1}
    assert done["n_duplicates"] == 1
    assert done["n_objects"] == 3 and done["n_objects_processed"] == 3

    if settle is None:  # the done email reaches the user; give the other processes' notify queue a moment
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any("sally@seller.example" in m.rcpt_tos for m in messages):
            await asyncio.sleep(0.1)
    to_leads = [m for m in messages if "sally@seller.example" not in m.rcpt_tos]
    assert sorted(r for m in to_leads for r in m.rcpt_tos) == [
        "ada@acme.example",
        "bob@acme.example",
        "buyer@globex.example",
    ]
    done_mail = [m for m in messages if m.rcpt_tos == ["sally@seller.example"]]
    assert len(done_mail) == 1
    assert (
        "is done" in str(done_mail[0].parsed()["Subject"])
        and "Sent: 3" in done_mail[0].parsed().get_body(("plain",)).get_content()
    )

    recipients = (
        await client.get(f"/api/v1/bulk_action/email/{bulk['id']}/recipients/", params={"state": "sent"})
    ).json()["data"]
    by_address = {r["email"]: r for r in recipients}
    for m in to_leads:
        msg: EmailMessage = m.parsed()
        (address,) = m.rcpt_tos
        assert msg["Message-ID"] == by_address[address]["message_id"]
        assert msg["From"].addresses[0].addr_spec == "sally@seller.example"
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert re.match(r"^<https?://[^>]+/unsubscribe/[^>]+>", msg["List-Unsubscribe"])
        html = msg.get_body(("html",)).get_content()
        text = msg.get_body(("plain",)).get_content()
        assert f"from {org_name}" in html and "Regards, Sally" in text
    ada = next(m.parsed() for m in to_leads if m.rcpt_tos == ["ada@acme.example"])
    assert ada["Subject"] == "Hello Acme Anvils" and "Hi Ada," in ada.get_body(("html",)).get_content()
    assert "Manufacturing" in ada.get_body(("html",)).get_content()

    # Recorded on the leads: the same query no longer matches them (not emailed_template:).
    activities = (await client.get("/api/v1/activity/email/", params={"bulk_email_id": bulk["id"]})).json()["data"]
    assert len(activities) == 3
    second = await client.post("/api/v1/bulk_action/email/preview", json=body)
    assert second.json()["n_leads"] == 3  # Initech, No Mail Inc, Acme Holding were not emailed

    # One-click unsubscribe from the header link.
    link = re.match(r"^<(https?://[^>]+)>", ada["List-Unsubscribe"]).group(1)
    path = "/" + link.split("/", 3)[3]
    unsub = await client.post(path, content=b"List-Unsubscribe=One-Click")
    assert unsub.status_code == 200 and "Unsubscribed" in unsub.text
    return done
