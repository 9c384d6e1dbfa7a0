"""SMTP/IMAP passwords: encrypted at rest, write-only in the API, never in logs."""

from __future__ import annotations

import logging

from sqlalchemy import select

from bulkmail.shared.models import EmailAccount
from bulkmail.shared.secrets import SecretBox

SMTP_PASSWORD = "smtp-pa55-UNIQUE-7f3a"
IMAP_PASSWORD = "imap-pa55-UNIQUE-91bc"


async def test_passwords_are_encrypted_write_only_and_never_logged(tenant, database, settings, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    created = await tenant.client.post(
        "/api/v1/email_account/",
        json={
            "email": "sales@acme.example",
            "name": "Sales",
            "smtp_host": "smtp.acme.example",
            "smtp_port": 587,
            "smtp_security": "starttls",
            "smtp_username": "sales",
            "smtp_password": SMTP_PASSWORD,
            "imap_host": "imap.acme.example",
            "imap_password": IMAP_PASSWORD,
            "limit_per_day": 500,
        },
    )
    assert created.status_code == 201, created.text
    account_id = created.json()["id"]
    responses = [created.text]
    responses.append((await tenant.client.get(f"/api/v1/email_account/{account_id}/")).text)
    responses.append((await tenant.client.get("/api/v1/email_account/")).text)
    responses.append((await tenant.client.put(f"/api/v1/email_account/{account_id}/", json={"name": "S2"})).text)
    # A bad request echoing input must not echo the password either.
    bad = await tenant.client.post(
        "/api/v1/email_account/", json={"email": "broken", "smtp_host": "x", "smtp_password": SMTP_PASSWORD}
    )
    assert bad.status_code == 400
    responses.append(bad.text)

    body = created.json()
    assert body["smtp_password_set"] is True and body["imap_password_set"] is True
    for text in responses:
        assert SMTP_PASSWORD not in text and IMAP_PASSWORD not in text

    async with database.session() as session:
        row = await session.scalar(select(EmailAccount).where(EmailAccount.id == account_id))
        assert SMTP_PASSWORD not in row.smtp_password_encrypted
        box = SecretBox.from_settings(settings)
        assert box.decrypt(row.smtp_password_encrypted) == SMTP_PASSWORD
        assert box.decrypt(row.imap_password_encrypted) == IMAP_PASSWORD

    captured = capsys.readouterr()
    logs = captured.out + captured.err + caplog.text
    assert SMTP_PASSWORD not in logs and IMAP_PASSWORD not in logs


async def test_clearing_a_password_and_the_structlog_redaction(tenant, capsys):
    from bulkmail.shared.logging import configure_logging, get_logger

    created = await tenant.client.post(
        "/api/v1/email_account/", json={"email": "a@acme.example", "smtp_host": "h.example", "smtp_password": "x1"}
    )
    cleared = await tenant.client.put(f"/api/v1/email_account/{created.json()['id']}/", json={"smtp_password": None})
    assert cleared.json()["smtp_password_set"] is False

    configure_logging("INFO", "json")
    get_logger("test").info("connecting", smtp_password=SMTP_PASSWORD, host="h.example")
    err = capsys.readouterr().err
    assert "connecting" in err and SMTP_PASSWORD not in err and "[redacted]" in err
