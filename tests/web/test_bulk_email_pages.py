"""The bulk email flow in Chromium: Email from a search, preview real recipients, a test to me,
one blue button, and the progress page that reaches done by itself; the capture outbox then
holds exactly the messages the page reports. Also the audit's fixes and pause / resume."""

from __future__ import annotations

import email
import email.policy
import re
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
from playwright.sync_api import Browser, Page, expect

from tests.web.conftest import DEMO_LEADS, MAX_BULK_EMAIL_LEADS, WebApp

if TYPE_CHECKING:
    from tests.mail_servers import SmtpSink

# The smtp_sink fixture (registered, not imported, so pytest can still rewrite its asserts).
pytest_plugins = ["tests.mail_servers"]

QUERY = "status:potential city:berlin"
OUTBOX_WAIT_S = 30.0


def _message_ids(paths: list[Path]) -> list[tuple[str, str]]:
    """(Message-ID, To) of each captured message."""
    out = []
    for path in paths:
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        out.append((str(message["Message-ID"]), str(message["To"])))
    return out


def _wait_for_outbox(web_app: WebApp, before: set[Path], expected: int) -> list[Path]:
    """The messages captured since ``before``, once there are ``expected`` of them (bounded wait)."""
    deadline = time.monotonic() + OUTBOX_WAIT_S
    while True:
        new = [p for p in web_app.outbox_messages() if p not in before]
        if len(new) >= expected or time.monotonic() > deadline:
            return new
        time.sleep(0.2)


def _count(page: Page, state: str) -> int:
    return int(page.locator(f'#counts [data-state="{state}"] dd').inner_text().replace(",", ""))


