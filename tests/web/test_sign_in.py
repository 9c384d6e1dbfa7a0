"""Signing in and out in Chromium: redirects, errors, throttling, session revocation, CSRF."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.web.conftest import WebApp, sign_in

CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


def session_cookie(page: Page) -> str:
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    return cookies["bulkmail_session"]


def signed_in_client(web_app: WebApp, cookie: str) -> httpx.Client:
    return httpx.Client(base_url=web_app.base_url, cookies={"bulkmail_session": cookie}, timeout=30)


def test_a_signed_out_user_is_sent_to_sign_in_and_then_back(page: Page, web_app: WebApp, screenshot) -> None:
    page.goto("/settings")
    expect(page).to_have_url(re.compile(r"/signin\?next=%2Fsettings$"))
    expect(page.get_by_role("heading", name="Sign in to bulkmail")).to_be_visible()
    screenshot(page, "signin")

    sign_in_form_filled = page.get_by_label("Email address")
    sign_in_form_filled.fill(web_app.demo_email)
    page.get_by_label("Password").fill(web_app.demo_password)
    page.get_by_role("button", name="Sign in").click()

    expect(page).to_have_url(re.compile(r"/settings$"))
    expect(page.get_by_text(web_app.demo_email).first).to_be_visible()
    cookie = next(c for c in page.context.cookies() if c["name"] == "bulkmail_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"


def test_signed_out_json_calls_get_401_and_the_root_leads_to_the_leads(http: httpx.Client, web_app: WebApp) -> None:
    assert http.get("/ui/leads/search", params={"query": ""}).status_code == 401
    # An API key opens the API, never a page or a /ui/ call.
    key = {"Authorization": f"Bearer {web_app.api_key}"}
    assert http.get("/api/v1/lead/", params={"_limit": 1}, headers=key).status_code == 200
    assert http.get("/ui/leads/search", params={"query": ""}, headers=key).status_code == 401
    assert http.get("/settings", headers=key).status_code == 303
    root = http.get("/")
    assert root.status_code == 303 and root.headers["location"] == "/leads"
    settings = http.get("/settings")
    assert settings.status_code == 303 and settings.headers["location"] == "/signin?next=%2Fsettings"
    # a `next` that leaves the site is ignored
    page = http.get("/signin", params={"next": "//evil.example/x"})
    assert 'name="next" value="/leads"' in page.text


def test_a_wrong_password_shows_an_error_and_no_session(page: Page, web_app: WebApp, screenshot) -> None:
    page.set_extra_http_headers({"X-Forwarded-For": "198.51.100.10"})  # its own throttle budget
    sign_in(page, web_app.demo_email, "not-the-password")
    expect(page.get_by_role("alert")).to_have_text("That email address and password do not match.")
    expect(page).to_have_url(re.compile(r"/signin$"))
    expect(page.get_by_label("Email address")).to_have_value(web_app.demo_email)
    assert "bulkmail_session" not in {c["name"] for c in page.context.cookies()}
    screenshot(page, "signin-error")


def _attempt(client: httpx.Client, email: str, password: str, address: str) -> httpx.Response:
    form = client.get("/signin", headers={"X-Forwarded-For": address})
    token = CSRF_INPUT.search(form.text)
    assert token is not None
    return client.post(
        "/signin",
        data={"email": email, "password": password, "csrf_token": token.group(1)},
        headers={"X-Forwarded-For": address, "Origin": str(client.base_url).rstrip("/")},
    )


def test_repeated_failures_on_one_account_are_slowed_then_refused_even_with_the_right_password(
    web_app: WebApp,
) -> None:
    email = f"target-{uuid.uuid4().hex[:6]}@example.com"
    made = web_app.cli(
        "create-user", "--email", email, "--name", "Tess Target", "--password", "right-password", "--org", "1"
    )
    assert made.returncode == 0, made.stderr
    with httpx.Client(base_url=web_app.base_url, timeout=30) as client:
        statuses = []
        for attempt in range(5):
            started = time.monotonic()
            statuses.append(_attempt(client, email, "wrong-password", f"203.0.113.{attempt + 1}").status_code)
            elapsed = time.monotonic() - started
        assert statuses == [401] * 5
        assert elapsed >= 0.5  # the fifth failure waited (0.25 s after the third, doubling)

        refused = _attempt(client, email, "right-password", "203.0.113.99")
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) > 0
        assert "Too many failed sign-ins" in refused.text
        assert "bulkmail_session" not in refused.cookies


def test_repeated_failures_from_one_address_are_refused_for_every_account(web_app: WebApp) -> None:
    address = "192.0.2.77"
    with httpx.Client(base_url=web_app.base_url, timeout=30) as client:
        for n in range(6):
            assert _attempt(client, f"nobody{n}@example.com", "guess-guess", address).status_code == 401
        refused = _attempt(client, web_app.demo_email, web_app.demo_password, address)
        assert refused.status_code == 429
        # the same account from another address is not affected
        other = _attempt(client, web_app.demo_email, web_app.demo_password, "192.0.2.78")
        assert other.status_code == 303


def test_sign_out_revokes_the_session(page: Page, web_app: WebApp, screenshot) -> None:
    sign_in(page, web_app.demo_email, web_app.demo_password, "/settings")
    expect(page).to_have_url(re.compile(r"/settings$"))
    old_cookie = session_cookie(page)
    with signed_in_client(web_app, old_cookie) as client:
        assert client.get("/settings").status_code == 200

    page.goto("/signout")
    expect(page.get_by_role("heading", name="Sign out")).to_be_visible()
    screenshot(page, "signout")
    page.get_by_role("main").get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/signin$"))
    assert "bulkmail_session" not in {c["name"] for c in page.context.cookies()}

    # The old cookie, replayed, is worth nothing: the session was revoked on the server.
    with signed_in_client(web_app, old_cookie) as client:
        after = client.get("/settings")
        assert after.status_code == 303 and after.headers["location"].startswith("/signin")


def test_each_sign_in_starts_a_new_session_and_ends_the_one_before(web_app: WebApp) -> None:
    address = {"X-Forwarded-For": "198.51.100.20"}
    with httpx.Client(base_url=web_app.base_url, timeout=30, headers=address) as client:
        first = _attempt(client, web_app.demo_email, web_app.demo_password, "198.51.100.20")
        assert first.status_code == 303
        first_token = client.cookies["bulkmail_session"]
        # Signed in, the CSRF token of any page belongs to the session; sign in again with it.
        token = CSRF_INPUT.search(client.get("/settings").text)
        assert token is not None
        again = client.post(
            "/signin",
            data={"email": web_app.demo_email, "password": web_app.demo_password, "csrf_token": token.group(1)},
            headers={"Origin": web_app.base_url},
        )
        assert again.status_code == 303
        assert client.cookies["bulkmail_session"] != first_token
        assert client.get("/settings").status_code == 200
    with signed_in_client(web_app, first_token) as old:
        assert old.get("/settings").status_code == 303


@pytest.fixture
def demo_cookie(demo_storage_state):
    return next(c["value"] for c in demo_storage_state["cookies"] if c["name"] == "bulkmail_session")


def _key_count(client: httpx.Client) -> int:
    return len(re.findall(r"<tr data-key-prefix=", client.get("/settings").text))


def test_a_cross_site_form_post_is_refused(web_app: WebApp, demo_cookie: str) -> None:
    origin = web_app.base_url
    with signed_in_client(web_app, demo_cookie) as client:
        token = CSRF_INPUT.search(client.get("/settings").text)
        assert token is not None
        keys_before = _key_count(client)
        attempts = {
            "no token": client.post("/settings/api-keys", data={}, headers={"Origin": origin}),
            "wrong token": client.post("/settings/api-keys", data={"csrf_token": "0" * 64}, headers={"Origin": origin}),
            "foreign origin": client.post(
                "/settings/api-keys", data={"csrf_token": token.group(1)}, headers={"Origin": "https://evil.example"}
            ),
            "foreign referer": client.post(
                "/settings/api-keys",
                data={"csrf_token": token.group(1)},
                headers={"Referer": "https://evil.example/page"},
            ),
            "no origin": client.post("/settings/api-keys", data={"csrf_token": token.group(1)}),
            "json, no header": client.post("/settings/api-keys", json={}, headers={"Origin": origin}),
        }
        assert {name: r.status_code for name, r in attempts.items()} == dict.fromkeys(attempts, 403)
        assert _key_count(client) == keys_before
        # The same request from our own page goes through.
        ok = client.post("/settings/api-keys", data={"csrf_token": token.group(1)}, headers={"Origin": origin})
        assert ok.status_code == 201
        assert _key_count(client) == keys_before + 1


class _AttackerPage(BaseHTTPRequestHandler):
    target = ""

    def do_GET(self) -> None:
        body = (
            f'<form id="f" method="post" action="{self.target}/settings/api-keys">'
            '<input name="csrf_token" value="guessed"></form>'
            '<script>document.getElementById("f").submit()</script>'
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def attacker_site(web_app: WebApp) -> Iterator[str]:
    """Another site (localhost is another site than 127.0.0.1) whose page posts a form to the app."""
    handler = type("Handler", (_AttackerPage,), {"target": web_app.base_url})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_a_signed_in_browser_lured_to_another_site_cannot_post_to_the_app(
    signed_in_page: Page, web_app: WebApp, attacker_site: str, demo_cookie: str, screenshot
) -> None:
    with signed_in_client(web_app, demo_cookie) as client:
        keys_before = _key_count(client)
    with signed_in_page.expect_response(re.compile(r"/settings/api-keys$")) as answer:
        signed_in_page.goto(attacker_site)
    assert answer.value.status == 403
    expect(signed_in_page.get_by_role("alert")).to_contain_text("another site")
    screenshot(signed_in_page, "csrf-refused")
    with signed_in_client(web_app, demo_cookie) as client:
        assert _key_count(client) == keys_before
