"""Open and click tracking, opt-in per bulk email: signed tokens, link rewriting, the pixel.

Pure functions (no database): the mailer calls :func:`tracked_html` on each rendered body when
the bulk email asked for tracking, and the query-api's ``/t/o/{token}`` and ``/t/c/{token}``
routes call :func:`read_token`. A token is an HMAC-signed payload naming the organisation, the
bulk email, the recipient's address and, for a click, the exact URL that was in that recipient's
message, so a click can only ever redirect there (no open redirect), and a token altered in any
byte is refused. The rules are in docs/feedback.md.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html as html_lib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from bulkmail.shared.settings import Settings

_CONTEXT = b"bulkmail-tracking-v1"
_SIGNATURE_BYTES = 16

# href="..." or href='...' inside an <a ...> tag.
_ANCHOR = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(.*?)\2""", re.I | re.S)
_BODY_END = re.compile(r"</body\s*>", re.I)


@dataclass(frozen=True)
class Token:
    kind: Literal["o", "c"]  # open | click
    organization_id: int
    bulk_email_id: int
    email_normalized: str
    url: str = ""  # a click's destination, exactly as it was in the message


def key_for(settings: Settings) -> bytes:
    return hmac.new(settings.encryption_keys()[0].encode(), _CONTEXT, hashlib.sha256).digest()


def sign(key: bytes, token: Token) -> str:
    payload = "\x1f".join(
        [token.kind, str(token.organization_id), str(token.bulk_email_id), token.email_normalized, token.url]
    ).encode()
    signature = hmac.new(key, payload, hashlib.sha256).digest()[:_SIGNATURE_BYTES]
    return _b64(payload) + "." + _b64(signature)


def read_token(key: bytes, text: str) -> Token | None:
    """The token's contents, or None for anything we did not sign (forged, altered, truncated)."""
    try:
        payload_part, signature_part = text.split(".", 1)
        payload, signature = _unb64(payload_part), _unb64(signature_part)
    except ValueError:
        return None
    expected = hmac.new(key, payload, hashlib.sha256).digest()[:_SIGNATURE_BYTES]
    if not hmac.compare_digest(signature, expected):
        return None
    parts = payload.decode("utf-8", "replace").split("\x1f")
    if len(parts) != 5 or parts[0] not in ("o", "c") or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    kind: Literal["o", "c"] = "o" if parts[0] == "o" else "c"
    return Token(kind, int(parts[1]), int(parts[2]), parts[3], parts[4])


def rewrite_links(html: str, make_url: Callable[[str], str | None]) -> tuple[str, list[str]]:
    """Every ``<a href>`` whose ``make_url(url)`` gives a tracking URL is pointed at it.

    ``make_url`` gets the link as the reader's browser would (HTML entities decoded) and returns
    None to leave a link alone. Returns the new HTML and the original URLs rewritten, in order.
    """
    rewritten: list[str] = []

    def replace(match: re.Match[str]) -> str:
        url = html_lib.unescape(match.group(3)).strip()
        tracked = make_url(url) if trackable(url) else None
        if tracked is None:
            return match.group(0)
        rewritten.append(url)
        return f"{match.group(1)}{match.group(2)}{html_lib.escape(tracked, quote=True)}{match.group(2)}"

    return _ANCHOR.sub(replace, html), rewritten


def trackable(url: str) -> bool:
    """Only web links: never mailto:, tel:, in-page anchors, or template leftovers."""
    return bool(re.match(r"https?://[^\s<>\"']+$", url, re.I))


def add_pixel(html: str, url: str) -> str:
    """A 1x1 image before ``</body>`` (at the end when there is none)."""
    pixel = f'<img src="{html_lib.escape(url, quote=True)}" width="1" height="1" alt="" style="display:none">'
    ends = list(_BODY_END.finditer(html))
    found = ends[-1] if ends else None
    if found is None:
        return html + pixel
    return html[: found.start()] + pixel + html[found.start() :]


def tracked_html(
    html: str,
    *,
    settings: Settings,
    key: bytes,
    organization_id: int,
    bulk_email_id: int,
    email_normalized: str,
    opens: bool,
    clicks: bool,
) -> str:
    """The body as it goes out to one recipient: links rewritten and/or the pixel added."""
    base = settings.base_url
    unsubscribe = f"{base}/unsubscribe/"

    def click_url(url: str) -> str | None:
        if url.startswith(unsubscribe):
            return None  # the unsubscribe link must keep working exactly as it is
        token = Token("c", organization_id, bulk_email_id, email_normalized, url)
        return f"{base}/t/c/{sign(key, token)}"

    if clicks:
        html, _ = rewrite_links(html, click_url)
    if opens:
        html = add_pixel(html, f"{base}/t/o/{sign(key, Token('o', organization_id, bulk_email_id, email_normalized))}")
    return html


# Probably not a person: privacy proxies fetch every image on delivery (Apple Mail Privacy
# Protection sends a bare "Mozilla/5.0"), and security scanners follow every link.
_MACHINE_AGENTS = re.compile(
    r"bot|crawl|spider|scanner|preview|barracuda|mimecast|proofpoint|symantec|trendmicro|forcepoint|"
    r"safelinks|urldefense|python-|curl/|wget/|go-http-client|java/|okhttp|headless|yahoomailproxy",
    re.I,
)


def looks_like_a_machine(user_agent: str, seconds_since_sent: float | None, window_s: float) -> bool:
    agent = user_agent.strip()
    if not agent or agent == "Mozilla/5.0" or _MACHINE_AGENTS.search(agent):
        return True
    return seconds_since_sent is not None and seconds_since_sent < window_s


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError("bad token") from exc