def test_email_preview_three_recipients_send_a_test_then_send_and_watch_it_finish(
    signed_in_page: Page, web_app: WebApp, screenshot
) -> None:
    page = signed_in_page
    before = set(web_app.outbox_messages())
    page.goto("/leads?query=" + quote(QUERY))
    page.get_by_role("link", name="Email these leads").click()
    expect(page).to_have_url(re.compile(r"/bulk-emails/new\?query="))
    expect(page.get_by_label("Leads (query)")).to_have_value(QUERY)
    page.get_by_label("Template", exact=True).select_option(label="Check-in")
    expect(page.locator("#audit")).to_be_visible()
    expect(page.locator("#preview")).not_to_have_attribute("aria-busy", "true")
    recipients = int(page.locator("#audit-recipients").inner_text().replace(",", ""))
    assert recipients >= 3
    duplicates_reason = page.locator('.excluded-list li[data-reason="duplicate_address"] .num')
    duplicates = int(duplicates_reason.inner_text()) if duplicates_reason.count() else 0
    send = page.get_by_role("button", name=re.compile(r"^Send [\d,]+ emails?$"))
    expect(send).to_have_text(f"Send {recipients:,} emails")

    # Three recipients, one by one: each with its own subject and body, rendered for its lead.
    for n in (1, 2, 3):
        expect(page.locator("#sample-position")).to_have_text(
            f"Recipient {n} of {recipients if recipients < 100 else 100}"
        )
        shown = page.locator(".sample:not(.hidden)")
        expect(shown).to_have_count(1)
        expect(shown.locator(".sample-subject")).to_have_text("Checking in")
        lead_name = shown.locator(".sample-head dd").first.inner_text().split(" · ", 1)[1]
        body = page.frame_locator(".sample:not(.hidden) iframe").locator("body")
        expect(body).to_contain_text(f"How are things going at {lead_name}?")
        expect(shown.locator("iframe")).to_have_attribute("sandbox", "")
        if n == 1:
            screenshot(page, "bulk-email-new")
        if n < 3:
            page.get_by_role("button", name="Next").click()

    third_address = page.locator(".sample:not(.hidden) .sample-head dd").first.inner_text().split(" · ", 1)[0]
    page.locator(".sample:not(.hidden)").get_by_role("button", name="Send a test to me").click()
    expect(page.locator(".sample:not(.hidden) .test-status")).to_have_text(
        re.compile(rf"^Test sent to {re.escape(web_app.demo_email)}"), timeout=30_000
    )

    send.click()
    expect(page).to_have_url(re.compile(r"/bulk-emails/\d+$"))
    bulk_id = int(page.url.rsplit("/", 1)[1])
    # Done by itself: the page polls, nobody reloads it.
    expect(page.locator("#status")).to_have_attribute("data-status", "done", timeout=60_000)
    expect(page.locator("#percent")).to_have_text("100.0%")
    sent = _count(page, "sent")
    assert sent == recipients
    assert _count(page, "failed") == 0
    expect(page.locator("#chart-title")).to_have_text(re.compile("^Messages sent per "))
    expect(page.locator("#chart .chart-bar").first).to_be_visible()
    expect(page.locator("#recipient-table tbody tr[data-state=sent]")).to_have_count(sent)
    screenshot(page, "bulk-email-progress")

    # The outbox: one message per sent recipient, the test message, and the done email. No more.
    new = _wait_for_outbox(web_app, before, sent + 2)
    ids = _message_ids(new)
    to_recipients = [mid for mid, _to in ids if re.match(rf"<bulk-{bulk_id}-\d+\.", mid)]
    tests = [to for mid, to in ids if mid.startswith("<test-")]
    done = [to for mid, to in ids if mid.startswith(f"<bulk-{bulk_id}-done.")]
    assert len(to_recipients) == sent
    assert len(tests) == 1 and web_app.demo_email in tests[0]
    assert len(done) == 1 and web_app.demo_email in done[0]
    assert len(new) == sent + 2, f"unexpected messages: {ids}"
    test_message = next(p for p in new if b"<test-" in p.read_bytes())
    assert third_address not in email.message_from_bytes(test_message.read_bytes())["To"]

    page.goto("/bulk-emails")
    row = page.locator(f'tr[data-bulk-email-id="{bulk_id}"]')
    expect(row).to_contain_text("Check-in")
    expect(row).to_contain_text("done")
    expect(row).to_contain_text("100.0%")
    screenshot(page, "bulk-emails")

    # The same audience again: the re-send warning, and one click leaves them out of the query.
    page.goto("/bulk-emails/new?query=" + quote(QUERY))
    page.get_by_label("Template", exact=True).select_option(label="Check-in")
    expect(page.locator(".audit-warning").first).to_contain_text(
        f"{sent:,} leads already received the template 'Check-in'"
    )
    page.get_by_role("button", name=re.compile("Add not emailed_template")).click()
    expect(page.get_by_label("Leads (query)")).to_have_value(f'{QUERY} not emailed_template:"Check-in"')
    # Left: only the leads skipped last time because another lead had their address.
    expect(page.locator("#audit-recipients")).to_have_text(str(duplicates))
    expect(page.locator(".audit-warning")).to_have_count(0)


def test_over_the_limit_the_send_is_refused_with_a_one_click_limit_fix(signed_in_page: Page) -> None:
    page = signed_in_page
    page.goto("/bulk-emails/new?query=*")
    expect(page.locator("#limit-refusal")).to_contain_text(f"{MAX_BULK_EMAIL_LEADS:,} leads")
    expect(page.locator("#audit-leads")).to_have_text(f"~{DEMO_LEADS:,}")
    expect(page.locator("#send-button")).to_be_disabled()
    page.get_by_role("button", name=re.compile("Send to the first")).click()
    expect(page.get_by_label("Leads (query)")).to_have_value(f"* limit:{MAX_BULK_EMAIL_LEADS}")
    expect(page.locator("#audit-leads")).to_have_text(f"~{MAX_BULK_EMAIL_LEADS:,}")
    expect(page.locator("#limit-refusal")).to_have_count(0)
    expect(page.locator("#send-button")).to_be_enabled()


