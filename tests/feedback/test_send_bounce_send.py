"""The whole loop: a bulk email goes out, a bounce comes back to the account's INBOX, the next send
leaves the address out with its reason.

Real servers throughout: the API, the dispatcher and a mailer (whose inbox sync is on), the capture
SMTP server, and Dovecot for the account's mailbox.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from tests.feedback import samples
from tests.feedback.helpers import Mailbox
from tests.mailer.test_sent_copies_flow import imap_of, running

if TYPE_CHECKING:
    from tests.mail_servers import Dovecot

pytest_plugins = ["tests.mail_servers"]


async def test_a_bounced_address_is_left_out_of_the_next_send_with_its_reason(
    settings, database, make_tenant, dovecot: Dovecot
) -> None:
    dovecot.reset_mailboxes()
    # Leases short enough that the mailer takes the new account within a second or two.
    quick = settings.model_copy(update={"inbox_lease_s": 3.0, "inbox_poll_interval_s": 30.0})
    async with running(quick, database, make_tenant) as flow:
        bulk_id, account_id = await flow.send(**imap_of(dovecot))
        sent = {m.rcpt_tos[0]: m.parsed()["Message-ID"] for m in flow.capture.messages if flow.domain in m.rcpt_tos[0]}
        bob = f"bob@{flow.domain}.lead"

        async with Mailbox(dovecot.port) as box:
            await box.deliver(samples.gmail_dsn(bob, sent[bob], 1))
        # The inbox sync finds the bounce on its own (IDLE or its poll), not as queued work: wait for it.
        deadline = time.monotonic() + 20
        while (report := (await flow.client.get(f"/api/v1/bulk_action/email/{bulk_id}/")).json())["counts"].get(
            "bounced"
        ) != 1:
            assert time.monotonic() < deadline, report
            await asyncio.sleep(0.1)
        assert report["report"]["bounced_hard"] == 1
        assert report["report"]["delivered"] == 2
        assert report["counts"]["sent"] == 2
        # The bounced email shows on Bob's timeline, and the search language finds it.
        found = (await flow.client.get("/api/v1/lead/", params={"query": "email(status:error)"})).json()
        assert [lead["name"] for lead in found["data"]] == ["Bob Corp"]

        template_id = report["template_id"]
        body = {
            "query": "status:potential",
            "template_id": template_id,
            "email_account_id": account_id,
            "exclude_already_emailed": False,
        }
        audit = (await flow.client.post("/api/v1/bulk_action/email/preview", json=body)).json()
        assert audit["recipients"] == 2
        assert audit["excluded"]["suppressed"] == 1
        assert audit["suppressed_by_reason"] == {"hard_bounce": 1}

        second = await flow.client.post("/api/v1/bulk_action/email/", json=body)
        assert second.status_code == 201, second.text
        second_id = second.json()["id"]
        await flow.run_to_idle()
        status = (await flow.client.get(f"/api/v1/bulk_action/email/{second_id}/")).json()
        assert status["status"] == "done" and status["counts"]["sent"] == 2 and status["skipped"] == {"suppressed": 1}
        skipped = (await flow.client.get(f"/api/v1/bulk_action/email/{second_id}/recipients/?state=skipped")).json()
        assert [(r["email"], r["skip_reason"]) for r in skipped["data"]] == [(bob, "suppressed")]
