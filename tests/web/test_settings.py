"""The settings page: the organisation's API keys, a new one shown once, revoking one."""

from __future__ import annotations

import re
import sqlite3

import httpx
from playwright.sync_api import Page, expect

from tests.web.conftest import WebApp


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