def test_without_javascript_the_form_previews_and_refuses_on_the_server(
    browser: Browser, web_app: WebApp, demo_storage_state: dict[str, Any]
) -> None:
    context = browser.new_context(base_url=web_app.base_url, java_script_enabled=False)
    try:
        context.add_cookies(demo_storage_state["cookies"])
        page = context.new_page()
        page.goto("/bulk-emails/new?query=*")
        page.get_by_role("button", name="Preview").click()
        expect(page.locator("#limit-refusal")).to_be_visible()
        page.get_by_role("button", name=re.compile("Send to the first")).click()
        expect(page.get_by_label("Leads (query)")).to_have_value(f"* limit:{MAX_BULK_EMAIL_LEADS}")
        expect(page.locator("#audit-recipients")).not_to_have_text("0")
    finally:
        context.close()


def test_pause_and_resume_a_larger_send(signed_in_page: Page, web_app: WebApp, screenshot) -> None:
    """A slow account (a pause between messages) so the send is still going when we pause it."""
    page = signed_in_page
    page.goto("/email-accounts/new")
    page.get_by_label("Email address").fill("slow@demo.example.com")
    page.get_by_label("Name recipients see").fill("Slow Sender")
    page.locator("#smtp_host").fill("127.0.0.1")
    page.locator("#smtp_port").fill(web_app.env["BULKMAIL_CAPTURE_SMTP_PORT"])
    page.locator("#smtp_security").select_option("none")
    page.get_by_label("Pause between messages (ms)").fill("40")
    page.get_by_label("Connections at once").fill("1")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#saved")).to_be_visible()

    page.goto("/bulk-emails/new?query=" + quote("has:email_addresses limit:30"))
    page.get_by_label("Send from").select_option(label="Slow Sender <slow@demo.example.com>")
    page.get_by_label("Template", exact=True).select_option(label="Check-in")
    page.get_by_label("Leave out leads that already received this template").uncheck()
    expect(page.locator("#audit-leads")).to_have_text("~30")
    expect(page.locator("#preview")).not_to_have_attribute("aria-busy", "true")
    recipients = int(page.locator("#audit-recipients").inner_text().replace(",", ""))
    page.locator("#send-button").click()
    expect(page).to_have_url(re.compile(r"/bulk-emails/\d+$"))

    expect(page.locator("#counts [data-state=sent] dd")).not_to_have_text("0", timeout=30_000)
    page.get_by_role("button", name="Pause").click()
    expect(page.locator("#status")).to_have_attribute("data-status", "paused")
    expect(page.locator("#eta")).to_have_text("Paused. Resume to carry on.")
    # Paused: what was in flight settles, then nothing more goes out.
    settled = _settled_sent_count(page)
    assert settled < recipients
    screenshot(page, "bulk-email-paused")

    page.get_by_role("button", name="Resume").click()
    expect(page.locator("#status")).not_to_have_attribute("data-status", "paused")
    expect(page.locator("#status")).to_have_attribute("data-status", "done", timeout=90_000)
    assert _count(page, "sent") == recipients
    assert _count(page, "failed") == 0


def _settled_sent_count(page: Page) -> int:
    """The sent count once two readings a polling interval apart agree (bounded)."""
    deadline = time.monotonic() + 20
    last = _count(page, "sent")
    while time.monotonic() < deadline:
        page.wait_for_timeout(1500)
        now = _count(page, "sent")
        if now == last:
            return now
        last = now
    raise AssertionError("the sent count kept growing after the pause")


