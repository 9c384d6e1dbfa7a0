"""Sending services' webhooks: each provider's signature checked with keys the test makes, forged
and replayed deliveries refused, and what is accepted applied like a bounce read from the inbox."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import select

from bulkmail.query_api.app import create_app
from bulkmail.query_api.feedback_webhooks.signatures import sns_string_to_sign
from bulkmail.shared.broker.memory import MemoryBroker
from bulkmail.shared.db import Database
from bulkmail.shared.models import User
from bulkmail.shared.organizations import add_api_key
from bulkmail.shared.settings import Settings
from tests.feedback.helpers import SentBulk, feedback_counts, make_account, make_sent_bulk, states, suppressions

CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0000000000000000000000.pem"


# ---------------------------------------------------------------------------------------------
# Keys and certificates the test makes


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn: str = "Test Root CA") -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_sns_cert(ca_key: rsa.RSAPrivateKey, ca: x509.Certificate) -> tuple[rsa.RSAPrivateKey, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("sns.amazonaws.com"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=10))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("sns.amazonaws.com")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Setup:
    client: httpx.AsyncClient
    app: object
    bulk: SentBulk
    database: Database


@pytest.fixture
async def setup(settings: Settings, database: Database, tmp_path: Path) -> AsyncIterator[Setup]:
    ca_key, ca = make_ca()
    ca_file = tmp_path / "sns-ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    configured = settings.model_copy(update={"sns_ca_file": str(ca_file)})
    org_id, account_id, template_id = await make_account(configured, database, 1)
    tag = uuid.uuid4().hex[:6]
    bulk = await make_sent_bulk(
        database, org_id, account_id, template_id, [f"gone-{tag}@receiver.test", f"spam-{tag}@receiver.test"]
    )
    async with database.session() as session:
        user = await session.scalar(select(User).where(User.organization_id == org_id))
        assert user is not None
        key = await add_api_key(session, user)
    broker = MemoryBroker(f"webhooks-{uuid.uuid4().hex[:8]}")
    app = create_app(configured, database=database, broker=broker)
    app.state.sns_ca = (ca_key, ca)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://testserver",
        headers={"Authorization": f"Bearer {key}"},
    ) as client:
        yield Setup(client, app, bulk, database)
    await broker.close()


async def make_webhook(s: Setup, provider: str, signing_key: str | None = None) -> str:
    body: dict[str, object] = {"provider": provider}
    if signing_key is not None:
        body["signing_key"] = signing_key
    created = await s.client.post(f"/api/v1/email_account/{s.bulk.account_id}/webhooks/", json=body)
    assert created.status_code == 201, created.text
    url = created.json()["url"]
    assert signing_key is None or signing_key not in created.text  # the key is never shown back
    listed = (await s.client.get(f"/api/v1/email_account/{s.bulk.account_id}/webhooks/")).json()
    assert all(w["url"] is None for w in listed)  # the token is shown once
    return "/webhooks/" + url.rsplit("/", 1)[1]


async def post(s: Setup, path: str, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return await s.client.post(path, content=body, headers={"Content-Type": "application/json", **(headers or {})})


# ---------------------------------------------------------------------------------------------
# Mailgun


def mailgun_body(key: str, event: dict[str, object], *, timestamp: int | None = None, token: str = "") -> bytes:
    ts = str(timestamp or int(time.time()))
    token = token or secrets.token_hex(25)
    signature = hmac.new(key.encode(), (ts + token).encode(), hashlib.sha256).hexdigest()
    return json.dumps(
        {"signature": {"timestamp": ts, "token": token, "signature": signature}, "event-data": event}
    ).encode()


def mailgun_failed(s: Setup, who: int, severity: str = "permanent") -> dict[str, object]:
    r = s.bulk.recipients[who]
    return {
        "event": "failed",
        "id": uuid.uuid4().hex,
        "severity": severity,
        "recipient": r.email,
        "timestamp": time.time(),
        "message": {"headers": {"message-id": r.message_id.strip("<>")}},
        "delivery-status": {"code": 550, "message": "5.1.1 The email account does not exist"},
    }


async def test_mailgun_valid_forged_and_replayed(setup: Setup) -> None:
    s = setup
    key = "key-" + secrets.token_hex(16)
    path = await make_webhook(s, "mailgun", key)
    gone, spam = s.bulk.recipients

    body = mailgun_body(key, mailgun_failed(s, 0))
    answer = await post(s, path, body)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"accepted": 1, "ignored": 0}
    assert (await post(s, path, body)).status_code == 409  # the same signed delivery again
    forged = mailgun_body("key-not-theirs", {**mailgun_failed(s, 1), "event": "complained"})
    assert (await post(s, path, forged)).status_code == 403
    old = mailgun_body(key, mailgun_failed(s, 1), timestamp=int(time.time()) - 3600)
    assert (await post(s, path, old)).status_code == 403  # signed, but an hour old
    # The signature covers only timestamp and token: a body altered under a fresh signature is
    # what Mailgun's scheme allows, but an old signature reused is a replay.
    tampered = body.replace(gone.email.encode(), spam.email.encode())
    assert (await post(s, path, tampered)).status_code == 409
    assert (await post(s, "/webhooks/" + secrets.token_urlsafe(32), body)).status_code == 404

    assert await states(s.database, s.bulk.bulk_email_id) == {gone.email: "bounced", spam.email: "sent"}
    assert await suppressions(s.database, s.bulk.organization_id) == {gone.email: "hard_bounce"}
    assert await feedback_counts(s.database, s.bulk.organization_id) == {"hard_bounce": 1}


# ---------------------------------------------------------------------------------------------
# SendGrid


def sendgrid_request(private: ec.EllipticCurvePrivateKey, events: list[dict[str, object]], ts: int | None = None):
    body = json.dumps(events).encode()
    stamp = str(ts or int(time.time()))
    signature = private.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    headers = {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
    }
    return body, headers


async def test_sendgrid_valid_forged_and_replayed(setup: Setup) -> None:
    s = setup
    private = ec.generate_private_key(ec.SECP256R1())
    public_der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    bad = await s.client.post(
        f"/api/v1/email_account/{s.bulk.account_id}/webhooks/", json={"provider": "sendgrid", "signing_key": "nope"}
    )
    assert bad.status_code == 400 and "signing_key" in bad.text
    path = await make_webhook(s, "sendgrid", base64.b64encode(public_der).decode())
    gone, spam = s.bulk.recipients
    events = [
        {
            "email": spam.email,
            "event": "spamreport",
            "sg_event_id": uuid.uuid4().hex,
            "timestamp": int(time.time()),
            "smtp-id": spam.message_id,
        },
        {"email": gone.email, "event": "delivered", "sg_event_id": uuid.uuid4().hex, "timestamp": int(time.time())},
    ]
    body, headers = sendgrid_request(private, events)
    answer = await post(s, path, body, headers)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"accepted": 1, "ignored": 0}  # "delivered" is not acted on
    assert (await post(s, path, body, headers)).status_code == 409
    other = ec.generate_private_key(ec.SECP256R1())
    forged_body, forged_headers = sendgrid_request(other, [{**events[0], "email": gone.email, "event": "bounce"}])
    assert (await post(s, path, forged_body, forged_headers)).status_code == 403
    altered = body.replace(b"spamreport", b"unsubscribe")
    assert (await post(s, path, altered, headers)).status_code == 403
    stale_body, stale_headers = sendgrid_request(private, events, ts=int(time.time()) - 3600)
    assert (await post(s, path, stale_body, stale_headers)).status_code == 403
    assert (await post(s, path, body, {})).status_code == 403  # unsigned

    assert await states(s.database, s.bulk.bulk_email_id) == {gone.email: "sent", spam.email: "complained"}
    assert await suppressions(s.database, s.bulk.organization_id) == {spam.email: "complaint"}


# ---------------------------------------------------------------------------------------------
# Amazon SES through SNS


def sns_message(s: Setup, key: rsa.RSAPrivateKey, event: dict[str, object], **fields: str) -> bytes:
    message = {
        "Type": "Notification",
        "MessageId": str(uuid.uuid4()),
        "TopicArn": "arn:aws:sns:eu-west-1:123456789012:ses-feedback",
        "Message": json.dumps(event),
        "Timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "SignatureVersion": "2",
        "SigningCertURL": CERT_URL,
        **fields,
    }
    signature = key.sign(sns_string_to_sign(message), padding.PKCS1v15(), hashes.SHA256())
    message["Signature"] = base64.b64encode(signature).decode()
    return json.dumps(message).encode()


def ses_bounce(s: Setup, who: int, bounce_type: str = "Permanent") -> dict[str, object]:
    r = s.bulk.recipients[who]
    return {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": bounce_type,
            "bounceSubType": "General",
            "feedbackId": uuid.uuid4().hex,
            "bouncedRecipients": [{"emailAddress": r.email, "status": "5.1.1", "diagnosticCode": "smtp; 550 5.1.1"}],
        },
        "mail": {"messageId": "ses-internal-id", "commonHeaders": {"messageId": r.message_id}},
    }


async def test_ses_through_sns_valid_forged_and_replayed(setup: Setup) -> None:
    s = setup
    ca_key, ca = s.app.state.sns_ca  # type: ignore[attr-defined]
    leaf_key, leaf_pem = make_sns_cert(ca_key, ca)
    fetched: list[str] = []

    def fetch(url: str) -> bytes:
        fetched.append(url)
        return certs.get(url, leaf_pem)

    certs: dict[str, bytes] = {}
    s.app.state.sns_cert_fetcher = fetch  # type: ignore[attr-defined]
    path = await make_webhook(s, "ses")
    gone, spam = s.bulk.recipients

    body = sns_message(s, leaf_key, ses_bounce(s, 0))
    answer = await post(s, path, body)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"accepted": 1, "ignored": 0}
    assert fetched == [CERT_URL]
    assert (await post(s, path, body)).status_code == 409

    # Signed by a certificate that does not chain to the trusted CA: refused.
    rogue_ca_key, rogue_ca = make_ca("Rogue CA")
    rogue_key, rogue_pem = make_sns_cert(rogue_ca_key, rogue_ca)
    rogue_url = CERT_URL.replace(".pem", "-rogue.pem")
    certs[rogue_url] = rogue_pem
    forged = sns_message(s, rogue_key, ses_bounce(s, 1), SigningCertURL=rogue_url)
    refused = await post(s, path, forged)
    assert refused.status_code == 403 and "not trusted" in refused.text
    # A certificate from anywhere but an SNS host is never fetched.
    elsewhere = sns_message(s, leaf_key, ses_bounce(s, 1), SigningCertURL="https://evil.example/sns.pem")
    assert (await post(s, path, elsewhere)).status_code == 403
    assert "https://evil.example/sns.pem" not in fetched
    # Altered after signing.
    altered = json.loads(sns_message(s, leaf_key, ses_bounce(s, 1)))
    altered["Message"] = altered["Message"].replace("Permanent", "Transient")
    assert (await post(s, path, json.dumps(altered).encode())).status_code == 403
    # A genuine message outside the time window.
    old = sns_message(s, leaf_key, ses_bounce(s, 1), Timestamp="2026-01-01T00:00:00.000Z")
    assert (await post(s, path, old)).status_code == 403

    # A complaint through the same path.
    complaint = {
        "notificationType": "Complaint",
        "complaint": {"feedbackId": uuid.uuid4().hex, "complainedRecipients": [{"emailAddress": spam.email}]},
        "mail": {"commonHeaders": {"messageId": spam.message_id}},
    }
    assert (await post(s, path, sns_message(s, leaf_key, complaint))).status_code == 200
    assert await states(s.database, s.bulk.bulk_email_id) == {gone.email: "bounced", spam.email: "complained"}
    assert await suppressions(s.database, s.bulk.organization_id) == {
        gone.email: "hard_bounce",
        spam.email: "complaint",
    }

    # A new subscription is confirmed by visiting its SubscribeURL, only on an SNS host.
    subscribe = "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=abc"
    confirm = sns_message(s, leaf_key, {}, Type="SubscriptionConfirmation", SubscribeURL=subscribe, Token="abc")
    assert (await post(s, path, confirm)).status_code == 200
    assert fetched[-1] == subscribe
    evil = sns_message(
        s, leaf_key, {}, Type="SubscriptionConfirmation", SubscribeURL="https://evil.example/?x", Token="abc"
    )
    assert (await post(s, path, evil)).status_code == 403
    assert "https://evil.example/?x" not in fetched


async def test_a_webhook_never_reaches_another_organisations_mail(setup: Setup, settings: Settings, database) -> None:
    """Org B's Message-ID and address posted to org A's webhook: nothing of B's changes."""
    s = setup
    key = "key-" + secrets.token_hex(16)
    path = await make_webhook(s, "mailgun", key)
    other_org, other_account, other_template = await make_account(settings, database, 1)
    other = await make_sent_bulk(
        database, other_org, other_account, other_template, [f"b-{uuid.uuid4().hex[:6]}@x.test"]
    )
    [victim] = other.recipients
    event = {
        "event": "complained",
        "id": uuid.uuid4().hex,
        "recipient": victim.email,
        "timestamp": time.time(),
        "message": {"headers": {"message-id": victim.message_id.strip("<>")}},
    }
    answer = await post(s, path, mailgun_body(key, event))
    assert answer.status_code == 200 and answer.json() == {"accepted": 0, "ignored": 1}
    assert await states(database, other.bulk_email_id) == {victim.email: "sent"}
    assert await suppressions(database, other_org) == {}
