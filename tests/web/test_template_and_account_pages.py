"""Templates (live preview, save errors at their line and column) and email accounts
(passwords write-only, Test connection against the capture SMTP and a closed port) in Chromium."""

from __future__ import annotations

import re
import secrets
import sqlite3

from playwright.sync_api import Page, expect

from tests.conftest import free_port
from tests.web.conftest import WebApp

BROKEN_BODY = '<p>Hi {{ contact.first_name|default:"there" }},</p>\n<p>Your {% if %} offer</p>'


def test_write_a_template_with_a_live_preview_and_a_save_error_at_its_line_and_column(
    signed_in_page: Page, screenshot
) -> None:
    page = signed_in_page
    name = f"Spring offer {secrets.token_hex(3)}"
    page.goto("/templates")
    screenshot(page, "templates")
    page.get_by_role("link", name="New template").click()
    page.get_by_label("Name").fill(name)
    page.get_by_label("Subject").fill("An offer for {{ lead.display_name }}")
    page.get_by_label("HTML body").fill("<p>Hi {{ contact.first_name }}, see {{ lead.custom.Nonexistent }}.</p>")
    page.get_by_label("For leads matching").fill("has:email_addresses")

    # The preview follows the draft: rendered for the first matching lead, the unknown tag flagged.
    sample = page.locator("#template-sample")
    expect(sample).to_contain_text("An offer for ")
    expect(sample.locator(".tag.badge-danger")).to_contain_text("lead.custom.Nonexistent")
    expect(page.frame_locator("#template-preview-frame").locator("body")).to_contain_text(
        re.compile(r"^Hi \w+, see \.$")
    )
    screenshot(page, "template-new")

    # A save that does not compile: refused at line 2, column 15, and the edit is all still there.
    page.get_by_label("HTML body").fill(BROKEN_BODY)
    page.get_by_role("button", name="Save template").click()
    problem = page.locator(".compile-error")
    expect(problem).to_contain_text("The HTML body does not compile at line 2, column 15")
    expect(problem.locator(".caret-mark")).to_have_text(" " * 14 + "^")
    expect(page.get_by_label("HTML body")).to_have_value(BROKEN_BODY)
    expect(page.get_by_label("Name")).to_have_value(name)
    # The cursor is put at the error.
    offset = BROKEN_BODY.index("\n") + 1 + 14
    assert page.get_by_label("HTML body").evaluate("el => [document.activeElement === el, el.selectionStart]") == [
        True,
        offset,
    ]
    screenshot(page, "template-save-error")

    page.get_by_label("HTML body").fill('<p>Hi {{ contact.first_name|default:"there" }},</p>')
    expect(page.locator(".compile-error")).to_have_count(0)
    page.get_by_role("button", name="Save template").click()
    expect(page.locator("#saved")).to_have_text("Saved.")
    expect(page).to_have_url(re.compile(r"/templates/\d+\?saved=1$"))
    page.goto("/templates")
    expect(page.get_by_role("link", name=name)).to_be_visible()


def test_an_email_account_password_is_write_only_and_test_connection_shows_the_reply(
    signed_in_page: Page, web_app: WebApp, screenshot
) -> None:
    page = signed_in_page
    password = "s3cret-" + secrets.token_hex(4)
    page.goto("/email-accounts")
    screenshot(page, "email-accounts")
    page.get_by_role("link", name="Add an email account").click()
    page.get_by_label("Email address").fill("tester@demo.example.com")
    page.locator("#smtp_host").fill("127.0.0.1")
    page.locator("#smtp_port").fill(web_app.env["BULKMAIL_CAPTURE_SMTP_PORT"])
    page.locator("#smtp_security").select_option("none")
    page.locator("#smtp_username").fill("")
    page.locator("#smtp_password").fill(password)
    screenshot(page, "email-account-new")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#saved")).to_be_visible()
    account_id = int(re.search(r"/email-accounts/(\d+)", page.url).group(1))  # type: ignore[union-attr]

    # Never shown again, and stored only encrypted.
    assert password not in page.content()
    expect(page.locator("#smtp_password")).to_have_value("")
    expect(page.locator("#smtp_password")).to_have_attribute("placeholder", "saved; type to replace")
    with sqlite3.connect(web_app.database_path) as db:
        (stored,) = db.execute(
            "SELECT smtp_password_encrypted FROM email_accounts WHERE id = ?", (account_id,)
        ).fetchone()
    assert stored and password not in stored

    # Saving again with the field empty keeps the password.
    page.get_by_label("Name recipients see").fill("Tester")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#saved")).to_be_visible()
    with sqlite3.connect(web_app.database_path) as db:
        (kept,) = db.execute(
            "SELECT smtp_password_encrypted FROM email_accounts WHERE id = ?", (account_id,)
        ).fetchone()
    assert kept == stored

    # The capture server takes no login: the password is not offered (no AUTH), the test passes.
    page.locator("#smtp_password").fill("")
    page.get_by_role("button", name="Test connection").click()
    result = page.locator("#test-result .check-result")
    expect(result).to_have_attribute("data-status", "ok", timeout=30_000)
    expect(result.locator("#smtp-verdict")).to_contain_text(
        f"Connected to 127.0.0.1:{web_app.env['BULKMAIL_CAPTURE_SMTP_PORT']}"
    )
    expect(result.locator("#sent-copy")).to_contain_text("Not saved: no IMAP server configured")
    screenshot(page, "email-account-test")

    # A port nobody listens on: the test fails and says what the connection attempt got.
    page.locator("#smtp_port").fill(str(free_port()))
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#saved")).to_be_visible()
    page.get_by_role("button", name="Test connection").click()
    result = page.locator("#test-result .check-result")
    expect(result).to_have_attribute("data-status", "failed", timeout=30_000)
    expect(result.locator("#smtp-verdict")).to_contain_text("Could not connect or log in")
    expect(result.locator("#smtp-reply")).to_contain_text(re.compile("refused|connect", re.IGNORECASE))


def test_a_bad_account_form_keeps_what_was_typed_and_names_the_field(signed_in_page: Page) -> None:
    page = signed_in_page
    page.goto("/email-accounts/new")
    page.get_by_label("Email address").fill("not an address")
    page.locator("#smtp_host").fill("smtp.example.com")
    page.locator("#smtp_port").fill("70000")
    page.locator("#email").evaluate("el => el.setAttribute('type', 'text')")  # let the server judge it
    page.locator("#smtp_port").evaluate("el => el.removeAttribute('type')")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#save-error")).to_contain_text("Not saved.")
    expect(page.locator("#email-error")).to_be_visible()
    expect(page.locator("#smtp_port-error")).to_be_visible()
    expect(page.locator("#smtp_host")).to_have_value("smtp.example.com")
