"""The inbox sync against a real Dovecot: what comes back is handled once, the user's mail is left alone.

Messages are APPENDed to alice's INBOX as the servers that send them write them (tests/feedback/
samples.py); the sync reads them with its own login, as the mailer does.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING

from sqlalchemy import select

from bulkmail.mailer.inbox_sync import KEYWORD, AccountFollower, InboxSyncRunner
from bulkmail.mailer.sent_copy import ImapSettings
from bulkmail.shared.contracts import EmailFeedbackEvent
from bulkmail.shared.models import EmailActivity, InboxSync
from tests.feedback import samples
from tests.feedback.helpers import (
    HOST,
    Mailbox,
    feedback_counts,
    make_account,
    make_sent_bulk,
    states,
    suppressions,
)

if TYPE_CHECKING:
    from tests.mail_servers import Dovecot

pytest_plugins = ["tests.mail_servers"]


def follower(settings, database, dovecot: Dovecot, org_id: int, account_id: int, events=None) -> AccountFollower:
    imap = ImapSettings(host=HOST, port=dovecot.port, username="alice", password="alicepw", security="none")

    async def sink(event: EmailFeedbackEvent) -> None:
        if events is not None:
            events.append(event)

    return AccountFollower(settings, database, account_id, org_id, imap, sink)


async def test_bounces_complaints_auto_replies_and_replies_are_each_handled_once(settings, database, dovecot) -> None:
    dovecot.reset_mailboxes()
    org_id, account_id, template_id = await make_account(settings, database, dovecot.port)
    tag = uuid.uuid4().hex[:6]
    addresses = [f"{who}-{tag}@receiver.test" for who in ("gone", "angry", "away", "keen", "calm")]
    bulk = await make_sent_bulk(database, org_id, account_id, template_id, addresses)
    gone, angry, away, keen, calm = bulk.recipients

    async with Mailbox(dovecot.port) as box:
        # The user's own mail first, with flags of their own: one read, one flagged and unread.
        await box.deliver(samples.ordinary(1), flags="\\Seen")
        await box.deliver(samples.ordinary(2), flags="\\Flagged")
        await box.deliver(samples.postfix_dsn(gone.email, gone.message_id, 1))
        await box.deliver(samples.arf_report(angry.email, angry.message_id, 1))
        await box.deliver(samples.out_of_office(away.email, away.message_id, 1))
        await box.deliver(samples.reply(keen.email, keen.message_id, 1))
        before = await box.flags()

    events: list[EmailFeedbackEvent] = []
    first = follower(settings, database, dovecot, org_id, account_id, events)
    await first.open()
    try:
        report = await first.catch_up()
        assert report.seen == 6
        assert report.applied == {"hard_bounce": 1, "complaint": 1, "auto_reply": 1, "reply": 1}
        assert (await first.catch_up()).seen == 0  # nothing new: nothing read again
    finally:
        await first.close()

    assert await states(database, bulk.bulk_email_id) == {
        gone.email: "bounced",
        angry.email: "complained",
        away.email: "sent",  # an out-of-office is neither a bounce nor a reply
        keen.email: "replied",
        calm.email: "sent",
    }
    assert await suppressions(database, org_id) == {gone.email: "hard_bounce", angry.email: "complaint"}
    assert sorted(e.type for e in events) == ["email.bounced", "email.complained", "email.replied"]
    async with database.session() as session:
        activities = {
            (a.lead_id, a.direction): a
            for a in await session.scalars(select(EmailActivity).where(EmailActivity.organization_id == org_id))
        }
    assert activities[(gone.lead_id, "outgoing")].status == "error"  # the bounced email on the lead
    incoming = activities[(keen.lead_id, "incoming")]  # the reply, on the lead as Close shows it
    assert (incoming.status, incoming.subject, incoming.message_id) == (
        "inbox",
        "Re: Quick question",
        "<reply-1@receiver.test>",
    )

    async with Mailbox(dovecot.port) as box:
        after = await box.flags()
    dsn_uid = 3
    # Only the handled bounce changed, and only by our keyword: nothing became \Seen.
    assert after == {**before, dsn_uid: before[dsn_uid] | {KEYWORD}}
    assert all("\\Seen" not in after[uid] for uid in (2, 3, 4, 5, 6))

    # A restart: a new follower (new login) repeats nothing, and misses nothing that came meanwhile.
    async with Mailbox(dovecot.port) as box:
        await box.deliver(samples.reply(calm.email, calm.message_id, 2))
        await box.deliver(samples.ordinary(3))
    second = follower(settings, database, dovecot, org_id, account_id, events)
    await second.open()
    try:
        report = await second.catch_up()
    finally:
        await second.close()
    assert (report.seen, report.applied) == (2, {"reply": 1})
    assert (await states(database, bulk.bulk_email_id))[calm.email] == "replied"
    assert await feedback_counts(database, org_id) == {"hard_bounce": 1, "complaint": 1, "auto_reply": 1, "reply": 2}
    async with database.session() as session:
        state = await session.get(InboxSync, account_id)
        assert state is not None and state.last_uid == 8


async def test_a_uidvalidity_change_is_followed_without_applying_anything_twice(settings, database, dovecot) -> None:
    dovecot.reset_mailboxes()
    org_id, account_id, template_id = await make_account(settings, database, dovecot.port)
    tag = uuid.uuid4().hex[:6]
    bulk = await make_sent_bulk(
        database, org_id, account_id, template_id, [f"a-{tag}@receiver.test", f"b-{tag}@receiver.test"]
    )
    a, b = bulk.recipients
    async with Mailbox(dovecot.port) as box:
        await box.deliver(samples.gmail_dsn(a.email, a.message_id, 1))
    sync = follower(settings, database, dovecot, org_id, account_id)
    await sync.open()
    try:
        assert (await sync.catch_up()).applied == {"hard_bounce": 1}
        old_validity = sync.uidvalidity
    finally:
        await sync.close()

    # The server forgets its UIDs (Dovecot rebuilds them when its uidlist is gone): new UIDVALIDITY,
    # the same message renumbered. Then a new message arrives.
    inbox = dovecot.maildir("alice", "INBOX")
    for name in ("dovecot-uidlist", "dovecot.index", "dovecot.index.log", "dovecot.index.cache"):
        (inbox / name).unlink(missing_ok=True)
    async with Mailbox(dovecot.port) as box:
        await box.deliver(samples.reply(b.email, b.message_id, 1))

    sync = follower(settings, database, dovecot, org_id, account_id)
    await sync.open()
    try:
        assert sync.uidvalidity != old_validity
        report = await sync.catch_up()
    finally:
        await sync.close()
    assert report.seen == 2  # both looked at again after the change...
    assert report.applied == {"reply": 1}  # ...and the bounce, already handled, not applied twice
    assert await feedback_counts(database, org_id) == {"hard_bounce": 1, "reply": 1}
    assert await states(database, bulk.bulk_email_id) == {a.email: "bounced", b.email: "replied"}
    async with database.session() as session:
        state = await session.get(InboxSync, account_id)
        assert state is not None and state.uidvalidity == sync.uidvalidity and state.last_uid == 2


async def test_every_bounce_format_is_read_from_the_inbox(settings, database, dovecot) -> None:
    """The table of formats in docs/feedback.md: MTA → the address found → hard or soft."""
    dovecot.reset_mailboxes()
    org_id, account_id, template_id = await make_account(settings, database, dovecot.port)
    tag = uuid.uuid4().hex[:6]
    names = list(samples.BOUNCE_FORMATS)
    bulk = await make_sent_bulk(
        database, org_id, account_id, template_id, [f"r{i}-{tag}@receiver.test" for i in range(len(names))]
    )
    async with Mailbox(dovecot.port) as box:
        for i, (name, r) in enumerate(zip(names, bulk.recipients, strict=True)):
            build, _ = samples.BOUNCE_FORMATS[name]
            await box.deliver(build(r.email, r.message_id, i))
    sync = follower(settings, database, dovecot, org_id, account_id)
    await sync.open()
    try:
        await sync.catch_up()
    finally:
        await sync.close()
    got = await states(database, bulk.bulk_email_id)
    expected = {
        r.email: "bounced" if samples.BOUNCE_FORMATS[name][1] == "hard_bounce" else "sent"
        for name, r in zip(names, bulk.recipients, strict=True)
    }
    assert got == expected
    hard = sum(1 for _, kind in samples.BOUNCE_FORMATS.values() if kind == "hard_bounce")
    assert await feedback_counts(database, org_id) == {"hard_bounce": hard, "soft_bounce": len(names) - hard}


async def test_soft_bounces_suppress_only_after_the_limit_across_sends(settings, database, dovecot) -> None:
    dovecot.reset_mailboxes()
    org_id, account_id, template_id = await make_account(settings, database, dovecot.port)
    address = f"full-{uuid.uuid4().hex[:6]}@receiver.test"
    limited = settings.model_copy(update={"soft_bounce_limit": 2})
    sync = follower(limited, database, dovecot, org_id, account_id)
    await sync.open()
    try:
        for n in range(2):
            bulk = await make_sent_bulk(database, org_id, account_id, template_id, [address])
            [r] = bulk.recipients
            async with Mailbox(dovecot.port) as box:
                # The same delay twice for one send counts once.
                await box.deliver(samples.exim_delay_warning(address, r.message_id, 10 * n))
                await box.deliver(samples.exim_delay_warning(address, r.message_id, 10 * n + 1))
            await sync.catch_up()
            assert await states(database, bulk.bulk_email_id) == {address: "sent"}
            assert await suppressions(database, org_id) == ({} if n == 0 else {address: "soft_bounces"})
    finally:
        await sync.close()


async def test_one_worker_holds_an_account_and_follows_it_with_idle(settings, database, dovecot) -> None:
    """Two runners (two mailers): one lease, one login; a reply arriving during IDLE is handled."""
    dovecot.reset_mailboxes()
    org_id, account_id, template_id = await make_account(settings, database, dovecot.port)
    bulk = await make_sent_bulk(
        database, org_id, account_id, template_id, [f"idle-{uuid.uuid4().hex[:6]}@receiver.test"]
    )
    [r] = bulk.recipients
    fast = settings.model_copy(update={"inbox_poll_interval_s": 30.0, "inbox_lease_s": 30.0})
    one, two = InboxSyncRunner(fast, database, worker_id="one"), InboxSyncRunner(fast, database, worker_id="two")
    try:
        taken_one = await one.take_accounts()
        taken_two = await two.take_accounts()
        assert account_id in taken_one and account_id not in taken_two
        # Wait until the follower is idling (its first catch-up is stored), then mail arrives.
        deadline = time.monotonic() + 10
        while True:
            async with database.session() as session:
                state = await session.get(InboxSync, account_id)
                if state is not None and state.synced_at is not None:
                    break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        async with Mailbox(dovecot.port) as box:
            await box.deliver(samples.reply(r.email, r.message_id, 1))
        deadline = time.monotonic() + 10  # far below the 30 s poll: IDLE told us
        while (await states(database, bulk.bulk_email_id))[r.email] != "replied":
            assert time.monotonic() < deadline, "the reply was not picked up during IDLE"
            await asyncio.sleep(0.05)
    finally:
        await one.stop()
        await two.stop()
    async with database.session() as session:
        state = await session.get(InboxSync, account_id)
        assert state is not None and state.leased_by == ""  # released on stop


async def test_a_refused_login_is_noted_and_not_retried_at_once(settings, database, dovecot) -> None:
    """A wrong password: the error is kept for the user, and the runner waits (Gmail locks out
    accounts that keep logging in) while keeping its lease so no other mailer tries either."""
    _, account_id, _ = await make_account(settings, database, dovecot.port, password="wrong")
    runner = InboxSyncRunner(settings, database, worker_id="refused")
    other = InboxSyncRunner(settings, database, worker_id="other")
    try:
        assert account_id in await runner.take_accounts()
        deadline = time.monotonic() + 15
        while True:
            async with database.session() as session:
                state = await session.get(InboxSync, account_id)
                if state is not None and state.last_error:
                    break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert "login refused" in state.last_error and "wrong" not in state.last_error
        assert account_id not in await other.take_accounts()
        assert not runner._followers[account_id].done()  # waiting, not looping
    finally:
        await runner.stop()
        await other.stop()
