"""Proving a webhook came from the sending service: each provider's own signature.

* Amazon SES through SNS: an RSA signature (SHA1 for SignatureVersion 1, SHA256 for 2) over the
  message's fields, made with a certificate whose URL is in the message. The URL must be HTTPS on
  an SNS host, and the certificate must chain to a trusted CA and be issued to sns.amazonaws.com.
* SendGrid: ECDSA (P-256, SHA-256) over the timestamp header followed by the raw body, checked
  with the public key the user copied from SendGrid.
* Mailgun: HMAC-SHA256 of timestamp + token with the account's webhook signing key.

Every check also refuses timestamps outside a window; the caller refuses a signature it has
already accepted (replays inside the window). Each function raises :class:`SignatureError` with
what was wrong; never the secret.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError


class SignatureError(ValueError):
    """The webhook's signature does not hold (or its time is out of the window)."""


def _fresh(when: datetime, now: datetime, max_age_s: float) -> None:
    age = abs((now - when).total_seconds())
    if age > max_age_s:
        raise SignatureError(f"timestamp is {age:.0f} s away from now (at most {max_age_s:.0f} s accepted)")


# ---------------------------------------------------------------------------------------------
# Mailgun


def verify_mailgun(signing_key: str, signature: Mapping[str, Any], now: datetime, max_age_s: float) -> str:
    """``signature`` is the body's ``signature`` object; returns the key that identifies this delivery."""
    try:
        timestamp, token, given = str(signature["timestamp"]), str(signature["token"]), str(signature["signature"])
        when = datetime.fromtimestamp(int(timestamp), UTC)
    except (KeyError, TypeError, ValueError, OverflowError):
        raise SignatureError("signature.timestamp, signature.token and signature.signature are required") from None
    expected = hmac.new(signing_key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, given.lower()):
        raise SignatureError("the Mailgun signature does not match")
    _fresh(when, now, max_age_s)
    return f"mailgun:{token}"


# ---------------------------------------------------------------------------------------------
# SendGrid


def load_sendgrid_key(text: str) -> ec.EllipticCurvePublicKey:
    """SendGrid shows the verification key as base64 DER; a PEM block is accepted too."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode(text))
    except (ValueError, binascii.Error):
        raise SignatureError("the SendGrid verification key is not a public key (base64 DER or PEM)") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise SignatureError("the SendGrid verification key must be an ECDSA public key")
    return key


def verify_sendgrid(
    public_key: str, signature_b64: str, timestamp: str, body: bytes, now: datetime, max_age_s: float
) -> str:
    key = load_sendgrid_key(public_key)
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        when = datetime.fromtimestamp(int(timestamp), UTC)
    except (binascii.Error, ValueError, OverflowError):
        raise SignatureError("the X-Twilio-Email-Event-Webhook-Signature/-Timestamp headers are malformed") from None
    try:
        key.verify(signature, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise SignatureError("the SendGrid signature does not match") from None
    _fresh(when, now, max_age_s)
    return "sendgrid:" + hashlib.sha256(signature).hexdigest()


# ---------------------------------------------------------------------------------------------
# Amazon SNS (SES notifications)

_SNS_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
SNS_CERT_SUBJECT = "sns.amazonaws.com"

# Fetches a certificate's PEM by URL (the default uses urllib; tests give their own).
CertFetcher = Callable[[str], bytes]


def sns_string_to_sign(message: Mapping[str, Any]) -> bytes:
    kind = str(message.get("Type", ""))
    if kind not in _SNS_FIELDS:
        raise SignatureError(f"unknown SNS message Type {kind!r}")
    parts: list[str] = []
    for name in _SNS_FIELDS[kind]:
        if name == "Subject" and message.get("Subject") is None:
            continue  # signed only when present
        if name not in message:
            raise SignatureError(f"the SNS message has no {name}")
        parts += [name, str(message[name])]
    return ("\n".join(parts) + "\n").encode()


def check_sns_url(url: str, allowed_hosts: list[str]) -> None:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme != "https" or not any(fnmatch.fnmatch(host, pattern) for pattern in allowed_hosts):
        raise SignatureError(f"SigningCertURL must be an https URL on an SNS host, not {url!r}")
    if not parts.path.endswith(".pem"):
        raise SignatureError("SigningCertURL must name a .pem certificate")


def verify_sns(
    message: Mapping[str, Any],
    fetch_cert: CertFetcher,
    trust: list[x509.Certificate],
    allowed_hosts: list[str],
    now: datetime,
    max_age_s: float,
) -> str:
    """Returns the delivery key (the SNS MessageId)."""
    url = str(message.get("SigningCertURL", ""))
    check_sns_url(url, allowed_hosts)
    version = str(message.get("SignatureVersion", ""))
    algorithm: hashes.HashAlgorithm
    if version == "1":
        algorithm = hashes.SHA1()
    elif version == "2":
        algorithm = hashes.SHA256()
    else:
        raise SignatureError(f"unknown SNS SignatureVersion {version!r}")
    try:
        signature = base64.b64decode(str(message.get("Signature", "")), validate=True)
        when = datetime.fromisoformat(str(message.get("Timestamp", "")).replace("Z", "+00:00"))
    except (binascii.Error, ValueError):
        raise SignatureError("the SNS Signature or Timestamp is malformed") from None
    chain = x509.load_pem_x509_certificates(fetch_cert(url))
    leaf, intermediates = chain[0], chain[1:]
    try:
        verifier = PolicyBuilder().store(Store(trust)).time(now).build_server_verifier(x509.DNSName(SNS_CERT_SUBJECT))
        verifier.verify(leaf, intermediates)
    except VerificationError as exc:
        raise SignatureError(f"the SNS signing certificate is not trusted: {exc}") from None
    key = leaf.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise SignatureError("the SNS signing certificate has no RSA key")
    try:
        key.verify(signature, sns_string_to_sign(message), padding.PKCS1v15(), algorithm)
    except InvalidSignature:
        raise SignatureError("the SNS signature does not match") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    _fresh(when, now, max_age_s)
    return f"sns:{message.get('MessageId', '')}"


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise SignatureError("the body is not JSON") from None
