"""The session cookie and the origin check behind HTTPS (``PUBLIC_URL``), through the ASGI app."""

from __future__ import annotations

import re
import uuid

import httpx

from bulkmail.query_api.app import create_app
from bulkmail.query_api.users.service import create_user
from bulkmail.shared.broker.memory import MemoryBroker
from bulkmail.shared.db import Database
from bulkmail.shared.settings import Settings

PUBLIC = "https://bulkmail.example.test"


async def test_behind_https_the_cookie_is_secure_and_the_public_origin_is_accepted(
    settings: Settings, database: Database, tenant
) -> None:
    email = f"https-{uuid.uuid4().hex[:8]}@example.com"
    async with database.session() as session:
        await create_user(session, organization_id=tenant.organization_id, email=email, name="H", password="password-1")
    app = create_app(settings.model_copy(update={"public_url": PUBLIC}), database=database, broker=MemoryBroker())
    # The proxy speaks plain HTTP to the app; the browser's Origin is the public HTTPS one.
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://internal:8000") as client:
        form = await client.get("/signin")
        presession = form.headers["set-cookie"]
        assert "HttpOnly" in presession and "Secure" in presession
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert token is not None
        # A Secure cookie travels only over HTTPS: the browser's side of the proxy. Sent by hand here.
        signed_in = await client.post(
            "/signin",
            data={"email": email, "password": "password-1", "csrf_token": token.group(1)},
            headers={"Origin": PUBLIC, "Cookie": presession.split(";")[0]},
        )
        assert signed_in.status_code == 303, signed_in.text
        cookie = next(v for k, v in signed_in.headers.multi_items() if k == "set-cookie" and "bulkmail_session=" in v)
        assert all(part in cookie for part in ("HttpOnly", "Secure", "SameSite=lax", "Path=/"))

        # Another HTTPS origin is still refused.
        session_cookie = {"Cookie": cookie.split(";")[0]}
        page = await client.get("/settings", headers=session_cookie)
        assert page.status_code == 200
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token is not None
        refused = await client.post(
            "/settings/api-keys",
            data={"csrf_token": token.group(1)},
            headers={**session_cookie, "Origin": "https://evil.example"},
        )
        assert refused.status_code == 403
        accepted = await client.post(
            "/settings/api-keys", data={"csrf_token": token.group(1)}, headers={**session_cookie, "Origin": PUBLIC}
        )
        assert accepted.status_code == 201


async def test_over_plain_http_the_cookie_is_not_marked_secure(settings: Settings, database: Database) -> None:
    app = create_app(settings.model_copy(update={"public_url": ""}), database=database, broker=MemoryBroker())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000") as client:
        form = await client.get("/signin")
        assert "HttpOnly" in form.headers["set-cookie"] and "Secure" not in form.headers["set-cookie"]
        for path in ("/signin", "/static/app.css", "/api/v1/lead/", "/healthz"):
            headers = (await client.get(path)).headers
            assert headers["x-frame-options"] == "DENY"
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["referrer-policy"] == "same-origin"
            assert "frame-ancestors 'none'" in headers["content-security-policy"]


async def test_odd_sign_in_input_gets_the_form_again_never_a_500(settings: Settings, database: Database) -> None:
    app = create_app(settings, database=database, broker=MemoryBroker())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000") as client:
        form = await client.get("/signin")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert token is not None
        origin = {"Origin": "http://127.0.0.1:8000"}
        for data, message in (
            ({"email": "x" * 5000 + "@example.com", "password": "whatever-1"}, "That is not an email address."),
            ({"email": "", "password": ""}, "Enter your email address and password."),
            ({"email": "a@b.example"}, "Enter your email address and password."),
        ):
            answer = await client.post("/signin", data={**data, "csrf_token": token.group(1)}, headers=origin)
            assert answer.status_code == 400 and message in answer.text


async def test_signing_out_after_the_session_ended_just_goes_to_sign_in(settings: Settings, database: Database) -> None:
    app = create_app(settings, database=database, broker=MemoryBroker())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000") as client:
        client.cookies.set("bulkmail_session", "ended-long-ago")
        answer = await client.post("/signout", data={"csrf_token": "stale"})
        assert answer.status_code == 303 and answer.headers["location"] == "/signin"
