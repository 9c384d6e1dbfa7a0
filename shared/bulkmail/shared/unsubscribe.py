"""Unsubscribe links (RFC 8058 one-click): a signed token naming the organisation and the address.

The token is an HMAC over (organisation, address) with a key derived from the encryption key,
so links cannot be forged or pointed at another organisation, and need no database row.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from bulkmail.shared.settings import Settings

_CONTEXT = b"bulkmail-unsubscribe-v1"


def _key(settings: Settings) -> bytes:
    return hmac.new(settings.encryption_keys()[0].encode(), _CONTEXT, hashlib.sha256).digest()


def make_token(settings: Settings, organization_id: int, email_normalized: str) -> str:
    payload = f"{organization_id}:{email_normalized}".encode()
    signature = hmac.new(_key(settings), payload, hashlib.sha256).digest()[:16]
    return _b64(payload) + "." + _b64(signature)


def read_token(settings: Settings, token: str) -> tuple[int, str] | None:
    """(organisation id, normalised address), or None for a token we did not sign."""
    try:
        payload_part, signature_part = token.split(".", 1)
        payload = _unb64(payload_part)
        signature = _unb64(signature_part)
    except ValueError:
        return None
    expected = hmac.new(_key(settings), payload, hashlib.sha256).digest()[:16]
    if not hmac.compare_digest(signature, expected):
        return None
    org, _, email = payload.decode(errors="replace").partition(":")
    if not org.isdigit() or "@" not in email:
        return None
    return int(org), email


def unsubscribe_url(settings: Settings, organization_id: int, email_normalized: str) -> str:
    return f"{settings.base_url}/unsubscribe/{make_token(settings, organization_id, email_normalized)}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError("bad token") from exc
