"""Every control on the salesperson's pages has a label and can be reached with the keyboard,
at 1280 px and at 390 px (where nothing may stick out sideways beyond the tables' own scroll)."""

from __future__ import annotations

import httpx
from playwright.sync_api import Page

from tests.web.conftest import WebApp

# For each control: its accessible name the way a screen reader finds it (a <label>, aria-label,
# aria-labelledby, or the text of a button or link), and whether Tab can reach it.
UNLABELLED = """
() => {
  const visible = el => !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length);
  const named = el => {
    if (el.labels && el.labels.length) return true;
    if (el.getAttribute('aria-label') || el.getAttribute('aria-labelledby') || el.getAttribute('title')) return true;
    if (['BUTTON', 'A', 'SUMMARY'].includes(el.tagName)) return el.textContent.trim().length > 0;
    return false;
  };
  const controls = document.querySelectorAll(
    'input:not([type=hidden]), select, textarea, button, a[href], summary, iframe');
  const problems = [];
  for (const el of controls) {
    if (!visible(el)) continue;
    const what = el.outerHTML.slice(0, 120);
    if (el.tagName === 'IFRAME') { if (!el.getAttribute('title')) problems.push('untitled frame: ' + what); continue; }
    if (!named(el)) problems.push('no label: ' + what);
    if (el.tabIndex < 0) problems.push('not reachable by Tab: ' + what);
  }
  return problems;
}
"""
OVERFLOW = """
() => document.documentElement.scrollWidth - document.documentElement.clientWidth
"""


def _one_bulk_email(web_app: WebApp) -> int:
    with httpx.Client(base_url=web_app.base_url, auth=(web_app.api_key, ""), timeout=30) as api:
        template_id = api.get("/api/v1/email_template/").json()["data"][0]["id"]
        account_id = api.get("/api/v1/email_account/").json()["data"][0]["id"]
        made = api.post(
            "/api/v1/bulk_action/email/",
            json={
                "query": "has:email_addresses limit:2",
                "template_id": template_id,
                "email_account_id": account_id,
                "exclude_already_emailed": False,
            },
        )
        assert made.status_code == 201, made.text
        return int(made.json()["id"])


def test_every_control_is_labelled_and_reachable_and_phones_do_not_scroll_sideways(
    signed_in_page: Page, web_app: WebApp
) -> None:
    page = signed_in_page
    bulk_id = _one_bulk_email(web_app)
    pages = [
        "/leads",
        "/leads?query=status:",
        "/bulk-emails/new?query=has:email_addresses",
        "/bulk-emails",
        f"/bulk-emails/{bulk_id}",
        "/templates",
        "/templates/new",
        "/templates/1",
        "/email-accounts",
        "/email-accounts/new",
        "/email-accounts/1",
    ]
    problems: list[str] = []
    for width, height in ((1280, 800), (390, 844)):
        page.set_viewport_size({"width": width, "height": height})
        for path in pages:
            page.goto(path)
            if path.startswith("/bulk-emails/new"):
                page.locator("#audit").wait_for()
            problems += [f"{path} at {width}px: {p}" for p in page.evaluate(UNLABELLED)]
            sideways = page.evaluate(OVERFLOW)
            if sideways > 1:
                problems.append(f"{path} at {width}px scrolls sideways by {sideways}px")
    assert not problems, "\n".join(problems)


def test_the_query_box_suggestions_and_the_preview_work_from_the_keyboard(signed_in_page: Page) -> None:
    page = signed_in_page
    page.goto("/leads")
    page.locator("#query").focus()
    page.keyboard.type("has:ema")
    page.get_by_role("option", name="email_addresses").wait_for()
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Tab")  # Tab accepts the highlighted suggestion
    assert page.locator("#query").input_value() == "has:email_addresses "

    page.goto("/bulk-emails/new?query=has:email_addresses")
    page.locator("#audit").wait_for()
    page.locator("#sample-next").focus()
    page.keyboard.press("Enter")
    assert page.locator("#sample-position").inner_text().startswith("Recipient 2 of ")
    page.keyboard.press("Shift+Tab")  # back to Previous
    page.keyboard.press("Enter")
    assert page.locator("#sample-position").inner_text().startswith("Recipient 1 of ")
