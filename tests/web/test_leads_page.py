"""The leads page in Chromium: live count and results, errors with a caret at their column,
suggestions as you type, sort and pages, and Smart Views (save, list, open)."""

from __future__ import annotations

import re
import secrets

from playwright.sync_api import Page, expect

from tests.web.conftest import DEMO_LEADS


def test_an_error_shows_a_caret_at_its_column_then_a_valid_query_shows_the_count(
    signed_in_page: Page, screenshot
) -> None:
    page = signed_in_page
    page.goto("/leads")
    expect(page.locator("#lead-count")).to_have_text(f"{DEMO_LEADS:,} leads")  # exact: under the cap
    screenshot(page, "leads")

    box = page.get_by_label(re.compile("^Search leads"))
    box.fill("status:potential city:berlin) name:acme")  # a parenthesis closed that was never opened
    error = page.locator(".query-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text('unexpected ")"')
    expect(error).to_contain_text("line 1, column 29")
    expect(error).to_contain_text("Expected: the end of the query")
    caret = page.locator(".caret-mark")
    expect(caret).to_have_text(" " * 28 + "^")
    expect(page.locator("#lead-count")).to_have_text("")
    expect(box).to_have_attribute("aria-invalid", "true")
    screenshot(page, "leads-query-error")

    box.fill("status:potential")
    expect(page.locator(".query-error")).to_have_count(0)
    expect(page.locator("#lead-count")).to_have_text(re.compile(r"^[\d,]+ leads$"))
    shown = int(page.locator("#lead-count").inner_text().split()[0].replace(",", ""))
    assert 0 < shown < DEMO_LEADS
    rows = page.locator("#lead-results tbody tr")
    expect(rows.first).to_be_visible()
    for status in rows.locator("td:nth-child(2)").all_inner_texts():
        assert status.strip().lower() == "potential"
    # The Email button carries the query to the bulk email form.
    expect(page.get_by_role("link", name="Email these leads")).to_have_attribute(
        "href", "/bulk-emails/new?query=status%3Apotential"
    )


def test_the_page_works_as_a_plain_form_with_sort_and_pages(signed_in_page: Page) -> None:
    page = signed_in_page
    page.goto("/leads?query=has:email_addresses&sort=name")
    names = page.locator("#lead-results tbody tr td:first-child").all_inner_texts()
    assert len(names) == 50
    assert names == sorted(names, key=str.lower)
    page.get_by_role("link", name="Next").click()
    expect(page).to_have_url(re.compile(r"page=2"))
    second = page.locator("#lead-results tbody tr td:first-child").all_inner_texts()
    assert second and second[0].lower() >= names[-1].lower()


def test_suggestions_offer_fields_then_statuses_and_fill_the_box(signed_in_page: Page) -> None:
    page = signed_in_page
    page.goto("/leads")
    box = page.get_by_label(re.compile("^Search leads"))
    box.click()
    box.press_sequentially("emailed_te")
    option = page.get_by_role("option", name=re.compile("^emailed_template:"))
    expect(option).to_be_visible()
    box.press("ArrowDown")
    box.press("Enter")
    expect(box).to_have_value("emailed_template:")
    # After the field: the organisation's template names.
    expect(page.get_by_role("option", name=re.compile("^Intro"))).to_be_visible()

    box.fill("")
    box.press_sequentially("status:pot")
    expect(page.get_by_role("option", name=re.compile("^Potential"))).to_be_visible()
    page.get_by_role("option", name=re.compile("^Potential")).click()
    expect(box).to_have_value("status:Potential ")
    expect(page.locator("#lead-count")).to_have_text(re.compile(r"^[\d,]+ leads$"))


def test_save_a_smart_view_and_open_it(signed_in_page: Page, screenshot) -> None:
    page = signed_in_page
    name = f"Berlin prospects {secrets.token_hex(3)}"
    page.goto("/leads")
    page.get_by_label(re.compile("^Search leads")).fill("city:berlin has:email_addresses")
    expect(page.locator("#lead-count")).not_to_have_text(f"{DEMO_LEADS:,} leads")
    expect(page.locator("#lead-count")).to_have_text(re.compile(r"^[\d,]+ leads?$"))
    count = page.locator("#lead-count").inner_text()
    page.get_by_label("Save this search as").fill(name)
    page.get_by_role("button", name="Save Smart View").click()

    expect(page).to_have_url(re.compile(r"/smart-views/\d+$"))
    expect(page.get_by_role("heading", level=1)).to_contain_text(name)
    expect(page.locator("#lead-count")).to_have_text(count)
    link = page.get_by_role("complementary").get_by_role("link", name=name)
    expect(link).to_have_attribute("aria-current", "page")
    view_id = page.url.rsplit("/", 1)[1]
    expect(page.get_by_role("link", name="Email these leads")).to_have_attribute(
        "href", f"/bulk-emails/new?saved_search_id={view_id}"
    )
    screenshot(page, "smart-view")

    # Listed on the leads page; the same name again is refused, with the reason.
    page.goto("/leads")
    page.get_by_role("link", name=name).click()
    expect(page).to_have_url(re.compile(rf"/smart-views/{view_id}$"))
    page.get_by_label("Save this search as").fill(name)
    page.get_by_role("button", name="Save Smart View").click()
    expect(page.locator("#save-view-error")).to_contain_text("already exists")


def test_a_smart_view_with_a_bad_query_is_refused_with_its_position(signed_in_page: Page) -> None:
    page = signed_in_page
    page.goto("/leads?query=" + "status:")
    page.get_by_label("Save this search as").fill(f"Broken {secrets.token_hex(3)}")
    page.get_by_role("button", name="Save Smart View").click()
    expect(page.locator("#save-view-error")).to_contain_text("column 8")
