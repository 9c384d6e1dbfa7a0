"""The fast message builder: one bulk email's MIME skeleton, filled per recipient.

`email.message.EmailMessage` spends ~1.4 ms per message parsing and re-folding headers we
already know the shape of (measured: ``benchmarks/bench_message.py``). A `MessageSkeleton` prepares
everything that is the same for every recipient of a bulk email once: the From header, the MIME
headers and boundary, the part headers. Per recipient only To, Subject, Date, Message-ID,
List-Unsubscribe and the two bodies are encoded.

What comes out is RFC 5322 / RFC 2045 bytes: CRLF line endings, header lines folded at 78 and
never over 998 octets, RFC 2047 encoded-words for non-ASCII names and subjects, bodies in
quoted-printable (base64 when that is smaller), 7-bit clean. The same bytes go to SMTP and to the
IMAP Sent copy.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from email.utils import format_datetime

__all__ = ["HeaderValueError", "MessageSkeleton", "format_address", "make_message_id"]

_LINE = 78  # RFC 5322's "SHOULD" limit; 998 is the hard one
_QP_LINE = 76  # RFC 2045's limit for quoted-printable lines


class HeaderValueError(ValueError):
    """An address, Message-ID or URL that cannot be put into a header safely."""


# ---------------------------------------------------------------------------------------------
# Message-ID


def make_message_id(bulk_email_id: int, recipient_id: int, domain: str, secret: bytes | None = None) -> str:
    """`<bulk-{bulk_email_id}-{recipient_id}.{hash}@{domain}>`, the same every time it is asked.

    Fixed per recipient so a send whose outcome is unknown can be found later (in the Sent folder,
    in bounces). With a secret, the hash also keeps outsiders from forging our ids.
    """
    domain = _ascii_domain(domain)
    key = f"{bulk_email_id}:{recipient_id}:{domain}".encode()
    digest = hmac.new(secret, key, hashlib.sha256) if secret else hashlib.sha256(key)
    return f"<bulk-{bulk_email_id}-{recipient_id}.{digest.hexdigest()[:16]}@{domain}>"


_MESSAGE_ID = re.compile(r"<[!-;=?-~]{1,900}@[!-;=?-~]{1,250}>")  # printable ASCII, no < > or spaces
_URL = re.compile(r"[!-;=?-~]{1,900}")  # what fits between < > in List-Unsubscribe


# ---------------------------------------------------------------------------------------------
# Header encoding

# RFC 5322 atext: no "." (a dot is only allowed in the obsolete phrase syntax, and a name such as
# "." or "Jo Q. Public" must be quoted for parsers to read it back).
_ATOM_TEXT = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_PRINTABLE = re.compile(r"[ -~]*")
_ADDRESS = re.compile(r"[!-~]+@[!-~]+")
_ADDRESS_SPECIALS = re.compile(r"[<>()\[\],;:\\\"]")
# UTF-8 bytes per encoded-word: 36 -> 60 characters, fits after "Subject: "; 45 -> 72 characters,
# fits after "From: " (RFC 2047 allows 75).
_SUBJECT_WORD_BYTES = 36
_NAME_WORD_BYTES = 45


def _encoded_words(text: str, limit: int = _SUBJECT_WORD_BYTES) -> list[str]:
    """RFC 2047 "B" encoded-words, split between characters."""
    words: list[str] = []
    chunk: list[str] = []
    size = 0
    for char in text:
        n = len(char.encode())
        if size + n > limit:
            words.append("".join(chunk))
            chunk, size = [], 0
        chunk.append(char)
        size += n
    if chunk:
        words.append("".join(chunk))
    return [f"=?utf-8?b?{base64.b64encode(w.encode()).decode()}?=" for w in words]


def _is_plain(text: str) -> bool:
    """Text a reader decodes to itself: printable ASCII words, single spaces, nothing like "=?"."""
    return (
        bool(_PRINTABLE.fullmatch(text))
        and "=?" not in text
        and "  " not in text
        and text == text.strip()
        and max(map(len, text.split(" ")), default=0) < 900
    )


def _fold(name: str, tokens: Iterable[str]) -> bytes:
    """`Name: tok tok ...` folded between tokens at 78 columns, CRLF-terminated."""
    lines: list[str] = []
    line = f"{name}:"
    for token in tokens:
        if len(line) + 1 + len(token) > _LINE and line != f"{name}:" and not line.endswith(":"):
            lines.append(line)
            line = ""
        line = f"{line} {token}"
    lines.append(line)
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def _ascii_domain(domain: str) -> str:
    domain = domain.strip().rstrip(".")
    try:
        ascii_domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError as exc:
        raise HeaderValueError(f"not a valid domain: {domain!r}") from exc
    if not ascii_domain or not re.fullmatch(r"[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]", ascii_domain):
        raise HeaderValueError(f"not a valid domain: {domain!r}")
    return ascii_domain


def _ascii_address(address: str) -> str:
    local, at, domain = address.strip().rpartition("@")
    if not at or not local or not local.isascii():
        # Non-ASCII local parts need SMTPUTF8 end to end; few servers offer it.
        raise HeaderValueError(f"not a deliverable address: {address!r}")
    result = f"{local}@{_ascii_domain(domain)}"
    if not _ADDRESS.fullmatch(result) or _ADDRESS_SPECIALS.search(local.strip('"')) or len(result) > 320:
        raise HeaderValueError(f"not a deliverable address: {address!r}")
    return result


def _phrase(name: str) -> list[str]:
    """A display name as header tokens: atoms, one quoted-string, or encoded-words."""
    name = " ".join(name.split())  # no CR/LF can ever reach a header
    if not name:
        return []
    if _ATOM_TEXT.fullmatch(name) and "=?" not in name:
        return name.split(" ")
    if _is_plain(name):
        return ['"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"']
    # Like Python's own folder: plain words stay atoms, each run of other words becomes one
    # encoded-word with its spaces inside. Decoders drop the whitespace between two adjacent
    # encoded-words (RFC 2047 §6.2), so a space must never sit between them.
    # (Python's parser is the exception: it inserts a space between adjacent encoded-words, which
    # only happens here for runs over 45 UTF-8 bytes.)
    tokens: list[str] = []
    run: list[str] = []
    for word in [*name.split(" "), ""]:
        if word and (not _ATOM_TEXT.fullmatch(word) or "=?" in word):
            run.append(word)
            continue
        if run:
            tokens += _encoded_words(" ".join(run), _NAME_WORD_BYTES)
            run = []
        if word:
            tokens.append(word)
    return tokens


def _address_tokens(address: str, name: str) -> list[str]:
    phrase = _phrase(name)
    return [*phrase, f"<{_ascii_address(address)}>"] if phrase else [_ascii_address(address)]


def format_address(address: str, name: str = "") -> str:
    """`Name <address>` as it appears in a header (unfolded); for logs and the Sent copy's index."""
    return " ".join(_address_tokens(address, name))