def test_failures_are_listed_with_the_servers_reply_and_downloaded_as_csv(
    signed_in_page: Page, web_app: WebApp, screenshot, smtp_sink: Callable[..., SmtpSink]
) -> None:
    """An account whose server refuses every recipient (Postfix's smtp-sink answering RCPT with 5xx)."""
    sink = smtp_sink("-f", "RCPT")
    page = signed_in_page
    page.goto("/email-accounts/new")
    page.get_by_label("Email address").fill("bounces@demo.example.com")
    page.get_by_label("Name recipients see").fill("Bouncing Sender")
    page.locator("#smtp_host").fill("127.0.0.1")
    page.locator("#smtp_port").fill(str(sink.port))
    page.locator("#smtp_security").select_option("none")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#saved")).to_be_visible()

    page.goto("/bulk-emails/new?query=" + quote("city:tokyo has:email_addresses limit:3"))
    page.get_by_label("Send from").select_option(label="Bouncing Sender <bounces@demo.example.com>")
    page.get_by_label("Leave out leads that already received this template").uncheck()
    page.get_by_label("Email me when it is done").uncheck()
    expect(page.locator("#preview")).not_to_have_attribute("aria-busy", "true")
    recipients = int(page.locator("#audit-recipients").inner_text())
    assert recipients > 0
    page.locator("#send-button").click()
    expect(page.locator("#status")).to_have_attribute("data-status", "done", timeout=60_000)
    assert _count(page, "failed") == recipients
    assert _count(page, "sent") == 0

    page.get_by_label("Show").select_option("failed")  # submits by itself
    expect(page).to_have_url(re.compile(r"state=failed"))
    rows = page.locator("#recipient-table tbody tr")
    expect(rows).to_have_count(recipients)
    expect(rows.first.locator(".reply")).to_have_text(re.compile(r"^5\d\d \S"))
    reply = rows.first.locator(".reply").inner_text()
    screenshot(page, "bulk-email-failures")

    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download failures (CSV)").click()
    lines = Path(download_info.value.path()).read_text().splitlines()
    assert lines[0] == "email,state,attempts,smtp_reply,lead_id,last_attempt_utc"
    assert len(lines) == 1 + recipients
    assert all(",failed," in line and reply in line for line in lines[1:])

    # The server refused the content, not the addresses (no hard bounce): retry sends again.
    page.get_by_role("button", name="Retry failed").click()
    expect(page.locator("#notice")).to_have_text(
        f"Sending again to {recipients} failed recipient{'s' if recipients != 1 else ''}."
    )
    expect(page.locator("#status")).to_have_attribute("data-status", "done", timeout=60_000)
    assert _count(page, "failed") == recipients
    attempts = page.locator("#recipient-table tbody tr td:nth-child(3)").all_inner_texts()
    assert attempts and all(int(a) >= 1 for a in attempts)


def test_the_eta_names_an_account_pause_in_words(signed_in_page: Page, web_app: WebApp) -> None:
    """An account the provider paused until tomorrow 09:12: the progress page says when it resumes."""
    with httpx.Client(base_url=web_app.base_url, auth=(web_app.api_key, ""), timeout=30) as api:
        account = api.post(
            "/api/v1/email_account/",
            json={
                "email": "paused@demo.example.com",
                "smtp_host": "127.0.0.1",
                "smtp_port": int(web_app.env["BULKMAIL_CAPTURE_SMTP_PORT"]),
                "smtp_security": "none",
            },
        ).json()
        resume_at = (datetime.now(UTC) + timedelta(days=1)).replace(hour=9, minute=12, second=0, microsecond=0)
        with sqlite3.connect(web_app.database_path) as db:
            db.execute(
                "UPDATE email_accounts SET paused_until = ?, pause_reason = ? WHERE id = ?",
                (resume_at.replace(tzinfo=None).isoformat(sep=" "), "421 4.7.0 Try again later", account["id"]),
            )
        template_id = api.get("/api/v1/email_template/").json()["data"][0]["id"]
        made = api.post(
            "/api/v1/bulk_action/email/",
            json={
                "query": "has:email_addresses limit:2",
                "template_id": template_id,
                "email_account_id": account["id"],
                "exclude_already_emailed": False,  # earlier tests may have sent it to these leads
            },
        )
        assert made.status_code == 201, made.text
    page = signed_in_page
    page.goto(f"/bulk-emails/{made.json()['id']}")
    # The pause's reason is part of the ETA, so the user sees why it waits.
    expect(page.locator("#eta")).to_contain_text("account paused: 421 4.7.0 Try again later; resumes tomorrow at 09:12")
    page.goto(f"/email-accounts/{account['id']}")
    expect(page.get_by_role("status").filter(has_text="paused until")).to_contain_text("421 4.7.0 Try again later")
