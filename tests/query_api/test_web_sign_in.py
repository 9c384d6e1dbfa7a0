"""Sign-in building blocks on both backends: users and passwords, session expiry and revocation,
the failed sign-in count, and API keys listed and revoked per organisation."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from bulkmail.query_api.users.service import UserError, check_password, create_user
from bulkmail.query_api.web import throttle
from bulkmail.query_api.web.csrf import token_for
from bulkmail.query_api.web.session import safe_next
from bulkmail.query_api.web.session_store import (
    TOUCH_INTERVAL,
    now_utc,
    resolve_session,
    revoke_session,
    revoke_user_sessions,
    start_session,
)
from bulkmail.shared.db import Database
from bulkmail.shared.models import ApiKey, User, WebSession
from bulkmail.shared.organizations import add_api_key, list_api_keys, revoke_api_key
from bulkmail.shared.settings import Settings


def unique_email(domain: str = "signin.example") -> str:
    return f"u{uuid.uuid4().hex[:10]}@{domain}"


async def test_a_user_signs_in_with_their_password_only(database: Database, tenant) -> None:
    email = unique_email()
    async with database.session() as session:
        user = await create_user(
            session,
            organization_id=tenant.organization_id,
            email=email.upper(),
            name="Ada Lovelace",
            password="s3cret-pass",
        )
        assert user.email == email and user.name == "Ada Lovelace"
        assert user.password_hash and user.password_hash.startswith("$argon2id$")
        assert "s3cret-pass" not in user.password_hash
    async with database.session() as session:
        found = await check_password(session, f"  {email.title()} ", "s3cret-pass")
        assert found is not None and found.id == user.id
        assert await check_password(session, email, "s3cret-pasS") is None
        assert await check_password(session, unique_email(), "s3cret-pass") is None


async def test_a_sign_in_address_is_unique_across_organisations(database: Database, make_tenant) -> None:
    first, second = await make_tenant("First"), await make_tenant("Second")
    email = unique_email()
    async with database.session() as session:
        await create_user(session, organization_id=first.organization_id, email=email, name="A", password="password-1")
    async with database.session() as session:
        with pytest.raises(UserError, match="already exists"):
            await create_user(
                session, organization_id=second.organization_id, email=email, name="B", password="pw-2-long"
            )
        with pytest.raises(UserError, match="at least 8"):
            await create_user(
                session, organization_id=second.organization_id, email=unique_email(), name="C", password="short"
            )


async def _signed_in(database: Database, settings: Settings, tenant) -> tuple[str, int]:
    async with database.session() as session:
        user = await create_user(
            session, organization_id=tenant.organization_id, email=unique_email(), name="S", password="password-1"
        )
        token = await start_session(session, user, settings, user_agent="pytest")
    return token, user.id


async def test_a_session_lives_until_idle_expired_or_revoked(database: Database, settings: Settings, tenant) -> None:
    token, user_id = await _signed_in(database, settings, tenant)
    async with database.session() as session:
        active = await resolve_session(session, token, settings)
        assert active is not None and active.user.id == user_id
        stored = await session.scalar(select(WebSession.token_hash).where(WebSession.id == active.session_id))
        assert stored != token and len(stored or "") == 64  # only the SHA-256 is kept
        assert await resolve_session(session, token + "x", settings) is None

    # Idle: no request for longer than the idle timeout.
    idle = timedelta(seconds=settings.session_idle_timeout_s)
    async with database.session() as session:
        await session.execute(
            update(WebSession).where(WebSession.user_id == user_id).values(last_seen_at=now_utc() - idle - timedelta(1))
        )
    async with database.session() as session:
        assert await resolve_session(session, token, settings) is None

    # Absolute: however busy, a session ends at its expiry.
    token, user_id = await _signed_in(database, settings, tenant)
    async with database.session() as session:
        await session.execute(
            update(WebSession).where(WebSession.user_id == user_id).values(expires_at=now_utc() - timedelta(seconds=1))
        )
    async with database.session() as session:
        assert await resolve_session(session, token, settings) is None

    # Revoked: sign-out, or every session of the user at once.
    token, user_id = await _signed_in(database, settings, tenant)
    async with database.session() as session:
        await revoke_session(session, token)
    async with database.session() as session:
        assert await resolve_session(session, token, settings) is None
    token, user_id = await _signed_in(database, settings, tenant)
    async with database.session() as session:
        assert await revoke_user_sessions(session, user_id) == 1
    async with database.session() as session:
        assert await resolve_session(session, token, settings) is None


async def test_a_used_session_is_kept_alive_without_a_write_per_request(
    database: Database, settings: Settings, tenant
) -> None:
    token, user_id = await _signed_in(database, settings, tenant)
    earlier = now_utc() - TOUCH_INTERVAL - timedelta(seconds=5)
    async with database.session() as session:
        await session.execute(update(WebSession).where(WebSession.user_id == user_id).values(last_seen_at=earlier))
    async with database.session() as session:
        assert await resolve_session(session, token, settings) is not None
    async with database.session() as session:
        touched = await session.scalar(select(WebSession.last_seen_at).where(WebSession.user_id == user_id))
        assert touched is not None and touched > earlier + TOUCH_INTERVAL
        assert await resolve_session(session, token, settings) is not None
        assert not session.dirty  # seen a moment ago: nothing to write


def test_the_csrf_token_belongs_to_one_session() -> None:
    assert token_for("a") == token_for("a") != token_for("b")
    assert len(token_for("a")) == 64


def test_the_delay_grows_after_the_threshold_and_is_capped(settings: Settings) -> None:
    delays = [throttle.delay_for(n, settings) for n in range(12)]
    assert delays[:3] == [0, 0, 0]
    assert delays[3:7] == [0.25, 0.5, 1.0, 2.0]
    assert max(delays) == throttle.MAX_DELAY_S


async def test_failures_refuse_an_account_and_an_address_and_a_right_password_forgives_the_account(
    database: Database, settings: Settings
) -> None:
    strict = settings.model_copy(
        update={"sign_in_account_failures_before_refusal": 3, "sign_in_address_failures_before_refusal": 5}
    )
    account, address = unique_email(), f"10.{uuid.uuid4().int % 250}.0.1"
    now = now_utc()
    async with database.session() as session:
        for _ in range(3):
            await throttle.record_attempt(session, account, address, now)
    async with database.session() as session:
        verdict = await throttle.judge(session, strict, account, "10.9.9.9", now)
        assert verdict.refused and 0 < verdict.retry_after_s <= strict.sign_in_failure_window_s
        # outside the window the failures no longer count
        later = now + timedelta(seconds=strict.sign_in_failure_window_s + 1)
        assert not (await throttle.judge(session, strict, account, "10.9.9.9", later)).refused

    async with database.session() as session:
        attempt = await throttle.record_attempt(session, account, address, now)
        await throttle.forget_attempt(session, attempt, account)
    async with database.session() as session:
        assert not (await throttle.judge(session, strict, account, "10.9.9.9", now)).refused
        # the address keeps its count: two more failures elsewhere and it is refused for everyone
        for _ in range(2):
            await throttle.record_attempt(session, unique_email(), address, now)
    async with database.session() as session:
        assert (await throttle.judge(session, strict, unique_email(), address, now)).refused


async def test_api_keys_are_listed_and_revoked_within_their_organisation(database: Database, make_tenant) -> None:
    mine, theirs = await make_tenant("Mine"), await make_tenant("Theirs")
    async with database.session() as session:
        me = await session.get(User, mine.user_id)
        assert me is not None
        second = await add_api_key(session, me)
    async with database.session() as session:
        keys = await list_api_keys(session, mine.organization_id)
        assert [k.prefix for k in keys] == [second[:8], mine.api_key[:8]]
        their_key = (await list_api_keys(session, theirs.organization_id))[0]
        assert await revoke_api_key(session, mine.organization_id, their_key.id) is None
        revoked = await revoke_api_key(session, mine.organization_id, keys[0].id)
        assert revoked is not None and revoked.revoked_at is not None
        first_time = revoked.revoked_at
        again = await revoke_api_key(session, mine.organization_id, keys[0].id)
        assert again is not None and again.revoked_at == first_time
    assert (await theirs.client.get("/api/v1/lead/")).status_code == 200
    async with database.session() as session:
        still = await session.scalar(select(ApiKey.revoked_at).where(ApiKey.id == their_key.id))
        assert still is None


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/bulk-emails/3?x=1", "/bulk-emails/3?x=1"),
        ("", "/leads"),
        ("https://evil.example/", "/leads"),
        ("//evil.example/", "/leads"),
        ("/\\evil.example/", "/leads"),
        ("/\t/evil.example/", "/leads"),
        ("/%0a/ok", "/%0a/ok"),  # still encoded: a path on this site
        ("leads", "/leads"),
    ],
)
def test_after_sign_in_only_a_path_on_this_site_is_followed(target: str, expected: str) -> None:
    assert safe_next(target) == expected