def _subject_tokens(subject: str) -> list[str]:
    if _is_plain(subject):
        return subject.split(" ") if subject else []
    return _encoded_words(subject)


# ---------------------------------------------------------------------------------------------
# Body encoding

_HIGH = bytes(range(128, 256))
_NEWLINES = re.compile(r"\r\n|\r|\n")
_FROM_LINE = re.compile(rb"(?m)^From ")


def _quoted_printable(data: bytes) -> bytes:
    encoded = binascii.b2a_qp(data, istext=True)
    if b"\n" not in data:
        # b2a_qp breaks long lines with the line ending it finds in the data; with none (an
        # HTML body on one line) it falls back to a bare LF, which is not a line end in SMTP.
        encoded = encoded.replace(b"\n", b"\r\n")
    if b"From " in encoded:
        # mbox readers turn a line starting "From " into ">From "; QP can say it another way.
        # "=46rom=20" is 4 characters longer than "From ", so a full line gets a soft break.
        lines = encoded.split(b"\r\n")
        for i, line in enumerate(lines):
            if line.startswith(b"From "):
                rest = line[5:]
                lines[i] = b"=46rom=20" + (rest if len(rest) + 9 <= _QP_LINE else b"=\r\n" + rest)
        encoded = b"\r\n".join(lines)
    return encoded


def _encode_body(text: str) -> tuple[bool, bytes]:
    """(is_base64, encoded body without a final line break), CRLF line endings."""
    # str.replace is ~10x faster than the regex; most bodies have no CR at all.
    text = text.replace("\n", "\r\n") if "\r" not in text else _NEWLINES.sub("\r\n", text)
    data = text.encode("utf-8")
    high = len(data) - len(data.translate(None, _HIGH))
    # QP spends 3 bytes on each non-ASCII byte, base64 4 on every 3: base64 wins above ~1/6.
    if high * 6 > len(data):
        return True, base64.encodebytes(data).replace(b"\n", b"\r\n").rstrip(b"\r\n")
    return False, _quoted_printable(data)


