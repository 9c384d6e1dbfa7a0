"""The settings page: the organisation's API keys, a new one shown once, revoking one."""

from __future__ import annotations

import re
import sqlite3
import uuid

import httpx
from playwright.sync_api import Browser, Page, expect

from tests.web.conftest import WebApp, sign_in


def test_create_a_key_shown_once_use_it_then_revoke_it(signed_in_page: Page, web_app: WebApp, screenshot) -> None:
    page = signed_in_page
    page.goto("/settings")
    expect(page.get_by_role("heading", name="API keys")).to_be_visible()
    screenshot(page, "settings")

    page.get_by_role("button", name="Create API key").click()
    new_key_field = page.get_by_label("New API key")
    expect(new_key_field).to_be_visible()
    key = new_key_field.input_value()
    assert re.fullmatch(r"bm_[A-Za-z0-9_-]{40}", key)
    screenshot(page, "settings-new-key")

    with httpx.Client(base_url=web_app.base_url, auth=(key, ""), timeout=30) as api:
        assert api.get("/api/v1/lead/", params={"_limit": 1}).status_code == 200

        # Shown once: the page, loaded again, lists the key by its prefix and nowhere in full.
        page.goto("/settings")
        assert key not in page.content()
        row = page.locator(f'tr[data-key-prefix="{key[:8]}"]')
        expect(row).to_contain_text("active")
        expect(row).not_to_contain_text("never")  # it was used a moment ago

        page.once("dialog", lambda dialog: dialog.accept())
        row.get_by_role("button", name=re.compile("Revoke")).click()
        expect(page.get_by_role("status")).to_contain_text(f"{key[:8]}… is revoked")
        expect(page.locator(f'tr[data-key-prefix="{key[:8]}"]')).to_contain_text("revoked")

        refused = api.get("/api/v1/lead/", params={"_limit": 1})
        assert refused.status_code == 401


def test_a_revoke_cancelled_in_the_dialog_keeps_the_key(signed_in_page: Page, web_app: WebApp) -> None:
    page = signed_in_page
    page.goto("/settings")
    page.get_by_role("button", name="Create API key").click()
    key = page.get_by_label("New API key").input_value()
    page.goto("/settings")
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.locator(f'tr[data-key-prefix="{key[:8]}"]').get_by_role("button", name=re.compile("Revoke")).click()
    expect(page.locator(f'tr[data-key-prefix="{key[:8]}"]')).to_contain_text("active")
    with httpx.Client(base_url=web_app.base_url, auth=(key, ""), timeout=30) as api:
        assert api.get("/api/v1/lead/", params={"_limit": 1}).status_code == 200


def test_another_organisations_key_cannot_be_revoked(signed_in_page: Page, web_app: WebApp) -> None:
    made = web_app.cli("create-org", "--name", "Other Org", "--email", "boss@other.example")
    assert made.returncode == 0, made.stderr
    other_key = made.stdout.split("API key (shown once): ")[1].strip()
    with sqlite3.connect(web_app.database_path) as db:
        (other_key_id,) = db.execute("SELECT id FROM api_keys WHERE prefix = ?", (other_key[:8],)).fetchone()
    page = signed_in_page
    page.goto("/settings")
    assert other_key[:8] not in page.content()
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    assert token

    answer = page.request.post(
        f"/settings/api-keys/{other_key_id}/revoke", form={"csrf_token": token}, headers={"Origin": web_app.base_url}
    )
    assert answer.status == 404
    with httpx.Client(base_url=web_app.base_url, auth=(other_key, ""), timeout=30) as api:
        assert api.get("/api/v1/lead/", params={"_limit": 1}).status_code == 200


def test_a_new_password_signs_out_every_other_browser(
    browser: Browser, page: Page, web_app: WebApp, screenshot
) -> None:
    email = f"pw-{uuid.uuid4().hex[:6]}@example.com"
    made = web_app.cli(
        "create-user", "--email", email, "--name", "Pat Password", "--password", "first-password", "--org", "1"
    )
    assert made.returncode == 0, made.stderr
    other = browser.new_context(base_url=web_app.base_url)
    try:
        other_page = other.new_page()
        sign_in(other_page, email, "first-password", "/settings")
        expect(other_page).to_have_url(re.compile(r"/settings$"))

        sign_in(page, email, "first-password", "/settings")
        expect(page).to_have_url(re.compile(r"/settings$"))
        sessions = page.get_by_role("region", name="Signed-in browsers").get_by_role("listitem")
        expect(sessions).to_have_count(2)
        expect(page.get_by_text("this browser")).to_have_count(1)

        page.get_by_label("Current password").fill("not-the-password")
        page.get_by_label("New password", exact=True).fill("second-password")
        page.get_by_label("New password again").fill("second-password")
        page.get_by_role("button", name="Change password").click()
        expect(page.locator("#password-error")).to_have_text("The current password is not right.")

        page.get_by_label("Current password").fill("first-password")
        page.get_by_label("New password", exact=True).fill("second-password")
        page.get_by_label("New password again").fill("second-password")
        page.get_by_role("button", name="Change password").click()
        expect(page.get_by_text("Your password is changed.")).to_be_visible()
        expect(page.get_by_text("Signed out of 1 other browser.")).to_be_visible()
        expect(sessions).to_have_count(1)
        screenshot(page, "settings-password-changed")

        other_page.reload()
        expect(other_page).to_have_url(re.compile(r"/signin\?next=%2Fsettings$"))
        sign_in(other_page, email, "first-password")
        expect(other_page.get_by_role("alert")).to_have_text("That email address and password do not match.")
        sign_in(other_page, email, "second-password", "/settings")
        expect(other_page).to_have_url(re.compile(r"/settings$"))
    finally:
        other.close()
