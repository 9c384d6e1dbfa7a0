"""Open and click tracking: off by default, signed tokens, no open redirect, machine opens apart."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select

from bulkmail.shared import tracking
from bulkmail.shared.models import EmailActivity, Lead, Recipient
from bulkmail.shared.settings import Settings
from tests.mailer.test_sent_copies_flow import Flow, running

KEY = b"k" * 32
LINKS = (
    '<p>Hi {{ contact.first_name }}, see <a href="https://shop.example/p?a=1&amp;b=2">our offer</a>,'
    " <a href='https://docs.example/guide'>the guide</a>, <a href=\"mailto:sales@example.com\">mail us</a>"
    ' or <a href="#top">top</a>.</p>'
)


# ---------------------------------------------------------------------------------------------
# The pure functions


def test_links_are_rewritten_with_entities_decoded_and_only_web_links() -> None:
    out, urls = tracking.rewrite_links(LINKS, lambda url: f"https://t.example/{len(url)}?x=1&y=2")
    assert urls == ["https://shop.example/p?a=1&b=2", "https://docs.example/guide"]
    assert 'href="https://t.example/30?x=1&amp;y=2"' in out  # escaped again in the attribute
    assert "href='https://t.example/26?x=1&amp;y=2'" in out
    assert 'href="mailto:sales@example.com"' in out and 'href="#top"' in out
    unchanged, none = tracking.rewrite_links(LINKS, lambda url: None)
    assert (unchanged, none) == (LINKS, [])


def test_the_pixel_goes_before_the_body_ends() -> None:
    assert tracking.add_pixel("<html><body><p>x</p></body></html>", "https://t/o/1").endswith(
        '<img src="https://t/o/1" width="1" height="1" alt="" style="display:none"></body></html>'
    )
    assert tracking.add_pixel("<p>x</p>", "https://t/o/1").startswith("<p>x</p><img ")


def test_tokens_refuse_any_alteration() -> None:
    token = tracking.Token("c", 7, 42, "bob@receiver.test", "https://shop.example/p")
    text = tracking.sign(KEY, token)
    assert tracking.read_token(KEY, text) == token
    assert tracking.read_token(b"x" * 32, text) is None  # signed by someone else
    payload, signature = text.split(".")
    other = tracking.sign(KEY, tracking.Token("c", 7, 42, "bob@receiver.test", "https://evil.example/"))
    assert tracking.read_token(KEY, other.split(".")[0] + "." + signature) is None  # URL swapped
    for i in range(len(text)):
        flipped = text[:i] + ("A" if text[i] != "A" else "B") + text[i + 1 :]
        assert tracking.read_token(KEY, flipped) in (None, token), i  # base64 padding bits aside
    assert tracking.read_token(KEY, "garbage") is None
    assert tracking.read_token(KEY, payload) is None


def test_machine_opens() -> None:
    human = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
    assert not tracking.looks_like_a_machine(human, 3600, 10)
    assert tracking.looks_like_a_machine(human, 2, 10)  # within seconds of delivery: a scanner
    assert tracking.looks_like_a_machine("Mozilla/5.0", 3600, 10)  # Apple Mail Privacy Protection
    assert tracking.looks_like_a_machine("Barracuda Sentinel (EE)", 3600, 10)


# ---------------------------------------------------------------------------------------------
# Through the mailer and the API


async def _send(flow: Flow, **options: Any) -> tuple[int, dict[str, str]]:
    """A bulk email to the flow's three leads; returns its id and each recipient's HTML as sent."""
    template = (
        await flow.client.post(
            "/api/v1/email_template/", json={"name": f"T {uuid.uuid4().hex[:6]}", "subject": "Offer", "body": LINKS}
        )
    ).json()
    body = {
        "query": "status:potential",
        "template_id": template["id"],
        "email_account_id": flow.account_id,  # type: ignore[attr-defined]
        **options,
    }
    before = len(flow.capture.messages)
    created = await flow.client.post("/api/v1/bulk_action/email/", json=body)
    assert created.status_code == 201, created.text
    bulk_id = created.json()["id"]
    await flow.run_to_idle()
    status = (await flow.client.get(f"/api/v1/bulk_action/email/{bulk_id}/")).json()
    assert status["status"] == "done", status
    html = {}
    for m in flow.capture.messages[before:]:
        if not m.rcpt_tos[0].endswith(f"@{flow.domain}.lead"):
            continue  # the done email to the sender
        part = m.parsed().get_body(("html",))
        assert part is not None
        html[m.rcpt_tos[0]] = part.get_content()
    return bulk_id, html


async def _prepare(flow: Flow) -> None:
    for name in ("Ada", "Bob", "Cy"):
        lead = {
            "name": f"{name} Corp",
            "status": "Potential",
            "contacts": [{"name": f"{name} Lead", "emails": [{"email": f"{name.lower()}@{flow.domain}.lead"}]}],
        }
        assert (await flow.client.post("/api/v1/lead/", json=lead)).status_code == 201
    account = await flow.client.post(
        "/api/v1/email_account/",
        json={
            "email": f"sally@{flow.domain}.example",
            "smtp_host": "127.0.0.1",
            "smtp_port": flow.capture.port,
            "smtp_security": "none",
        },
    )
    assert account.status_code == 201, account.text
    flow.account_id = account.json()["id"]  # type: ignore[attr-defined]


def _path(url: str) -> str:
    return urlsplit(url).path


async def test_tracking_off_by_default_and_on_when_asked(settings: Settings, database, make_tenant) -> None:
    human = {"User-Agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36"}
    # Opens within a second of sending count as machine-made; this test's clicks come later than that.
    quick = settings.model_copy(update={"machine_open_window_s": 0.5})
    async with running(quick, database, make_tenant) as flow:
        await _prepare(flow)

        off_id, off_html = await _send(flow)
        for html in off_html.values():
            assert "/t/o/" not in html and "/t/c/" not in html  # no pixel, no rewritten link
            assert 'href="https://shop.example/p?a=1&amp;b=2"' in html

        on_id, on_html = await _send(flow, track_opens=True, track_clicks=True, exclude_already_emailed=False)
        bob = f"bob@{flow.domain}.lead"
        html = on_html[bob]
        clicks = re.findall(r'href="([^"]*/t/c/[^"]+)"', html) + re.findall(r"href='([^']*/t/c/[^']+)'", html)
        [pixel] = re.findall(r'<img src="([^"]*/t/o/[^"]+)"', html)
        assert len(clicks) == 2 and 'href="mailto:sales@example.com"' in html and 'href="#top"' in html
        await asyncio.sleep(0.6)

        # A click goes exactly where the link in Bob's message went, never elsewhere.
        answer = await flow.client.get(_path(clicks[0]), headers=human, follow_redirects=False)
        assert answer.status_code == 302
        assert answer.headers["location"] == "https://shop.example/p?a=1&b=2"
        token = _path(clicks[0]).rsplit("/", 1)[1]
        payload, signature = token.split(".")
        altered = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + "." + signature
        assert (await flow.client.get(f"/t/c/{altered}", follow_redirects=False)).status_code == 404
        forged = tracking.sign(
            b"not-our-key-000000000000000000000",
            tracking.Token("c", 1, on_id, bob, "https://evil.example/"),
        )
        assert (await flow.client.get(f"/t/c/{forged}", follow_redirects=False)).status_code == 404
        # A link of the bulk email without tracking: the same token shape is refused there.
        assert (await flow.client.get(_path(pixel).replace("/t/o/", "/t/c/"))).status_code == 404

        # Opens: a privacy proxy first (machine), then Bob himself.
        assert (await flow.client.get(_path(pixel), headers={"User-Agent": "Mozilla/5.0"})).status_code == 200
        async with database.session() as session:
            r = await session.scalar(select(Recipient).where(Recipient.bulk_email_id == on_id, Recipient.email == bob))
            assert r is not None
            activity = await session.scalar(select(EmailActivity).where(EmailActivity.message_id == r.message_id))
            assert activity is not None and activity.date_opened is None  # a machine's open is not Bob's
        pixel_answer = await flow.client.get(_path(pixel), headers=human)
        assert pixel_answer.status_code == 200 and pixel_answer.headers["content-type"] == "image/gif"
        await flow.client.get(_path(pixel), headers=human)
        async with database.session() as session:
            activity = await session.scalar(select(EmailActivity).where(EmailActivity.message_id == r.message_id))
            lead = await session.get(Lead, r.lead_id)
            assert activity is not None and activity.date_opened is not None
            assert lead is not None and lead.last_email_opened_at == activity.date_opened

        report = (await flow.client.get(f"/api/v1/bulk_action/email/{on_id}/")).json()
        assert (report["track_opens"], report["track_clicks"]) == (True, True)
        assert report["report"]["opened"] == 1 and report["report"]["opened_machine"] == 1
        assert report["report"]["clicked"] == 1 and report["report"]["clicked_machine"] == 0
        leads = (await flow.client.get("/api/v1/lead/", params={"query": "email_opened:yes"})).json()
        assert [lead["name"] for lead in leads["data"]] == ["Bob Corp"]
        off = (await flow.client.get(f"/api/v1/bulk_action/email/{off_id}/")).json()
        assert off["track_opens"] is False and off["report"]["opened"] == 0