# ---------------------------------------------------------------------------------------------
# The skeleton


class MessageSkeleton:
    """Everything one bulk email's messages share, prepared once per (template, email account)."""

    def __init__(
        self,
        *,
        sender_address: str,
        sender_name: str = "",
        reply_to: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        boundary: str | None = None,
    ) -> None:
        # "=_" can never appear in quoted-printable or base64 text, so no body can contain it.
        self.boundary = boundary or f"=_bulkmail_{secrets.token_hex(12)}"
        if not re.fullmatch(r"=_[0-9A-Za-z_.+-]{1,60}", self.boundary):
            raise HeaderValueError("a boundary must start with '=_' and be at most 62 safe characters")
        fixed = [_fold("From", _address_tokens(sender_address, sender_name))]
        if reply_to:
            fixed.append(_fold("Reply-To", [f"<{_ascii_address(reply_to)}>"]))
        for name, value in (extra_headers or {}).items():
            if not re.fullmatch(r"[!-9;-~]+", name) or not _is_plain(value):
                raise HeaderValueError(f"extra header {name!r} must be printable ASCII")
            fixed.append(_fold(name, value.split(" ")))
        fixed.append(b"MIME-Version: 1.0\r\n")
        fixed.append(f'Content-Type: multipart/alternative;\r\n boundary="{self.boundary}"\r\n'.encode())
        self._head = b"".join(fixed)
        delimiter = f"--{self.boundary}\r\n".encode()
        self._part_heads = {
            (subtype, b64): delimiter
            + f'Content-Type: text/{subtype}; charset="utf-8"\r\n'.encode()
            + f"Content-Transfer-Encoding: {'base64' if b64 else 'quoted-printable'}\r\n\r\n".encode()
            for subtype in ("plain", "html")
            for b64 in (False, True)
        }
        self._close = f"\r\n--{self.boundary}--\r\n".encode()
        self._date: tuple[int, bytes] = (-1, b"")
        # Subjects often repeat across recipients (no tag in them): encode each once.
        self._subjects: dict[str, bytes] = {}

    def _date_line(self, when: datetime | None) -> bytes:
        when = when or datetime.now(UTC)
        second = int(when.timestamp())
        if self._date[0] != second or when.utcoffset():
            self._date = (second, f"Date: {format_datetime(when.replace(microsecond=0))}\r\n".encode())
        return self._date[1]

    def _subject_line(self, subject: str) -> bytes:
        line = self._subjects.get(subject)
        if line is None:
            line = _fold("Subject", _subject_tokens(subject))
            if len(self._subjects) < 1024:
                self._subjects[subject] = line
        return line

    def build(
        self,
        *,
        to_address: str,
        to_name: str = "",
        subject: str,
        message_id: str,
        text: str,
        html: str,
        date: datetime | None = None,
        unsubscribe_url: str | None = None,
        unsubscribe_mailto: str | None = None,
    ) -> bytes:
        """The whole message for one recipient, ready for SMTP DATA and IMAP APPEND.

        Raises HeaderValueError for an address, Message-ID or URL that cannot be sent as given.
        """
        if not _MESSAGE_ID.fullmatch(message_id):
            raise HeaderValueError(f"not a Message-ID: {message_id!r}")
        out = [
            self._head,
            _fold("To", _address_tokens(to_address, to_name)),
            self._subject_line(subject),
            self._date_line(date),
            b"Message-ID: " + message_id.encode("ascii") + b"\r\n",
        ]
        links = []
        for url in (unsubscribe_url, unsubscribe_mailto and f"mailto:{unsubscribe_mailto}"):
            if url:
                if not _URL.fullmatch(url):
                    raise HeaderValueError(f"not a URL for List-Unsubscribe: {url!r}")
                links.append(f"<{url}>")
        if links:
            out.append(_fold("List-Unsubscribe", [*(f"{link}," for link in links[:-1]), links[-1]]))
        if unsubscribe_url and unsubscribe_url.startswith("https://"):
            # RFC 8058 one-click: only meaningful (and only allowed) with an HTTPS URI.
            out.append(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
        out.append(b"\r\n")  # end of the header section
        for subtype, body in (("plain", text), ("html", html)):
            is_b64, encoded = _encode_body(body)
            out.append(self._part_heads[(subtype, is_b64)])
            out.append(encoded)
            out.append(b"\r\n" if subtype == "plain" else b"")
        out.append(self._close)
        return b"".join(out)
