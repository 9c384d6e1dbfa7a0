"""Browser tests of the web app: the whole embedded system as `bulkmail run` starts it, driven by
Debian's Chromium through Playwright (never a downloaded browser).

Fixtures:
- ``web_app``: one running `bulkmail run` (query-api + dispatcher + mailer, SQLite, in-process
  broker, capture SMTP) per test session on free loopback ports, with the demo data and a known
  demo user (``web_app.demo_email`` / ``web_app.demo_password``) and API key.
- ``browser`` (session), ``context`` and ``page`` (per test, 1280×800). A page fails its test when
  the browser reports a Content-Security-Policy violation or an uncaught script error.
- ``signed_in_page``: a page whose browser is signed in as the demo user.
- ``screenshot(page, name)``: writes ``screenshots/<name>-1280x800.png`` and ``-390x844.png``.
- ``http``: an httpx client on the app (for what a browser cannot send, e.g. a foreign Origin).
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Playwright, sync_playwright

from tests.conftest import free_port

CHROMIUM = os.environ.get("BULKMAIL_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT_DIR = Path(__file__).resolve().parents[2] / "screenshots"
SCREEN_SIZES = ((1280, 800), (390, 844))
DEMO_LEADS = 2_000
MAX_BULK_EMAIL_LEADS = 1_500
START_TIMEOUT_S = 180.0

# Sign-in throttling for this server: low enough that a test reaches a refusal in a few
# attempts, and tests that guess wrong send a made-up client address (X-Forwarded-For, which
# uvicorn trusts from 127.0.0.1) so the browser tests' own address is never refused.
THROTTLE = {
    "BULKMAIL_SIGN_IN_FAILURES_BEFORE_DELAY": "3",
    "BULKMAIL_SIGN_IN_ACCOUNT_FAILURES_BEFORE_REFUSAL": "5",
    "BULKMAIL_SIGN_IN_ADDRESS_FAILURES_BEFORE_REFUSAL": "6",
}


@dataclass
class WebApp:
    """The running system: where it listens, its data directory, the demo login."""

    base_url: str
    data_dir: Path
    env: dict[str, str]
    demo_email: str
    demo_password: str
    api_key: str
    log_path: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    @property
    def outbox(self) -> Path:
        """Where the capture SMTP server writes every message as a .eml file."""
        return self.data_dir / "outbox"

    @property
    def database_path(self) -> Path:
        return self.data_dir / "bulkmail.db"

    def outbox_messages(self) -> list[Path]:
        return sorted(self.outbox.glob("*.eml")) if self.outbox.exists() else []

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a `bulkmail` command against this system's database."""
        return subprocess.run(
            [sys.executable, "-m", "bulkmail.cli", *args], env=self.env, capture_output=True, text=True, timeout=120
        )


@pytest.fixture(scope="session")
def web_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebApp]:
    data_dir = tmp_path_factory.mktemp("web-app")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULKMAIL_")}
    env.update(
        {
            "BULKMAIL_DATA_DIR": str(data_dir),
            "BULKMAIL_HOST": "127.0.0.1",
            "BULKMAIL_PORT": str(port),
            "BULKMAIL_CAPTURE_SMTP_PORT": str(free_port()),
            "BULKMAIL_DEMO_USER_EMAIL": "demo@example.com",
            "BULKMAIL_DEMO_PASSWORD": "demo-" + secrets.token_urlsafe(9),
            "BULKMAIL_DEMO_API_KEY": "bm_" + secrets.token_urlsafe(30),
            "BULKMAIL_SWEEP_INTERVAL_S": "0.5",
            # Below the demo's 2,000 leads, so a query for all of them meets the over-the-limit
            # refusal and its one-click `limit:` fix (the real limit, 100,000, needs too many leads).
            "BULKMAIL_MAX_BULK_EMAIL_LEADS": str(MAX_BULK_EMAIL_LEADS),
            "BULKMAIL_LOG_FORMAT": "json",
            **THROTTLE,
        }
    )
    log_path = data_dir / "bulkmail-run.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bulkmail.cli", "run", "--demo-leads", str(DEMO_LEADS)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    app = WebApp(
        base_url=f"http://127.0.0.1:{port}",
        data_dir=data_dir,
        env=env,
        demo_email=env["BULKMAIL_DEMO_USER_EMAIL"],
        demo_password=env["BULKMAIL_DEMO_PASSWORD"],
        api_key=env["BULKMAIL_DEMO_API_KEY"],
        log_path=log_path,
        process=process,
    )
    try:
        _wait_until_ready(app)
        yield app
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _wait_until_ready(app: WebApp) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if app.process.poll() is not None:
            pytest.fail(f"`bulkmail run` exited with {app.process.returncode}:\n{app.log()[-4000:]}")
        # The banner is printed once the demo data and the demo user exist.
        if "bulkmail is running" in app.log():
            try:
                if httpx.get(f"{app.base_url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
        time.sleep(0.2)
    pytest.fail(f"`bulkmail run` was not ready after {START_TIMEOUT_S} s:\n{app.log()[-4000:]}")


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def context(browser: Browser, web_app: WebApp) -> Iterator[BrowserContext]:
    context = browser.new_context(base_url=web_app.base_url, viewport={"width": 1280, "height": 800})
    context.set_default_timeout(15_000)
    yield context
    context.close()


class BrowserProblems:
    """CSP violations and uncaught script errors a page reported while the test ran."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and re.search(r"Content.Security.Policy|Refused to", message.text):
            self.messages.append(f"CSP: {message.text}")

    def on_page_error(self, error: Any) -> None:
        self.messages.append(f"script error: {error}")


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    page = context.new_page()
    problems = BrowserProblems()
    page.on("console", problems.on_console)
    page.on("pageerror", problems.on_page_error)
    yield page
    assert not problems.messages, "the browser reported problems:\n" + "\n".join(problems.messages)


def sign_in(page: Page, email: str, password: str, next_path: str = "") -> None:
    """Sign in through the form, as a person would."""
    page.goto("/signin" + (f"?next={next_path}" if next_path else ""))
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


@pytest.fixture(scope="session")
def demo_storage_state(browser: Browser, web_app: WebApp) -> dict[str, Any]:
    """The demo user's signed-in cookies, made once through the sign-in form."""
    context = browser.new_context(base_url=web_app.base_url)
    try:
        page = context.new_page()
        sign_in(page, web_app.demo_email, web_app.demo_password, "/settings")
        page.wait_for_url("**/settings")
        return context.storage_state()  # type: ignore[return-value]
    finally:
        context.close()


@pytest.fixture
def signed_in_page(page: Page, context: BrowserContext, demo_storage_state: dict[str, Any]) -> Page:
    context.add_cookies(demo_storage_state["cookies"])
    return page


@pytest.fixture
def screenshot() -> Callable[[Page, str], list[Path]]:
    """``screenshot(page, "leads")``: the page as it is now at 1280×800 and 390×844 (then back)."""

    def take(page: Page, name: str) -> list[Path]:
        SCREENSHOT_DIR.mkdir(exist_ok=True)
        before = page.viewport_size
        paths = []
        for width, height in SCREEN_SIZES:
            page.set_viewport_size({"width": width, "height": height})
            path = SCREENSHOT_DIR / f"{name}-{width}x{height}.png"
            page.screenshot(path=str(path))
            paths.append(path)
        if before is not None:
            page.set_viewport_size(before)
        return paths

    return take


@pytest.fixture
def http(web_app: WebApp) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=web_app.base_url, timeout=30) as client:
        yield client
